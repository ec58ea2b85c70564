package uplink

import (
	"testing"
	"time"

	"github.com/ferrygw/ferry/internal/mqtttest"
)

// BenchmarkForwardMosquitto pushes b.N preloaded events through a real
// Mosquitto (QoS 1, inflight 100) and reports the PUBACK-confirmed rate.
func BenchmarkForwardMosquitto(b *testing.B) {
	for _, bc := range []struct {
		name  string
		batch int
	}{{"inflight100", 1}, {"inflight100-batch50", 50}} {
		b.Run(bc.name, func(b *testing.B) {
			broker := mqtttest.Start(b)
			q := newMemQueue()
			q.append("s", mkEvents(b, "s", 1, b.N)...)
			cfg := testConfig(b, broker.URL())
			cfg.Inflight = 100
			cfg.BatchMaxEvents = bc.batch
			b.ResetTimer()
			start := time.Now()
			f, stop := startForwarder(b, q, cfg)
			for q.acked("s") != uint64(b.N) {
				time.Sleep(200 * time.Microsecond)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			stop()
			st := f.Status()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(st.ForwardedMessages)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(st.ForwardedBytes)/float64(b.N), "B/event")
		})
	}
}
