package downlink

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ferrygw/ferry/internal/mqtttest"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key,
// and returns their paths and a pool trusting it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test cloud"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cloud.crt"), filepath.Join(dir, "cloud.key")
	for path, blk := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "EC PRIVATE KEY", Bytes: kder}} {
		if err := os.WriteFile(path, pem.EncodeToMemory(blk), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// startMultiMosquitto starts a Mosquitto with a plain, a TLS and a
// WebSocket listener and returns their ports.
func startMultiMosquitto(t *testing.T, certFile, keyFile string) (plain, tlsPort, wsPort int) {
	t.Helper()
	bin := mqtttest.RequireMosquitto(t)
	plain, tlsPort, wsPort = mqtttest.FreePort(t), mqtttest.FreePort(t), mqtttest.FreePort(t)
	dir := t.TempDir()
	conf := fmt.Sprintf("per_listener_settings false\nallow_anonymous true\npersistence false\n"+
		"listener %d 127.0.0.1\n"+
		"listener %d 127.0.0.1\ncertfile %s\nkeyfile %s\n"+
		"listener %d 127.0.0.1\nprotocol websockets\n", plain, tlsPort, certFile, keyFile, wsPort)
	if os.Geteuid() == 0 {
		// Mosquitto run as root drops to user mosquitto, who cannot read
		// the test's private temp directory.
		conf += "user root\n"
	}
	path := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out := &lockedBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for _, port := range []int{plain, tlsPort, wsPort} {
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		waitFor(t, 10*time.Second, "mosquitto on "+addr+"; its output:\n"+out.String(), func() bool {
			c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	}
	return plain, tlsPort, wsPort
}

// TLS and WebSocket endpoints carry the same session; the client falls
// over from an unreachable endpoint to the next.
func TestTransports(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	plain, tlsPort, wsPort := startMultiMosquitto(t, certFile, keyFile)
	dead := mqtttest.FreePort(t)
	for _, tc := range []struct {
		name string
		eps  []Endpoint
	}{
		{"ssl", []Endpoint{{URL: fmt.Sprintf("ssl://127.0.0.1:%d", tlsPort), TLS: &tls.Config{RootCAs: pool}}}},
		{"mqtts with server name", []Endpoint{{URL: fmt.Sprintf("mqtts://127.0.0.1:%d", tlsPort), TLS: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}}},
		{"ws", []Endpoint{{URL: fmt.Sprintf("ws://127.0.0.1:%d/mqtt", wsPort)}}},
		{"failover", []Endpoint{{URL: fmt.Sprintf("tcp://127.0.0.1:%d", dead)}, {URL: fmt.Sprintf("tcp://127.0.0.1:%d", plain)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSink()
			cfg := cmdConfig(t, "gw-"+tc.name, s)
			cfg.Endpoints = tc.eps
			cfg.Presence = Presence{Topic: "gw/" + tc.name + "/presence", Online: []byte("on"), Offline: []byte("off")}
			c, stop := startClient(t, cfg)
			addr := fmt.Sprintf("127.0.0.1:%d", plain)
			cl := dialCloud(t, addr)
			waitFor(t, 10*time.Second, "online", func() bool { return retainedOn(t, addr, cfg.Presence.Topic) == "on" })
			cl.publish("gw1/cmd/t", []byte(tc.name), 1, false, nil)
			waitFor(t, 10*time.Second, "the command", func() bool { return len(s.commands()) == 1 })
			if st := c.Status(); st.Endpoint != tc.eps[len(tc.eps)-1].URL || st.Reconnects != 0 {
				t.Errorf("status %+v", st)
			}
			stop()
			if got := retainedOn(t, addr, cfg.Presence.Topic); got != "off" {
				t.Errorf("presence %q after the shutdown", got)
			}
		})
	}

	// A server certificate the client does not trust is a refusal.
	cfg := testConfig(t, "gw-untrusted")
	cfg.Endpoints = []Endpoint{{URL: fmt.Sprintf("ssl://127.0.0.1:%d", tlsPort), TLS: &tls.Config{}}}
	c, _ := startClient(t, cfg)
	waitFor(t, 10*time.Second, "a refusal", func() bool { return c.Status().LastError != "" })
	if st := c.Status(); st.Connected || !containsAll(st.LastError, "refused", "certificate") {
		t.Errorf("status %+v", st)
	}
}
