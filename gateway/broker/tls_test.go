package broker_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/gateway/broker"
)

// tlsFiles is a test PKI on disk: the CA that signs the broker's and the
// good clients' certificates, another CA nobody trusts, and the broker's
// certificate and key.
type tlsFiles struct {
	dir         string
	ca, otherCA *testCA
	cert, key   string
	serverCert  *x509.Certificate
}

func newTLSFiles(t *testing.T) *tlsFiles {
	t.Helper()
	dir := t.TempDir()
	f := &tlsFiles{dir: dir, cert: filepath.Join(dir, "server.crt"), key: filepath.Join(dir, "server.key")}
	f.ca = newCA(t, dir, "ca")
	f.otherCA = newCA(t, dir, "other-ca")
	f.serverCert = f.ca.serverCert(t, f.cert, f.key)
	return f
}

// tlsConfig is a broker TLS listener on a free loopback port using f.
func (f *tlsFiles) tlsConfig() *broker.TLSConfig {
	return &broker.TLSConfig{Listen: "127.0.0.1:0", CertFile: f.cert, KeyFile: f.key}
}

// tlsClient runs a mosquitto client against b's TLS listener with args
// (the CA file and client certificate included) and returns its combined
// output and whether it exited with status 0.
func tlsClient(t *testing.T, b *broker.Broker, name string, args ...string) (string, bool) {
	t.Helper()
	host, port, _ := net.SplitHostPort(b.TLSAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, mosquitto(t, name), append([]string{"-h", host, "-p", port}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("%s: %v", name, err)
		}
	}
	return string(out), err == nil
}

// dialTLS makes a TLS connection to b's TLS listener trusting ca and
// returns the certificate served, or the handshake error.
func dialTLS(t *testing.T, b *broker.Broker, ca *testCA, mod func(*tls.Config)) (*x509.Certificate, *tls.ConnectionState, error) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	c := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	if mod != nil {
		mod(c)
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", b.TLSAddr(), c)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	cs := conn.ConnectionState()
	return cs.PeerCertificates[0], &cs, nil
}

// TestTLS checks the TLS listener with Debian's mosquitto clients (built
// on OpenSSL) and with crypto/tls: the right CA works, TLS below 1.2, CBC
// suites and an untrusting client are refused.
func TestTLS(t *testing.T) {
	f := newTLSFiles(t)
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, func(c *broker.Config) { c.TLS = f.tlsConfig() })

	tests := []struct {
		name string
		args []string
		ok   bool
	}{
		{"right CA", []string{"--cafile", f.ca.file}, true},
		{"right CA, TLS 1.2", []string{"--cafile", f.ca.file, "--tls-version", "tlsv1.2"}, true},
		{"right CA, TLS 1.3", []string{"--cafile", f.ca.file, "--tls-version", "tlsv1.3"}, true},
		{"wrong CA", []string{"--cafile", f.otherCA.file}, false},
		// libmosquitto 2.0.11 treats --tls-version as a floor (tlsv1.1
		// disables only SSLv3 and TLS 1.0 and then negotiates 1.3), so it
		// cannot play an old client; "tlsv1" it refuses itself ("Problem
		// setting TLS options"). openssl s_client plays the old clients
		// below.
		{"TLS 1.0 floor", []string{"--cafile", f.ca.file, "--tls-version", "tlsv1"}, false},
		{"no TLS on the TLS port", nil, false},
	}
	want := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(tt.args, "-d", "-i", "tls-pub", "-q", "1", "-t", "sensors/tls", "-m", tt.name)
			out, ok := tlsClient(t, b, "mosquitto_pub", args...)
			if ok != tt.ok {
				t.Fatalf("mosquitto_pub exit 0 = %v, want %v:\n%s", ok, tt.ok, out)
			}
			if !ok && strings.Contains(out, "CONNACK") {
				t.Fatalf("refused client got as far as CONNACK:\n%s", out)
			}
			if ok {
				want++
			}
		})
	}
	if ev := events(t, l, "telemetry"); len(ev) != want {
		t.Fatalf("%d events ingested over TLS, want %d", len(ev), want)
	}

	// Clients that offer nothing newer than TLS 1.1 or 1.0: OpenSSL's
	// s_client, at security level 0 so that OpenSSL itself offers them.
	// The broker answers with a protocol_version alert (70).
	if ossl, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is not installed; .ci/run must apt-get install openssl")
		}
		t.Log("openssl not installed: old TLS versions checked with crypto/tls only")
	} else {
		for _, v := range []string{"-tls1", "-tls1_1"} {
			t.Run("openssl s_client "+v, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, ossl, "s_client", "-connect", b.TLSAddr(), "-CAfile", f.ca.file, v, "-cipher", "DEFAULT:@SECLEVEL=0")
				cmd.Stdin = strings.NewReader("")
				out, _ := cmd.CombinedOutput()
				if !strings.Contains(string(out), "alert protocol version") {
					t.Fatalf("openssl s_client %s: want the broker's protocol_version alert:\n%s", v, out)
				}
			})
		}
	}

	// What the server itself negotiates, independent of OpenSSL's own
	// floor: crypto/tls offers everything it is told to.
	cases := []struct {
		name    string
		mod     func(*tls.Config)
		wantErr bool
		version uint16
	}{
		{"default prefers TLS 1.3", nil, false, tls.VersionTLS13},
		{"TLS 1.2 ECDHE AEAD", func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }, false, tls.VersionTLS12},
		{"TLS 1.1", func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 }, true, 0},
		{"TLS 1.0", func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS10 }, true, 0},
		{"TLS 1.2 CBC only", func(c *tls.Config) {
			c.MaxVersion = tls.VersionTLS12
			c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
				tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA}
		}, true, 0},
		{"TLS 1.2 RSA key exchange only", func(c *tls.Config) {
			c.MaxVersion = tls.VersionTLS12
			c.CipherSuites = []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_256_GCM_SHA384}
		}, true, 0},
	}
	for _, tt := range cases {
		t.Run("crypto/tls "+tt.name, func(t *testing.T) {
			_, cs, err := dialTLS(t, b, f.ca, tt.mod)
			if (err != nil) != tt.wantErr {
				t.Fatalf("handshake error %v, want error = %v", err, tt.wantErr)
			}
			if err == nil && cs.Version != tt.version {
				t.Fatalf("negotiated %s, want %s", tls.VersionName(cs.Version), tls.VersionName(tt.version))
			}
		})
	}
}

// TestTLSOnly runs the broker with a TLS listener and no plain TCP one.
func TestTLSOnly(t *testing.T) {
	f := newTLSFiles(t)
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, func(c *broker.Config) {
		c.Listen = ""
		c.TLS = f.tlsConfig()
		c.TLS.MinVersion = tls.VersionTLS13
	})
	if b.Addr() != "" {
		t.Fatalf("plain TCP listener at %q with Listen empty", b.Addr())
	}
	if out, ok := tlsClient(t, b, "mosquitto_pub", "--cafile", f.ca.file, "-q", "1", "-t", "sensors/x", "-m", "only"); !ok {
		t.Fatalf("publish over TLS 1.3:\n%s", out)
	}
	if _, _, err := dialTLS(t, b, f.ca, func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }); err == nil {
		t.Fatal("TLS 1.2 accepted with MinVersion TLS 1.3")
	}
	if _, err := broker.New(broker.Config{}, l); err == nil || !strings.Contains(err.Error(), "no listener") {
		t.Fatalf("New without any listener: %v", err)
	}
}

// TestMutualTLS authenticates clients by certificate: the certificate's
// CN becomes the user name the ACL sees.
func TestMutualTLS(t *testing.T) {
	f := newTLSFiles(t)
	good, goodKey := f.ca.clientCert(t, f.dir, "sensor-7", "sensor-7")
	empty, emptyKey := f.ca.clientCert(t, f.dir, "no-cn", "")
	stranger, strangerKey := f.otherCA.clientCert(t, f.dir, "stranger", "sensor-7")
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, func(c *broker.Config) {
		c.AllowAnonymous = false
		c.Users = usersFile(t, "s1", "pw1")
		c.ACL = []broker.ACLRule{{User: "*", Publish: []string{"sensors/%u/#"}}}
		c.TLS = f.tlsConfig()
		c.TLS.ClientCAFile = f.ca.file
	})
	ca := []string{"--cafile", f.ca.file}
	withCert := func(cert, key string, args ...string) []string {
		return append(append([]string{"--cafile", f.ca.file, "--cert", cert, "--key", key}, args...),
			"-V", "5", "-d", "-i", "mtls-1", "-q", "1")
	}

	const badUser = "CONNACK (134)" // bad user name or password
	tests := []struct {
		name    string
		args    []string
		refusal string // "": connected (CONNACK 0)
		denied  bool   // PUBACK 135
	}{
		{"certificate sensor-7, own topic", withCert(good, goodKey, "-t", "sensors/sensor-7/t", "-m", "mine"), "", false},
		{"certificate sensor-7, other topic", withCert(good, goodKey, "-t", "sensors/other/t", "-m", "theirs"), "", true},
		{"certificate and the same user name", withCert(good, goodKey, "-u", "sensor-7", "-t", "sensors/sensor-7/u", "-m", "same"), "", false},
		{"certificate and another user name", withCert(good, goodKey, "-u", "s1", "-P", "pw1", "-t", "sensors/s1/t", "-m", "other user"), badUser, false},
		{"certificate without a common name", withCert(empty, emptyKey, "-t", "sensors/x/t", "-m", "empty"), badUser, false},
		{"certificate from another CA", withCert(stranger, strangerKey, "-t", "sensors/sensor-7/t", "-m", "stranger"), "alert unknown ca", false},
		{"no certificate, password", append(ca, "-V", "5", "-d", "-u", "s1", "-P", "pw1", "-q", "1", "-t", "sensors/s1/t", "-m", "password"), "", false},
		{"no certificate, anonymous", append(ca, "-V", "5", "-d", "-q", "1", "-t", "sensors/x/t", "-m", "anon"), badUser, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, ok := tlsClient(t, b, "mosquitto_pub", tt.args...)
			if tt.refusal != "" {
				if ok || !strings.Contains(out, tt.refusal) || strings.Contains(out, "CONNACK (0)") {
					t.Fatalf("exit 0 = %v, want refused with %q:\n%s", ok, tt.refusal, out)
				}
				return
			}
			if !strings.Contains(out, "CONNACK (0)") {
				t.Fatalf("not connected:\n%s", out)
			}
			if notAuthorized(out, "PUBACK") != tt.denied {
				t.Fatalf("PUBACK reason 135 = %v, want %v:\n%s", !tt.denied, tt.denied, out)
			}
		})
	}
	ev := events(t, l, "telemetry")
	got := map[string]string{}
	for _, e := range ev {
		got[e.Topic] = string(e.Payload)
	}
	want := map[string]string{"sensors/sensor-7/t": "mine", "sensors/sensor-7/u": "same", "sensors/s1/t": "password"}
	if len(got) != len(want) || len(ev) != len(want) {
		t.Fatalf("ingested %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("ingested %v, want %v", got, want)
		}
	}
}

// TestMutualTLSRequired refuses a client without a certificate, and takes
// the user name from the certificate's first DNS name with UsernameFrom
// "san".
func TestMutualTLSRequired(t *testing.T) {
	f := newTLSFiles(t)
	cert, key := f.ca.clientCert(t, f.dir, "san", "ignored-cn", "sensor-9.local", "alias.local")
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, func(c *broker.Config) {
		c.AllowAnonymous = true
		c.ACL = []broker.ACLRule{{User: "sensor-9.local", Publish: []string{"sensors/%u/#"}}}
		c.TLS = f.tlsConfig()
		c.TLS.ClientCAFile = f.ca.file
		c.TLS.RequireClientCert = true
		c.TLS.UsernameFrom = "san"
	})
	for _, v := range []string{"tlsv1.2", "tlsv1.3"} {
		out, ok := tlsClient(t, b, "mosquitto_pub", "--cafile", f.ca.file, "--tls-version", v, "-d", "-q", "1", "-t", "sensors/x", "-m", "no cert")
		if ok || strings.Contains(out, "CONNACK (0)") {
			t.Fatalf("%s without a client certificate accepted:\n%s", v, out)
		}
	}
	// crypto/tls too: TLS 1.2 fails in the handshake; TLS 1.3 completes
	// the client's side first, and the server's refusal arrives as an
	// alert on the first read.
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		pool := x509.NewCertPool()
		pool.AddCert(f.ca.cert)
		conn, err := tls.Dial("tcp", b.TLSAddr(), &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: v, MaxVersion: v})
		if err == nil {
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil || v == tls.VersionTLS13 && !strings.Contains(err.Error(), "certificate required") {
			t.Fatalf("%s without a client certificate: %v, want it refused", tls.VersionName(v), err)
		}
	}
	out, ok := tlsClient(t, b, "mosquitto_pub", "--cafile", f.ca.file, "--cert", cert, "--key", key, "-V", "5", "-d",
		"-q", "1", "-t", "sensors/sensor-9.local/t", "-m", "san")
	if !ok || notAuthorized(out, "PUBACK") {
		t.Fatalf("client certificate with DNS name sensor-9.local:\n%s", out)
	}
	out, _ = tlsClient(t, b, "mosquitto_pub", "--cafile", f.ca.file, "--cert", cert, "--key", key, "-V", "5", "-d",
		"-q", "1", "-t", "sensors/ignored-cn/t", "-m", "cn")
	if !notAuthorized(out, "PUBACK") {
		t.Fatalf("with UsernameFrom san the CN must not be the user name:\n%s", out)
	}
	if ev := events(t, l, "telemetry"); len(ev) != 1 || ev[0].Topic != "sensors/sensor-9.local/t" {
		t.Fatalf("ingested %+v", ev)
	}
}

// TestTLSReload replaces the broker's certificate on disk: ReloadTLS, and
// separately a handshake more than a second later, serve the new one,
// while a client connected before stays connected; a broken replacement
// keeps the old one in service.
func TestTLSReload(t *testing.T) {
	f := newTLSFiles(t)
	l := buffertest.MustOpen(t, buffer.Options{})
	logged := new(syncBuffer)
	b := start(t, l, func(c *broker.Config) {
		c.TLS = f.tlsConfig()
		c.Logger = slog.New(slog.NewTextHandler(logged, nil))
	})

	served := func() *x509.Certificate {
		t.Helper()
		c, _, err := dialTLS(t, b, f.ca, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if s := served(); s.SerialNumber.Cmp(f.serverCert.SerialNumber) != 0 {
		t.Fatalf("serving serial %v, want %v", s.SerialNumber, f.serverCert.SerialNumber)
	}

	// A client connected before any reload.
	pool := x509.NewCertPool()
	pool.AddCert(f.ca.cert)
	lost := make(chan error, 1)
	c := paho.NewClient(paho.NewClientOptions().AddBroker("ssl://" + b.TLSAddr()).SetClientID("long-lived").
		SetTLSConfig(&tls.Config{RootCAs: pool}).SetAutoReconnect(false).
		SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err }))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect over TLS: %v", tok.Error())
	}
	defer c.Disconnect(50)

	// ReloadTLS.
	second := f.ca.issue(t, &x509.Certificate{Subject: f.serverCert.Subject, DNSNames: f.serverCert.DNSNames,
		IPAddresses: f.serverCert.IPAddresses, ExtKeyUsage: f.serverCert.ExtKeyUsage,
		NotAfter: time.Now().Add(48 * time.Hour)}, f.cert, f.key)
	if err := b.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	if s := served(); s.SerialNumber.Cmp(second.SerialNumber) != 0 || !s.NotAfter.Equal(second.NotAfter) {
		t.Fatalf("after ReloadTLS serving serial %v, want %v", s.SerialNumber, second.SerialNumber)
	}

	// A broken replacement: ReloadTLS says so, naming the file, and the
	// current certificate stays.
	good, _ := os.ReadFile(f.cert)
	if err := os.WriteFile(f.cert, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.ReloadTLS(); err == nil || !strings.Contains(err.Error(), f.cert) {
		t.Fatalf("ReloadTLS of a broken certificate: %v, want an error naming %s", err, f.cert)
	}
	if s := served(); s.SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Fatalf("after a failed reload serving serial %v, want the previous %v", s.SerialNumber, second.SerialNumber)
	}
	// Broken differently, without ReloadTLS: handshakes go on until the
	// automatic check (at most once a second) has tried the file and
	// logged its failure, and all of them get the current certificate.
	if err := os.WriteFile(f.cert, []byte("-----BEGIN CERTIFICATE-----\nstill not base64\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logged.String(), "tls reload failed"); {
		if time.Now().After(deadline) {
			t.Fatalf("no automatic reload attempt logged:\n%s", logged.String())
		}
		if s := served(); s.SerialNumber.Cmp(second.SerialNumber) != 0 {
			t.Fatalf("with a broken certificate file serving serial %v, want the previous %v", s.SerialNumber, second.SerialNumber)
		}
		time.Sleep(50 * time.Millisecond) // polling: the check runs on a handshake a second after the last
	}
	if err := os.WriteFile(f.cert, good, 0o600); err != nil {
		t.Fatal(err)
	}

	// No ReloadTLS: the handshake after the files changed (and a second
	// passed since the last check) picks the new certificate up.
	third := f.ca.serverCert(t, f.cert, f.key)
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := served()
		if s.SerialNumber.Cmp(third.SerialNumber) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still serving serial %v, want %v after the files changed", s.SerialNumber, third.SerialNumber)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The client connected before all this is still connected and served.
	select {
	case err := <-lost:
		t.Fatalf("connected client lost its connection across reloads: %v", err)
	default:
	}
	if tok := c.Publish("sensors/after-reload", 1, false, "still here"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish on the connection made before the reloads: %v", tok.Error())
	}
}

// TestTLSConfigErrors checks New refuses a TLS configuration it cannot
// serve, naming the file at fault.
func TestTLSConfigErrors(t *testing.T) {
	f := newTLSFiles(t)
	other := filepath.Join(f.dir, "other")
	f.ca.serverCert(t, other+".crt", other+".key")
	garbage := filepath.Join(f.dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(f.dir, "missing.pem")
	tests := []struct {
		name string
		mod  func(*broker.TLSConfig)
		want string
	}{
		{"missing certificate", func(c *broker.TLSConfig) { c.CertFile = missing }, missing},
		{"missing key", func(c *broker.TLSConfig) { c.KeyFile = missing }, missing},
		{"garbage certificate", func(c *broker.TLSConfig) { c.CertFile = garbage }, garbage},
		{"key of another certificate", func(c *broker.TLSConfig) { c.KeyFile = other + ".key" }, other + ".key"},
		{"missing client CA file", func(c *broker.TLSConfig) { c.ClientCAFile = missing }, missing},
		{"garbage client CA file", func(c *broker.TLSConfig) { c.ClientCAFile = garbage }, garbage},
		{"client certificate required without CAs", func(c *broker.TLSConfig) { c.RequireClientCert = true }, "client CA"},
		{"user name from elsewhere", func(c *broker.TLSConfig) { c.UsernameFrom = "ou" }, `"ou"`},
		{"TLS 1.1", func(c *broker.TLSConfig) { c.MinVersion = tls.VersionTLS11 }, "minimum version"},
		{"no address", func(c *broker.TLSConfig) { c.Listen = "" }, "listen address"},
	}
	l := buffertest.MustOpen(t, buffer.Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := f.tlsConfig()
			tt.mod(c)
			b, err := broker.New(broker.Config{Listen: "127.0.0.1:0", TLS: c}, l)
			if err == nil {
				_ = b.Server().Close()
				t.Fatal("New accepted it")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want one naming %q", err, tt.want)
			}
		})
	}
	if _, err := broker.New(broker.Config{Listen: "127.0.0.1:0", TLS: &broker.TLSConfig{Listen: "256.0.0.1:1", CertFile: f.cert, KeyFile: f.key}}, l); !errors.Is(err, broker.ErrListen) || !strings.Contains(err.Error(), "broker.tls.listen 256.0.0.1:1: ") {
		t.Fatalf("New with an unusable TLS address: %v", err)
	}
}

// TestReconfigureTLS changes the TLS settings of a running broker, as
// `ferry reload` does: new certificate, key and client CA paths and
// UsernameFrom take effect for the next client (a crypto/tls client sees
// the new certificate's serial); what needs a restart, or files that do
// not load, are refused, naming the setting or file, with nothing changed.
// Before, Reconfigure re-read the old paths and said nothing.
func TestReconfigureTLS(t *testing.T) {
	f := newTLSFiles(t)
	dir := t.TempDir()
	newCert := f.ca.serverCert(t, filepath.Join(dir, "new.crt"), filepath.Join(dir, "new.key"))
	sanCert, sanKey := f.ca.clientCert(t, dir, "san", "cn-user", "san-user")
	otherCert, otherKey := f.otherCA.clientCert(t, dir, "other", "other-user")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	l := buffertest.MustOpen(t, buffer.Options{})
	base := func() broker.Config {
		tc := f.tlsConfig()
		tc.ClientCAFile = f.ca.file
		return broker.Config{
			AllowAnonymous: true,
			ACL:            []broker.ACLRule{{User: "*", Publish: []string{"sensors/%u/#"}}},
			Routes:         []broker.Route{{Topics: []string{"sensors/#"}, Stream: "telemetry"}},
			TLS:            tc,
		}
	}
	b := start(t, l, func(c *broker.Config) {
		bc := base()
		c.AllowAnonymous, c.ACL, c.Routes, c.TLS = bc.AllowAnonymous, bc.ACL, bc.Routes, bc.TLS
	})
	// The TLS listener's address, fixed: the configuration names it.
	listen := b.TLSAddr()
	cfg := func(mod func(*broker.TLSConfig)) broker.Config {
		c := base()
		c.TLS.Listen = "127.0.0.1:0" // as New was given it
		if mod != nil {
			mod(c.TLS)
		}
		return c
	}
	served := func() *x509.Certificate {
		t.Helper()
		c, _, err := dialTLS(t, b, f.ca, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// withClientCert returns the error of a TLS 1.2 handshake (which fails
	// at once for a certificate the server does not accept) presenting
	// cert whatever CAs the server asks for.
	withClientCert := func(cert, key string) error {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = dialTLS(t, b, f.ca, func(c *tls.Config) {
			c.MaxVersion = tls.VersionTLS12
			c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
		})
		return err
	}
	// publishAs publishes with client certificate cert to the topic of
	// user and reports whether the ACL let it (PUBACK without 135).
	publishAs := func(cert, key, user string) bool {
		t.Helper()
		out, ok := tlsClient(t, b, "mosquitto_pub", "--cafile", f.ca.file, "--cert", cert, "--key", key,
			"-V", "5", "-d", "-q", "1", "-t", "sensors/"+user+"/t", "-m", "x")
		if !ok && !notAuthorized(out, "PUBACK") || !strings.Contains(out, "CONNACK (0)") {
			t.Fatalf("mosquitto_pub with a client certificate:\n%s", out)
		}
		return !notAuthorized(out, "PUBACK")
	}

	oldSerial := f.serverCert.SerialNumber
	if s := served(); s.SerialNumber.Cmp(oldSerial) != 0 {
		t.Fatalf("serving serial %v, want %v", s.SerialNumber, oldSerial)
	}
	if !publishAs(sanCert, sanKey, "cn-user") {
		t.Fatal("UsernameFrom cn: the CN is not the user name")
	}
	if err := withClientCert(otherCert, otherKey); err == nil {
		t.Fatal("client certificate of another CA accepted")
	}

	refusals := []struct {
		name string
		mod  func(*broker.TLSConfig)
		want string
	}{
		{"missing certificate", func(c *broker.TLSConfig) { c.CertFile = filepath.Join(dir, "missing.crt") }, "missing.crt"},
		{"key of another certificate", func(c *broker.TLSConfig) { c.CertFile = filepath.Join(dir, "new.crt") }, "new.crt"},
		{"garbage client CA file", func(c *broker.TLSConfig) { c.ClientCAFile = garbage }, garbage},
		{"user name from elsewhere", func(c *broker.TLSConfig) { c.UsernameFrom = "ou" }, `"ou"`},
		{"client certificate required", func(c *broker.TLSConfig) { c.RequireClientCert = true }, "TLS.RequireClientCert"},
		{"TLS 1.3 only", func(c *broker.TLSConfig) { c.MinVersion = tls.VersionTLS13 }, "TLS.MinVersion"},
		{"listener moved", func(c *broker.TLSConfig) { c.Listen = "127.0.0.1:1" }, "TLS.Listen"},
	}
	for _, tt := range refusals {
		t.Run("refused: "+tt.name, func(t *testing.T) {
			c := cfg(tt.mod)
			checkErr := b.CheckReconfigure(c)
			err := b.Reconfigure(c)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Reconfigure: %v, want an error naming %s", err, tt.want)
			}
			if checkErr == nil || checkErr.Error() != err.Error() {
				t.Fatalf("CheckReconfigure: %v, want Reconfigure's %v", checkErr, err)
			}
			if strings.HasPrefix(tt.want, "TLS.") && !errors.Is(err, broker.ErrRestartRequired) {
				t.Fatalf("%v is not ErrRestartRequired", err)
			}
			if s := served(); s.SerialNumber.Cmp(oldSerial) != 0 {
				t.Fatalf("after a refused change serving serial %v, want the previous %v", s.SerialNumber, oldSerial)
			}
		})
	}
	if b.TLSAddr() != listen {
		t.Fatalf("TLS listener moved from %s to %s", listen, b.TLSAddr())
	}
	if !publishAs(sanCert, sanKey, "cn-user") {
		t.Fatal("after the refused changes the CN is no longer the user name")
	}

	// All that can change, at once: nothing is served from the old
	// files any more.
	if err := b.Reconfigure(cfg(func(c *broker.TLSConfig) {
		c.CertFile, c.KeyFile = filepath.Join(dir, "new.crt"), filepath.Join(dir, "new.key")
		c.ClientCAFile = f.otherCA.file
		c.UsernameFrom = "san"
	})); err != nil {
		t.Fatal(err)
	}
	if s := served(); s.SerialNumber.Cmp(newCert.SerialNumber) != 0 {
		t.Fatalf("after Reconfigure with new files serving serial %v, want the new %v", s.SerialNumber, newCert.SerialNumber)
	}
	if err := withClientCert(otherCert, otherKey); err != nil {
		t.Fatalf("client certificate of the new client CA: %v", err)
	}
	if err := withClientCert(sanCert, sanKey); err == nil {
		t.Fatal("client certificate of the old client CA still accepted")
	}
	// Back to the first CA, keeping "san": the certificate's DNS name is
	// the user name now.
	if err := b.Reconfigure(cfg(func(c *broker.TLSConfig) {
		c.CertFile, c.KeyFile = filepath.Join(dir, "new.crt"), filepath.Join(dir, "new.key")
		c.UsernameFrom = "san"
	})); err != nil {
		t.Fatal(err)
	}
	if !publishAs(sanCert, sanKey, "san-user") || publishAs(sanCert, sanKey, "cn-user") {
		t.Fatal("UsernameFrom san after Reconfigure: the DNS name is not the user name")
	}
	// The new files are the ones watched: a renewal of them is served.
	renewed := f.ca.serverCert(t, filepath.Join(dir, "new.crt"), filepath.Join(dir, "new.key"))
	if err := b.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	if s := served(); s.SerialNumber.Cmp(renewed.SerialNumber) != 0 {
		t.Fatalf("after renewing the new files serving serial %v, want %v", s.SerialNumber, renewed.SerialNumber)
	}
}
