package buffer_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/event"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild()
		return
	}
	if p := os.Getenv(usageChildEnv); p != "" {
		usageChild(p)
		return
	}
	goleak.VerifyTestMain(m)
}

func ev(stream string, i int, size int) *event.Event {
	p := make([]byte, size)
	copy(p, fmt.Sprintf("%d", i))
	return &event.Event{Stream: stream, Source: "s", Payload: p, ID: event.ID{byte(i >> 8), byte(i)}}
}

func mustAppend(t testing.TB, l *buffertest.Log, e *event.Event) {
	t.Helper()
	if err := l.Append(context.Background(), e); err != nil {
		t.Fatalf("append: %v", err)
	}
}

// readAll returns the offsets and payloads of stream from offset from.
func readAll(t testing.TB, l interface {
	Read(string, uint64, int, func(uint64, *event.Event) error) (uint64, error)
}, stream string, from uint64) (offs []uint64, payloads []string) {
	t.Helper()
	for {
		next, err := l.Read(stream, from, 100, func(off uint64, e *event.Event) error {
			offs = append(offs, off)
			payloads = append(payloads, string(e.Payload))
			return nil
		})
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if next == from {
			return offs, payloads
		}
		from = next
	}
}

func statsOf(l *buffertest.Log, name string) buffer.StreamStats {
	for _, s := range l.Stats() {
		if s.Name == name {
			return s
		}
	}
	return buffer.StreamStats{}
}

func TestAppendReadAckReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	l := buffertest.MustOpenPath(t, path, buffer.Options{})
	for i := 0; i < 10; i++ {
		mustAppend(t, l, &event.Event{Stream: "a", Payload: []byte{byte('0' + i)}})
	}
	mustAppend(t, l, &event.Event{Stream: "b", Payload: []byte("x")})
	offs, pl := readAll(t, l, "a", 0)
	if len(offs) != 10 || offs[0] != 1 || offs[9] != 10 || pl[3] != "3" {
		t.Fatalf("read a: offsets %v payloads %v", offs, pl)
	}
	// Read from the middle returns the tail, in order.
	if offs, _ := readAll(t, l, "a", 7); len(offs) != 4 || offs[0] != 7 {
		t.Fatalf("read from 7: %v", offs)
	}
	if err := l.Ack("a", buffer.DefaultConsumer, 4); err != nil {
		t.Fatal(err)
	}
	l.Close()

	l = buffertest.MustOpenPath(t, path, buffer.Options{})
	st := statsOf(l, "a")
	if st.Events != 6 || st.First != 5 || st.Next != 11 {
		t.Fatalf("after reopen: %+v", st)
	}
	if offs, _ := readAll(t, l, "a", 0); len(offs) != 6 || offs[0] != 5 {
		t.Fatalf("after ack and reopen: %v", offs)
	}
	// Offsets are never reused, even after everything is acked.
	if err := l.Ack("a", buffer.DefaultConsumer, 100); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, &event.Event{Stream: "a", Payload: []byte("z")})
	if offs, _ := readAll(t, l, "a", 0); len(offs) != 1 || offs[0] != 11 {
		t.Fatalf("after full ack: %v", offs)
	}
	if got := l.Streams(); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("streams: %v", got)
	}
}

func TestOverflow(t *testing.T) {
	tests := []struct {
		name      string
		cfg       buffer.StreamConfig
		n, size   int
		kept      int64
		firstKept uint64
		drops     map[string]uint64
		appendErr int // appends that must fail with ErrFull
	}{
		{"drop_oldest by count", buffer.StreamConfig{MaxEvents: 100}, 250, 10, 100, 151, map[string]uint64{buffer.DropOverflow: 150}, 0},
		{"reject by count", buffer.StreamConfig{MaxEvents: 100, Overflow: buffer.Reject}, 250, 10, 100, 1, map[string]uint64{buffer.DropFull: 150}, 150},
		// Each encoded event of 100 payload bytes is well over 100 bytes:
		// the byte bound keeps exactly as many as fit.
		{"drop_oldest by bytes", buffer.StreamConfig{MaxBytes: 10 * eventSize(100)}, 50, 100, 10, 41, map[string]uint64{buffer.DropOverflow: 40}, 0},
		{"reject by bytes", buffer.StreamConfig{MaxBytes: 10 * eventSize(100), Overflow: buffer.Reject}, 50, 100, 10, 1, map[string]uint64{buffer.DropFull: 40}, 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Name = "s"
			l := buffertest.MustOpen(t, buffer.Options{Streams: []buffer.StreamConfig{cfg}})
			full := 0
			for i := 0; i < tt.n; i++ {
				err := l.Append(context.Background(), ev("s", i, tt.size))
				switch {
				case errors.Is(err, buffer.ErrFull):
					full++
				case err != nil:
					t.Fatal(err)
				}
			}
			st := statsOf(l, "s")
			if st.Events != tt.kept || st.First != tt.firstKept {
				t.Fatalf("kept %d first %d, want %d first %d", st.Events, st.First, tt.kept, tt.firstKept)
			}
			if fmt.Sprint(st.Drops) != fmt.Sprint(tt.drops) || full != tt.appendErr {
				t.Fatalf("drops %v (ErrFull %d), want %v (%d)", st.Drops, full, tt.drops, tt.appendErr)
			}
			offs, _ := readAll(t, l, "s", 0)
			if int64(len(offs)) != tt.kept || offs[0] != tt.firstKept {
				t.Fatalf("read %d events from %d", len(offs), offs[0])
			}
		})
	}
}

// eventSize is the encoded size of ev(_, i, size) for i < 256.
func eventSize(size int) int64 {
	e := ev("s", 1, size)
	e.Time = time.Now()
	b, _ := event.Marshal(e)
	return int64(len(b))
}

func TestTooLarge(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{Streams: []buffer.StreamConfig{{Name: "s", MaxBytes: 50}}})
	if err := l.Append(context.Background(), ev("s", 1, 100)); !errors.Is(err, buffer.ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	if d := statsOf(l, "s").Drops[buffer.DropTooLarge]; d != 1 {
		t.Fatalf("too_large drops %d", d)
	}
}

func TestTTL(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l := buffertest.MustOpen(t, buffer.Options{
		Now: clock, SweepInterval: 5 * time.Millisecond,
		Streams: []buffer.StreamConfig{{Name: "s", TTL: time.Hour}},
	})
	for i := 0; i < 5; i++ {
		mustAppend(t, l, ev("s", i, 1))
	}
	mu.Lock()
	now = now.Add(30 * time.Minute)
	mu.Unlock()
	for i := 0; i < 3; i++ {
		mustAppend(t, l, ev("s", i, 1))
	}
	mu.Lock()
	now = now.Add(45 * time.Minute) // the first five are 75 min old, the rest 45
	mu.Unlock()
	waitFor(t, func() bool { return statsOf(l, "s").Events == 3 })
	st := statsOf(l, "s")
	if st.Drops[buffer.DropExpired] != 5 || st.First != 6 {
		t.Fatalf("after TTL: %+v", st)
	}
}

func TestDiskWatermark(t *testing.T) {
	var mu sync.Mutex
	free := uint64(1 << 30)
	l := buffertest.MustOpen(t, buffer.Options{
		MinFreeDisk: 100 << 20, SweepInterval: 5 * time.Millisecond,
		FreeDisk: func(string) (uint64, error) { mu.Lock(); defer mu.Unlock(); return free, nil },
	})
	mustAppend(t, l, ev("s", 1, 10))
	mu.Lock()
	free = 10 << 20
	mu.Unlock()
	waitFor(t, l.DiskFull)
	if err := l.Append(context.Background(), ev("s", 2, 10)); !errors.Is(err, buffer.ErrDiskFull) {
		t.Fatalf("append below watermark: %v", err)
	}
	mu.Lock()
	free = 1 << 30
	mu.Unlock()
	waitFor(t, func() bool { return !l.DiskFull() })
	mustAppend(t, l, ev("s", 3, 10))
	st := statsOf(l, "s")
	if st.Events != 2 || st.Drops[buffer.DropDiskFull] != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestGroupCommit(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	const writers, each = 50, 40
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if err := l.Append(context.Background(), ev(fmt.Sprint("w", w%3), i, 100)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	commits, _ := l.CommitStats()
	total := 0
	for _, s := range l.Stats() {
		total += int(s.Events)
	}
	if total != writers*each {
		t.Fatalf("stored %d events, want %d", total, writers*each)
	}
	// 2,000 synchronous appends from 50 writers must share commits.
	if commits >= uint64(total)/2 {
		t.Fatalf("%d commits for %d events: appends are not grouped", commits, total)
	}
	t.Logf("%d events in %d commits", total, commits)
}

func TestPerWriterOrder(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				e := &event.Event{Stream: "s", Source: fmt.Sprint(w), Payload: []byte(fmt.Sprint(i))}
				if err := l.Append(context.Background(), e); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	last := map[string]int{}
	_, err := l.Read("s", 0, 1<<30, func(_ uint64, e *event.Event) error {
		var i int
		fmt.Sscan(string(e.Payload), &i)
		if prev, ok := last[e.Source]; ok && i != prev+1 {
			return fmt.Errorf("writer %s: %d after %d", e.Source, i, prev)
		}
		last[e.Source] = i
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDurabilityModes(t *testing.T) {
	for _, d := range []buffer.Durability{buffer.DurabilitySync, buffer.DurabilityBatch, buffer.DurabilityNone} {
		t.Run(fmt.Sprint(d), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "b.db")
			l := buffertest.MustOpenPath(t, path, buffer.Options{Durability: d, BatchInterval: 5 * time.Millisecond})
			for i := 0; i < 100; i++ {
				mustAppend(t, l, ev("s", i, 10))
			}
			l.Close() // Close drains what was queued
			l = buffertest.MustOpenPath(t, path, buffer.Options{})
			if n := statsOf(l, "s").Events; n != 100 {
				t.Fatalf("%d events after reopen", n)
			}
		})
	}
}

func TestClosedErrors(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	l.Close()
	if err := l.Append(context.Background(), ev("s", 1, 1)); !errors.Is(err, buffer.ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	if err := l.Ack("s", buffer.DefaultConsumer, 1); !errors.Is(err, buffer.ErrClosed) {
		t.Fatalf("ack after close: %v", err)
	}
}

func TestLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	buffertest.MustOpenPath(t, path, buffer.Options{})
	if _, err := buffer.Open(path, buffer.Options{}); !errors.Is(err, buffer.ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

func TestCorruptFile(t *testing.T) {
	valid := func(t *testing.T) []byte {
		path := filepath.Join(t.TempDir(), "v.db")
		l := buffertest.MustOpenPath(t, path, buffer.Options{})
		for i := 0; i < 2000; i++ {
			mustAppend(t, l, ev("s", i, 200))
		}
		l.Close()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}(t)
	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(i * 7)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"garbage", garbage},
		{"truncated", valid[:len(valid)/3]},
		{"zeroed meta pages", append(make([]byte, 8192), valid[8192:]...)},
		{"tiny", []byte("not a db")},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/fail", func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "b.db")
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := buffer.Open(path, buffer.Options{OnCorrupt: buffer.CorruptFail})
			if !errors.Is(err, buffer.ErrCorrupt) {
				t.Fatalf("open: %v, want ErrCorrupt", err)
			}
		})
		t.Run(tt.name+"/quarantine", func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "b.db")
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			l := buffertest.MustOpenPath(t, path, buffer.Options{OnCorrupt: buffer.CorruptQuarantine})
			q := l.Quarantined()
			if q == "" {
				t.Fatal("corrupt file not reported as quarantined")
			}
			if kept, err := os.ReadFile(q); err != nil || len(kept) != len(tt.data) {
				t.Fatalf("quarantined copy: %d bytes, %v", len(kept), err)
			}
			mustAppend(t, l, ev("s", 1, 10)) // and the gateway goes on
		})
	}
}

// TestChurnBounded checks the file does not grow without bound when events
// are appended and acked at a steady backlog: freed pages are reused.
func TestChurnBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	l := buffertest.MustOpenPath(t, path, buffer.Options{Durability: buffer.DurabilityNone})
	ctx := context.Background()
	const backlog = 2000
	var sizes []int64
	for round := 0; round < 20; round++ {
		// 5,000 events a round, 500 to a transaction: one commit per
		// Append made this test take minutes under ARM emulation, and the
		// file's growth depends on what churns through, not on how.
		for b := 0; b < 10; b++ {
			if err := l.Update(ctx, func(tx *buffer.Tx) error {
				for i := 0; i < 500; i++ {
					if err := tx.Append(ev("s", b*500+i, 200)); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		st := statsOf(l, "s")
		if err := l.Ack("s", buffer.DefaultConsumer, st.Next-1-backlog); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return statsOf(l, "s").Events == backlog })
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, fi.Size())
	}
	// 100,000 events of ~250 bytes went through: 25 MB. The file must stay
	// near its size after the first rounds, not grow with the total.
	if last, early := sizes[len(sizes)-1], sizes[3]; last > 2*early || last > 8<<20 {
		t.Fatalf("file grew under churn: sizes %v", sizes)
	}
	t.Logf("file sizes per round: %v", sizes)
}

// TestReopenManyStreams commits several streams in one transaction and
// checks every stream's metadata and drop counters survive a reopen.
func TestReopenManyStreams(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	opts := buffer.Options{Streams: []buffer.StreamConfig{{Name: "s1", MaxEvents: 3}, {Name: "s2", MaxEvents: 5, Overflow: buffer.Reject}}}
	l := buffertest.MustOpenPath(t, path, opts)
	var wg sync.WaitGroup
	for _, s := range []string{"s1", "s2", "s3", "s4"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				_ = l.Append(context.Background(), ev(s, i, 10+len(s)*i))
			}
		}()
	}
	wg.Wait()
	before := fmt.Sprint(l.Stats())
	l.Close()
	l = buffertest.MustOpenPath(t, path, opts)
	if after := fmt.Sprint(l.Stats()); after != before {
		t.Fatalf("stats changed across reopen:\nbefore %s\nafter  %s", before, after)
	}
}
