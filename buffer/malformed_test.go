package buffer_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/event"
	"go.etcd.io/bbolt"
)

// TestMalformedEventKey: a key that is not an 8-byte offset in an events
// bucket (what a power cut without fsync left in a CI run, and Read then
// panicked on) is skipped by Read and removed by Open after an unclean
// stop, with the stream's metadata recounted.
func TestMalformedEventKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	ctx := context.Background()
	write := func() {
		l, err := buffer.Open(path, buffer.Options{})
		if err != nil {
			t.Fatal(err)
		}
		run, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- l.Run(run) }()
		for _, p := range []string{"a", "b", "c"} {
			if err := l.Append(ctx, &event.Event{Stream: "s", Topic: "t", Payload: []byte(p)}); err != nil {
				t.Fatal(err)
			}
		}
		stop()
		<-done
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	damage := func() {
		db, err := bbolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket([]byte("streams")).Bucket([]byte("s")).Bucket([]byte("ev")).Put([]byte{0, 0, 0, 0, 0, 0, 2}, []byte("junk"))
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	read := func(l *buffer.Log) []string {
		var got []string
		if _, err := l.Read("s", 1, 100, func(_ uint64, ev *event.Event) error {
			got = append(got, string(ev.Payload))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}

	write()
	damage()
	t.Run("clean stop: read skips it", func(t *testing.T) {
		l, err := buffer.Open(path, buffer.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if got := read(l); len(got) != 3 {
			t.Fatalf("read %q, want the 3 events", got)
		}
	})
	t.Run("unclean stop: open removes it", func(t *testing.T) {
		if err := os.WriteFile(path+".state", []byte("running A nosync\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := buffer.Open(path, buffer.Options{BootID: "B"})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if got := read(l); len(got) != 3 {
			t.Fatalf("read %q, want the 3 events", got)
		}
		if err := l.Check(); err != nil {
			t.Fatalf("check after the repair: %v", err)
		}
		for _, s := range l.Stats() {
			if s.Name == "s" && s.Events != 3 {
				t.Fatalf("stream s counts %d events, want 3", s.Events)
			}
		}
	})
}
