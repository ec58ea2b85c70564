package verify

import (
	"fmt"
	"io"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// The fleet the checker must handle on a 2-core machine: 1,000 gateways ×
// 10 streams.
const (
	fleetGateways = 1000
	fleetStreams  = 10
)

// fleetEnvelopes returns one envelope per (gateway, stream) of the fleet,
// with a timestamp; the caller sets Seq.
func fleetEnvelopes(now time.Time) []Envelope {
	envs := make([]Envelope, 0, fleetGateways*fleetStreams)
	for g := range fleetGateways {
		for s := range fleetStreams {
			envs = append(envs, ev(fmt.Sprintf("gw-%04d", g), fmt.Sprintf("stream-%d", s), "9b1f04c2d3e4a5b6", 1, at(now)))
		}
	}
	return envs
}

// BenchmarkObserve: one envelope per call, round-robin over the fleet's
// 10,000 streams, each in order: the checker's own cost.
func BenchmarkObserve(b *testing.B) {
	clk := newClock()
	c := newTestChecker(b, clk, time.Minute)
	envs := fleetEnvelopes(clk.Now())
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e := &envs[i%len(envs)]
		e.Seq = uint64(i/len(envs)) + 1
		c.Observe(*e)
	}
}

// BenchmarkHandleJSON: decoding (uplink.DecodeEnvelopes) and checking, one envelope
// a message, as a gateway without batching sends.
func BenchmarkHandleJSON(b *testing.B) {
	benchHandle(b, 1)
}

// BenchmarkHandleJSONBatch10: the same, ten envelopes a message.
func BenchmarkHandleJSONBatch10(b *testing.B) {
	benchHandle(b, 10)
}

func benchHandle(b *testing.B, batch int) {
	clk := newClock()
	c := newTestChecker(b, clk, time.Minute)
	envs := fleetEnvelopes(clk.Now())
	// Four rounds of messages, encoded beforehand; later rounds repeat
	// them (duplicates: the same decoding cost).
	var msgs [][]byte
	for round := range 4 {
		for i := 0; i < len(envs); i++ {
			var group []Envelope
			for k := range batch {
				e := envs[i]
				e.Seq = uint64(round*batch + k + 1)
				group = append(group, e)
			}
			if batch == 1 {
				msgs = append(msgs, encodeJSON(&group[0]))
			} else {
				msgs = append(msgs, encodeBatch(group...))
			}
		}
	}
	bytes := 0
	for _, m := range msgs {
		bytes += len(m)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.Handle(msgs[i%len(msgs)])
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(bytes)/float64(len(msgs)), "B/msg")
}

// TestFleetScale: 1,000 gateways × 10 streams, 100 events each with a
// hole and an announced drop in every stream, fit in a few MiB; a Tick,
// a Report and a scrape over them are measured (figures logged).
func TestFleetScale(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the fleet scale figures")
	}
	clk := newClock()
	envs := fleetEnvelopes(clk.Now())
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	c := newTestChecker(t, clk, time.Minute)
	start := cpuNow()
	n := 0
	for seq := uint64(1); seq <= 100; seq++ {
		for i := range envs {
			e := envs[i]
			switch seq {
			case 50: // deleted at the cloud: a hole
				continue
			case 70, 71:
				continue
			case 72:
				e.Gap = &Gap{Dropped: 2, Reasons: map[string]uint64{"overflow": 2}}
			}
			e.Seq = seq
			c.Observe(e)
			n++
		}
	}
	feed := cpuNow() - start
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)

	start = cpuNow()
	clk.Add(time.Minute)
	c.Tick()
	tick := cpuNow() - start
	start = cpuNow()
	r := c.Report()
	report := cpuNow() - start
	var scrape countingWriter
	start = cpuNow()
	if err := c.WritePrometheus(&scrape, LabelsStream); err != nil {
		t.Fatal(err)
	}
	scrapeTook := cpuNow() - start
	var scrapeGW countingWriter
	_ = c.WritePrometheus(&scrapeGW, LabelsGateway)

	// Decoding (uplink.DecodeEnvelopes) and checking, in CPU time: 20,000 single
	// envelopes, then 20,000 envelopes in batches of 10.
	var singles, batches [][]byte
	for i := range 20000 {
		e := envs[i%len(envs)]
		e.Seq = uint64(101 + i/len(envs))
		singles = append(singles, encodeJSON(&e))
	}
	for i := range 2000 {
		group := make([]Envelope, 10)
		for k := range group {
			group[k] = envs[i%len(envs)]
			group[k].Seq = uint64(103 + i/len(envs)*10 + k)
		}
		batches = append(batches, encodeBatch(group...))
	}
	start = cpuNow()
	for _, m := range singles {
		c.Handle(m)
	}
	perSingle := (cpuNow() - start) / 20000
	start = cpuNow()
	for _, m := range batches {
		c.Handle(m)
	}
	perBatched := (cpuNow() - start) / 20000
	t.Logf("decode and check, CPU per event: %v single (%d B a message), %v in batches of 10 (%d B a message)",
		perSingle, len(singles[0]), perBatched, len(batches[0]))

	if r.Streams != fleetGateways*fleetStreams || r.Totals.Received != uint64(n) ||
		r.Totals.Missing != fleetGateways*fleetStreams || r.Totals.Dropped != 2*fleetGateways*fleetStreams {
		t.Fatalf("streams %d received %d missing %d dropped %d", r.Streams, r.Totals.Received, r.Totals.Missing, r.Totals.Dropped)
	}
	t.Logf("1,000 gateways × 10 streams, %d events: fed in %v of CPU (%.0f events per CPU second), heap %.1f MiB (%.0f B a stream); CPU time: Tick %v, Report %v, scrape %v (%d lines, %.1f MiB; per gateway: %d lines, %.2f MiB)",
		n, feed.Round(time.Millisecond), float64(n)/feed.Seconds(), float64(heap)/(1<<20), float64(heap)/float64(r.Streams),
		tick.Round(time.Microsecond), report.Round(time.Millisecond), scrapeTook.Round(time.Millisecond),
		scrape.lines, float64(scrape.n)/(1<<20), scrapeGW.lines, float64(scrapeGW.n)/(1<<20))
	runtime.KeepAlive(envs)
	if heap > 64<<20 {
		t.Fatalf("heap %d bytes for the fleet: more than 64 MiB", heap)
	}
}

// cpuNow is the process's CPU time (user and system, every thread, GC
// included): on a loaded machine wall time says little.
func cpuNow() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// countingWriter counts bytes and lines.
type countingWriter struct{ n, lines int }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += len(p)
	for _, c := range p {
		if c == '\n' {
			w.lines++
		}
	}
	return len(p), nil
}

var _ io.Writer = (*countingWriter)(nil)
