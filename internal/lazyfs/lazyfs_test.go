//go:build linux

package lazyfs_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrygw/ferry/internal/lazyfs"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// TestMain runs the test binary as a child process (LAZYFS_CHILD) for what
// must not run in the process serving the mount: anything that mmaps a file
// of the mount (see the package documentation), and processes to kill.
func TestMain(m *testing.M) {
	if mode := os.Getenv("LAZYFS_CHILD"); mode != "" {
		path := os.Getenv("LAZYFS_PATH")
		var err error
		switch mode {
		case "bolt-commits":
			err = boltCommits(path)
		case "bolt-nosync":
			err = boltNoSync(path)
		case "bolt-check":
			err = boltCheck(path)
		case "mmap":
			err = mmapCoherent(path)
		case "mmap-write", "mmap-write-msync":
			err = mmapWrite(path, mode == "mmap-write-msync")
		case "mmap-failed-write":
			err = mmapFailedWrite(path)
		case "bolt-fault":
			err = boltFault(path)
		default:
			err = fmt.Errorf("unknown child %q", mode)
		}
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("ok")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func childCmd(mode, path string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "LAZYFS_CHILD="+mode, "LAZYFS_PATH="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// child runs a child to its end and returns its output.
func child(t *testing.T, mode, path string) string {
	t.Helper()
	cmd := childCmd(mode, path)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	startChild(t, cmd)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child %s: %v\n%s", mode, err, out.Bytes())
	}
	return out.String()
}

// startChild starts cmd, skipping the test where the test binary cannot
// be executed again: under qemu-user without binfmt_misc (make test-arm).
func startChild(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.ENOEXEC) {
			t.Skipf("cannot run the test binary as a child here (emulated?): %v", err)
		}
		t.Fatal(err)
	}
}

// mount mounts a fresh backing directory.
func mount(t *testing.T) *lazyfs.FS {
	t.Helper()
	return lazyfs.MountForTest(t, t.TempDir(), filepath.Join(t.TempDir(), "mnt"))
}

// cut cuts the power and checks that the mount point is empty (unmounted).
func cut(t *testing.T, l *lazyfs.FS) lazyfs.Stats {
	t.Helper()
	if err := l.PowerCut(); err != nil {
		t.Fatalf("PowerCut: %v", err)
	}
	return l.Stats()
}

func create(t *testing.T, path string, data []byte) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	return f
}

func fdatasync(t *testing.T, f *os.File) {
	t.Helper()
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		t.Fatalf("fdatasync: %v", err)
	}
}

func wantFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes, want %d (first difference at %d)", path, len(got), len(want), firstDiff(got, want))
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

func TestLazyFSUnsyncedWriteLost(t *testing.T) {
	l := mount(t)
	mnt, back := l.Mountpoint(), l.Backing()
	f := create(t, filepath.Join(mnt, "f"), []byte("synced"))
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(" and not")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	g := create(t, filepath.Join(mnt, "g"), []byte("never synced"))
	g.Close()
	// Before the cut, everything is there, through the mount and in the
	// backing directory (writes go through).
	wantFile(t, filepath.Join(mnt, "f"), []byte("synced and not"))
	wantFile(t, filepath.Join(back, "g"), []byte("never synced"))
	s := l.Stats()
	if s.Fsyncs != 1 || s.Creates != 2 || s.UnsyncedFiles != 2 || s.BytesWritten != int64(len("synced and notnever synced")) {
		t.Errorf("stats before the cut: %+v", s)
	}

	s = cut(t, l)
	if _, err := os.Stat(filepath.Join(mnt, "f")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("mount point after the cut: %v (want it unmounted, empty)", err)
	}
	wantFile(t, filepath.Join(back, "f"), []byte("synced"))
	if _, err := os.Stat(filepath.Join(back, "g")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("g, created and never synced, survived the cut: %v", err)
	}
	if s.CutFiles != 1 || s.CutRemoved != 1 || s.CutBytes != int64(len(" and not")+len("never synced")) {
		t.Errorf("stats after the cut: %+v", s)
	}
	l2 := lazyfs.RemountForTest(t, l)
	wantFile(t, filepath.Join(l2.Mountpoint(), "f"), []byte("synced"))
}

func TestLazyFSFdatasyncKeeps(t *testing.T) {
	l := mount(t)
	data := pattern(3*lazyfs.BlockSize+100, 1)
	f := create(t, filepath.Join(l.Mountpoint(), "f"), data)
	fdatasync(t, f)
	f.Close()
	s := cut(t, l)
	wantFile(t, filepath.Join(l.Backing(), "f"), data)
	if s.CutFiles != 0 || s.CutBytes != 0 || s.CutRemoved != 0 {
		t.Errorf("a synced file lost something: %+v", s)
	}
}

func TestLazyFSPartialOverwriteRestored(t *testing.T) {
	l := mount(t)
	old := pattern(5*lazyfs.BlockSize+123, 1)
	f := create(t, filepath.Join(l.Mountpoint(), "f"), old)
	fdatasync(t, f)
	// Unsynced: two overwrites of one range (the first before-image must
	// be what comes back), one straddling a block boundary, one byte.
	for _, w := range []struct {
		off int64
		n   int
	}{{3000, 2000}, {3500, 100}, {2*lazyfs.BlockSize - 10, 20}, {5 * lazyfs.BlockSize, 1}} {
		if _, err := f.WriteAt(pattern(w.n, 99), w.off); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(filepath.Join(l.Mountpoint(), "f"))
	if bytes.Equal(got, old) {
		t.Fatal("the overwrites are not visible before the cut")
	}
	f.Close()
	s := cut(t, l)
	wantFile(t, filepath.Join(l.Backing(), "f"), old)
	if s.CutFiles != 1 || s.CutBytes == 0 || s.CutBytes > 2000+20+1 {
		t.Errorf("stats: %+v", s)
	}
}

func TestLazyFSSizeChangesUndone(t *testing.T) {
	old := pattern(3*lazyfs.BlockSize+5, 3)
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, f *os.File, path string)
	}{
		{"ftruncate shrink", func(t *testing.T, f *os.File, path string) {
			if err := f.Truncate(100); err != nil {
				t.Fatal(err)
			}
			// Writes after the shrink, inside the old size.
			if _, err := f.WriteAt([]byte("xyz"), 5000); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncate extend and write beyond", func(t *testing.T, f *os.File, path string) {
			if err := os.Truncate(path, 1<<20); err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte("far"), 1<<19); err != nil {
				t.Fatal(err)
			}
		}},
		{"append", func(t *testing.T, f *os.File, path string) {
			if _, err := f.WriteAt(pattern(10000, 9), int64(len(old))); err != nil {
				t.Fatal(err)
			}
		}},
		{"fallocate extend", func(t *testing.T, f *os.File, path string) {
			if err := unix.Fallocate(int(f.Fd()), 0, 0, 1<<20); err != nil {
				t.Skipf("fallocate through FUSE: %v", err)
			}
		}},
		{"punch hole", func(t *testing.T, f *os.File, path string) {
			if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 1000, 6000); err != nil {
				t.Skipf("punch hole through FUSE: %v", err)
			}
			b, _ := os.ReadFile(path)
			if !bytes.Equal(b[1000:7000], make([]byte, 6000)) {
				t.Fatal("the hole is not visible before the cut")
			}
		}},
		{"open O_TRUNC", func(t *testing.T, f *os.File, path string) {
			g, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			g.Write([]byte("new"))
			g.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := mount(t)
			path := filepath.Join(l.Mountpoint(), "f")
			f := create(t, path, old)
			fdatasync(t, f)
			tc.change(t, f, path)
			if b, _ := os.ReadFile(path); bytes.Equal(b, old) {
				t.Fatal("the change is not visible before the cut")
			}
			f.Close()
			s := cut(t, l)
			wantFile(t, filepath.Join(l.Backing(), "f"), old)
			if s.CutFiles != 1 || s.CutBytes == 0 {
				t.Errorf("stats: %+v", s)
			}
		})
	}
}

func TestLazyFSCreationDurability(t *testing.T) {
	l := mount(t)
	mnt := l.Mountpoint()
	if err := os.Mkdir(filepath.Join(mnt, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Kept: its own fsync (as ext4, XFS and btrfs do).
	f := create(t, filepath.Join(mnt, "own-fsync"), []byte("a"))
	fdatasync(t, f)
	f.Close()
	// Kept (empty): its directory fsynced after the creation; the data
	// written after that fsync is lost.
	create(t, filepath.Join(mnt, "sub", "dir-fsync"), nil).Close()
	d, err := os.Open(filepath.Join(mnt, "sub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	d.Close()
	g, _ := os.OpenFile(filepath.Join(mnt, "sub", "dir-fsync"), os.O_WRONLY, 0)
	g.Write([]byte("lost"))
	g.Close()
	// Lost: another directory was fsynced, not this file's.
	create(t, filepath.Join(mnt, "other-dir-fsync"), []byte("b")).Close()
	d, _ = os.Open(filepath.Join(mnt, "sub"))
	d.Sync()
	d.Close()
	// Lost: renamed, never synced.
	create(t, filepath.Join(mnt, "tmp"), []byte("c")).Close()
	if err := os.Rename(filepath.Join(mnt, "tmp"), filepath.Join(mnt, "renamed")); err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.DirFsyncs != 2 {
		t.Errorf("directory fsyncs counted: %+v", s)
	}

	s := cut(t, l)
	back := l.Backing()
	wantFile(t, filepath.Join(back, "own-fsync"), []byte("a"))
	wantFile(t, filepath.Join(back, "sub", "dir-fsync"), nil)
	for _, name := range []string{"other-dir-fsync", "tmp", "renamed"} {
		if _, err := os.Stat(filepath.Join(back, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived the cut: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(back, "sub")); err != nil {
		t.Errorf("mkdir is durable at once: %v", err)
	}
	if s.CutRemoved != 2 {
		t.Errorf("stats: %+v", s)
	}
}

func TestLazyFSUnmountKeeps(t *testing.T) {
	l := mount(t)
	f := create(t, filepath.Join(l.Mountpoint(), "f"), []byte("unsynced"))
	f.Close()
	if err := l.Unmount(); err != nil {
		t.Fatal(err)
	}
	wantFile(t, filepath.Join(l.Backing(), "f"), []byte("unsynced"))
	if err := l.PowerCut(); err == nil {
		t.Error("PowerCut after Unmount: no error")
	}
	wantFile(t, filepath.Join(l.Backing(), "f"), []byte("unsynced"))
}

// TestLazyFSPowerCutWhileOpen: the writer is still alive. Its changes fail
// from the cut on, the mount point is free at once (lazy detach), and the
// file is rolled back.
func TestLazyFSPowerCutWhileOpen(t *testing.T) {
	l := mount(t)
	path := filepath.Join(l.Mountpoint(), "f")
	f := create(t, path, []byte("synced"))
	fdatasync(t, f)
	f.Write([]byte(" lost"))
	defer f.Close()
	s := cut(t, l)
	if !s.CutDetached {
		t.Errorf("the mount was busy but not detached: %+v", s)
	}
	if _, err := f.Write([]byte("x")); !errors.Is(err, syscall.EIO) {
		t.Errorf("write after the cut: %v, want EIO", err)
	}
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Errorf("fsync after the cut: %v, want EIO", err)
	}
	l2 := lazyfs.RemountForTest(t, l)
	wantFile(t, filepath.Join(l2.Mountpoint(), "f"), []byte("synced"))
}

// TestLazyFSMmapCoherent: bbolt reads its file through a shared mmap and
// writes it with pwrite; through FUSE (no direct_io) the two must agree.
func TestLazyFSMmapCoherent(t *testing.T) {
	l := mount(t)
	child(t, "mmap", filepath.Join(l.Mountpoint(), "f"))
}

func mmapCoherent(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(pattern(4*lazyfs.BlockSize, 1)); err != nil {
		return err
	}
	m, err := unix.Mmap(int(f.Fd()), 0, 4*lazyfs.BlockSize, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap through FUSE: %w", err)
	}
	defer unix.Munmap(m)
	if !bytes.Equal(m, pattern(4*lazyfs.BlockSize, 1)) {
		return errors.New("mmap does not show what was written")
	}
	for i := range 4 {
		p := pattern(100, byte(10+i))
		if _, err := f.WriteAt(p, int64(i*lazyfs.BlockSize+50)); err != nil {
			return err
		}
		if !bytes.Equal(m[i*lazyfs.BlockSize+50:i*lazyfs.BlockSize+150], p) {
			return fmt.Errorf("mmap does not show pwrite %d", i)
		}
	}
	return nil
}

// TestLazyFSMmapWrite: what a shared writable mapping wrote is lost by a
// cut, unless msync (MS_SYNC, an FSYNC) made it durable.
func TestLazyFSMmapWrite(t *testing.T) {
	for _, msync := range []bool{false, true} {
		l := mount(t)
		path := filepath.Join(l.Mountpoint(), "f")
		f := create(t, path, make([]byte, 2*lazyfs.BlockSize))
		fdatasync(t, f)
		f.Close()
		mode := "mmap-write"
		if msync {
			mode += "-msync"
		}
		child(t, mode, path)
		cut(t, l)
		want := make([]byte, 2*lazyfs.BlockSize)
		if msync {
			copy(want[100:], "hello")
		}
		wantFile(t, filepath.Join(l.Backing(), "f"), want)
	}
}

func mmapWrite(path string, msync bool) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, 2*lazyfs.BlockSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap through FUSE: %w", err)
	}
	copy(m[100:], "hello")
	if msync {
		if err := unix.Msync(m, unix.MS_SYNC); err != nil {
			return err
		}
	}
	return unix.Munmap(m)
}

// TestLazyFSBolt: bbolt on the mount (in a child process); what was
// committed with fsync survives the cut, what was committed with NoSync
// does not, and the file opens and checks clean, on the disk and through
// the mount again.
func TestLazyFSBolt(t *testing.T) {
	l := mount(t)
	child(t, "bolt-nosync", filepath.Join(l.Mountpoint(), "bolt.db"))
	s := cut(t, l)
	t.Logf("%d fsyncs, %d bytes written; the cut discarded %d bytes in %d blocks",
		s.Fsyncs, s.BytesWritten, s.CutBytes, s.CutBlocks)
	if s.CutBytes == 0 || s.CutFiles != 1 {
		t.Errorf("the cut discarded nothing: %+v", s)
	}
	// The disk: the backing file, opened directly.
	if err := boltCheckSynced(filepath.Join(l.Backing(), "bolt.db"), true); err != nil {
		t.Fatal(err)
	}
	// Through the mount again, as the next run of the program would.
	l2 := lazyfs.RemountForTest(t, l)
	child(t, "bolt-check", filepath.Join(l2.Mountpoint(), "bolt.db"))
}

// boltNoSync commits keys 0-299 with fsync, then with NoSync (and
// NoGrowSync) keys 300-599,
// deletes of 0-99 and an overwrite of 150.
func boltNoSync(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return err
	}
	put := func(from, to int) error {
		for i := from; i < to; i += 10 {
			err := db.Update(func(tx *bolt.Tx) error {
				b, err := tx.CreateBucketIfNotExists([]byte("b"))
				if err != nil {
					return err
				}
				for k := i; k < i+10 && k < to; k++ {
					if err := b.Put(boltKey(k), boltValue(k)); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	}
	if err := put(0, 300); err != nil {
		return err
	}
	// No fsync from here on, not even when bbolt grows the file (its
	// grow fsyncs unless NoGrowSync, and makes all written before durable).
	db.NoSync, db.NoGrowSync = true, true
	if err := put(300, 600); err != nil {
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("b"))
		for k := 0; k < 100; k++ {
			if err := b.Delete(boltKey(k)); err != nil {
				return err
			}
		}
		return b.Put(boltKey(150), []byte("overwritten"))
	})
	if err != nil {
		return err
	}
	// Reads, through bbolt's mmap of the FUSE file, see everything.
	err = db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket([]byte("b")).Stats().KeyN; n != 500 {
			return fmt.Errorf("before the cut: %d keys, want 500", n)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return db.Close() // bbolt's Close writes nothing
}

// boltCheck opens the file as a program would (read-write, through the
// mount in a child) and checks it.
func boltCheck(path string) error { return boltCheckSynced(path, false) }

// boltCheckSynced opens the bbolt file at path, checks it and that it holds
// exactly what boltNoSync committed with fsync.
func boltCheckSynced(path string, readOnly bool) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: readOnly})
	if err != nil {
		return fmt.Errorf("bbolt does not open after the cut: %w", err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			return fmt.Errorf("check: %w", errors.Join(errs...))
		}
		b := tx.Bucket([]byte("b"))
		if b == nil {
			return errors.New("no bucket")
		}
		for k := 0; k < 600; k++ {
			v := b.Get(boltKey(k))
			switch {
			case k < 300 && !bytes.Equal(v, boltValue(k)):
				return fmt.Errorf("synced key %d: %d bytes, want %d", k, len(v), len(boltValue(k)))
			case k >= 300 && v != nil:
				return fmt.Errorf("key %d, committed with NoSync, survived", k)
			}
		}
		return nil
	})
}

func boltKey(k int) []byte { return binary.BigEndian.AppendUint64(nil, uint64(k)) }

// boltValue is key k's value: 100 to 6000 bytes, so some span pages.
func boltValue(k int) []byte {
	return bytes.Repeat([]byte{byte(k)}, 100+(k*397)%5900)
}

// boltWindow: the child keeps keys (i-boltWindow, i] after transaction i.
const boltWindow = 40

// boltCommits commits to the bbolt file at path with fsync, one key per
// transaction from the next after the highest, deleting the one that falls
// out of the window, and prints each committed key, until it is killed.
func boltCommits(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return err
	}
	next := 0
	db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte("b")); b != nil {
			if k, _ := b.Cursor().Last(); k != nil {
				next = int(binary.BigEndian.Uint64(k)) + 1
			}
		}
		return nil
	})
	out := bufio.NewWriter(os.Stdout)
	for i := next; ; i++ {
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			if err := b.Put(boltKey(i), boltValue(i)); err != nil {
				return err
			}
			return b.Delete(boltKey(i - boltWindow))
		})
		if err != nil {
			return err
		}
		fmt.Fprintln(out, i)
		out.Flush()
	}
}

// TestLazyFSBoltKilledMidCommit: a process commits to bbolt with fsync in
// a loop; it is SIGKILLed at a random point (often mid-commit) and the
// power cut, losing everything unsynced or (PowerCutRandom) an arbitrary
// part of it. bbolt must open and check clean with every commit the
// process saw succeed. This tests lazyfs as much as bbolt: a model that
// lost synced data, or mixed up blocks, would fail it.
func TestLazyFSBoltKilledMidCommit(t *testing.T) {
	backing := t.TempDir()
	mnt := filepath.Join(t.TempDir(), "mnt")
	l := lazyfs.MountForTest(t, backing, mnt)
	// A slow disk: the kill mostly lands while the child waits for an
	// fsync, with the commit's pages written and not durable.
	const syncDelay = 2 * time.Millisecond
	l.SetSyncDelay(syncDelay)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var lost, kept, failed int64
	const rounds = 8
	for round := range rounds {
		cmd := childCmd("bolt-commits", filepath.Join(mnt, "bolt.db"))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		startChild(t, cmd)
		sc := bufio.NewScanner(stdout)
		want := 10 + rng.IntN(100)
		last, n := -1, 0
		for n < want && sc.Scan() {
			line := sc.Text()
			i, err := strconv.Atoi(line)
			if err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("round %d: child: %s", round, line)
			}
			last, n = i, n+1
		}
		cmd.Process.Kill()
		// What the child printed before it died was committed too.
		for sc.Scan() {
			if i, err := strconv.Atoi(sc.Text()); err == nil {
				last = i
			}
		}
		cmd.Wait()
		if last < 0 {
			t.Fatalf("round %d: the child committed nothing", round)
		}
		seed := rng.Uint64()
		random := round%2 == 1
		if random {
			err = l.PowerCutRandom(0.5, seed)
		} else {
			err = l.PowerCut()
		}
		if err != nil {
			t.Fatal(err)
		}
		s := l.Stats()
		lost += s.CutBlocks
		kept += s.CutKept
		failed += s.FsyncsFailed
		// The disk: the backing file, opened directly (this process
		// must not mmap its own mount).
		db, err := bolt.Open(filepath.Join(backing, "bolt.db"), 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
		if err != nil {
			t.Fatalf("round %d (random %v, seed %d): bbolt does not open after the cut: %v", round, random, seed, err)
		}
		err = db.View(func(tx *bolt.Tx) error {
			var errs []string
			for err := range tx.Check() {
				errs = append(errs, err.Error())
			}
			if len(errs) > 0 {
				return errors.New(strings.Join(errs, "; "))
			}
			b := tx.Bucket([]byte("b"))
			if b == nil {
				return errors.New("no bucket")
			}
			// Transaction last, and perhaps last+1, committed.
			for k := max(0, last+2-boltWindow); k <= last; k++ {
				if v := b.Get(boltKey(k)); !bytes.Equal(v, boltValue(k)) {
					return fmt.Errorf("key %d, committed, is %d bytes, want %d", k, len(v), len(boltValue(k)))
				}
			}
			if k, _ := b.Cursor().Last(); k == nil || binary.BigEndian.Uint64(k) > uint64(last+1) {
				return fmt.Errorf("last key %x: after %d", k, last)
			}
			return nil
		})
		db.Close()
		if err != nil {
			t.Fatalf("round %d (random %v, seed %d): after the cut: %v", round, random, seed, err)
		}
		l = lazyfs.RemountForTest(t, l)
		l.SetSyncDelay(syncDelay)
	}
	t.Logf("%d rounds: unsynced blocks lost %d, kept %d (random rounds); %d fsyncs failed (the child killed while waiting)", rounds, lost, kept, failed)
}
