package buffer_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/event"
)

// offsetsFrom reads stream from offset from and returns the offsets.
func offsetsFrom(t testing.TB, l *buffertest.Log, stream string, from uint64) []uint64 {
	t.Helper()
	offs, _ := readAll(t, l, stream, from)
	return offs
}

// testClock is a settable clock.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type gapWant struct {
	after, before uint64
	n             uint64
	reasons       map[string]uint64
}

// TestDroppedByReason drops events by each policy and asks Dropped about
// the gaps a reader finds: each is announced with its exact size and
// reason, and a deletion after every consumer processed the events is no
// drop at all.
func TestDroppedByReason(t *testing.T) {
	tests := []struct {
		name  string
		cfg   buffer.StreamConfig
		run   func(t *testing.T, l *buffertest.Log, clock *testClock)
		from  uint64 // it reads from here
		offs  []uint64
		gaps  []gapWant
		drops map[string]uint64
	}{{
		name: "drop_oldest",
		cfg:  buffer.StreamConfig{MaxEvents: 5, Overflow: buffer.DropOldest},
		run: func(t *testing.T, l *buffertest.Log, _ *testClock) {
			for i := 1; i <= 8; i++ {
				mustAppend(t, l, ev("s", i, 10))
			}
		},
		from:  1,
		offs:  []uint64{4, 5, 6, 7, 8},
		gaps:  []gapWant{{0, 4, 3, map[string]uint64{"overflow": 3}}},
		drops: map[string]uint64{"overflow": 3},
	}, {
		name: "drop_largest",
		cfg:  buffer.StreamConfig{MaxEvents: 6, Overflow: buffer.DropLargest},
		run: func(t *testing.T, l *buffertest.Log, _ *testClock) {
			for i := 0; i < 3; i++ {
				mustAppend(t, l, fev("flood", i, 10))
				mustAppend(t, l, fev("sensor", i, 10))
			}
			for i := 3; i < 6; i++ {
				mustAppend(t, l, fev("flood", i, 10)) // evicts flood's 1, 3, 5
			}
		},
		from: 1,
		offs: []uint64{2, 4, 6, 7, 8, 9},
		gaps: []gapWant{
			{0, 2, 1, map[string]uint64{"overflow": 1}},
			{2, 4, 1, map[string]uint64{"overflow": 1}},
			{4, 6, 1, map[string]uint64{"overflow": 1}},
			{0, 9, 3, map[string]uint64{"overflow": 3}}, // across events still stored
		},
		drops: map[string]uint64{"overflow": 3},
	}, {
		name: "ttl",
		cfg:  buffer.StreamConfig{TTL: time.Hour},
		run: func(t *testing.T, l *buffertest.Log, clock *testClock) {
			for i := 1; i <= 3; i++ {
				mustAppend(t, l, ev("s", i, 10))
			}
			clock.Add(2 * time.Hour)
			for i := 4; i <= 5; i++ {
				mustAppend(t, l, ev("s", i, 10))
			}
			waitFor(t, func() bool { return statsOf(l, "s").Events == 2 })
		},
		from:  1,
		offs:  []uint64{4, 5},
		gaps:  []gapWant{{0, 4, 3, map[string]uint64{"expired": 3}}},
		drops: map[string]uint64{"expired": 3},
	}, {
		name: "unconsumed",
		cfg:  buffer.StreamConfig{}, // requires the uplink alone
		run: func(t *testing.T, l *buffertest.Log, _ *testClock) {
			for i := 1; i <= 5; i++ {
				mustAppend(t, l, ev("s", i, 10))
			}
			// A consumer the stream does not require holds a position.
			if err := l.Ack("s", "pipeline:late", 1); err != nil {
				t.Fatal(err)
			}
			commit(t, l)
			if err := l.Ack("s", buffer.DefaultConsumer, 5); err != nil {
				t.Fatal(err)
			}
			mustAppend(t, l, ev("s", 6, 10))
		},
		from: 2, // pipeline:late reads on after its position
		offs: []uint64{6},
		gaps: []gapWant{
			{1, 6, 4, map[string]uint64{"unconsumed": 4}},
			{5, 6, 0, nil}, // the uplink's view: it acknowledged them
		},
		drops: map[string]uint64{"unconsumed": 4},
	}, {
		name: "rewound over an eviction",
		cfg:  buffer.StreamConfig{MaxEvents: 6, Overflow: buffer.DropLargest, Retain: time.Hour},
		run: func(t *testing.T, l *buffertest.Log, _ *testClock) {
			for i := 0; i < 3; i++ {
				mustAppend(t, l, fev("flood", i, 10))
				mustAppend(t, l, fev("sensor", i, 10))
			}
			if err := l.Ack("s", buffer.DefaultConsumer, 6); err != nil {
				t.Fatal(err)
			}
			commit(t, l)
			// Retained, processed: flood's 1 goes from the front, its 3
			// from the middle.
			mustAppend(t, l, fev("flood", 3, 10))
			mustAppend(t, l, fev("flood", 4, 10))
			if err := l.Rewind("s", buffer.DefaultConsumer, 2); err != nil {
				t.Fatal(err)
			}
		},
		from: 2,
		offs: []uint64{2, 4, 5, 6, 7, 8},
		gaps: []gapWant{
			{2, 4, 1, map[string]uint64{"overflow": 1}},
			{1, 2, 0, nil}, // before every stored event: no reader goes there
		},
		drops: map[string]uint64{"overflow": 2},
	}, {
		name: "acknowledged",
		cfg:  buffer.StreamConfig{MaxEvents: 3, Overflow: buffer.DropOldest},
		run: func(t *testing.T, l *buffertest.Log, _ *testClock) {
			for i := 1; i <= 3; i++ {
				mustAppend(t, l, ev("s", i, 10))
			}
			if err := l.Ack("s", buffer.DefaultConsumer, 3); err != nil {
				t.Fatal(err)
			}
			for i := 4; i <= 6; i++ {
				mustAppend(t, l, ev("s", i, 10)) // room made by the ack
			}
		},
		from: 4,
		offs: []uint64{4, 5, 6},
		gaps: []gapWant{{3, 4, 0, nil}, {0, 4, 0, nil}},
	}, {
		name: "rollup",
		cfg:  buffer.StreamConfig{MaxEvents: 10, Overflow: buffer.Rollup, RollupInterval: time.Minute},
		run: func(t *testing.T, l *buffertest.Log, clock *testClock) {
			for i := 0; i <= 10; i++ {
				mustAppend(t, l, &event.Event{Stream: "s", Source: "th1", ContentType: "application/json",
					Payload: fmt.Appendf(nil, `{"t":%d}`, i)})
				clock.Add(10 * time.Second)
			}
		},
		from: 1,
		// 1 and 2 (the first tenth of the bound, at least two) became
		// aggregate 11; the 11th reading is 12.
		offs:  []uint64{3, 4, 5, 6, 7, 8, 9, 10, 11, 12},
		gaps:  []gapWant{{0, 3, 2, map[string]uint64{"rollup": 2}}},
		drops: map[string]uint64{"rollup": 2},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &testClock{now: time.Unix(1_700_000_000, 0)}
			cfg := tt.cfg
			cfg.Name = "s"
			l := buffertest.MustOpen(t, buffer.Options{Now: clock.Now, SweepInterval: 5 * time.Millisecond,
				Streams: []buffer.StreamConfig{cfg}})
			tt.run(t, l, clock)
			commit(t, l)
			if got := offsetsFrom(t, l, "s", tt.from); fmt.Sprint(got) != fmt.Sprint(tt.offs) {
				t.Fatalf("read from %d: offsets %v, want %v", tt.from, got, tt.offs)
			}
			for _, g := range tt.gaps {
				n, reasons := l.Dropped("s", g.after, g.before)
				if n != g.n || !maps.Equal(reasons, g.reasons) {
					t.Errorf("Dropped(%d, %d) = %d %v, want %d %v", g.after, g.before, n, reasons, g.n, g.reasons)
				}
			}
			if got := statsOf(l, "s").Drops; !maps.Equal(got, tt.drops) {
				t.Errorf("drop counters %v, want %v", got, tt.drops)
			}
		})
	}
}

// TestDroppedProperty appends, reads, acknowledges, expires, overflows
// (each policy) and reopens at random, against a real file, with a
// consumer reading in order and asking Dropped about every step it makes
// from one event to the next: each gap is announced exactly
// (before-after-1 = events read between + n, so with consecutive reads
// every missing offset), and, for a reader that acknowledges at once and
// never restarts, the announced reasons add up to the drop counters. Some
// runs bound the drop records to 3, so they coarsen: counts stay exact.
func TestDroppedProperty(t *testing.T) {
	policies := []buffer.Overflow{buffer.DropOldest, buffer.DropLargest, buffer.Rollup}
	for seed := uint64(1); seed <= 16; seed++ {
		policy := policies[seed%3]
		coarse := seed%4 == 0
		immediate := seed%2 == 1 // acks each event at once, never restarts
		t.Run(fmt.Sprintf("seed=%d/%d/coarse=%v/immediate=%v", seed, policy, coarse, immediate), func(t *testing.T) {
			if coarse {
				defer buffer.SetMaxGapRecords(3)()
			}
			rng := rand.New(rand.NewPCG(seed, 42))
			clock := &testClock{now: time.Unix(1_700_000_000, 0)}
			cfg := buffer.StreamConfig{Name: "s", MaxEvents: int64(8 + rng.IntN(16)), Overflow: policy,
				TTL: time.Hour, RollupInterval: time.Minute}
			opts := buffer.Options{Now: clock.Now, SweepInterval: time.Millisecond, Durability: buffer.DurabilityNone,
				Streams: []buffer.StreamConfig{cfg}}
			path := filepath.Join(t.TempDir(), "b.db")
			l := buffertest.MustOpenPath(t, path, opts)
			var (
				last      uint64 // the reader's last event (or position after a restart)
				announced = map[string]uint64{}
				reads     []uint64 // offsets read in this session, in order
				seq       int
			)
			ctx := context.Background()
			// settle waits until the sweep has deleted what expired: the
			// clock only moves between reads, so no drop then races a
			// read (an event read and then deleted by a concurrent sweep
			// is read, not missing, yet counted as dropped).
			settle := func() {
				waitFor(t, func() bool {
					st := statsOf(l, "s")
					var oldest time.Time
					_, _ = l.Read("s", st.First, 1, func(_ uint64, e *event.Event) error { oldest = e.Time; return nil })
					return st.Events == 0 || !oldest.Before(clock.Now().Add(-time.Hour))
				})
			}
			for step := 0; step < 250; step++ {
				switch op := rng.IntN(10); {
				case op < 4: // a burst of readings from a few sensors
					for range 1 + rng.IntN(6) {
						seq++
						e := &event.Event{Stream: "s", Source: fmt.Sprintf("sensor%d", rng.IntN(3)), Topic: "th",
							ContentType: "application/json", Payload: fmt.Appendf(nil, `{"t":%d,"h":%d}`, seq, seq%7)}
						if rng.IntN(12) == 0 {
							e.Payload = []byte(`"not a number"`) // rolled up never, dropped as overflow
						}
						if err := l.Append(ctx, e); err != nil {
							t.Fatal(err)
						}
						clock.Add(time.Duration(rng.IntN(20)) * time.Second)
					}
				case op < 7: // the reader reads on
					settle()
					batch := []uint64{last}
					_, err := l.Read("s", last+1, 1+rng.IntN(8), func(off uint64, _ *event.Event) error {
						n, reasons := l.Dropped("s", last, off)
						var sum uint64
						for why, c := range reasons {
							sum += c
							announced[why] += c
						}
						if n != off-last-1 || sum != n {
							return fmt.Errorf("step %d: Dropped(%d, %d) = %d %v, want %d missing offsets", step, last, off, n, reasons, off-last-1)
						}
						if i := rng.IntN(len(batch)); !coarse {
							// Any earlier event of this read, not only the
							// previous one: the exact records tell the gap
							// between them too.
							between := uint64(len(batch) - 1 - i)
							if n, _ := l.Dropped("s", batch[i], off); off-batch[i]-1 != between+n {
								return fmt.Errorf("step %d: Dropped(%d, %d) = %d with %d events read between", step, batch[i], off, n, between)
							}
						}
						batch = append(batch, off)
						last = off
						reads = append(reads, off)
						if immediate {
							return l.Ack("s", buffer.DefaultConsumer, off)
						}
						return nil
					})
					if err != nil {
						t.Fatal(err)
					}
				case op < 8 && !immediate: // acknowledge part of what was read
					if len(reads) > 0 {
						if err := l.Ack("s", buffer.DefaultConsumer, reads[rng.IntN(len(reads))]); err != nil {
							t.Fatal(err)
						}
					}
				case op < 9: // time passes: the oldest events may expire
					clock.Add(time.Duration(rng.IntN(40)) * time.Minute)
					settle()
				default: // restart
					l.Close()
					l = buffertest.MustOpenPath(t, path, opts)
					if !immediate {
						last, reads = l.Acked("s", buffer.DefaultConsumer), nil
					}
				}
			}
			// Read the rest, then compare with the counters.
			settle()
			_, err := l.Read("s", last+1, 1<<20, func(off uint64, _ *event.Event) error {
				n, reasons := l.Dropped("s", last, off)
				if n != off-last-1 {
					return fmt.Errorf("Dropped(%d, %d) = %d", last, off, n)
				}
				for why, c := range reasons {
					announced[why] += c
				}
				last = off
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if next := statsOf(l, "s").Next; last < next-1 {
				n, reasons := l.Dropped("s", last, next)
				if n != next-last-1 {
					t.Fatalf("tail: Dropped(%d, %d) = %d", last, next, n)
				}
				for why, c := range reasons {
					announced[why] += c
				}
			}
			drops := statsOf(l, "s").Drops
			if immediate && !coarse && !maps.Equal(announced, drops) {
				t.Fatalf("announced %v, counted %v", announced, drops)
			}
			var total, counted uint64
			for why, c := range announced {
				total += c
				counted += drops[why]
			}
			if immediate && total != counted {
				t.Fatalf("announced %d drops in all (%v), counted %d (%v)", total, announced, counted, drops)
			}
			t.Logf("%d readings, drops %v", seq, drops)
		})
	}
}

// TestDropRecordsBounded: scattered drops (fair eviction of a flooder)
// beyond the bound of records coarsen the oldest records into one: the
// count of a gap stays exact, and the records stay bounded; once the
// reader has passed them they are pruned.
func TestDropRecordsBounded(t *testing.T) {
	defer buffer.SetMaxGapRecords(4)()
	path := filepath.Join(t.TempDir(), "b.db")
	opts := buffer.Options{Streams: []buffer.StreamConfig{{Name: "s", MaxEvents: 20}}}
	l := buffertest.MustOpenPath(t, path, opts)
	// sensor and flood alternate, then flood alone: each append evicts
	// flood's oldest, one offset in two, every drop a record of its own.
	for i := 0; i < 10; i++ {
		mustAppend(t, l, fev("sensor", i, 10))
		mustAppend(t, l, fev("flood", i, 10))
	}
	for i := 10; i < 20; i++ {
		mustAppend(t, l, fev("flood", i, 10))
	}
	if d := statsOf(l, "s").Drops["overflow"]; d != 10 {
		t.Fatalf("overflow drops %d, want 10", d)
	}
	if n := l.GapRecords("s"); n != 4 {
		t.Fatalf("%d drop records, want the bound, 4", n)
	}
	l.Close()
	l = buffertest.MustOpenPath(t, path, opts) // the records survive a restart
	var last uint64
	var total uint64
	_, err := l.Read("s", 1, 100, func(off uint64, _ *event.Event) error {
		n, reasons := l.Dropped("s", last, off)
		if n != off-last-1 || reasons["overflow"] != n {
			return fmt.Errorf("Dropped(%d, %d) = %d %v, want %d overflow", last, off, n, reasons, off-last-1)
		}
		total += n
		last = off
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if total != 10 {
		t.Fatalf("announced %d drops, want 10", total)
	}
	if n, _ := l.Dropped("s", 0, 31); n != 10 {
		t.Fatalf("Dropped over the whole stream = %d, want 10", n)
	}
	if err := l.Ack("s", buffer.DefaultConsumer, last); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, fev("sensor", 99, 10))
	if n := l.GapRecords("s"); n != 0 {
		t.Fatalf("%d drop records left after the reader passed them all, want 0", n)
	}
}

// TestDropRecordsMerge: the drops of one outage under drop_oldest make
// one record however many commits they span; a drop of another reason
// next to it makes a record of its own.
func TestDropRecordsMerge(t *testing.T) {
	clock := &testClock{now: time.Unix(1_700_000_000, 0)}
	l := buffertest.MustOpen(t, buffer.Options{Now: clock.Now, SweepInterval: time.Millisecond,
		Streams: []buffer.StreamConfig{{Name: "s", MaxEvents: 10, Overflow: buffer.DropOldest, TTL: time.Hour}}})
	for i := 1; i <= 100; i++ {
		mustAppend(t, l, ev("s", i, 10))
	}
	if n := l.GapRecords("s"); n != 1 {
		t.Fatalf("%d drop records after 90 overflow drops in 90 commits, want 1", n)
	}
	clock.Add(2 * time.Hour)
	waitFor(t, func() bool { return statsOf(l, "s").Events == 0 })
	if n := l.GapRecords("s"); n != 2 {
		t.Fatalf("%d drop records, want 2 (overflow, then expired)", n)
	}
	n, reasons := l.Dropped("s", 0, 101)
	if want := map[string]uint64{"overflow": 90, "expired": 10}; n != 100 || !maps.Equal(reasons, want) {
		t.Fatalf("Dropped(0, 101) = %d %v, want 100 %v", n, reasons, want)
	}
	// Part of a record: exact, for one reason.
	if n, reasons := l.Dropped("s", 85, 95); n != 9 || reasons["overflow"] != 5 || reasons["expired"] != 4 {
		t.Fatalf("Dropped(85, 95) = %d %v, want 9: 5 overflow, 4 expired", n, reasons)
	}
}
