//go:build unix

package gateway

import "golang.org/x/sys/unix"

// statFileSystem measures the file system holding path with statfs(2).
func statFileSystem(path string) (FSUsage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return FSUsage{}, err
	}
	bs := uint64(st.Bsize)
	// Blocks reserved for root (Bfree - Bavail) are never ferry's.
	return FSUsage{Size: (uint64(st.Blocks) - uint64(st.Bfree) + uint64(st.Bavail)) * bs, Free: uint64(st.Bavail) * bs}, nil
}
