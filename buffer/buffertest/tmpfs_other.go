//go:build !linux

package buffertest

import (
	"runtime"
	"testing"
)

// MustMountTmpfs needs Linux: elsewhere it skips the test, or fails it
// under CI.
func MustMountTmpfs(t testing.TB, size int64) string {
	t.Helper()
	noMount(t, "buffertest: tmpfs mounts need Linux, not "+runtime.GOOS)
	return ""
}

// FreeBytes is not implemented outside Linux.
func FreeBytes(t testing.TB, path string) uint64 {
	t.Helper()
	t.Fatalf("buffertest: FreeBytes needs Linux")
	return 0
}
