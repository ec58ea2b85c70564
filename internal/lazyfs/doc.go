// Package lazyfs is a test-only FUSE file system that loses what was not
// synced when the power is "cut", the method of LazyFS (the file system
// Jepsen uses to test fsync). A SIGKILL leaves the kernel's page cache
// intact, so it never tests an fsync; a power cut through lazyfs does.
//
// Mount(backing, mountpoint) mounts a pass-through view of the directory
// backing at mountpoint (github.com/hanwen/go-fuse/v2, on its loopback
// node). Every write goes to the backing file at once, so reads, mmap and
// other processes see it as on any file system; in addition lazyfs records,
// per file, what the disk held at the file's last fsync: the before-image of
// every 4 KiB block modified since then, saved before its first
// modification, and the file's size. FS.PowerCut rolls every file back to
// that state and unmounts, which drops the kernel's page cache of the mount;
// the next Mount of the same backing directory shows what a machine would
// find after the power came back.
//
// # Guarantees (the model of the disk)
//
//   - fsync and fdatasync of a file (FUSE FSYNC; also msync and O_SYNC or
//     O_DSYNC writes, which the kernel turns into FSYNC) make its content
//     and size durable: nothing written before them is lost by a cut.
//     fdatasync is treated as fsync.
//   - Anything written after a file's last fsync is lost by PowerCut: data
//     written with write, pwrite, writev or through a shared writable mmap
//     comes back as it was at the fsync, the size (grown by writes,
//     truncate, ftruncate or fallocate, or shrunk by truncate) comes back
//     too, and bytes punched or zeroed by fallocate return. Blocks are
//     restored whole, so a block is never half old and half new.
//   - PowerCutRandom models a disk that wrote back an arbitrary subset of
//     the unsynced data before the power failed, in any order: each
//     unsynced 4 KiB block independently survives with the given
//     probability (or comes back as it was at the last fsync, zeros beyond
//     the old size), and each file's size is either its synced or its
//     current size. Synced data is never lost.
//   - A regular file created through the mount (open with O_CREAT, mknod)
//     survives a cut only if it, or its directory (FSYNCDIR), was fsynced
//     after it was created; otherwise PowerCut removes it. Counting the
//     file's own fsync is what ext4, XFS and btrfs do (their journal commit
//     carries the new directory entry); POSIX alone would require the
//     directory's fsync. The directory that counts is the one the file
//     was created in (a rename before the sync is not followed).
//   - Other name-space operations (mkdir, rmdir, unlink, rename, link,
//     symlink) and attribute changes (chmod, chown, utimes, xattrs) are
//     durable at once, as if the directory had been synced: lazyfs does not
//     undo them. A file renamed over, or unlinked, is gone; writes to an
//     unlinked but still open file do not matter.
//   - Unmount is a clean shutdown (umount syncs): nothing is lost.
//
// fsync through the mount is recorded, not forwarded to the backing file
// system: the backing directory is the simulated disk, and its own
// durability is not what is tested (this keeps fsync-heavy tests fast).
// sync(2) and syncfs(2) do not reach a FUSE file system and make nothing
// durable. O_TMPFILE, copy_file_range (the kernel falls back to read and
// write) and ioctls on files are refused, and files are opened without
// FUSE passthrough, so every write is seen. The page cache is used as on
// any FUSE mount without direct_io: mmap works (bbolt reads its file that
// way) and stays coherent with writes through the mount, which are
// write-through (no writeback cache).
//
// PowerCut is meant to be called after the writing process is dead (in a
// test: SIGKILL it and wait): from the moment it is called every write,
// truncate, fsync and name-space operation through the mount fails with EIO,
// as on a machine without power. If some process still has files open, the
// mount is detached lazily (MNT_DETACH), so the mount point can be mounted
// again at once; the old process sees EIO until it closes its files.
//
// The mount is served by goroutines of the process that called Mount. That
// process must not mmap files of its own mount: a page fault on the mount
// waits for those goroutines, and a garbage collection that stops the world
// meanwhile never ends (the thread in the fault cannot stop). Run programs
// that mmap (bbolt) in another process, as the tests here and the gateway's
// power-cut test do; read, write and the other system calls are safe.
//
// lazyfs is implemented on 64-bit Linux (amd64, arm64); elsewhere Mount
// fails with an error wrapping errors.ErrUnsupported (go-fuse v2.12.1 does
// not build for 32-bit ARM) and MountForTest skips. Mounting needs
// /dev/fuse and either root (mount(2), go-fuse's DirectMount: nothing to
// install) or fusermount3 (Debian package fuse3) for other users.
// MountForTest skips a test when the mount is not possible, and fails it
// under CI=true.
//
// While mounted, the backing directory must be changed only through the
// mount: lazyfs records changes as they pass, and a file changed behind
// its back is rolled back to wrong contents.
//
// # Faults
//
// FS.SetFault injects a storage fault until it is cleared (SetFault with
// the zero Fault); a new Mount starts without one:
//
//   - Fault.Write fails every request that would change the disk (write,
//     truncate and other attribute changes, fallocate, creating a file,
//     mkdir, rmdir, unlink, rename, link, symlink, xattr changes) with that
//     errno, and an fsync that would have something to write out (a file
//     with changes since its last fsync, a directory with a created file
//     not yet durable); an fsync with nothing to write succeeds. With
//     EROFS, opening a file for writing fails too: the model of a file
//     system the kernel remounted read-only after an I/O error (ext4's
//     errors=remount-ro, which an SD card going bad leads to). Reads and
//     mmap go on working; nothing already written is lost.
//   - Fault.Fsync fails every fsync and fdatasync of a file and every
//     fsync of a directory with that errno (EIO: a disk that cannot flush
//     its cache). Writes still succeed and are seen. A failed fsync makes
//     nothing durable: lazyfs keeps the before-images, so a later PowerCut
//     drops what was written since the last fsync that succeeded, and a
//     later successful fsync makes it durable (the optimistic model: a
//     real kernel may drop the dirty pages after a failed writeback, so
//     that a retried fsync succeeds with the data gone).
//
// Failures are counted in Stats (ChangesFailed, FsyncsFailed). A request
// that started before SetFault has ended when SetFault returns, so a test
// can tell what was written before the fault from what was refused.
//
// One difference from a real read-only file system, which refuses a write
// before it touches the page cache: the kernel's FUSE client copies the
// data of a write into its page cache first and then asks lazyfs, and when
// the WRITE fails it keeps those pages (no longer up to date) mapped into
// every shared mmap of the file. lazyfs has the kernel drop them right
// after its answer (they cannot be dropped sooner: the kernel holds them
// locked until then), so later reads and mmap accesses see the file again,
// but a process that reads its mmap right after the failed write often
// still sees the refused bytes (TestLazyFSFaultMmap counts how often).
// bbolt reads its meta page that way: a Write fault that lands between
// the page writes of a bbolt commit and the write of its meta page makes
// bbolt believe, for a moment, in a commit no disk holds. Set a Write
// fault while such a program is between commits. A failed fsync has no
// such difference: the page cache of a real machine, too, keeps data that
// a failed fsync did not make durable.
//
// FS.SetSyncDelay makes each fsync take a while, as on a slow disk (an SD
// card): a writer killed while waiting for it, or a cut meanwhile, finds
// the fsync not done, so that a test's cuts often land with a commit
// written but not durable. Counters (FS.Stats) show what went through the
// mount (writes, bytes, fsyncs) and what the last cut discarded.
// MountForTest and RemountForTest mount for a test.
package lazyfs
