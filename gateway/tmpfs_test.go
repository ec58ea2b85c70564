package gateway_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// fillDisk writes zeros to a file in dir until its file system is full.
func fillDisk(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			t.Fatal(err)
		}
	}
	// A write smaller than a page may still fit; fill to the last byte.
	for {
		if _, err := f.Write(chunk[:1]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
}
