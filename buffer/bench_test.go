package buffer_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/event"
)

// BenchmarkAppend measures durable appends from many concurrent writers
// (as from many publishers), per durability mode, with 100-byte payloads.
// Each op is one event; group commit is what makes sync fast. Each case
// runs in the clear and then "/sealed" (Options.Keys set), side by side:
// sealing happens in the writers' goroutines, outside the commit.
// "/watermark" sets MinFreeDisk (far below the free space), so every
// commit checks the disk bound.
func BenchmarkAppend(b *testing.B) {
	for _, d := range []struct {
		name string
		d    buffer.Durability
	}{{"sync", buffer.DurabilitySync}, {"none", buffer.DurabilityNone}} {
		for _, bench := range []struct {
			writers   int
			linger    time.Duration
			sealed    bool
			watermark bool
		}{{2, 0, false, false}, {2, 0, true, false}, {50, -1, false, false}, {50, 0, false, false}, {50, 0, true, false}, {50, 0, false, true}} {
			writers := bench.writers
			name := fmt.Sprintf("%s/writers=%d", d.name, writers)
			if bench.linger < 0 {
				name += "/linger=off"
			}
			if bench.sealed {
				name += "/sealed"
			}
			if bench.watermark {
				name += "/watermark"
			}
			b.Run(name, func(b *testing.B) {
				opts := buffer.Options{Durability: d.d, MaxLinger: bench.linger}
				if bench.watermark {
					opts.MinFreeDisk = 1 << 20
				}
				if bench.sealed {
					opts.Keys = buffertest.MustKeys(b)
				}
				l := buffertest.MustOpen(b, opts)
				payload := make([]byte, 100)
				b.ReportAllocs()
				// RunParallel runs parallelism × GOMAXPROCS goroutines.
				b.SetParallelism(max(1, writers/runtime.GOMAXPROCS(0)))
				start := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					e := event.Event{Stream: "s", Source: "bench", Payload: payload}
					for pb.Next() {
						e.Time = time.Time{}
						if err := l.Append(context.Background(), &e); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
				c, _ := l.CommitStats()
				b.ReportMetric(float64(b.N)/float64(max(c, 1)), "events/commit")
			})
		}
	}
}

// BenchmarkReopen measures opening a buffer that holds a backlog of one
// million events: start-up reads one metadata record per stream, so this
// must not grow with the backlog.
func BenchmarkReopen(b *testing.B) {
	for _, n := range []int{1_000, 1_000_000} {
		b.Run(fmt.Sprintf("backlog=%d", n), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "b.db")
			l := buffertest.MustOpenPath(b, path, buffer.Options{Durability: buffer.DurabilityNone, MaxBatch: 8192})
			var wg sync.WaitGroup
			for w := 0; w < 64; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					e := event.Event{Stream: "s", Payload: make([]byte, 100)}
					for i := w; i < n; i += 64 {
						e.Time = time.Time{}
						if err := l.Append(context.Background(), &e); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			l.Close()
			b.ResetTimer()
			for b.Loop() {
				l, err := buffer.Open(path, buffer.Options{})
				if err != nil {
					b.Fatal(err)
				}
				if st := l.Stats(); st[0].Events != int64(n) {
					b.Fatalf("reopened with %d events", st[0].Events)
				}
				_ = l.Close()
			}
		})
	}
}

// BenchmarkAckBacklog measures acknowledging a 100,000-event backlog in
// one commit, as after a drain: deleting from the front must stay linear.
func BenchmarkAckBacklog(b *testing.B) {
	const n = 100_000
	for b.Loop() {
		b.StopTimer()
		l := buffertest.MustOpen(b, buffer.Options{Durability: buffer.DurabilityNone, MaxBatch: 8192})
		err := l.Update(context.Background(), func(tx *buffer.Tx) error {
			for i := 0; i < n; i++ {
				if err := tx.Append(&event.Event{Stream: "s", Payload: make([]byte, 100)}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if err := l.Ack("s", buffer.DefaultConsumer, n); err != nil {
			b.Fatal(err)
		}
		for l.Stats()[0].Events != 0 {
			time.Sleep(100 * time.Microsecond)
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "acks/s")
		b.StopTimer()
		l.Close()
		b.StartTimer()
	}
}

// BenchmarkRead measures reading a backlog of 100-byte events in batches
// of 64, as the uplink drains it after an outage, in the clear and sealed.
// Each op is one batch; ns/event is the figure to compare.
func BenchmarkRead(b *testing.B) {
	for _, sealed := range []bool{false, true} {
		name := "clear"
		if sealed {
			name = "sealed"
		}
		b.Run(name, func(b *testing.B) {
			opts := buffer.Options{Durability: buffer.DurabilityNone}
			if sealed {
				opts.Keys = buffertest.MustKeys(b)
			}
			l := buffertest.MustOpen(b, opts)
			const n = 10_000
			err := l.Update(context.Background(), func(tx *buffer.Tx) error {
				for i := 0; i < n; i++ {
					if err := tx.Append(&event.Event{Stream: "s", Source: "bench", Payload: make([]byte, 100)}); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			from, events := uint64(1), 0
			for b.Loop() {
				next, err := l.Read("s", from, 64, func(uint64, *event.Event) error { events++; return nil })
				if err != nil {
					b.Fatal(err)
				}
				if from = next; from > n {
					from = 1
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(max(events, 1)), "ns/event")
		})
	}
}
