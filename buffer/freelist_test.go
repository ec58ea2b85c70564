package buffer_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
)

// drained returns a buffer file whose 3,000 events were forwarded and
// deleted, leaving hundreds of free pages: its last commits left bbolt's
// freelist out of the file.
func drained(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "b.db")
	l := buffertest.MustOpenPath(t, path, buffer.Options{})
	for i := range 3000 {
		mustAppend(t, l, ev("s", i, 200))
	}
	if !buffer.FreelistInFile(path) {
		t.Fatal("a file holding its backlog has no freelist: opening it would read the whole backlog")
	}
	if err := l.Ack("s", buffer.DefaultConsumer, 3000); err != nil {
		t.Fatal(err)
	}
	// The backlog deleted, then a commit that leaves the freelist out.
	waitFor(t, func() bool { return l.Stats()[0].Events == 0 })
	mustAppend(t, l, ev("s", 3000, 200))
	l.Close()
	return path
}

func TestFreelistLeftOutAfterDrain(t *testing.T) {
	path := drained(t)
	if buffer.FreelistInFile(path) {
		t.Fatal("freelist still written by every commit after a drain")
	}
	// bbolt rebuilds it at open; the event kept and the offsets are intact.
	l := buffertest.MustOpenPath(t, path, buffer.Options{})
	if offs, _ := readAll(t, l, "s", 1); len(offs) != 1 || offs[0] != 3001 {
		t.Fatalf("after reopen: offsets %v, want 3001 only", offs)
	}
	mustAppend(t, l, ev("s", 3001, 200))
	l.Close() // buffertest checks every page
}

// A damaged file whose freelist bbolt must rebuild by walking its pages is
// reported as corrupt: bbolt's own walk runs in a goroutine where a bad
// page crashes the process (this test binary, before walkFile).
func TestDamagedFileWithoutFreelist(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, b []byte) []byte
	}{
		{"truncated", func(t *testing.T, b []byte) []byte { return b[:len(b)/4] }},
		{"pages zeroed", func(t *testing.T, b []byte) []byte {
			ps := 1024
			clear(b[2*ps:]) // every page after the two meta pages
			return b
		}},
	}
	tests = append(tests, struct {
		name   string
		damage func(t *testing.T, b []byte) []byte
	}{"a bucket pointing back at its parent's page", nil})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := drained(t)
			if tt.damage == nil {
				// A cycle: bbolt's cursors would descend forever.
				if ok, err := buffer.MakeCycle(path); err != nil || !ok {
					t.Fatalf("no cycle made: %v", err)
				}
				_, err := buffer.Open(path, buffer.Options{OnCorrupt: buffer.CorruptFail})
				if !errors.Is(err, buffer.ErrCorrupt) {
					t.Fatalf("open: %v, want ErrCorrupt", err)
				}
				return
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tt.damage(t, b), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = buffer.Open(path, buffer.Options{OnCorrupt: buffer.CorruptFail})
			if !errors.Is(err, buffer.ErrCorrupt) {
				t.Fatalf("open: %v, want ErrCorrupt", err)
			}
		})
	}
}
