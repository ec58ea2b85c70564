package wire

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/ferrygw/ferry/uplink"
)

// TestWireSize is `make bench-wire` (WIRE_PERIODS=360, an hour of
// readings, the table printed with -v) and, in `make test`, a quick run
// (6 periods) that checks every form end to end through Mosquitto over TCP
// and TLS and that the compressed SenML-CBOR form stays within its
// measured size.
func TestWireSize(t *testing.T) {
	periods := 6
	if v := os.Getenv("WIRE_PERIODS"); v != "" {
		var err error
		if periods, err = strconv.Atoi(v); err != nil || periods < 1 {
			t.Fatalf("WIRE_PERIODS=%q: want a positive number", v)
		}
	}
	mqtttest.RequireMosquitto(t)
	dir := t.TempDir()
	caPool, certFile, keyFile := writeTestCA(t, dir)
	tlsPort := mqtttest.FreePort(t)
	extra := fmt.Sprintf("listener %d 127.0.0.1\ncertfile %s\nkeyfile %s\n", tlsPort, certFile, keyFile)
	if os.Geteuid() == 0 {
		// Mosquitto run as root drops to user mosquitto, who cannot read
		// the test's private temp directory.
		extra += "user root\n"
	}
	b := mqtttest.StartWith(t, mqtttest.Options{Extra: extra})
	cfg := Config{
		Broker:    b.Addr,
		TLSBroker: net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort)),
		TLS:       &tls.Config{RootCAs: caPool, ServerName: "localhost", MinVersion: tls.VersionTLS12},
		Periods:   periods,
		Sensors:   10,
		Period:    10 * time.Second,
		Seed:      16,
		Start:     time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC),
		GatewayID: "gw-0042",
		Topic:     "{gateway_id}/{stream}",
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	var rs []Result
	for _, c := range Cases {
		for _, transport := range []string{"tcp", "tls"} {
			r, err := Run(context.Background(), cfg, c, transport)
			if err != nil {
				t.Fatalf("%s over %s: %v", c.Name, transport, err)
			}
			rs = append(rs, r)
		}
	}
	windows := []int{1, 3, 6, 30}
	var ws []Result
	for _, c := range Cases {
		if c.Batch <= 1 || c.Compression != uplink.CompressionZstd {
			continue
		}
		for _, k := range windows {
			wcfg := cfg
			wcfg.Window = k
			wcfg.Periods = max(periods, 2*k)
			r, err := Run(context.Background(), wcfg, c, "tls")
			if err != nil {
				t.Fatalf("%s over tls, window %d: %v", c.Name, k, err)
			}
			ws = append(ws, r)
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "%d periods of %d sensors × %d quantities every %v, batched per period\n\n", periods, cfg.Sensors, Quantities, cfg.Period)
	WriteTable(&out, rs)
	fmt.Fprintf(&out, "\nBy batch window (uplink.batch.max_delay), bytes per reading over TLS:\n\n")
	WriteWindowTable(&out, ws, windows, cfg.Period.String())
	t.Log("\n" + out.String())
	// The measured figures (README, "Wire size") with a margin: a change
	// that grows the frugal form fails here. Per 10 s the per-message
	// costs keep it above the 6 bytes; from 30 s it is below.
	for _, r := range append(rs, ws...) {
		if r.Case.Format != uplink.FormatSenMLCBOR || r.Case.Compression != uplink.CompressionZstd || r.Transport != "tls" {
			continue
		}
		// Loose enough for qemu (ARM CI): how events fall into batches
		// there follows its timing (ARM64 under qemu measured 7.4 where
		// this machine measures 5.8 at 3 periods); tight enough that a
		// form growing by half fails.
		limit := map[int]float64{1: 16, 3: 9}[r.Window]
		if got := r.PerReading(); limit > 0 && got > limit {
			t.Errorf("SenML-CBOR + zstd over TLS, batch per %d periods: %.1f bytes per reading, want at most %.0f", r.Window, got, limit)
		}
	}
}

// TestBudgetCountsTheWire compares what the uplink's data budget counts
// (uplink/budget.go: each publish's MQTT packet, its PUBACK and TLS
// records) with what a proxy carried for the same readings, connection
// set-up excluded, for each message form over TCP and TLS.
func TestBudgetCountsTheWire(t *testing.T) {
	mqtttest.RequireMosquitto(t)
	dir := t.TempDir()
	caPool, certFile, keyFile := writeTestCA(t, dir)
	tlsPort := mqtttest.FreePort(t)
	extra := fmt.Sprintf("listener %d 127.0.0.1\ncertfile %s\nkeyfile %s\n", tlsPort, certFile, keyFile)
	if os.Geteuid() == 0 {
		extra += "user root\n"
	}
	b := mqtttest.StartWith(t, mqtttest.Options{Extra: extra})
	cfg := Config{
		Broker:    b.Addr,
		TLSBroker: net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort)),
		TLS:       &tls.Config{RootCAs: caPool, ServerName: "localhost", MinVersion: tls.VersionTLS12},
		Periods:   6,
		Sensors:   10,
		Period:    10 * time.Second,
		Seed:      16,
		Start:     time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC),
		GatewayID: "gw-0042",
		Topic:     "{gateway_id}/{stream}",
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Budget:    true,
	}
	for _, c := range Cases {
		for _, transport := range []string{"tcp", "tls"} {
			r, err := Run(context.Background(), cfg, c, transport)
			if err != nil {
				t.Fatalf("%s over %s: %v", c.Name, transport, err)
			}
			wire := r.Up + r.Down
			diff := float64(r.Budget-wire) / float64(wire) * 100
			t.Logf("%-26s %s: %3d messages, wire %6d B, budget counted %6d B (%+.2f%%)", c.Name, transport, r.Messages, wire, r.Budget, diff)
			// The estimate leaves out nothing a publish costs. Go's TLS
			// sends the first records after an idle second small (dynamic
			// record sizing): a message of a few kB then takes two or
			// three records, 22 bytes each, which the budget does not
			// count; on a slow machine (qemu) that happens more often.
			// The proxy also carries what the budget leaves out, such as
			// a ping. Measured here: exact, or 0.13% short.
			if diff < -3 || diff > 1 {
				t.Errorf("%s over %s: budget counted %d bytes, the wire carried %d (%+.2f%%)", c.Name, transport, r.Budget, wire, diff)
			}
		}
	}
}

// writeTestCA writes a CA and a server certificate for localhost and
// 127.0.0.1 signed by it; it returns the CA as a pool and the server's
// certificate and key files.
func writeTestCA(t *testing.T, dir string) (*x509.CertPool, string, string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ferry bench-wire CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	write := func(path, typ string, b []byte) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(certFile, "CERTIFICATE", der)
	write(keyFile, "EC PRIVATE KEY", keyDER)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, certFile, keyFile
}
