package buffer_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/event"
)

// BenchmarkWear measures what the flash pays per reading: bytes this
// process caused to be written to storage (/proc/self/io write_bytes) and
// commits, for sensors publishing at a steady aggregate rate, each waiting
// for its append like a QoS 1 publisher for its PUBACK, with an uplink
// that reads every committed event and acks it. One op is one reading, so
// run it with a count, e.g.
//
//	go test -run '^$' -bench Wear -benchtime 200x ./buffer/
//
// It paces itself in real time (10 sensors at the case's aggregate rate).
func BenchmarkWear(b *testing.B) {
	if _, err := os.ReadFile("/proc/self/io"); err != nil {
		b.Skip("no /proc/self/io here:", err)
	}
	for _, c := range []struct {
		name string
		rate float64 // readings/s, all sensors
		opts buffer.Options
		// backlog events are appended and forwarded before the
		// sensors start, as after a cloud outage: the file keeps the
		// pages they freed.
		backlog int
	}{
		// Before: every ack its own commit, every append its own commit.
		{"sync/10rps/before", 10, buffer.Options{CommitInterval: -1, AckInterval: -1, PageSize: 4096}, 0},
		{"sync/10rps/acks-deferred", 10, buffer.Options{CommitInterval: -1, PageSize: 4096}, 0},
		{"sync/10rps/acks-deferred+grouped", 10, buffer.Options{PageSize: 4096}, 0},
		{"sync/10rps/default", 10, buffer.Options{}, 0},
		{"sync/10rps/commit-interval-1s", 10, buffer.Options{CommitInterval: time.Second}, 0},
		{"sync/1rps/default", 1, buffer.Options{}, 0},
		{"sync/100rps/default", 100, buffer.Options{}, 0},
		{"sync/10rps/after-backlog-20k/freelist-synced", 10, buffer.WithSyncFreelist(buffer.Options{}), 20000},
		{"sync/10rps/after-backlog-20k/default", 10, buffer.Options{}, 20000},
		{"batch/10rps/before-10ms", 10, buffer.Options{Durability: buffer.DurabilityBatch, BatchInterval: 10 * time.Millisecond, AckInterval: -1, PageSize: 4096}, 0},
		{"batch/10rps/default", 10, buffer.Options{Durability: buffer.DurabilityBatch}, 0},
		{"none/10rps/default", 10, buffer.Options{Durability: buffer.DurabilityNone}, 0},
	} {
		b.Run(c.name, func(b *testing.B) {
			wearCase(b, c.rate, c.opts, c.backlog)
		})
	}
}

func wearCase(b *testing.B, rate float64, opts buffer.Options, backlog int) {
	if opts.AckInterval == 0 {
		opts.AckInterval = buffer.DefaultAckInterval // not buffertest's
	}
	l := buffertest.MustOpen(b, opts)
	ctx, cancel := context.WithCancel(context.Background())
	payload := []byte(`{"t":21.5,"h":40.2,"seq":12345}`)
	if backlog > 0 {
		pend := make([]buffer.Pending, 0, backlog)
		for i := range backlog {
			p, err := l.Enqueue(ctx, &event.Event{Stream: "s", Source: fmt.Sprint("sensor-", i%10), Topic: "t", Payload: payload})
			if err != nil {
				b.Fatal(err)
			}
			pend = append(pend, p)
		}
		for _, p := range pend {
			if err := p.Wait(); err != nil {
				b.Fatal(err)
			}
		}
	}
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Go(func() { // the uplink: read what is committed, ack it
		next := uint64(1)
		for {
			ch := l.Changed()
			var last uint64
			n, err := l.Read("s", next, 1000, func(off uint64, _ *event.Event) error { last = off; return nil })
			if err != nil {
				b.Error(err)
				return
			}
			if last > 0 {
				next = n
				_ = l.Ack("s", buffer.DefaultConsumer, last)
				continue
			}
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
		}
	})
	const sensors = 10
	per := time.Duration(float64(time.Second) * sensors / rate)  // one sensor's interval
	for l.Acked("s", buffer.DefaultConsumer) < uint64(backlog) { // the backlog forwarded
		select {
		case <-l.Changed():
		case <-time.After(10 * time.Millisecond):
		}
	}
	warm := min(b.N/5, 20)
	var mu sync.Mutex
	done := 0
	var w0 int64
	var c0 uint64
	var t0 time.Time
	start := make(chan struct{})
	var sw sync.WaitGroup
	for s := range sensors {
		sw.Go(func() {
			<-start
			time.Sleep(time.Duration(rand.Int64N(int64(per)))) // phases spread
			tick := time.NewTicker(per)
			defer tick.Stop()
			for {
				mu.Lock()
				if done >= b.N+warm {
					mu.Unlock()
					return
				}
				mu.Unlock()
				ev := &event.Event{Stream: "s", Source: fmt.Sprint("sensor-", s), Topic: "t", Payload: payload}
				if err := l.Append(ctx, ev); err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				done++
				if done == warm {
					w0, t0 = writeBytes(b), time.Now()
					c0, _ = l.CommitStats()
				}
				mu.Unlock()
				<-tick.C
			}
		})
	}
	b.ResetTimer()
	close(start)
	sw.Wait()
	b.StopTimer()
	w1 := writeBytes(b)
	c1, _ := l.CommitStats()
	n := float64(b.N)
	b.ReportMetric(float64(w1-w0)/n, "B-written/reading")
	b.ReportMetric(float64(c1-c0)/n, "commits/reading")
	b.ReportMetric(n/time.Since(t0).Seconds(), "readings/s")
}

// writeBytes is this process's write_bytes from /proc/self/io.
func writeBytes(tb testing.TB) int64 {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	tb.Fatal("no write_bytes in /proc/self/io")
	return 0
}
