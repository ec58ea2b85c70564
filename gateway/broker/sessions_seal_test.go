package broker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/ferrygw/ferry/internal/keyring"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"go.etcd.io/bbolt"
)

// newRing makes a key file with one key in a temporary directory and
// loads it.
func newRing(t *testing.T) *keyring.Ring {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys")
	if _, err := keyring.Generate(path, rand.Reader); err != nil {
		t.Fatal(err)
	}
	r, err := keyring.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// secret is a payload that cannot be in the file by chance.
func secret(t *testing.T, what string) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return what + "-" + hex.EncodeToString(b)
}

// runBroker starts a broker for one phase of a test; stop closes it (and
// its session file) and waits.
func runBroker(t *testing.T, l broker.EventSink, cfg broker.Config) (b *broker.Broker, stop func()) {
	t.Helper()
	b, err := broker.New(cfg, l)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("broker run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return b, stop
}

// storedPayloads reads the session file directly and returns the payloads
// of its retained and in-flight messages, and its clients' will payloads.
func storedPayloads(t *testing.T, path string) map[string][]byte {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string][]byte{}
	err = db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("mochi")).ForEach(func(k, v []byte) error {
			switch key := string(k); {
			case strings.HasPrefix(key, storage.RetainedKey+"_"), strings.HasPrefix(key, storage.InflightKey+"_"):
				var m storage.Message
				if err := m.UnmarshalBinary(v); err != nil {
					return err
				}
				if len(m.Payload) > 0 {
					out[key] = m.Payload
				}
			case strings.HasPrefix(key, storage.ClientKey+"_"):
				var c storage.Client
				if err := c.UnmarshalBinary(v); err != nil {
					return err
				}
				if len(c.Will.Payload) > 0 {
					out[key+" will"] = c.Will.Payload
				}
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sub runs mosquitto_sub against addr and returns what it printed.
func sub(t *testing.T, addr string, args ...string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, mosquitto(t, "mosquitto_sub"), append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatal(err)
		}
	}
	return string(out)
}

func pub(t *testing.T, addr string, args ...string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command(mosquitto(t, "mosquitto_pub"), append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub %v: %v\n%s", args, err, out)
	}
}

// TestSealedSessions stores a retained message, a QoS 1 message queued for
// an offline persistent subscriber and that subscriber's will with Keys
// set: none of the payloads is in the session file, sealed or encoded, and
// after a restart with the same keys both messages arrive as published.
// Restarted with other keys (or none), the sealed payloads are dropped
// with a warning, never delivered as ciphertext.
func TestSealedSessions(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	keys := newRing(t)
	path := filepath.Join(t.TempDir(), "sessions.db")
	retained, queued, will := secret(t, "retained"), secret(t, "queued"), secret(t, "will")
	cfg := func(k *keyring.Ring, log *syncBuffer) broker.Config {
		c := broker.Config{Listen: "127.0.0.1:0", AllowAnonymous: true, SessionPath: path, Keys: k,
			Routes: []broker.Route{{Topics: []string{"sensors/#"}, Stream: "telemetry"}}}
		if log != nil {
			c.Logger = slog.New(slog.NewTextHandler(log, nil))
		}
		return c
	}
	durable := []string{"-V", "311", "-i", "durable", "-c", "-q", "1", "-t", "sensors/#"}

	b, stop := runBroker(t, l, cfg(keys, nil))
	sub(t, b.Addr(), append(durable, "-E", "--will-topic", "wills/durable", "--will-payload", will)...)
	pub(t, b.Addr(), "-q", "1", "-r", "-t", "state/door", "-m", retained)
	pub(t, b.Addr(), "-q", "1", "-t", "sensors/t", "-m", queued)
	stop()

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{retained, queued, will} {
		if bytes.Contains(raw, []byte(p)) || bytes.Contains(raw, []byte(base64.StdEncoding.EncodeToString([]byte(p)))) {
			t.Fatalf("session file holds %q in the clear (or base64)", p)
		}
	}
	stored := storedPayloads(t, path)
	if len(stored) != 3 {
		t.Fatalf("stored payloads %v, want a retained, a queued and a will one", stored)
	}
	for k, p := range stored {
		if !keyring.IsSealed(p) {
			t.Fatalf("%s: payload not sealed: %q", k, p)
		}
	}

	// Same keys: both arrive with their original payloads.
	b, stop = runBroker(t, l, cfg(keys, nil))
	if out := sub(t, b.Addr(), append(durable, "-C", "1", "-W", "5")...); strings.TrimSpace(out) != queued {
		t.Fatalf("queued message after restart: %q, want %q", out, queued)
	}
	if out := sub(t, b.Addr(), "-t", "state/#", "-C", "1", "-W", "5"); strings.TrimSpace(out) != retained {
		t.Fatalf("retained message after restart: %q, want %q", out, retained)
	}
	stop()

	// Other keys, then none: the retained message (still stored) is
	// dropped with a warning, not served as ciphertext.
	for name, k := range map[string]*keyring.Ring{"other keys": newRing(t), "no keys": nil} {
		t.Run(name, func(t *testing.T) {
			var log syncBuffer
			b, stop := runBroker(t, l, cfg(k, &log))
			defer stop()
			if out := sub(t, b.Addr(), "-t", "state/#", "-C", "1", "-W", "2"); strings.TrimSpace(out) != "Timed out" {
				t.Fatalf("retained message with %s: %q, want none (mosquitto_sub timing out)", name, out)
			}
			if !strings.Contains(log.String(), "sealed payloads that do not open are dropped") || !strings.Contains(log.String(), "retained") {
				t.Fatalf("no warning about the dropped payload:\n%s", log.String())
			}
		})
	}
}

// TestSealedSessionsClearBefore stores a retained message without keys,
// then restarts with keys: the clear payload passes through unchanged and
// is sealed when next written.
func TestSealedSessionsClearBefore(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	path := filepath.Join(t.TempDir(), "sessions.db")
	cfg := broker.Config{Listen: "127.0.0.1:0", AllowAnonymous: true, SessionPath: path}
	old := secret(t, "clear")

	b, stop := runBroker(t, l, cfg)
	pub(t, b.Addr(), "-q", "1", "-r", "-t", "state/old", "-m", old)
	stop()
	if p := storedPayloads(t, path); len(p) != 1 || keyring.IsSealed(p["RET_state/old"]) {
		t.Fatalf("without keys the payload is stored in the clear: %q", p)
	}

	cfg.Keys = newRing(t)
	b, stop = runBroker(t, l, cfg)
	if out := sub(t, b.Addr(), "-t", "state/#", "-C", "1", "-W", "5"); strings.TrimSpace(out) != old {
		t.Fatalf("clear retained message after turning keys on: %q, want %q", out, old)
	}
	fresh := secret(t, "fresh")
	pub(t, b.Addr(), "-q", "1", "-r", "-t", "state/old", "-m", fresh)
	stop()
	if p := storedPayloads(t, path); len(p) != 1 || !keyring.IsSealed(p["RET_state/old"]) {
		t.Fatalf("rewritten with keys, the payload must be sealed: %q", p)
	}
}
