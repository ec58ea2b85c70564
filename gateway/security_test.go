package gateway_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/internal/keyring"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// TestEncryptionAtRest buffers readings with the cloud unreachable, with
// a retained message too, and checks that neither file of the data
// directory holds them in the clear; then that a wrong, missing or
// world-readable key stops start-up with a clear message, and that the
// right key reads everything back.
func TestEncryptionAtRest(t *testing.T) {
	pub := mqtttest.RequireClient(t, "mosquitto_pub")
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "buffer.key")
	id, err := keyring.Generate(keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	yaml, addr := testConfig(t, data, "tcp://127.0.0.1:1", "") // the cloud never answers
	withKey := func(path string) string {
		return yaml + "buffer:\n  encryption:\n    key_file: " + path + "\n"
	}
	const secret = "SECRET-READING-4217"

	g, err := gateway.New(loadConfig(t, withKey(keyFile)), nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := runUntilStopped(t, g)
	host, port, _ := strings.Cut(addr, ":")
	for _, args := range [][]string{
		{"-q", "1", "-t", "sensors/a", "-m", `{"v":"` + secret + `"}`},
		{"-q", "1", "-r", "-t", "sensors/retained", "-m", `{"v":"` + secret + `-retained"}`},
	} {
		if out, err := exec.Command(pub, append([]string{"-h", host, "-p", port, "-i", "enc-1"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", err, out)
		}
	}
	if n := g.Status().Streams[0].Events; n != 2 {
		t.Fatalf("buffered %d events, want 2", n)
	}
	stop()

	for _, f := range []string{"buffer.db", "sessions.db"} {
		b, err := os.ReadFile(filepath.Join(data, f))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(secret)) || bytes.Contains(b, []byte("sensors/a")) {
			t.Errorf("%s holds a payload or topic in the clear", f)
		}
	}
	auditLog, err := os.ReadFile(filepath.Join(data, "audit.log"))
	if err != nil || !bytes.Contains(auditLog, []byte(`"event":"key_loaded"`)) || !bytes.Contains(auditLog, []byte(id)) {
		t.Errorf("no key_loaded audit line naming key %s: %v\n%s", id, err, auditLog)
	}

	otherKey := filepath.Join(dir, "other.key")
	if _, err := keyring.Generate(otherKey, nil); err != nil {
		t.Fatal(err)
	}
	loose := filepath.Join(dir, "loose.key")
	b, _ := os.ReadFile(keyFile)
	if err := os.WriteFile(loose, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"wrong key", withKey(otherKey), []string{id, otherKey}},
		{"no key", yaml, []string{"encrypted", "buffer.encryption.key_file"}},
		{"missing key file", withKey(filepath.Join(dir, "nope.key")), []string{"buffer.encryption.key_file", "nope.key"}},
		{"readable by others", withKey(loose), []string{"0644", "chmod 600"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := gateway.New(loadConfig(t, tc.yaml), nil)
			if err == nil {
				g.Buffer().Close()
				t.Fatal("gateway started")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}

	// The right key reads both back; the retained message is delivered.
	g, err = gateway.New(loadConfig(t, withKey(keyFile)), nil)
	if err != nil {
		t.Fatalf("right key: %v", err)
	}
	stop = runUntilStopped(t, g)
	defer stop()
	if n := g.Status().Streams[0].Events; n != 2 {
		t.Fatalf("after a restart with the key: %d events, want 2", n)
	}
	sub := mqtttest.RequireClient(t, "mosquitto_sub")
	out, err := exec.Command(sub, "-h", host, "-p", port, "-t", "sensors/retained", "-C", "1", "-W", "5").CombinedOutput()
	if err != nil || !strings.Contains(string(out), secret+"-retained") {
		t.Fatalf("retained message after the restart: %v\n%s", err, out)
	}
}

// runUntilStopped runs g and returns a function that stops it and waits.
func runUntilStopped(t *testing.T, g *gateway.Gateway) (stop func()) {
	t.Helper()
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- g.Run(ctx) }()
	waitUntil(t, 5*time.Second, "the broker listening", func() bool { return g.BrokerAddr() != "" })
	stopped := false
	return func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
	}
}
