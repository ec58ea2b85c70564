package buffertest

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// MustMountTmpfs mounts a tmpfs of size bytes on a fresh directory under
// t.TempDir, for tests that need a real filesystem to run full, and
// unmounts it when the test ends (after the Logs opened later are closed).
// Mounting needs root (CAP_SYS_ADMIN): without it the test is skipped with
// the reason, except under CI, where it fails: a CI run must not pass
// without the disk-full tests.
func MustMountTmpfs(t testing.TB, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		noMount(t, fmt.Sprintf("buffertest: mount -t tmpfs -o size=%d tmpfs %s: %v (needs root)", size, dir, err))
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			_ = unix.Unmount(dir, unix.MNT_DETACH)
			t.Errorf("buffertest: umount %s: %v", dir, err)
		}
	})
	return dir
}

// FreeBytes returns the bytes an unprivileged process may still write on
// the filesystem holding path.
func FreeBytes(t testing.TB, path string) uint64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatalf("buffertest: statfs %s: %v", path, err)
	}
	return uint64(st.Bavail) * uint64(st.Bsize)
}
