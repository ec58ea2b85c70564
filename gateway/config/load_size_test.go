package config

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// TestLoadTooLarge: a configuration over MaxFileSize is refused with
// ErrTooLarge naming the file and its size, before it is read (the issue:
// a 10 MB file took 964 MB through `ferry check`); one at the cap loads.
func TestLoadTooLarge(t *testing.T) {
	const minimal = "gateway_id: gw\n"
	pad := func(size int) []byte { // a valid config of exactly size bytes
		b := []byte(minimal + "#" + strings.Repeat("x", size-len(minimal)-2) + "\n")
		if len(b) != size {
			t.Fatalf("pad: %d bytes, want %d", len(b), size)
		}
		return b
	}
	for _, tc := range []struct {
		name     string
		size     int
		tooLarge bool
	}{
		{"at the cap", MaxFileSize, false},
		{"one byte over", MaxFileSize + 1, true},
		{"26 MB", 26 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ferry.yaml")
			if err := os.WriteFile(path, pad(tc.size), 0o600); err != nil {
				t.Fatal(err)
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			before := ms.TotalAlloc
			_, err := Load(path)
			runtime.ReadMemStats(&ms)
			if !tc.tooLarge {
				if err != nil {
					t.Fatalf("Load of %d bytes: %v", tc.size, err)
				}
				return
			}
			if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), strconv.Itoa(tc.size)) {
				t.Fatalf("Load of %d bytes: %v; want ErrTooLarge naming %s and its size", tc.size, err, path)
			}
			if alloc := ms.TotalAlloc - before; alloc > 64<<10 {
				t.Fatalf("refusing a %d-byte file allocated %d bytes; want it refused unread", tc.size, alloc)
			}
			if _, err := LoadBytes(pad(tc.size), "x.yaml"); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("LoadBytes of %d bytes: %v; want ErrTooLarge", tc.size, err)
			}
		})
	}
}
