package buffer_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/internal/keyring"
	bolt "go.etcd.io/bbolt"
)

const (
	secretPayload = "SECRET-PAYLOAD-1234"
	secretTopic   = "sensors/SECRET-TOPIC-5678"
	secretState   = "SECRET-STATE-9012"
)

// secretEvent is event i of the encryption tests: every field that says
// something about the sensor carries a marker a grep of the file finds.
func secretEvent(stream string, i int) *event.Event {
	return &event.Event{Stream: stream, Source: "SECRET-SOURCE", Topic: secretTopic,
		Payload: []byte(secretPayload + "-" + string(rune('a'+i))), ID: event.ID{1, byte(i)}}
}

// loadKeys loads the key file at path.
func loadKeys(t *testing.T, path string) *keyring.Ring {
	t.Helper()
	r, err := keyring.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// lastKeyOnly writes a key file holding only the active key of the file
// at from: the ring after the older keys were removed.
func lastKeyOnly(t *testing.T, from string) *keyring.Ring {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	path := filepath.Join(t.TempDir(), "only-last.key")
	if err := os.WriteFile(path, []byte(lines[len(lines)-1]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return loadKeys(t, path)
}

// rawValues returns the stored values of stream's events and of every
// state entry, read from the file with bbolt itself (the log closed).
func rawValues(t *testing.T, path, stream string) (events [][]byte, state map[string][]byte) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	state = map[string][]byte{}
	err = db.View(func(tx *bolt.Tx) error {
		if sb := tx.Bucket([]byte("streams")).Bucket([]byte(stream)); sb != nil {
			_ = sb.Bucket([]byte("ev")).ForEach(func(k, v []byte) error {
				events = append(events, bytes.Clone(v))
				return nil
			})
		}
		if b := tx.Bucket([]byte("state")); b != nil {
			_ = b.ForEach(func(k, v []byte) error {
				state[string(k)] = bytes.Clone(v)
				return nil
			})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return events, state
}

// corruptValue flips one byte in the middle of the stored event at off.
func corruptValue(t *testing.T, path, stream string, off uint64) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("streams")).Bucket([]byte(stream)).Bucket([]byte("ev"))
		k := []byte{0, 0, 0, 0, 0, 0, 0, byte(off)}
		v := bytes.Clone(b.Get(k))
		v[len(v)/2] ^= 0x01
		return b.Put(k, v)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func writeSecrets(t *testing.T, l *buffertest.Log, stream string, n int) {
	t.Helper()
	for i := 0; i < n-1; i++ {
		mustAppend(t, l, secretEvent(stream, i))
	}
	// The last one and the state through Tx, the pipelines' path.
	err := l.Update(context.Background(), func(tx *buffer.Tx) error {
		if err := tx.Append(secretEvent(stream, n-1)); err != nil {
			return err
		}
		return tx.PutState("pipeline/p", []byte(secretState))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestEncryptedAtRest greps the closed file for what was appended: with
// keys nothing is found, without keys everything is (so the grep can
// fail), and the events and state read back after a reopen.
func TestEncryptedAtRest(t *testing.T) {
	for _, tt := range []struct {
		name    string
		keys    bool
		visible bool
	}{{"keys", true, false}, {"no keys", false, true}} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "b.db")
			var opts buffer.Options
			if tt.keys {
				opts.Keys = buffertest.MustKeys(t)
			}
			l := buffertest.MustOpenPath(t, path, opts)
			writeSecrets(t, l, "raw", 5)
			if st := statsOf(l, "raw"); st.Oldest.IsZero() || st.Events != 5 {
				t.Errorf("stats: %+v", st)
			}
			l.Close()

			file, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, secret := range []string{secretPayload, secretTopic, "SECRET-SOURCE", secretState} {
				if got := bytes.Contains(file, []byte(secret)); got != tt.visible {
					t.Errorf("%q in the file: %v, want %v", secret, got, tt.visible)
				}
			}
			events, state := rawValues(t, path, "raw")
			for i, v := range append(events, state["pipeline/p"]) {
				if keyring.IsSealed(v) != tt.keys {
					t.Errorf("value %d sealed: %v, want %v", i, keyring.IsSealed(v), tt.keys)
				}
			}

			l = buffertest.MustOpenPath(t, path, opts)
			_, payloads := readAll(t, l, "raw", 0)
			if len(payloads) != 5 || payloads[0] != secretPayload+"-a" || payloads[4] != secretPayload+"-e" {
				t.Fatalf("read back %q", payloads)
			}
			if got, err := l.State("pipeline/p"); err != nil || string(got) != secretState {
				t.Fatalf("state read back %q, %v", got, err)
			}
			if got, err := l.State("absent"); got != nil || err != nil {
				t.Fatalf("absent state: %q, %v", got, err)
			}
		})
	}
}

// TestWrongKey reopens an encrypted buffer with another key file and with
// none: Open refuses with ErrWrongKey naming the key, the stream and the
// key file, and leaves the file as it is (no quarantine): the right key
// still opens it.
func TestWrongKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "b.db")
	keys := buffertest.MustKeys(t)
	l := buffertest.MustOpenPath(t, path, buffer.Options{Keys: keys})
	writeSecrets(t, l, "raw", 3)
	l.Close()

	other := buffertest.MustKeys(t)
	for _, tt := range []struct {
		name string
		keys *keyring.Ring
		msg  []string
	}{
		{"another key file", other, []string{`stream "raw"`, keys.ActiveID(), other.Path()}},
		{"no key file", nil, []string{`stream "raw"`, keys.ActiveID(), "configure buffer.encryption.key_file"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, policy := range []buffer.CorruptPolicy{buffer.CorruptQuarantine, buffer.CorruptFail} {
				bl, err := buffer.Open(path, buffer.Options{Keys: tt.keys, OnCorrupt: policy})
				if err == nil {
					bl.Close()
					t.Fatal("Open succeeded")
				}
				if !errors.Is(err, buffer.ErrWrongKey) || errors.Is(err, buffer.ErrCorrupt) {
					t.Fatalf("Open: %v; want ErrWrongKey, not ErrCorrupt", err)
				}
				for _, s := range tt.msg {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("message %q does not name %q", err, s)
					}
				}
			}
			if left, _ := filepath.Glob(path + ".corrupt-*"); len(left) > 0 {
				t.Fatalf("file quarantined: %v", left)
			}
		})
	}
	l = buffertest.MustOpenPath(t, path, buffer.Options{Keys: keys})
	if offs, _ := readAll(t, l, "raw", 0); len(offs) != 3 {
		t.Fatalf("the right key reads %d events, want 3", len(offs))
	}
}

// TestWrongKeyState: state alone, sealed with another key, is refused too.
func TestWrongKeyState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	keys := buffertest.MustKeys(t)
	l := buffertest.MustOpenPath(t, path, buffer.Options{Keys: keys})
	if err := l.Update(context.Background(), func(tx *buffer.Tx) error {
		return tx.PutState("driver/pulses", []byte("42"))
	}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	file, _ := os.ReadFile(path)
	if !bytes.Contains(file, []byte("driver/pulses")) {
		t.Fatal("the state's name is not in the file: the grep below proves nothing")
	}
	for _, k := range []*keyring.Ring{buffertest.MustKeys(t), nil} {
		_, err := buffer.Open(path, buffer.Options{Keys: k})
		if !errors.Is(err, buffer.ErrWrongKey) || !strings.Contains(err.Error(), `state "driver/pulses"`) || !strings.Contains(err.Error(), keys.ActiveID()) {
			t.Fatalf("Open: %v; want ErrWrongKey naming the state and key %s", err, keys.ActiveID())
		}
	}
}

// TestKeyRotation: events sealed with key A stay readable after B is
// added; a ring with B alone is refused while A's events are buffered, and
// accepted once they are acknowledged.
func TestKeyRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	keyFile := filepath.Join(t.TempDir(), "buffer.key")
	idA, err := keyring.Generate(keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := buffertest.MustOpenPath(t, path, buffer.Options{Keys: loadKeys(t, keyFile)})
	for i := 0; i < 3; i++ {
		mustAppend(t, l, secretEvent("raw", i))
	}
	l.Close()

	idB, err := keyring.Generate(keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	both := loadKeys(t, keyFile)
	l = buffertest.MustOpenPath(t, path, buffer.Options{Keys: both})
	for i := 3; i < 6; i++ {
		mustAppend(t, l, secretEvent("raw", i))
	}
	offs, payloads := readAll(t, l, "raw", 0)
	if len(offs) != 6 || offs[0] != 1 || offs[5] != 6 || payloads[0] != secretPayload+"-a" || payloads[5] != secretPayload+"-f" {
		t.Fatalf("read %v %q", offs, payloads)
	}
	l.Close()
	events, _ := rawValues(t, path, "raw")
	for i, v := range events {
		want := idA
		if i >= 3 {
			want = idB
		}
		if id, _ := keyring.KeyID(v); id != want {
			t.Errorf("event %d sealed with %q, want %s", i+1, id, want)
		}
	}

	onlyB := lastKeyOnly(t, keyFile)
	if onlyB.ActiveID() != idB || len(onlyB.IDs()) != 1 {
		t.Fatalf("ring of B: %v", onlyB.IDs())
	}
	_, err = buffer.Open(path, buffer.Options{Keys: onlyB})
	if !errors.Is(err, buffer.ErrWrongKey) || !strings.Contains(err.Error(), idA) {
		t.Fatalf("B alone with A's events buffered: %v; want ErrWrongKey naming %s", err, idA)
	}

	l = buffertest.MustOpenPath(t, path, buffer.Options{Keys: both})
	if err := l.Ack("raw", buffer.DefaultConsumer, 3); err != nil {
		t.Fatal(err)
	}
	l.Close() // the commit loop applies the pending ack before it stops

	l = buffertest.MustOpenPath(t, path, buffer.Options{Keys: onlyB})
	offs, payloads = readAll(t, l, "raw", 0)
	if len(offs) != 3 || offs[0] != 4 || payloads[2] != secretPayload+"-f" {
		t.Fatalf("B alone after the ack reads %v %q", offs, payloads)
	}
}

// TestReadStopsAtUnknownKey: a key missing from the middle of the ring is
// not visible at Open (which looks at the oldest and newest events); Read
// must stop there with ErrWrongKey, not skip the events as unreadable
// (the uplink would ack past them and they would be deleted).
func TestReadStopsAtUnknownKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	keyFile := filepath.Join(t.TempDir(), "buffer.key")
	var lines []string
	for k := 0; k < 3; k++ { // keys A, B, C: two events each
		if _, err := keyring.Generate(keyFile, nil); err != nil {
			t.Fatal(err)
		}
		l := buffertest.MustOpenPath(t, path, buffer.Options{Keys: loadKeys(t, keyFile)})
		mustAppend(t, l, secretEvent("raw", 2*k))
		mustAppend(t, l, secretEvent("raw", 2*k+1))
		l.Close()
		data, _ := os.ReadFile(keyFile)
		all := strings.Split(strings.TrimSpace(string(data)), "\n")
		lines = append(lines, all[len(all)-1])
	}
	noB := filepath.Join(t.TempDir(), "no-b.key")
	if err := os.WriteFile(noB, []byte(lines[0]+"\n"+lines[2]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := buffertest.MustOpenPath(t, path, buffer.Options{Keys: loadKeys(t, noB)})
	var got []uint64
	next, err := l.Read("raw", 1, 100, func(off uint64, _ *event.Event) error {
		got = append(got, off)
		return nil
	})
	if !errors.Is(err, buffer.ErrWrongKey) || next != 3 || len(got) != 2 {
		t.Fatalf("Read = %d, %v after %v; want ErrWrongKey at offset 3 after [1 2]", next, err, got)
	}
}

// TestDamagedSealedRecord: a sealed event that fails authentication is
// corruption of one record, not a wrong key: Open succeeds and Read skips
// it, as it skips any record that does not decode.
func TestDamagedSealedRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	keys := buffertest.MustKeys(t)
	l := buffertest.MustOpenPath(t, path, buffer.Options{Keys: keys})
	for i := 0; i < 3; i++ {
		mustAppend(t, l, secretEvent("raw", i))
	}
	l.Close()
	corruptValue(t, path, "raw", 1) // the oldest, the one Open looks at
	corruptValue(t, path, "raw", 2)
	l = buffertest.MustOpenPath(t, path, buffer.Options{Keys: keys})
	offs, _ := readAll(t, l, "raw", 0)
	if len(offs) != 1 || offs[0] != 3 {
		t.Fatalf("read %v, want [3]", offs)
	}
}

// TestPlaintextThenEncrypted turns encryption on for a buffer written in
// the clear: the old events are still read, new ones are sealed, and the
// state is sealed at Open. Turning it off again is refused.
func TestPlaintextThenEncrypted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	l := buffertest.MustOpenPath(t, path, buffer.Options{})
	writeSecrets(t, l, "raw", 2)
	l.Close()

	keys := buffertest.MustKeys(t)
	l = buffertest.MustOpenPath(t, path, buffer.Options{Keys: keys})
	for i := 2; i < 4; i++ {
		mustAppend(t, l, secretEvent("raw", i))
	}
	_, payloads := readAll(t, l, "raw", 0)
	if len(payloads) != 4 || payloads[0] != secretPayload+"-a" || payloads[3] != secretPayload+"-d" {
		t.Fatalf("read %q", payloads)
	}
	if got, err := l.State("pipeline/p"); err != nil || string(got) != secretState {
		t.Fatalf("state %q, %v", got, err)
	}
	l.Close()
	events, state := rawValues(t, path, "raw")
	for i, v := range events {
		if keyring.IsSealed(v) != (i >= 2) {
			t.Errorf("event %d sealed: %v, want %v", i+1, keyring.IsSealed(v), i >= 2)
		}
	}
	if v := state["pipeline/p"]; !keyring.IsSealed(v) {
		t.Errorf("state written in the clear is still in the clear after an Open with keys: %q", v)
	}

	_, err := buffer.Open(path, buffer.Options{})
	if !errors.Is(err, buffer.ErrWrongKey) {
		t.Fatalf("Open without keys: %v; want ErrWrongKey", err)
	}
}

// TestStateResealedAfterRotation: state is re-sealed with the active key
// at Open, so a state entry nobody rewrites does not keep an old key
// needed.
func TestStateResealedAfterRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	keyFile := filepath.Join(t.TempDir(), "buffer.key")
	if _, err := keyring.Generate(keyFile, nil); err != nil {
		t.Fatal(err)
	}
	l := buffertest.MustOpenPath(t, path, buffer.Options{Keys: loadKeys(t, keyFile)})
	if err := l.Update(context.Background(), func(tx *buffer.Tx) error {
		return tx.PutState("pipeline/gone", []byte(secretState))
	}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := keyring.Generate(keyFile, nil); err != nil {
		t.Fatal(err)
	}
	l = buffertest.MustOpenPath(t, path, buffer.Options{Keys: loadKeys(t, keyFile)})
	l.Close()
	onlyB := lastKeyOnly(t, keyFile)
	l = buffertest.MustOpenPath(t, path, buffer.Options{Keys: onlyB})
	if got, err := l.State("pipeline/gone"); err != nil || string(got) != secretState {
		t.Fatalf("state with the new key alone: %q, %v", got, err)
	}
}

func TestPutStateReservedByte(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	err := l.Update(context.Background(), func(tx *buffer.Tx) error {
		return tx.PutState("x", []byte{keyring.Marker, 1, 2})
	})
	if err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("PutState of a value starting with the marker: %v", err)
	}
}

// TestTTLSealed: the TTL sweep reads the accept time of sealed events.
func TestTTLSealed(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l := buffertest.MustOpen(t, buffer.Options{
		Keys: buffertest.MustKeys(t), Now: clock, SweepInterval: 5 * time.Millisecond,
		Streams: []buffer.StreamConfig{{Name: "s", TTL: time.Hour}},
	})
	for i := 0; i < 3; i++ {
		mustAppend(t, l, ev("s", i, 1))
	}
	mu.Lock()
	now = now.Add(30 * time.Minute)
	mu.Unlock()
	mustAppend(t, l, ev("s", 3, 1))
	mu.Lock()
	now = now.Add(45 * time.Minute)
	mu.Unlock()
	waitFor(t, func() bool { return statsOf(l, "s").Events == 1 })
	if st := statsOf(l, "s"); st.Drops[buffer.DropExpired] != 3 || st.First != 4 || st.Oldest.IsZero() {
		t.Fatalf("after TTL: %+v", st)
	}
}
