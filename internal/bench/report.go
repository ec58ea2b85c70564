package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// Report is the outcome of a run. Counts are messages. In publish-only mode
// the end-to-end fields are zero and E2E is false.
type Report struct {
	RunID       string `json:"run_id"`
	Broker      string `json:"broker"`
	Topic       string `json:"topic"`
	Publishers  int    `json:"publishers"`
	Messages    int    `json:"messages_per_publisher"`
	QoS         byte   `json:"qos"`
	PayloadSize int    `json:"payload_size"`
	Inflight    int    `json:"inflight"`

	// Published counts publish attempts, Acked those whose token completed
	// without error (PUBACK for QoS 1, written for QoS 0), Errors the
	// failed ones and Unacked those published but not acknowledged (failed
	// or still pending when the run was cut short).
	Published  int64 `json:"published"`
	Acked      int64 `json:"acked"`
	Errors     int64 `json:"errors"`
	Unacked    int64 `json:"unacked"`
	Reconnects int64 `json:"reconnects"`
	// FirstError is the first publish error seen, if any.
	FirstError string `json:"first_error,omitempty"`
	// Duration runs from the first publish to the last acknowledgement.
	Duration   time.Duration `json:"duration_ns"`
	MsgsPerSec float64       `json:"msgs_per_sec"`
	// AckLatency is publish to PUBACK (QoS 1 only).
	AckLatency Latency `json:"ack_latency"`
	// Hold is how long the connections were held open after publishing
	// (see Config.Hold), HeldOpen how many were still open at its end.
	Hold     time.Duration `json:"hold_ns,omitempty"`
	HeldOpen int           `json:"held_open,omitempty"`

	// E2E reports whether the end-to-end fields below were measured.
	E2E       bool   `json:"e2e"`
	SubBroker string `json:"sub_broker,omitempty"`
	SubTopic  string `json:"sub_topic,omitempty"`
	// Received counts distinct messages, Duplicated repeat arrivals,
	// OutOfOrder distinct arrivals with a lower sequence number than one
	// already received from the same publisher, Lost acknowledged messages
	// never received and UnackedReceived unacknowledged ones that arrived
	// anyway (e.g. the PUBACK was lost with the connection).
	Received        int64 `json:"received"`
	Lost            int64 `json:"lost"`
	Duplicated      int64 `json:"duplicated"`
	OutOfOrder      int64 `json:"out_of_order"`
	UnackedReceived int64 `json:"unacked_received"`
	// Ignored counts cloud messages without a bench header of this run's
	// shape, Stale those from other runs.
	Ignored       int64 `json:"ignored"`
	Stale         int64 `json:"stale"`
	SubReconnects int64 `json:"sub_reconnects"`
	// E2ELatency is publish to arrival at the subscriber, first arrivals
	// only; it compares the two hosts' wall clocks.
	E2ELatency Latency `json:"e2e_latency"`

	// PerPublisher has one entry per publisher, in index order.
	PerPublisher []PublisherStats `json:"per_publisher"`
}

// PublisherStats is one publisher's share of a Report.
type PublisherStats struct {
	Publisher       int   `json:"publisher"`
	Published       int64 `json:"published"`
	Acked           int64 `json:"acked"`
	Errors          int64 `json:"errors"`
	Reconnects      int64 `json:"reconnects"`
	Received        int64 `json:"received"`
	Lost            int64 `json:"lost"`
	Duplicated      int64 `json:"duplicated"`
	OutOfOrder      int64 `json:"out_of_order"`
	UnackedReceived int64 `json:"unacked_received"`
}

func (s *PublisherStats) anomalous() bool {
	return s.Errors != 0 || s.Published != s.Acked || s.Lost != 0 || s.Duplicated != 0 || s.OutOfOrder != 0
}

func buildReport(cfg *Config, run RunID, pubs []*publisher, chk *checker, sub *subscriber, dur time.Duration) *Report {
	r := &Report{
		RunID:       run.String(),
		Broker:      cfg.Broker,
		Topic:       cfg.Topic,
		Publishers:  cfg.Publishers,
		Messages:    cfg.Messages,
		QoS:         cfg.QoS,
		PayloadSize: cfg.PayloadSize,
		Inflight:    cfg.Inflight,
		Duration:    dur,
		E2E:         chk != nil,
	}
	var ackHist histogram
	for _, p := range pubs {
		s := PublisherStats{
			Publisher:  p.idx,
			Published:  p.published.Load(),
			Acked:      p.ackedN.Load(),
			Errors:     p.errors.Load(),
			Reconnects: p.reconnects.Load(),
		}
		r.Published += s.Published
		r.Acked += s.Acked
		r.Errors += s.Errors
		r.Reconnects += s.Reconnects
		if r.FirstError == "" && p.firstErr != nil {
			r.FirstError = p.firstErr.Error()
		}
		ackHist.merge(&p.latency)
		r.PerPublisher = append(r.PerPublisher, s)
	}
	r.Unacked = r.Published - r.Acked
	if dur > 0 {
		r.MsgsPerSec = float64(r.Acked) / dur.Seconds()
	}
	if cfg.QoS > 0 {
		r.AckLatency = ackHist.latency()
	}
	if chk == nil {
		return r
	}

	chk.mu.Lock()
	defer chk.mu.Unlock()
	r.SubBroker, r.SubTopic = cfg.Subscribe, cfg.SubTopic
	r.Ignored, r.Stale = chk.ignored, chk.stale
	r.SubReconnects = sub.reconnects()
	r.E2ELatency = chk.latency.latency()
	for i, p := range pubs {
		pc := &chk.pubs[i]
		s := &r.PerPublisher[i]
		s.Received = pc.received
		s.Duplicated = pc.duplicated
		s.OutOfOrder = pc.outOfOrder
		s.Lost = p.acked.andNotCount(pc.seen)
		s.UnackedReceived = pc.seen.andNotCount(p.acked)
		r.Received += s.Received
		r.Duplicated += s.Duplicated
		r.OutOfOrder += s.OutOfOrder
		r.Lost += s.Lost
		r.UnackedReceived += s.UnackedReceived
	}
	return r
}

// WriteJSON writes r as one indented JSON object; durations are integer
// nanoseconds (fields ending in _ns).
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("bench: write json report: %w", err)
	}
	return nil
}

// WriteText writes r as a human-readable table. Per-publisher rows are
// listed only for publishers with errors, losses, duplicates or reordering.
func (r *Report) WriteText(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "ferry bench\trun %s\n", r.RunID)
	fmt.Fprintf(tw, "broker\t%s, topic %s/<i>\n", r.Broker, r.Topic)
	fmt.Fprintf(tw, "load\t%d publishers x %d messages, QoS %d, %d B payload, inflight %d\n",
		r.Publishers, r.Messages, r.QoS, r.PayloadSize, r.Inflight)
	fmt.Fprintf(tw, "published\t%d: acked %d, errors %d, unacked %d, reconnects %d\n",
		r.Published, r.Acked, r.Errors, r.Unacked, r.Reconnects)
	if r.FirstError != "" {
		fmt.Fprintf(tw, "first error\t%s\n", r.FirstError)
	}
	fmt.Fprintf(tw, "duration\t%s, %.0f msg/s acked\n", fmtDur(r.Duration), r.MsgsPerSec)
	if r.QoS > 0 {
		fmt.Fprintf(tw, "puback latency\t%s\n", fmtLatency(r.AckLatency))
	}
	if r.Hold > 0 {
		fmt.Fprintf(tw, "hold\t%s idle, %d of %d connections still open at the end\n", fmtDur(r.Hold), r.HeldOpen, r.Publishers)
	}
	if r.E2E {
		fmt.Fprintf(tw, "end to end\t%s, filter %q\n", r.SubBroker, r.SubTopic)
		fmt.Fprintf(tw, "received\t%d: lost %d, duplicated %d, out of order %d, unacked but received %d\n",
			r.Received, r.Lost, r.Duplicated, r.OutOfOrder, r.UnackedReceived)
		fmt.Fprintf(tw, "ignored\t%d, stale (other runs) %d, subscriber reconnects %d\n", r.Ignored, r.Stale, r.SubReconnects)
		fmt.Fprintf(tw, "e2e latency\t%s\n", fmtLatency(r.E2ELatency))
	}
	_ = tw.Flush()

	var bad []PublisherStats
	for _, s := range r.PerPublisher {
		if s.anomalous() {
			bad = append(bad, s)
		}
	}
	if len(bad) == 0 {
		fmt.Fprintf(w, "all %d publishers clean\n", len(r.PerPublisher))
		return
	}
	fmt.Fprintf(w, "%d of %d publishers with anomalies:\n", len(bad), len(r.PerPublisher))
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "pub\tpublished\tacked\terrors\treconnects\treceived\tlost\tdup\tooo\tunacked-recv\t")
	for _, s := range bad {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", s.Publisher, s.Published, s.Acked, s.Errors,
			s.Reconnects, s.Received, s.Lost, s.Duplicated, s.OutOfOrder, s.UnackedReceived)
	}
	_ = tw.Flush()
}

func fmtLatency(l Latency) string {
	if l.Count == 0 {
		return "n/a"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s  (n=%d)", fmtDur(l.P50), fmtDur(l.P90), fmtDur(l.P99), fmtDur(l.Max), l.Count)
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	default:
		return d.Round(100 * time.Nanosecond).String()
	}
}
