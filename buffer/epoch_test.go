package buffer_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	bolt "go.etcd.io/bbolt"
)

var epochRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// TestEpoch: a new file gets an epoch from Options.Rand, keeps it across
// reopens, and the empty file that replaces a quarantined one gets a new
// one.
func TestEpoch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	l := buffertest.MustOpenPath(t, path, buffer.Options{Rand: bytes.NewReader([]byte{1, 2, 3, 4, 5, 6, 7, 0xab})})
	if got := l.Epoch(); got != "01020304050607ab" {
		t.Fatalf("epoch of a new file = %q, want 01020304050607ab (from Options.Rand)", got)
	}
	mustAppend(t, l, ev("s", 1, 10))
	l.Close()

	// Reopened: the same epoch; Rand is not read (it is empty).
	l = buffertest.MustOpenPath(t, path, buffer.Options{Rand: bytes.NewReader(nil)})
	if got := l.Epoch(); got != "01020304050607ab" {
		t.Fatalf("epoch after reopen = %q, want the file's 01020304050607ab", got)
	}
	l.Close()

	// The meta pages zeroed: quarantined, and the new file's epoch is new.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	clear(data[:8192])
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	l = buffertest.MustOpenPath(t, path, buffer.Options{Rand: bytes.NewReader([]byte{0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10})})
	if l.Quarantined() == "" {
		t.Fatal("file with zeroed meta pages not quarantined")
	}
	if got := l.Epoch(); got != "fedcba9876543210" {
		t.Fatalf("epoch of the file replacing a quarantined one = %q, want fedcba9876543210", got)
	}
}

// TestEpochNoRandomness: a new file whose epoch cannot be drawn is not
// opened, and the error does not call the file corrupt (nothing is
// quarantined).
func TestEpochNoRandomness(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	_, err := buffer.Open(path, buffer.Options{Rand: bytes.NewReader([]byte{1, 2})})
	if err == nil || errors.Is(err, buffer.ErrCorrupt) {
		t.Fatalf("Open with 2 bytes of randomness: %v, want an error that is not ErrCorrupt", err)
	}
	if q, _ := filepath.Glob(path + ".corrupt-*"); len(q) > 0 {
		t.Fatalf("quarantined %v", q)
	}
}

// TestEpochRandom: without Options.Rand, epochs come from crypto/rand:
// 16 lowercase hex digits, different per file.
func TestEpochRandom(t *testing.T) {
	a := buffertest.MustOpen(t, buffer.Options{}).Epoch()
	b := buffertest.MustOpen(t, buffer.Options{}).Epoch()
	if !epochRE.MatchString(a) || !epochRE.MatchString(b) || a == b {
		t.Fatalf("epochs %q and %q: want two different 16-hex-digit ids", a, b)
	}
}

// TestEpochOfOlderFile: a file written before epochs gets one at its
// first open and keeps it; its events are untouched.
func TestEpochOfOlderFile(t *testing.T) {
	l, path := openFixture(t, fixtureOptions())
	e := l.Epoch()
	if !epochRE.MatchString(e) {
		t.Fatalf("epoch %q", e)
	}
	l.Close()
	// The fixture has no meta bucket of its own: the epoch was added.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	var stored []byte
	_ = db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte("meta")); b != nil {
			stored = bytes.Clone(b.Get([]byte("epoch")))
		}
		return nil
	})
	_ = db.Close()
	if len(stored) != 8 {
		t.Fatalf("epoch in the file: %x", stored)
	}
	l = buffertest.MustOpenPath(t, path, fixtureOptions())
	if got := l.Epoch(); got != e {
		t.Fatalf("epoch after reopen %q, want %q", got, e)
	}
	if st := statsOf(l, "telemetry"); st.Events != 10 {
		t.Fatalf("telemetry holds %d events, want 10", st.Events)
	}
}
