//go:build unix

package buffer

import (
	"os"

	"golang.org/x/sys/unix"
)

func openStatFile(path string) (*os.File, error) { return os.Open(path) }

// fileFreeDisk returns the bytes an unprivileged process may still write
// on the filesystem of the open file f.
func fileFreeDisk(f *os.File) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
