package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestWriteTextAnomalies(t *testing.T) {
	r := &Report{
		RunID: "0123456789abcdef", Broker: "tcp://b:1883", Topic: "bench", Publishers: 3, Messages: 10, QoS: 1,
		PayloadSize: 100, Inflight: 1, Published: 30, Acked: 29, Errors: 1, Unacked: 1, Reconnects: 1,
		FirstError: "publisher 1: seq 4: connection lost", Duration: 1500 * time.Millisecond, MsgsPerSec: 19.3,
		AckLatency: Latency{Count: 29, P50: time.Millisecond, P90: 2 * time.Millisecond, P99: 3 * time.Millisecond, Max: 4 * time.Millisecond},
		E2E:        true, SubBroker: "tcp://cloud:1883", SubTopic: "#", Received: 28, Lost: 2, Duplicated: 3, OutOfOrder: 1,
		PerPublisher: []PublisherStats{
			{Publisher: 0, Published: 10, Acked: 10, Received: 10},
			{Publisher: 1, Published: 10, Acked: 9, Errors: 1, Reconnects: 1, Received: 9, Lost: 1, Duplicated: 3},
			{Publisher: 2, Published: 10, Acked: 10, Received: 9, Lost: 1, OutOfOrder: 1},
		},
	}
	var b bytes.Buffer
	r.WriteText(&b)
	out := b.String()
	for _, s := range []string{"2 of 3 publishers with anomalies", "first error", "lost 2, duplicated 3, out of order 1", "p99 3ms", "1.5s"} {
		if !strings.Contains(out, s) {
			t.Errorf("missing %q in\n%s", s, out)
		}
	}
	table := out[strings.Index(out, "anomalies:"):]
	if strings.Count(table, "\n") != 4 { // heading, column header, two rows
		t.Errorf("anomaly table should list publishers 1 and 2 only:\n%s", table)
	}
	if !strings.Contains(out, "e2e latency     n/a") {
		t.Errorf("empty e2e latency should read n/a:\n%s", out)
	}
}
