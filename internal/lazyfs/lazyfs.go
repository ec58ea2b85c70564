//go:build linux && (amd64 || arm64)

package lazyfs

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// BlockSize is the unit lazyfs saves, restores and (in PowerCutRandom)
// loses unsynced data in: a page, as the kernel writes back.
const BlockSize = 4096

// Stats counts what went through a mount and what its power cut lost.
type Stats struct {
	Writes       int64 // WRITE requests
	BytesWritten int64
	SizeChanges  int64 // truncate, ftruncate, fallocate
	Fsyncs       int64 // fsync and fdatasync of files
	DirFsyncs    int64 // fsync of directories
	// FsyncsFailed counts fsyncs that did not happen: the caller was
	// SIGKILLed, or the power cut, during the SetSyncDelay, or a Fault
	// failed them.
	FsyncsFailed int64
	Creates      int64 // regular files created
	// ChangesFailed counts the requests that would have changed the
	// disk (writes, size changes, creations, name-space and attribute
	// changes, opens for writing) that a Fault's Write failed.
	ChangesFailed int64

	// What is not durable now: files with changes since their last fsync
	// (or created and not yet durable), and their modified blocks.
	UnsyncedFiles  int
	UnsyncedBlocks int64

	// The power cut (zero before it).
	Cut         bool
	CutFiles    int   // files rolled back (content or size)
	CutBytes    int64 // bytes the cut discarded: content changed back, plus size cut off (or the whole size of a removed file)
	CutBlocks   int64 // unsynced blocks lost
	CutKept     int64 // unsynced blocks that survived (PowerCutRandom only)
	CutRemoved  int   // created files removed (their creation was not durable)
	CutDetached bool  // the mount was busy (files open): detached lazily
}

// FS is a mounted lazyfs.
type FS struct {
	backing, mountpoint string
	server              *fuse.Server

	// op is held shared by every request that changes something, and
	// exclusively by PowerCut to stop them: after dead is set, they fail
	// with EIO.
	op   sync.RWMutex
	dead bool

	mu    sync.Mutex
	files map[uint64]*fileState // by the node's inode number

	umu       sync.Mutex
	unmounted bool

	smu   sync.Mutex
	stats Stats

	syncDelay atomic.Int64 // nanoseconds; see SetSyncDelay

	fault atomic.Pointer[Fault] // nil: none; set under op (exclusive)
}

// Fault is a storage fault that SetFault injects: the errors with which
// requests through the mount fail while it is set. A zero errno injects
// nothing.
type Fault struct {
	// Write fails every request that would change the disk: write,
	// truncate, ftruncate and other attribute changes, fallocate,
	// creating a file (open with O_CREAT, mknod), the name-space
	// operations (mkdir, rmdir, unlink, rename, link, symlink) and
	// xattr changes. An fsync of a file with changes not yet durable
	// fails with it too (they cannot be written out), as does that of
	// a directory with a created file not yet durable; an fsync with
	// nothing to write succeeds. With EROFS it also fails opening a file
	// for writing: this is a file system the kernel remounted read-only
	// after an I/O error (ext4's errors=remount-ro, the default of
	// Debian and Raspberry Pi OS for the root file system, what an SD
	// card going bad leads to). Reads, and mmap reads, go on working.
	Write syscall.Errno
	// Fsync fails every fsync and fdatasync of a file and every fsync of
	// a directory: a disk that cannot flush its cache (EIO). Writes go
	// on succeeding. A failed fsync makes nothing durable: what it
	// would have synced stays as it was, and a later PowerCut drops it
	// unless a later fsync succeeds. (The kernel of a real machine may
	// instead drop the dirty pages after a failed writeback and let a
	// retried fsync succeed; lazyfs keeps them, the optimistic model.)
	Fsync syscall.Errno
}

// SetFault injects f (Fault{} clears it) until the next SetFault: see
// Fault. A request that changes the disk and started before SetFault
// has ended when it returns; every request after that sees f. Counted in
// Stats as ChangesFailed and FsyncsFailed. PowerCut does not clear it,
// but a new Mount starts without a fault.
func (l *FS) SetFault(f Fault) {
	l.op.Lock()
	defer l.op.Unlock()
	if f == (Fault{}) {
		l.fault.Store(nil)
	} else {
		l.fault.Store(&f)
	}
}

// Fault returns the fault that SetFault injected (Fault{}: none).
func (l *FS) Fault() Fault {
	if f := l.fault.Load(); f != nil {
		return *f
	}
	return Fault{}
}

// fileState is what the disk held at the file's last fsync, as far as it
// differs from the backing file now.
type fileState struct {
	mu     sync.Mutex
	f      *os.File         // the backing file, lazyfs's own open file description
	synced int64            // size at the last fsync (or when lazyfs first saw the file)
	blocks map[int64][]byte // block → its content at the last fsync, up to synced; nil: wholly beyond synced
	// created: created through the mount, and neither the file nor
	// its directory (dir, an inode number) fsynced since.
	created bool
	dir     uint64
}

// Mount mounts a lazyfs view of the directory backing at mountpoint
// (created if missing). See the package documentation for what it keeps
// and loses.
func Mount(backing, mountpoint string) (*FS, error) {
	var err error
	if backing, err = filepath.Abs(backing); err != nil {
		return nil, err
	}
	if mountpoint, err = filepath.Abs(mountpoint); err != nil {
		return nil, err
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return nil, fmt.Errorf("lazyfs: no FUSE device: %w", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		return nil, fmt.Errorf("lazyfs: backing directory: %w", &os.PathError{Op: "stat", Path: backing, Err: err})
	}
	if err := os.MkdirAll(mountpoint, 0o755); err != nil {
		return nil, fmt.Errorf("lazyfs: %w", err)
	}
	l := &FS{backing: backing, mountpoint: mountpoint, files: make(map[uint64]*fileState)}
	rootData := &fs.LoopbackRoot{Path: backing, Dev: uint64(st.Dev)}
	root := &node{LoopbackNode: &fs.LoopbackNode{RootData: rootData}, lfs: l}
	rootData.RootNode = root
	timeout := time.Second
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName: "lazyfs:" + backing,
			Name:   "lazyfs",
			// mount(2) as root: no fusermount3 needed; other users fall
			// back to fusermount3 (Debian: fuse3).
			DirectMount: true,
			// Every write must come through lazyfs (no passthrough to
			// the backing file), write-through (no writeback cache).
			DisabledCapabilities: fuse.CAP_PASSTHROUGH | fuse.CAP_WRITEBACK_CACHE,
			Debug:                os.Getenv("LAZYFS_DEBUG") != "",
		},
		AttrTimeout:  &timeout,
		EntryTimeout: &timeout,
	}
	server, err := fs.Mount(mountpoint, root, opts)
	if err != nil {
		return nil, fmt.Errorf("lazyfs: mount %s: %w", mountpoint, err)
	}
	l.server = server
	return l, nil
}

// Backing returns the backing directory.
func (l *FS) Backing() string { return l.backing }

// Mountpoint returns where the file system is mounted.
func (l *FS) Mountpoint() string { return l.mountpoint }

// SetSyncDelay makes every fsync through the mount take d, as on a slow
// disk, so that a power cut often finds a writer waiting for its fsync
// with data written but not durable. A cut during the delay, or the death
// of the process waiting (the kernel interrupts its request), makes the
// fsync fail and not count: the data was not on disk yet.
func (l *FS) SetSyncDelay(d time.Duration) { l.syncDelay.Store(int64(d)) }

// Stats returns the counters.
func (l *FS) Stats() Stats {
	l.mu.Lock()
	var files int
	var blocks int64
	for _, st := range l.files {
		st.mu.Lock()
		if st.unsynced() {
			files++
		}
		blocks += int64(len(st.blocks))
		st.mu.Unlock()
	}
	l.mu.Unlock()
	l.smu.Lock()
	defer l.smu.Unlock()
	s := l.stats
	if !s.Cut {
		s.UnsyncedFiles, s.UnsyncedBlocks = files, blocks
	}
	return s
}

func (l *FS) count(f func(*Stats)) {
	l.smu.Lock()
	f(&l.stats)
	l.smu.Unlock()
}

// PowerCut cuts the power: from now on every change through the mount
// fails with EIO; the mount is unmounted (detached lazily if files are
// still open), which drops the kernel's page cache of it; and every file
// is rolled back to what it held at its last fsync, files whose creation
// was not durable are removed. Mount the backing directory again to see
// what survived. Call it after the writing process is dead. A second
// PowerCut, or one after Unmount, is an error.
func (l *FS) PowerCut() error { return l.cut(0, nil) }

// PowerCutRandom is PowerCut on a disk that wrote back part of the
// unsynced data before the power failed: each unsynced block survives with
// probability keep (else it is as at the last fsync), each file keeps its
// current size or its synced size, and a created file that was not yet
// durable survives, with probability keep. The choices follow from seed.
func (l *FS) PowerCutRandom(keep float64, seed uint64) error {
	return l.cut(keep, rand.New(rand.NewPCG(seed, 0x6c617a7966730a)))
}

func (l *FS) cut(keep float64, rng *rand.Rand) error {
	l.op.Lock()
	if l.dead {
		l.op.Unlock()
		return errors.New("lazyfs: power already cut or unmounted")
	}
	l.dead = true
	l.op.Unlock()

	detached, uerr := l.unmount()

	l.mu.Lock()
	files := l.files
	l.files = nil
	l.mu.Unlock()
	var cs Stats
	var errs []error
	if uerr != nil {
		errs = append(errs, uerr)
	}
	// In inode order, so a seed always makes the same choices.
	for _, ino := range slices.Sorted(maps.Keys(files)) {
		st := files[ino]
		st.mu.Lock()
		if err := st.rollback(keep, rng, &cs); err != nil {
			errs = append(errs, err)
		}
		if st.f != nil {
			_ = st.f.Close()
			st.f = nil
		}
		st.mu.Unlock()
	}
	l.count(func(s *Stats) {
		s.Cut = true
		s.UnsyncedFiles, s.UnsyncedBlocks = 0, 0
		s.CutFiles, s.CutBytes, s.CutBlocks, s.CutKept, s.CutRemoved = cs.CutFiles, cs.CutBytes, cs.CutBlocks, cs.CutKept, cs.CutRemoved
		s.CutDetached = detached
	})
	return errors.Join(errs...)
}

// Unmount unmounts cleanly: nothing is lost (umount syncs). If files are
// still open the mount is detached lazily and Unmount reports it. Unmount
// after PowerCut does nothing.
func (l *FS) Unmount() error {
	detached, err := l.unmount()
	l.op.Lock()
	wasDead := l.dead
	l.dead = true
	l.op.Unlock()
	if !wasDead {
		l.mu.Lock()
		for _, st := range l.files {
			st.mu.Lock()
			if st.f != nil {
				_ = st.f.Close()
				st.f = nil
			}
			st.mu.Unlock()
		}
		l.files = nil
		l.mu.Unlock()
	}
	if err == nil && detached {
		err = fmt.Errorf("lazyfs: %s was busy (files open): detached lazily", l.mountpoint)
	}
	return err
}

// unmount unmounts once; a busy mount is detached lazily (MNT_DETACH), so
// the mount point can be mounted again while the old files are still open.
func (l *FS) unmount() (detached bool, err error) {
	l.umu.Lock()
	defer l.umu.Unlock()
	if l.unmounted {
		return false, nil
	}
	if err = l.server.Unmount(); err == nil {
		l.unmounted = true
		return false, nil
	}
	derr := syscall.Unmount(l.mountpoint, syscall.MNT_DETACH)
	if derr != nil && errors.Is(derr, syscall.EPERM) {
		// Mounted by fusermount3 as a user.
		if out, ferr := exec.Command("fusermount3", "-u", "-z", l.mountpoint).CombinedOutput(); ferr == nil {
			derr = nil
		} else {
			derr = fmt.Errorf("%w; fusermount3 -u -z: %v: %s", derr, ferr, strings.TrimSpace(string(out)))
		}
	}
	if derr != nil {
		return false, fmt.Errorf("lazyfs: unmount %s: %w (lazy: %v)", l.mountpoint, err, derr)
	}
	l.unmounted = true
	return true, nil
}

// enter starts a request that changes something; it fails with EIO once
// the power is cut.
func (l *FS) enter() (release func(), errno syscall.Errno) {
	l.op.RLock()
	if l.dead {
		l.op.RUnlock()
		return nil, syscall.EIO
	}
	return l.op.RUnlock, 0
}

// change starts a request that changes the disk: as enter, and it fails
// with the Fault's Write errno while one is set.
func (l *FS) change() (release func(), errno syscall.Errno) {
	release, errno = l.enter()
	if errno != 0 {
		return nil, errno
	}
	if f := l.fault.Load(); f != nil && f.Write != 0 {
		release()
		l.count(func(s *Stats) { s.ChangesFailed++ })
		return nil, f.Write
	}
	return release, 0
}

// dirPending reports whether a file created in directory dir is not yet
// durable.
func (l *FS) dirPending(dir uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, st := range l.files {
		st.mu.Lock()
		pending := st.created && st.dir == dir
		st.mu.Unlock()
		if pending {
			return true
		}
	}
	return false
}

// state returns n's state, locked, with its backing file open.
func (l *FS) state(n *node) (*fileState, syscall.Errno) {
	ino := n.StableAttr().Ino
	l.mu.Lock()
	st := l.files[ino]
	if st == nil {
		st = &fileState{}
		l.files[ino] = st
	}
	l.mu.Unlock()
	st.mu.Lock()
	if st.f == nil {
		f, err := os.OpenFile(n.backingPath(), os.O_RDWR, 0)
		if err != nil {
			st.mu.Unlock()
			return nil, fs.ToErrno(err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			st.mu.Unlock()
			return nil, fs.ToErrno(err)
		}
		st.f, st.synced = f, fi.Size()
	}
	return st, 0
}

// created records that n was just created, at path, in directory dir:
// empty and not durable.
func (l *FS) created(n *node, path string, dir uint64) syscall.Errno {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fs.ToErrno(err)
	}
	st := &fileState{f: f, created: true, dir: dir}
	ino := n.StableAttr().Ino
	l.mu.Lock()
	old := l.files[ino]
	l.files[ino] = st
	l.mu.Unlock()
	if old != nil {
		old.mu.Lock()
		if old.f != nil {
			old.f.Close()
			old.f = nil
		}
		old.mu.Unlock()
	}
	l.count(func(s *Stats) { s.Creates++ })
	return 0
}

// dirSynced makes the creation of the files created in directory dir
// durable.
func (l *FS) dirSynced(dir uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, st := range l.files {
		st.mu.Lock()
		if st.created && st.dir == dir {
			st.created = false
		}
		st.mu.Unlock()
	}
}

func (st *fileState) size() (int64, error) {
	fi, err := st.f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// unsynced reports whether the file has changes that are not durable.
func (st *fileState) unsynced() bool {
	return st.created || len(st.blocks) > 0 || st.sizeChanged()
}

func (st *fileState) sizeChanged() bool {
	if st.f == nil {
		return false
	}
	sz, err := st.size()
	return err == nil && sz != st.synced
}

// save records the before-image of every block overlapping [from, to) that
// is not saved yet: its content at the last fsync, which is still what the
// backing file holds there (any earlier change since would have saved it).
func (st *fileState) save(from, to int64) error {
	if from < 0 {
		from = 0
	}
	if to <= from {
		return nil
	}
	if st.blocks == nil {
		st.blocks = make(map[int64][]byte)
	}
	for b := from / BlockSize; b*BlockSize < to; b++ {
		if _, ok := st.blocks[b]; ok {
			continue
		}
		off := b * BlockSize
		if off >= st.synced {
			st.blocks[b] = nil
			continue
		}
		img := make([]byte, min(BlockSize, st.synced-off))
		n, err := st.f.ReadAt(img, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		clear(img[n:])
		st.blocks[b] = img
	}
	return nil
}

// resize changes the size, saving what a shrink cuts off.
func (st *fileState) resize(size int64) error {
	cur, err := st.size()
	if err != nil {
		return err
	}
	if size < cur {
		if err := st.save(size, min(cur, st.synced)); err != nil {
			return err
		}
	}
	return st.f.Truncate(size)
}

// fsynced makes the file's content, size and creation durable.
func (st *fileState) fsynced() error {
	sz, err := st.size()
	if err != nil {
		return err
	}
	st.synced, st.blocks, st.created = sz, nil, false
	return nil
}

// rollback puts the file back as it was at its last fsync (or, with rng,
// a random mix of that and now); cs counts what that discarded.
func (st *fileState) rollback(keep float64, rng *rand.Rand, cs *Stats) error {
	if st.f == nil {
		return nil
	}
	survives := func() bool { return rng != nil && rng.Float64() < keep }
	cur, err := st.size()
	if err != nil {
		return err
	}
	if st.created && !survives() {
		cs.CutRemoved++
		cs.CutBytes += cur
		cs.CutBlocks += int64(len(st.blocks))
		p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", st.f.Fd()))
		if err != nil {
			return fmt.Errorf("lazyfs: name of a created file: %w", err)
		}
		if strings.HasSuffix(p, " (deleted)") {
			return nil
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("lazyfs: removing a created file: %w", err)
		}
		return nil
	}
	if len(st.blocks) == 0 && cur == st.synced {
		return nil
	}
	cs.CutFiles++
	final := st.synced
	if survives() {
		final = cur
	}
	if final != cur {
		if err := st.f.Truncate(final); err != nil {
			return err
		}
		if cur > final {
			cs.CutBytes += cur - final
		}
	}
	buf := make([]byte, BlockSize)
	was := make([]byte, BlockSize)
	for _, b := range slices.Sorted(maps.Keys(st.blocks)) {
		if survives() {
			cs.CutKept++
			continue
		}
		cs.CutBlocks++
		off := b * BlockSize
		if off >= final {
			continue // cut off by the size
		}
		n := min(BlockSize, final-off)
		clear(buf)
		copy(buf, st.blocks[b]) // zeros beyond the synced size
		m, err := st.f.ReadAt(was[:n], off)
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		for i := range n {
			if i >= int64(m) || was[i] != buf[i] {
				cs.CutBytes++
			}
		}
		if _, err := st.f.WriteAt(buf[:n], off); err != nil {
			return err
		}
	}
	return nil
}
