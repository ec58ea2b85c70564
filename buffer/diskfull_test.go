package buffer_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/event"
)

// diskSizes are the payload sizes the disk tests cycle through: small
// events, and ones larger than a page, which need contiguous free pages.
var diskSizes = []int{200, 1500, 9000}

// belowWatermarkSlack is how far free space may go below what it was when
// another program has already taken it below the watermark: bbolt takes
// a node that needs contiguous pages from the end of the file when its
// free pages have no such run (see the package doc).
const belowWatermarkSlack = 128 << 10

// fill appends from several writers until every writer got ErrDiskFull,
// checking after each append that free space stayed at or above floor.
// Any other error fails the test, and so does an ErrDiskFull from a commit
// that failed with ENOSPC: the watermark check must keep commits from
// running the filesystem dry. It returns the events accepted.
func fill(t *testing.T, l *buffertest.Log, dir string, floor uint64) int {
	t.Helper()
	var mu sync.Mutex
	accepted := 0
	lowest := buffertest.FreeBytes(t, dir)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i += 4 {
				err := l.Append(context.Background(), ev("s", i, diskSizes[i%len(diskSizes)]))
				free := buffertest.FreeBytes(t, dir)
				mu.Lock()
				lowest = min(lowest, free)
				if err == nil {
					accepted++
				}
				mu.Unlock()
				switch {
				case errors.Is(err, syscall.ENOSPC):
					t.Errorf("a commit ran out of space: %v", err)
					return
				case errors.Is(err, buffer.ErrDiskFull):
					return
				case err != nil:
					t.Errorf("append refused with %v, want ErrDiskFull", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if lowest < floor {
		t.Fatalf("free space went down to %d bytes, below %d", lowest, floor)
	}
	if !l.DiskFull() {
		t.Fatal("appends refused with ErrDiskFull but DiskFull() is false")
	}
	t.Logf("accepted %d events; free space at least %d bytes (floor %d)", accepted, lowest, floor)
	return accepted
}

// fillDisk writes a file on dir until the filesystem has at most leave
// bytes free, as another program filling the SD card would.
func fillDisk(t *testing.T, dir string, leave uint64) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "ballast"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for buffertest.FreeBytes(t, dir) > leave {
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
}

// drain acknowledges every event of stream s, as the uplink does once the
// cloud is back, and waits until they are deleted and appends accepted.
func drain(t *testing.T, l *buffertest.Log) {
	t.Helper()
	if err := l.Ack("s", buffer.DefaultConsumer, statsOf(l, "s").Next-1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return statsOf(l, "s").Events == 0 })
	waitFor(t, func() bool { return !l.DiskFull() })
}

// TestDiskFull fills a real filesystem (a 20 MiB tmpfs) with the cloud
// away: appends are refused with ErrDiskFull before free space drops below
// min_free_disk, never by a failed commit. Then another program takes the
// disk further, to 1 MiB free. Once the backlog drains, the file's own
// free pages take events again (bbolt never shrinks its file) although the
// filesystem stays below the watermark, without taking it lower; also
// across restarts while full and while drained.
func TestDiskFull(t *testing.T) {
	dir := buffertest.MustMountTmpfs(t, 20<<20)
	path := filepath.Join(dir, "buffer.db")
	const minFree = 4 << 20
	opts := buffer.Options{MinFreeDisk: minFree, SweepInterval: 10 * time.Millisecond}
	l := buffertest.MustOpenPath(t, path, opts)

	first := fill(t, l, dir, minFree)
	if first == 0 {
		t.Fatal("nothing accepted on an empty filesystem")
	}
	fillDisk(t, dir, 1<<20)
	floor := buffertest.FreeBytes(t, dir) - belowWatermarkSlack

	// A restart while full: still refusing (what fits in the file's free
	// pages aside), and recovering by itself once the backlog drains.
	l.Close()
	l = buffertest.MustOpenPath(t, path, opts)
	if n := fill(t, l, dir, floor); n > first/10 {
		t.Fatalf("after a restart while full %d events accepted, %d before", n, first)
	}
	drain(t, l)
	second := fill(t, l, dir, floor)
	if second < first/2 {
		t.Fatalf("after the drain only %d events accepted, %d before", second, first)
	}

	// Drained and restarted, the filesystem still below the watermark:
	// accepting.
	drain(t, l)
	l.Close()
	l = buffertest.MustOpenPath(t, path, opts)
	if l.DiskFull() {
		t.Fatal("disk full right after a restart with a drained backlog")
	}
	for i := 0; i < 100; i++ {
		mustAppend(t, l, ev("s", i, diskSizes[i%len(diskSizes)]))
	}
	if free := buffertest.FreeBytes(t, dir); free < floor {
		t.Fatalf("free space %d after the last appends, below %d", free, floor)
	}
}

// TestDiskFullCommitFails makes a commit run out of space although the
// watermark check let it through (here free space is misreported, as on a
// filesystem that reserves space statfs does not show): only that
// commit's events are refused, with ErrDiskFull, counted, and never
// stored; the log goes on, and once space is freed takes events again,
// also after a restart.
func TestDiskFullCommitFails(t *testing.T) {
	dir := buffertest.MustMountTmpfs(t, 8<<20)
	ballast := filepath.Join(dir, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 2<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "buffer.db")
	opts := buffer.Options{MinFreeDisk: 1 << 20, SweepInterval: 10 * time.Millisecond,
		FreeDisk: func(string) (uint64, error) { return 1 << 30, nil }}
	l := buffertest.MustOpenPath(t, path, opts)

	accepted, refused := 0, 0
	for i := 0; refused < 20; i++ {
		err := l.Append(context.Background(), ev("s", i, diskSizes[i%len(diskSizes)]))
		switch {
		case err == nil:
			accepted++
		case errors.Is(err, buffer.ErrDiskFull):
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("refused with %v, want the commit's ENOSPC", err)
			}
			refused++
		default:
			t.Fatalf("append %d: %v, want nil or ErrDiskFull", i, err)
		}
	}
	st := statsOf(l, "s")
	if st.Events != int64(accepted) || st.Drops[buffer.DropDiskFull] != uint64(refused) {
		t.Fatalf("stored %d events and counted %v; want the %d accepted and %d disk_full", st.Events, st.Drops, accepted, refused)
	}
	if err := l.Check(); err != nil {
		t.Fatal(err)
	}

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	drain(t, l)
	for i := 0; i < 100; i++ {
		mustAppend(t, l, ev("s", i, diskSizes[i%len(diskSizes)]))
	}
	l.Close()
	l = buffertest.MustOpenPath(t, path, opts)
	mustAppend(t, l, &event.Event{Stream: "s", Payload: []byte("after restart")})
	if n := statsOf(l, "s").Events; n != 101 {
		t.Fatalf("%d events after the restart, want 101", n)
	}
}
