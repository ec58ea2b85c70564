package buffer_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/event"
)

// BenchmarkWearCapped is BenchmarkWear's sync/10rps/default case on a
// bounded stream (as every stream of the gateway's default config is), per
// overflow policy: what per-source accounting (drop_largest) costs the
// flash on the hot path, where nothing overflows.
//
//	go test -run '^$' -bench WearCapped -count 3 -benchtime 100x ./buffer/
func BenchmarkWearCapped(b *testing.B) {
	if _, err := os.ReadFile("/proc/self/io"); err != nil {
		b.Skip("no /proc/self/io here:", err)
	}
	for _, c := range []struct {
		name     string
		overflow buffer.Overflow
	}{
		{"drop_oldest", buffer.DropOldest},
		{"drop_largest", buffer.DropLargest},
	} {
		b.Run("sync/10rps/"+c.name, func(b *testing.B) {
			opts := buffer.Options{Streams: []buffer.StreamConfig{{Name: "s", MaxEvents: 1_000_000, MaxBytes: 256 << 20, Overflow: c.overflow}}}
			wearCase(b, 10, opts, 0)
		})
	}
}

// BenchmarkOverflow measures appends to a full stream (each deletes an
// event to make room) from 10 sources, one of which floods (9 of every 18
// appends), per overflow policy: what finding and attributing the victim
// costs drop_largest, sealed or not.
//
//	go test -run '^$' -bench Overflow ./buffer/
func BenchmarkOverflow(b *testing.B) {
	for _, c := range []struct {
		name     string
		overflow buffer.Overflow
		sealed   bool
	}{
		{"drop_oldest", buffer.DropOldest, false},
		{"drop_largest", buffer.DropLargest, false},
		{"drop_largest/sealed", buffer.DropLargest, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			opts := buffer.Options{Durability: buffer.DurabilityNone,
				Streams: []buffer.StreamConfig{{Name: "s", MaxEvents: 10000, Overflow: c.overflow}}}
			if c.sealed {
				opts.Keys = buffertest.MustKeys(b)
			}
			l := buffertest.MustOpen(b, opts)
			src := func(i int) string {
				if i%18 < 9 {
					return "flood"
				}
				return fmt.Sprint("sensor-", i%9)
			}
			ctx := context.Background()
			payload := make([]byte, 100)
			pend := make([]buffer.Pending, 0, 10000)
			for i := range 10000 { // full before the clock starts
				p, err := l.Enqueue(ctx, &event.Event{Stream: "s", Source: src(i), Payload: payload})
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
			b.ReportAllocs()
			b.ResetTimer()
			pend = pend[:0]
			for i := range b.N {
				p, err := l.Enqueue(ctx, &event.Event{Stream: "s", Source: src(i), Payload: payload})
				if err != nil {
					b.Fatal(err)
				}
				if pend = append(pend, p); len(pend) == 256 {
					for _, p := range pend {
						if err := p.Wait(); err != nil {
							b.Fatal(err)
						}
					}
					pend = pend[:0]
				}
			}
			for _, p := range pend {
				if err := p.Wait(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
