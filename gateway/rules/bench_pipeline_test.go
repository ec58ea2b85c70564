package rules

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/rules/payload"
	"github.com/ferrygw/ferry/gateway/rules/record"
	"github.com/ferrygw/ferry/gateway/rules/stage"
	"github.com/ferrygw/ferry/gateway/rules/window"
)

// BenchmarkPipeline1000Devices is the target: JSON payloads through
// decode, filter, map (a unit conversion) and a one-minute tumbling window
// grouped by 1,000 devices (avg, min, max, count), on one goroutine. Each
// op is one event. Run with -benchmem; events/s is the figure to quote.
func BenchmarkPipeline1000Devices(b *testing.B) {
	for _, pct := range []bool{false, true} {
		name := "avg-min-max-count"
		if pct {
			name += "-p95"
		}
		b.Run(name, func(b *testing.B) {
			filter, err := stage.NewFilter("temp_c > -40 && temp_c < 85")
			if err != nil {
				b.Fatal(err)
			}
			mp, err := stage.NewMap(stage.MapConfig{Name: "m", Set: []stage.Assignment{{Field: "temp_f", Expr: "temp_c * 9 / 5 + 32"}}})
			if err != nil {
				b.Fatal(err)
			}
			aggs := []window.Aggregate{{Output: "avg", Func: "avg", Field: "temp_f"}, {Output: "min", Func: "min", Field: "temp_f"},
				{Output: "max", Func: "max", Field: "temp_f"}, {Output: "n", Func: "count"}}
			if pct {
				aggs = append(aggs, window.Aggregate{Output: "p95", Func: "p95", Field: "temp_f"})
			}
			win, err := window.New(window.Config{Name: "w", Size: time.Minute, EventTime: true, GroupBy: []string{"source"}, Aggregates: aggs})
			if err != nil {
				b.Fatal(err)
			}
			stages := []Stage{filter, mp, win}
			sources := make([]string, 1000)
			topics := make([]string, 1000)
			for i := range sources {
				sources[i] = fmt.Sprintf("dev-%04d", i)
				topics[i] = "sensors/" + sources[i] + "/temp"
			}
			payloads := make([][]byte, 64)
			for i := range payloads {
				payloads[i] = []byte(fmt.Sprintf(`{"temp_c":%.2f,"hum":%d}`, 15+float64(i)/8, 40+i%20))
			}
			t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			var outs int
			var next []*record.Record
			emit := func(o *record.Record) { next = append(next, o) }
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				d := i % 1000
				base := record.Record{Key: "k", Time: t0.Add(time.Duration(i) * time.Millisecond), Source: sources[d], Topic: topics[d]}
				recs, err := payload.Decode(payload.FormatJSON, "application/json", payloads[i%len(payloads)], base)
				if err != nil {
					b.Fatal(err)
				}
				cur := recs
				for _, st := range stages {
					next = next[:0]
					for _, r := range cur {
						if err := st.Process(r, emit); err != nil {
							b.Fatal(err)
						}
					}
					cur, next = next, cur[:0]
				}
				outs += len(cur)
			}
			el := time.Since(start)
			b.ReportMetric(float64(b.N)/el.Seconds(), "events/s")
			st := win.Stats()
			if st.OpenGroups > 0 {
				b.ReportMetric(float64(st.ApproxBytes)/float64(st.OpenGroups), "B/group")
			}
			_ = outs
			runtime.KeepAlive(stages)
		})
	}
}
