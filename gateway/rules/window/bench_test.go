package window

import (
	"strconv"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/rules/record"
)

// BenchmarkWindow1000Devices measures the window stage alone on the
// gateway's target load shape: 1,000 devices, one-minute tumbling
// event-time windows grouped by source, event times 1 ms apart (so each
// window sees 60,000 records, 60 per device, and then closes and emits
// 1,000 records). Records are built up front: the figure is the stage's
// cost, not the decoder's. The full filter+map+window pipeline target is
// 200,000 events/s on one core.
func BenchmarkWindow1000Devices(b *testing.B) {
	aggs := []Aggregate{{Func: "avg", Field: "temp_c"}, {Func: "min", Field: "temp_c"}, {Func: "max", Field: "temp_c"}, {Func: "count"}}
	for _, bc := range []struct {
		name string
		aggs []Aggregate
	}{
		{"avg_min_max_count", aggs},
		{"avg_min_max_count_p95", append(aggs[:len(aggs):len(aggs)], Aggregate{Func: "p95", Field: "temp_c"})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			const devices, variants = 1000, 16
			// Each device cycles through a few readings so that min, max and
			// the sketch see varied values.
			recs := make([]record.Record, devices*variants)
			for d := range devices {
				src := "sensor-" + strconv.Itoa(d)
				for v := range variants {
					recs[v*devices+d] = record.Record{
						Key:    src,
						Source: src,
						Topic:  "site/" + src + "/telemetry",
						Fields: map[string]any{"temp_c": 18 + float64(d%7) + 0.37*float64(v), "rh": 40.0 + float64(v)},
					}
				}
			}
			w, err := New(Config{Name: "bench", Size: time.Minute, EventTime: true, GroupBy: []string{"source"}, Aggregates: bc.aggs})
			if err != nil {
				b.Fatal(err)
			}
			emitted := 0
			emit := func(*record.Record) { emitted++ }
			base := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
			var groups, bytes int64
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				r := &recs[i%len(recs)]
				r.Time = base.Add(time.Duration(i) * time.Millisecond)
				if err := w.Process(r, emit); err != nil {
					b.Fatal(err)
				}
				// Sample the state just before a window closes, when it is
				// largest.
				if i%60_000 == 59_999 {
					st := w.Stats()
					groups, bytes = int64(st.OpenGroups), st.ApproxBytes
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			if groups == 0 { // b.N below one window
				st := w.Stats()
				groups, bytes = int64(st.OpenGroups), st.ApproxBytes
			}
			if groups > 0 {
				b.ReportMetric(float64(bytes)/float64(groups), "B/group")
			}
			_ = emitted
		})
	}
}
