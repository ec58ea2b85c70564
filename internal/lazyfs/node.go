//go:build linux && (amd64 || arm64)

package lazyfs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// node is go-fuse's loopback node, with the requests that change a file's
// content or size (and those that create files) recorded in its FS, and
// every change refused once the power is cut.
type node struct {
	*fs.LoopbackNode
	lfs *FS
}

var (
	_ fs.NodeWrapChilder     = (*node)(nil)
	_ fs.NodeOpener          = (*node)(nil)
	_ fs.NodeCreater         = (*node)(nil)
	_ fs.NodeSetattrer       = (*node)(nil)
	_ fs.NodeFsyncer         = (*node)(nil)
	_ fs.NodeOpendirHandler  = (*node)(nil)
	_ fs.NodeCopyFileRanger  = (*node)(nil)
	_ fs.NodeTmpfiler        = (*node)(nil)
	_ fs.NodeMknoder         = (*node)(nil)
	_ fs.NodeMkdirer         = (*node)(nil)
	_ fs.NodeUnlinker        = (*node)(nil)
	_ fs.NodeRmdirer         = (*node)(nil)
	_ fs.NodeRenamer         = (*node)(nil)
	_ fs.NodeLinker          = (*node)(nil)
	_ fs.NodeSymlinker       = (*node)(nil)
	_ fs.NodeSetxattrer      = (*node)(nil)
	_ fs.NodeRemovexattrer   = (*node)(nil)
	_ fs.FileWriter          = (*file)(nil)
	_ fs.FileWritever        = (*file)(nil)
	_ fs.FileAllocater       = (*file)(nil)
	_ fs.FileSetattrer       = (*file)(nil)
	_ fs.FileFsyncer         = (*file)(nil)
	_ fs.FilePassthroughFder = (*file)(nil)
	_ fs.FileIoctler         = (*file)(nil)
	_ fs.FileFsyncdirer      = (*dirHandle)(nil)
)

// WrapChild makes every node of the tree a lazyfs node.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	if ln, ok := ops.(*fs.LoopbackNode); ok {
		return &node{LoopbackNode: ln, lfs: n.lfs}
	}
	return ops
}

func (n *node) backingPath() string {
	return filepath.Join(n.RootData.Path, n.Path(nil))
}

func (n *node) ino() uint64 { return n.StableAttr().Ino }

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	writable := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	if f := n.lfs.fault.Load(); writable && f != nil && f.Write == syscall.EROFS {
		// A read-only file system refuses to open a file for writing.
		n.lfs.count(func(s *Stats) { s.ChangesFailed++ })
		return nil, 0, syscall.EROFS
	}
	trunc := flags&syscall.O_TRUNC != 0 && writable
	if trunc {
		// The kernel sends a SETATTR for O_TRUNC (go-fuse does not ask
		// for atomic O_TRUNC); should one come here anyway, record it.
		release, errno := n.lfs.change()
		if errno != 0 {
			return nil, 0, errno
		}
		defer release()
	}
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags&^syscall.O_TRUNC)
	if errno != 0 {
		return nil, 0, errno
	}
	if trunc {
		st, errno := n.lfs.state(n)
		if errno != 0 {
			releaseHandle(ctx, fh)
			return nil, 0, errno
		}
		err := st.resize(0)
		st.mu.Unlock()
		if err != nil {
			releaseHandle(ctx, fh)
			return nil, 0, fs.ToErrno(err)
		}
		n.lfs.count(func(s *Stats) { s.SizeChanges++ })
	}
	wf := wrapFile(fh, n)
	if wf == nil {
		releaseHandle(ctx, fh)
		return nil, 0, syscall.EIO
	}
	return wf, fuseFlags &^ fuse.FOPEN_DIRECT_IO, 0
}

func releaseHandle(ctx context.Context, fh fs.FileHandle) {
	if r, ok := fh.(fs.FileReleaser); ok {
		r.Release(ctx)
	}
}

func wrapFile(fh fs.FileHandle, n *node) fs.FileHandle {
	if lf, ok := fh.(*fs.LoopbackFile); ok {
		return &file{LoopbackFile: lf, n: n}
	}
	// Not a loopback file: go-fuse changed; refuse rather than let
	// writes through unrecorded.
	return nil
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	release, errno := n.lfs.change()
	if errno != 0 {
		return nil, nil, 0, errno
	}
	defer release()
	p := filepath.Join(n.backingPath(), name)
	_, err := os.Lstat(p)
	existed := err == nil
	ch, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	cn, ok := ch.Operations().(*node)
	if !ok {
		releaseHandle(ctx, fh)
		return nil, nil, 0, syscall.EIO
	}
	if !existed {
		if errno := n.lfs.created(cn, p, n.ino()); errno != 0 {
			releaseHandle(ctx, fh)
			return nil, nil, 0, errno
		}
	}
	wf := wrapFile(fh, cn)
	if wf == nil {
		releaseHandle(ctx, fh)
		return nil, nil, 0, syscall.EIO
	}
	return ch, wf, fuseFlags &^ fuse.FOPEN_DIRECT_IO, 0
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	release, errno := n.lfs.change()
	if errno != 0 {
		return nil, errno
	}
	defer release()
	ch, errno := n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
	if errno != 0 {
		return nil, errno
	}
	if mode&syscall.S_IFMT == syscall.S_IFREG || mode&syscall.S_IFMT == 0 {
		if cn, ok := ch.Operations().(*node); ok {
			if errno := n.lfs.created(cn, filepath.Join(n.backingPath(), name), n.ino()); errno != 0 {
				return nil, errno
			}
		}
	}
	return ch, 0
}

// Tmpfile is refused: a file named only by its descriptor is not tracked.
func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EOPNOTSUPP
}

// CopyFileRange is refused, so the kernel (or the program) copies with
// read and write, which are recorded.
func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut uint64, size uint64, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	release, errno := n.lfs.change()
	if errno != 0 {
		return errno
	}
	defer release()
	if sz, ok := in.GetSize(); ok {
		if n.IsDir() {
			return syscall.EISDIR
		}
		st, errno := n.lfs.state(n)
		if errno != 0 {
			return errno
		}
		err := st.resize(int64(sz))
		st.mu.Unlock()
		if err != nil {
			return fs.ToErrno(err)
		}
		n.lfs.count(func(s *Stats) { s.SizeChanges++ })
		in2 := *in
		in2.Valid &^= fuse.FATTR_SIZE
		in = &in2
	}
	if wf, ok := f.(*file); ok {
		f = wf.LoopbackFile
	}
	return n.LoopbackNode.Setattr(ctx, f, in, out)
}

// Fsync (FUSE FSYNC, and FSYNCDIR through dirHandle) makes a file durable,
// or the creation of the files created in a directory. It is not forwarded
// to the backing file system. A Fault fails it (see Fault): then nothing
// becomes durable.
func (n *node) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	if d := n.lfs.syncDelay.Load(); d > 0 {
		// Before enter: a cut meanwhile fails the fsync. So does the
		// death of the caller: in a test, a SIGKILL stands for the
		// instant the power went out. Other signals (Go's preemption
		// sends SIGURG) also interrupt the request; the fsync goes on.
		if !sleepUnlessKilled(ctx, time.Duration(d)) {
			n.lfs.count(func(s *Stats) { s.FsyncsFailed++ })
			return syscall.EIO // nobody is waiting for the answer
		}
	}
	release, errno := n.lfs.enter()
	if errno != 0 {
		n.lfs.count(func(s *Stats) { s.FsyncsFailed++ })
		return errno
	}
	defer release()
	failed := func(errno syscall.Errno) syscall.Errno {
		n.lfs.count(func(s *Stats) { s.FsyncsFailed++ })
		return errno
	}
	fault := n.lfs.fault.Load()
	if fault != nil && fault.Fsync != 0 {
		return failed(fault.Fsync)
	}
	if n.IsDir() {
		if fault != nil && fault.Write != 0 && n.lfs.dirPending(n.ino()) {
			return failed(fault.Write)
		}
		n.lfs.dirSynced(n.ino())
		n.lfs.count(func(s *Stats) { s.DirFsyncs++ })
		return 0
	}
	st, errno := n.lfs.state(n)
	if errno != 0 {
		return errno
	}
	if fault != nil && fault.Write != 0 && st.unsynced() {
		st.mu.Unlock()
		return failed(fault.Write)
	}
	err := st.fsynced()
	st.mu.Unlock()
	if err != nil {
		return fs.ToErrno(err)
	}
	n.lfs.count(func(s *Stats) { s.Fsyncs++ })
	return 0
}

// dirStream is what go-fuse's loopback directory handle offers.
type dirStream interface {
	fs.DirStream
	fs.FileReaddirenter
	fs.FileReleasedirer
	fs.FileSeekdirer
}

// dirHandle is a loopback directory handle whose FSYNCDIR lazyfs records.
type dirHandle struct {
	dirStream
	n *node
}

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return d.n.Fsync(ctx, nil, flags)
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	ds, ok := fh.(dirStream)
	if !ok {
		if r, ok := fh.(fs.FileReleasedirer); ok {
			r.Releasedir(ctx, 0)
		}
		return nil, 0, syscall.EIO
	}
	return &dirHandle{dirStream: ds, n: n}, fuseFlags, 0
}

// The name-space operations pass through (durable at once), refused after
// the cut.

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	release, errno := n.lfs.change()
	if errno != 0 {
		return nil, errno
	}
	defer release()
	return n.LoopbackNode.Mkdir(ctx, name, mode, out)
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	release, errno := n.lfs.change()
	if errno != 0 {
		return errno
	}
	defer release()
	return n.LoopbackNode.Unlink(ctx, name)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	release, errno := n.lfs.change()
	if errno != 0 {
		return errno
	}
	defer release()
	return n.LoopbackNode.Rmdir(ctx, name)
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	release, errno := n.lfs.change()
	if errno != 0 {
		return errno
	}
	defer release()
	return n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	release, errno := n.lfs.change()
	if errno != 0 {
		return nil, errno
	}
	defer release()
	return n.LoopbackNode.Link(ctx, target, name, out)
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	release, errno := n.lfs.change()
	if errno != 0 {
		return nil, errno
	}
	defer release()
	return n.LoopbackNode.Symlink(ctx, target, name, out)
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	release, errno := n.lfs.change()
	if errno != 0 {
		return errno
	}
	defer release()
	return n.LoopbackNode.Setxattr(ctx, attr, data, flags)
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	release, errno := n.lfs.change()
	if errno != 0 {
		return errno
	}
	defer release()
	return n.LoopbackNode.Removexattr(ctx, attr)
}

// file is a loopback file handle whose writes, size changes and fsyncs
// lazyfs records. Reads, seeks, locks and attributes pass through.
type file struct {
	*fs.LoopbackFile
	n *node
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	release, errno := f.n.lfs.change()
	if errno != 0 {
		if errno == f.n.lfs.Fault().Write {
			// The kernel copied data into its page cache before it
			// sent the WRITE, and keeps it there when the WRITE
			// fails (the page no longer up to date, but still mapped
			// by whoever mmaps the file). Drop those pages, so that
			// readers read the file again: as soon as the kernel
			// unlocks them, after this reply.
			go f.n.NotifyContent(off, int64(len(data)))
		}
		return 0, errno
	}
	defer release()
	st, errno := f.n.lfs.state(f.n)
	if errno != 0 {
		return 0, errno
	}
	defer st.mu.Unlock()
	if err := st.save(off, off+int64(len(data))); err != nil {
		return 0, fs.ToErrno(err)
	}
	w, errno := f.LoopbackFile.Write(ctx, data, off)
	f.n.lfs.count(func(s *Stats) {
		s.Writes++
		s.BytesWritten += int64(w)
	})
	return w, errno
}

func (f *file) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	return f.Write(ctx, bytes.Join(data, nil), off)
}

func (f *file) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	release, errno := f.n.lfs.change()
	if errno != 0 {
		return errno
	}
	defer release()
	st, errno := f.n.lfs.state(f.n)
	if errno != 0 {
		return errno
	}
	defer st.mu.Unlock()
	var err error
	switch {
	case mode&(unix.FALLOC_FL_COLLAPSE_RANGE|unix.FALLOC_FL_INSERT_RANGE) != 0:
		// Moves everything after off.
		var cur int64
		if cur, err = st.size(); err == nil {
			err = st.save(int64(off), max(cur, st.synced))
		}
	case mode&(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_ZERO_RANGE) != 0:
		err = st.save(int64(off), int64(off+size))
	}
	if err != nil {
		return fs.ToErrno(err)
	}
	f.n.lfs.count(func(s *Stats) { s.SizeChanges++ })
	return f.LoopbackFile.Allocate(ctx, off, size, mode)
}

func (f *file) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.n.Setattr(ctx, f, in, out)
}

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return f.n.Fsync(ctx, f, flags)
}

// PassthroughFd refuses FUSE passthrough: the kernel would write to the
// backing file without lazyfs seeing it.
func (f *file) PassthroughFd() (int, bool) { return -1, false }

// Ioctl is refused: some change a file's content (FICLONE, ...).
func (f *file) Ioctl(ctx context.Context, cmd uint32, arg uint64, input []byte, output []byte) (int32, syscall.Errno) {
	return 0, syscall.ENOTTY
}

// sleepUnlessKilled waits d, unless the caller of the request in ctx gets
// SIGKILL meanwhile (the kernel interrupts the request when the caller
// gets any signal): then it returns false at once.
func sleepUnlessKilled(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		if c, ok := fuse.FromContext(ctx); ok && killed(c.Pid) {
			return false
		}
		<-t.C // interrupted by another signal: wait out the delay
	}
	return true
}

// killed reports whether thread tid is gone or has SIGKILL pending (it
// waits for this request to end before it exits).
func killed(tid uint32) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return true
	}
	const sigkill = 1 << (syscall.SIGKILL - 1)
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "SigPnd" && k != "ShdPnd") {
			continue
		}
		if mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil && mask&sigkill != 0 {
			return true
		}
	}
	return false
}
