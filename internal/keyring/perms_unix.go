//go:build unix

package keyring

import (
	"os"
	"syscall"
)

// checkPerms refuses a key file that group or others may access in any way
// (even write access lets them swap in a key of their own) or that another
// user owns (that user could loosen the mode at any time). Root is no
// exception: root's key file must be root's.
func checkPerms(path string, fi os.FileInfo) error {
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return errorf(ErrKeyFilePerms, "%s has mode %04o: it must not be readable or writable by group or others (chmod 600 %s)", path, m, path)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if euid := os.Geteuid(); int(st.Uid) != euid {
		return errorf(ErrKeyFilePerms, "%s is owned by uid %d, but ferry runs as uid %d: the file must belong to the user that runs ferry (chown %d %s)", path, st.Uid, euid, euid, path)
	}
	return nil
}
