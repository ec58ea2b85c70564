package lazyfs

import (
	"errors"
	"os"
	"testing"
)

// MountForTest mounts backing at mountpoint for t and unmounts it when the
// test ends. When FUSE cannot be mounted here (no /dev/fuse, not root and
// no fusermount3, no permission to mount) it skips t, naming the reason;
// under CI=true it fails t instead, since CI provides what is needed.
func MountForTest(t testing.TB, backing, mountpoint string) *FS {
	t.Helper()
	f, err := Mount(backing, mountpoint)
	if err != nil {
		if errors.Is(err, errors.ErrUnsupported) {
			// Not this platform: there is nothing CI could install.
			t.Skipf("%v", err)
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("lazyfs: cannot mount FUSE, which CI must provide (/dev/fuse, run as root): %v", err)
		}
		t.Skipf("lazyfs: cannot mount FUSE here (needs /dev/fuse and root, or fusermount3 from Debian's fuse3): %v", err)
	}
	t.Cleanup(func() {
		if err := f.Unmount(); err != nil {
			t.Errorf("lazyfs: %v", err)
		}
	})
	return f
}

// RemountForTest mounts the same backing directory and mount point again
// after a PowerCut (or Unmount) of f, for t, unmounting it when the test
// ends. A failure to mount again fails t: the first mount worked.
func RemountForTest(t testing.TB, f *FS) *FS {
	t.Helper()
	g, err := Mount(f.Backing(), f.Mountpoint())
	if err != nil {
		t.Fatalf("lazyfs: mount again: %v", err)
	}
	t.Cleanup(func() {
		if err := g.Unmount(); err != nil {
			t.Errorf("lazyfs: %v", err)
		}
	})
	return g
}
