package gateway_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// pki is a throwaway certificate authority made inside the test.
type pki struct {
	dir    string
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

func newPKI(t *testing.T, dir, name string) *pki {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &pki{dir: dir, caCert: cert, caKey: key}
	writePEM(t, filepath.Join(dir, name+".crt"), "CERTIFICATE", der)
	return p
}

// issue writes name.crt and name.key signed by the CA.
func (p *pki) issue(t *testing.T, name string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startTLSMosquitto runs Mosquitto with a TLS listener that requires a
// client certificate from the CA.
func startTLSMosquitto(t *testing.T, dir, caFile, certFile, keyFile string) string {
	t.Helper()
	bin := mqtttest.RequireMosquitto(t)
	port := mqtttest.FreePort(t)
	conf := filepath.Join(dir, "mosquitto-tls.conf")
	body := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\ntls_version tlsv1.2\n",
		port, caFile, certFile, keyFile)
	if os.Geteuid() == 0 {
		body += "user root\n"
	}
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitUntil(t, 10*time.Second, "mosquitto TLS listener", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr
}

// TestUplinkMutualTLS forwards to a Mosquitto that requires TLS 1.2+ and
// a client certificate (as AWS IoT Core and Azure IoT Hub do), and checks
// that a gateway pinned to the wrong CA refuses to send anything.
func TestUplinkMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newPKI(t, dir, "ca")
	srvCert, srvKey := ca.issue(t, "server", true)
	cliCert, cliKey := ca.issue(t, "gateway-1", false)
	other := newPKI(t, dir, "other-ca")
	addr := startTLSMosquitto(t, dir, filepath.Join(dir, "ca.crt"), srvCert, srvKey)

	// A subscriber at the cloud, over the same mutual TLS.
	got := make(chan string, 100)
	tcAny, err := gateway.LoadClientTLS(filepath.Join(dir, "ca.crt"), cliCert, cliKey)
	if err != nil {
		t.Fatal(err)
	}
	tc := tcAny.(*tls.Config)
	sub := paho.NewClient(paho.NewClientOptions().AddBroker("ssl://" + addr).SetClientID("tls-sub").SetTLSConfig(tc).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- m.Topic() }))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber: %v", tok.Error())
	}
	defer sub.Disconnect(50)
	if tok := sub.Subscribe("#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}

	tlsYAML := func(caFile string) string {
		return fmt.Sprintf("  tls:\n    ca_file: %s\n    cert_file: %s\n    key_file: %s\n", caFile, cliCert, cliKey)
	}
	t.Run("right CA", func(t *testing.T) {
		yaml, brokerAddr := testConfig(t, t.TempDir(), "ssl://"+addr, "")
		yaml = strings.Replace(yaml, "  topic:", tlsYAML(filepath.Join(dir, "ca.crt"))+"  topic:", 1)
		g := runGateway(t, loadConfig(t, yaml))
		publishAll(t, brokerAddr, 1, 5)
		for i := 0; i < 5; i++ {
			select {
			case topic := <-got:
				if topic != "gw1/telemetry/sensor-0" {
					t.Fatalf("topic %q", topic)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("got %d of 5 events over mutual TLS; link %+v", i, g.Status().Link)
			}
		}
	})
	pin := func(c *x509.Certificate) string {
		h := sha256.Sum256(c.RawSubjectPublicKeyInfo)
		return base64.StdEncoding.EncodeToString(h[:])
	}
	// Each case adds lines to the tls block of a gateway trusting the right
	// CA; ok says whether events must arrive, else the link error to see.
	for _, tc := range []struct {
		name, extra string
		ok          bool
		wantErr     string
	}{
		{"pinned CA", "    pin_sha256: [" + pin(ca.caCert) + "]\n", true, ""},
		{"pin of another key", "    pin_sha256: [" + pin(other.caCert) + "]\n", false, "pin_sha256"},
		{"server name verified", "    server_name: localhost\n", true, ""},
		{"server name mismatch", "    server_name: cloud.example\n", false, "cloud.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yaml, brokerAddr := testConfig(t, t.TempDir(), "ssl://"+addr, "")
			yaml = strings.Replace(yaml, "  topic:", tlsYAML(filepath.Join(dir, "ca.crt"))+tc.extra+"  topic:", 1)
			g := runGateway(t, loadConfig(t, yaml))
			publishAll(t, brokerAddr, 1, 2)
			if tc.ok {
				waitUntil(t, 10*time.Second, "2 events forwarded", func() bool {
					l := g.Status().Link
					return l != nil && l.ForwardedEvents == 2
				})
				for range 2 {
					<-got
				}
				return
			}
			waitUntil(t, 10*time.Second, "a link error naming "+tc.wantErr, func() bool {
				l := g.Status().Link
				return l != nil && strings.Contains(l.LastError, tc.wantErr)
			})
			if l := g.Status().Link; l.Connected || l.ForwardedEvents != 0 {
				t.Fatalf("link up despite %s: %+v", tc.name, l)
			}
		})
	}
	t.Run("wrong CA", func(t *testing.T) {
		yaml, brokerAddr := testConfig(t, t.TempDir(), "ssl://"+addr, "")
		yaml = strings.Replace(yaml, "  topic:", tlsYAML(filepath.Join(other.dir, "other-ca.crt"))+"  topic:", 1)
		g := runGateway(t, loadConfig(t, yaml))
		publishAll(t, brokerAddr, 1, 3)
		waitUntil(t, 10*time.Second, "a TLS verification error", func() bool {
			l := g.Status().Link
			return l != nil && strings.Contains(l.LastError, "certificate")
		})
		st := g.Status()
		if st.Link.Connected || st.Link.ForwardedEvents != 0 || st.Streams[0].Events != 3 {
			t.Fatalf("with the wrong CA: %+v %+v", st.Link, st.Streams)
		}
	})
}
