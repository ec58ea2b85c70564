//go:build unix

package config

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestLoadTooLargeUnsized: a file whose size stat does not tell (a FIFO)
// is read no further than the cap.
func TestLoadTooLargeUnsized(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		chunk := []byte("#" + strings.Repeat("x", 4094) + "\n")
		for range (4 * MaxFileSize) / len(chunk) {
			if _, err := f.Write(chunk); err != nil {
				done <- nil // the reader stopped at the cap and closed
				return
			}
		}
		done <- errors.New("the whole stream was read")
	}()
	_, err := Load(path)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "more than the "+strconv.Itoa(MaxFileSize)) {
		t.Fatalf("Load of an endless FIFO: %v; want ErrTooLarge", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
