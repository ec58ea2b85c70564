package buffer_test

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/event"
)

// fev is an event of source src whose payload starts with "src:i".
func fev(src string, i, size int) *event.Event {
	p := make([]byte, size)
	copy(p, fmt.Sprintf("%s:%d", src, i))
	return &event.Event{Stream: "s", Source: src, Topic: "t", Payload: p}
}

// bySource reads stream s whole and returns the sequence numbers of each
// source's events, checking that offsets only grow (Read steps over the
// gaps fair eviction leaves) and that Read returns what Stats counts.
func bySource(t *testing.T, l *buffertest.Log) map[string][]int {
	t.Helper()
	offs, payloads := readAll(t, l, "s", 0)
	for i := 1; i < len(offs); i++ {
		if offs[i] <= offs[i-1] {
			t.Fatalf("Read returned offset %d after %d", offs[i], offs[i-1])
		}
	}
	if st := statsOf(l, "s"); int64(len(offs)) != st.Events || (len(offs) > 0 && offs[0] < st.First) {
		t.Fatalf("Read returned %d events from offset %v; stats say %d from %d", len(offs), offs[:min(1, len(offs))], st.Events, st.First)
	}
	out := map[string][]int{}
	for _, p := range payloads {
		src, n, _ := strings.Cut(strings.TrimRight(p, "\x00"), ":")
		i, err := strconv.Atoi(n)
		if err != nil {
			t.Fatalf("payload %q", p)
		}
		out[src] = append(out[src], i)
	}
	return out
}

// TestFairEviction floods a bounded stream from one source ("mallory")
// while a steady sensor publishes into it, as during a cloud outage: with
// drop_largest none of the sensor's events is evicted (it always holds
// less than mallory), the drops are counted against mallory, and the
// stream still holds as much as its bound allows. drop_oldest, the rows
// marked fifo, evicts the sensor's oldest events: the attack of issue 12.
func TestFairEviction(t *testing.T) {
	const size = 100
	evSize := eventSize(size) + 8 // the sources' names are longer than ev's
	tests := []struct {
		name   string
		cfg    buffer.StreamConfig
		sealed bool
		fifo   bool // drop_oldest: the sensor loses events
	}{
		{"by count", buffer.StreamConfig{MaxEvents: 100, Overflow: buffer.DropLargest}, false, false},
		{"by bytes", buffer.StreamConfig{MaxBytes: 100 * evSize, Overflow: buffer.DropLargest}, false, false},
		{"by count, sealed", buffer.StreamConfig{MaxEvents: 100, Overflow: buffer.DropLargest}, true, false},
		{"by bytes and count", buffer.StreamConfig{MaxEvents: 80, MaxBytes: 100 * evSize, Overflow: buffer.DropLargest}, false, false},
		{"drop_oldest by count", buffer.StreamConfig{MaxEvents: 100, Overflow: buffer.DropOldest}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Name = "s"
			opts := buffer.Options{Streams: []buffer.StreamConfig{cfg}}
			if tt.sealed {
				opts.Keys = buffertest.MustKeys(t)
			}
			l := buffertest.MustOpen(t, opts)
			sensor := 0
			for ; sensor < 20; sensor++ { // the sensor's events are the oldest
				mustAppend(t, l, fev("sensor", sensor, size))
			}
			const flood = 600
			for i := range flood {
				mustAppend(t, l, fev("mallory", i, size))
				if i%30 == 0 {
					mustAppend(t, l, fev("sensor", sensor, size))
					sensor++
				}
			}
			got := bySource(t, l)
			st := statsOf(l, "s")
			if tt.fifo {
				if len(got["sensor"]) == sensor {
					t.Fatalf("drop_oldest kept all %d sensor events: the test shows nothing", sensor)
				}
				t.Logf("drop_oldest: the sensor lost %d of %d events", sensor-len(got["sensor"]), sensor)
				return
			}
			for i, n := range got["sensor"] {
				if n != i {
					t.Fatalf("sensor events %v, want 0..%d in order", got["sensor"], sensor-1)
				}
			}
			if len(got["sensor"]) != sensor {
				t.Fatalf("sensor kept %d of %d events", len(got["sensor"]), sensor)
			}
			// mallory's kept events are her newest, in order.
			m := got["mallory"]
			for i := range m {
				if m[i] != flood-len(m)+i {
					t.Fatalf("mallory's events %v..., want her newest %d", m[:min(5, len(m))], len(m))
				}
			}
			dropped := uint64(sensor + flood - len(m) - len(got["sensor"]))
			if st.Drops[buffer.DropOverflow] != dropped {
				t.Fatalf("overflow drops %d, want %d", st.Drops[buffer.DropOverflow], dropped)
			}
			if want := map[string]uint64{"mallory": dropped}; !maps.Equal(st.SourceDrops, want) {
				t.Fatalf("source drops %v, want %v", st.SourceDrops, want)
			}
			// The bound is used whole: one more event would not fit.
			full := (cfg.MaxEvents > 0 && st.Events == cfg.MaxEvents) || (cfg.MaxBytes > 0 && st.Bytes+evSize > cfg.MaxBytes)
			if !full {
				t.Fatalf("stream holds %d events, %d bytes: not full (bounds %d, %d)", st.Events, st.Bytes, cfg.MaxEvents, cfg.MaxBytes)
			}
			if err := l.Check(); err != nil {
				t.Fatal(err)
			}
			// The uplink comes back: reading and acknowledging through the
			// gaps deletes everything, in order.
			drainAll(t, l)
		})
	}
}

// drainAll reads stream s in pages of 7 from its start, acknowledging each
// page, until it is empty.
func drainAll(t *testing.T, l *buffertest.Log) {
	t.Helper()
	from, last := uint64(1), uint64(0)
	for {
		next, err := l.Read("s", from, 7, func(off uint64, _ *event.Event) error {
			if off <= last {
				t.Fatalf("offset %d after %d", off, last)
			}
			last = off
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if next == from {
			break
		}
		from = next
		if err := l.Ack("s", buffer.DefaultConsumer, last); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for statsOf(l, "s").Events > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("stream not drained: %+v", statsOf(l, "s"))
		}
		select {
		case <-l.Changed():
		case <-time.After(5 * time.Millisecond):
		}
	}
	if st := statsOf(l, "s"); st.First != st.Next {
		t.Fatalf("drained stream: first %d, next %d", st.First, st.Next)
	}
}

// TestFairShares: two sources filling a bounded stream end up holding
// equal shares, whatever their rates, and each loses only its own oldest
// events.
func TestFairShares(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{Streams: []buffer.StreamConfig{{Name: "s", MaxEvents: 100, Overflow: buffer.DropLargest}}})
	a, b := 0, 0
	for range 300 {
		for range 3 {
			mustAppend(t, l, fev("fast", a, 10))
			a++
		}
		mustAppend(t, l, fev("slow", b, 10))
		b++
	}
	got := bySource(t, l)
	if len(got["fast"]) != 50 || len(got["slow"]) != 50 {
		t.Fatalf("fast holds %d, slow %d: want 50 each", len(got["fast"]), len(got["slow"]))
	}
	if got["fast"][0] != a-50 || got["slow"][0] != b-50 {
		t.Fatalf("kept fast from %d, slow from %d: want each one's newest", got["fast"][0], got["slow"][0])
	}
	st := statsOf(l, "s")
	if want := map[string]uint64{"fast": uint64(a - 50), "slow": uint64(b - 50)}; !maps.Equal(st.SourceDrops, want) {
		t.Fatalf("source drops %v, want %v", st.SourceDrops, want)
	}
}

// TestFairReopen: the holdings and per-source drops survive a restart
// (start-up reads one record, not the events), eviction goes on fairly
// after it, and the file stays consistent (buffertest checks the holdings
// against the events at every Close).
func TestFairReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	opts := buffer.Options{Streams: []buffer.StreamConfig{{Name: "s", MaxEvents: 50, Overflow: buffer.DropLargest}}}
	l := buffertest.MustOpenPath(t, path, opts)
	for i := range 10 {
		mustAppend(t, l, fev("sensor", i, 10))
	}
	for i := range 100 {
		mustAppend(t, l, fev("mallory", i, 10))
	}
	before := statsOf(l, "s").SourceDrops
	l.Close()
	l = buffertest.MustOpenPath(t, path, opts)
	if got := statsOf(l, "s").SourceDrops; !maps.Equal(got, before) || got["mallory"] != 60 {
		t.Fatalf("source drops after reopen %v, before %v (want mallory 60)", got, before)
	}
	for i := 100; i < 200; i++ {
		mustAppend(t, l, fev("mallory", i, 10))
	}
	mustAppend(t, l, fev("sensor", 10, 10))
	got := bySource(t, l)
	if len(got["sensor"]) != 11 || len(got["mallory"]) != 39 {
		t.Fatalf("after reopen: sensor holds %d (want 11), mallory %d (want 39)", len(got["sensor"]), len(got["mallory"]))
	}
	if d := statsOf(l, "s").SourceDrops; d["mallory"] != 161 || d["sensor"] != 0 {
		t.Fatalf("source drops %v, want mallory 161", d)
	}
}

// TestFairPool: beyond the sources tracked by name, sources (and long
// names) share one pooled holding that competes as one source; the file
// stays consistent, and switching the policy on and off with a backlog
// (Configure) keeps it so: what was stored before tracking starts counts
// as pooled.
func TestFairPool(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{Streams: []buffer.StreamConfig{{Name: "s", MaxEvents: 200, Overflow: buffer.DropOldest}}})
	for i := range 20 { // stored under drop_oldest: not tracked
		mustAppend(t, l, fev("old", i, 10))
	}
	l.Configure([]buffer.StreamConfig{{Name: "s", MaxEvents: 200, Overflow: buffer.DropLargest}})
	for i := range 40 { // 31 tracked, the flood the 32nd, the rest pooled with "old"
		mustAppend(t, l, fev(fmt.Sprint("s", i), 0, 10))
		if i == 30 {
			mustAppend(t, l, fev("tracked-flood", -1, 20))
		}
	}
	long := strings.Repeat("x", 100)
	for i := range 300 {
		mustAppend(t, l, fev("tracked-flood", i, 20))
		mustAppend(t, l, fev(long, i, 120)) // pooled
	}
	if err := l.Check(); err != nil {
		t.Fatal(err)
	}
	got := bySource(t, l)
	for i := range 31 { // tracked and small: never evicted
		if len(got[fmt.Sprint("s", i)]) != 1 {
			t.Fatalf("tracked source s%d lost its event: %v", i, got)
		}
	}
	if n := len(got["tracked-flood"]); n < 83 || n > 86 {
		t.Fatalf("tracked flood holds %d, want half of what the 31 small sources leave (84 or 85)", n)
	}
	if len(got["s31"]) != 0 || len(got["old"]) != 0 {
		t.Fatalf("pooled sources kept %d and %d events: the pool's oldest go first", len(got["s31"]), len(got["old"]))
	}
	l.Configure([]buffer.StreamConfig{{Name: "s", MaxEvents: 200, Overflow: buffer.DropOldest}})
	for i := range 50 {
		mustAppend(t, l, fev("late", i, 10))
	}
	l.Configure([]buffer.StreamConfig{{Name: "s", MaxEvents: 200, Overflow: buffer.DropLargest}})
	for i := range 50 {
		mustAppend(t, l, fev("later", i, 10))
	}
	if err := l.Check(); err != nil {
		t.Fatal(err)
	}
	drainAll(t, l)
}

const fairChildEnv = "FERRY_FAIR_CRASH_CHILD"

// TestFairCrashChild is the process TestFairKill9 kills: mallory floods a
// bounded drop_largest stream from four goroutines while a sensor appends
// every 10ms and prints the number of each append that returned.
func TestFairCrashChild(t *testing.T) {
	path := os.Getenv(fairChildEnv)
	if path == "" {
		t.Skip("run by TestFairKill9")
	}
	l, err := buffer.Open(path, buffer.Options{Streams: []buffer.StreamConfig{{Name: "s", MaxEvents: 300, Overflow: buffer.DropLargest}}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	go func() { _ = l.Run(context.Background()) }()
	start, _ := strconv.Atoi(os.Getenv("FERRY_CRASH_START"))
	for w := range 4 {
		go func() {
			for i := start + w; ; i += 4 {
				if err := l.Append(context.Background(), fev("mallory", i, 50)); err != nil {
					os.Exit(3)
				}
			}
		}()
	}
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	go func() { // tells the parent once mallory's flood overflows
		for {
			for _, st := range l.Stats() {
				if st.SourceDrops["mallory"] > 0 {
					mu.Lock()
					fmt.Fprintln(w, "full")
					w.Flush()
					mu.Unlock()
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	for i := start; ; i++ {
		if err := l.Append(context.Background(), fev("sensor", i, 50)); err != nil {
			os.Exit(3)
		}
		mu.Lock()
		fmt.Fprintln(w, i)
		w.Flush()
		mu.Unlock()
		time.Sleep(10 * time.Millisecond) // the sensor's interval
	}
}

// TestFairKill9 SIGKILLs a process while fair eviction runs: after each
// kill every sensor event whose append returned is in the file, and the
// holdings agree with the events (buffertest's check at Close).
func TestFairKill9(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	acked := map[int]bool{}
	for round := range 3 {
		start := round * 1000
		cmd := exec.Command(os.Args[0], "-test.run=^TestFairCrashChild$")
		cmd.Env = append(os.Environ(), fairChildEnv+"="+path, "FERRY_CRASH_START="+strconv.Itoa(start))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		n, full := 0, false
		for sc.Scan() { // until the flood overflows and the sensor has 15 events acknowledged
			if sc.Text() == "full" {
				full = true
			} else if i, err := strconv.Atoi(sc.Text()); err == nil {
				acked[i] = true
				n++
			}
			if full && n >= 15 {
				break
			}
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		for sc.Scan() {
			if i, err := strconv.Atoi(sc.Text()); err == nil {
				acked[i] = true
			}
		}
		_ = cmd.Wait()
		if n < 15 || !full {
			t.Fatalf("round %d: the child acknowledged %d sensor events, overflowed: %v", round, n, full)
		}
		l := buffertest.MustOpenPath(t, path, buffer.Options{Streams: []buffer.StreamConfig{{Name: "s", MaxEvents: 300, Overflow: buffer.DropLargest}}})
		got := bySource(t, l)
		have := map[int]bool{}
		for _, i := range got["sensor"] {
			have[i] = true
		}
		for i := range acked {
			if !have[i] {
				t.Fatalf("round %d: acknowledged sensor event %d evicted or lost (sensor holds %d, mallory %d)", round, i, len(got["sensor"]), len(got["mallory"]))
			}
		}
		if len(got["mallory"]) == 0 || statsOf(l, "s").SourceDrops["mallory"] == 0 {
			t.Fatalf("round %d: mallory never overflowed the stream: the test shows nothing", round)
		}
		l.Close() // checks the holdings against the events
	}
}

// TestFairConcurrent appends from many sources at once under the race
// detector while the uplink drains, and checks the file at the end.
func TestFairConcurrent(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{Streams: []buffer.StreamConfig{{Name: "s", MaxEvents: 64, Overflow: buffer.DropLargest}}})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 100 {
				mustAppend(t, l, fev(fmt.Sprint("w", w), i, 20))
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			var last uint64
			if _, err := l.Read("s", 1, 10, func(off uint64, _ *event.Event) error { last = off; return nil }); err != nil {
				t.Error(err)
			}
			if last > 0 {
				_ = l.Ack("s", buffer.DefaultConsumer, last)
			}
			time.Sleep(time.Millisecond)
		}
	})
	wg.Wait()
	if err := l.Check(); err != nil {
		t.Fatal(err)
	}
}
