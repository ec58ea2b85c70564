package verify

import (
	"cmp"
	"io"
	"maps"
	"slices"
	"strconv"

	"github.com/ferrygw/ferry/internal/promtext"
)

// Metrics are written by hand in the Prometheus text format (0.0.4), as
// the gateway's opsapi does: at scrape time, from the Checker's state
// (aggregated under its mutex, formatted outside it), so that checking a
// message costs no metrics code.
//
// Series per label set (Config.MetricsLabels: one set per (gateway,
// stream), per gateway, or one for the fleet), each always present:
//
//	ferry_verify_events_total              counter  events received (first copies)
//	ferry_verify_duplicate_events_total    counter
//	ferry_verify_replayed_events_total     counter
//	ferry_verify_reordered_events_total    counter
//	ferry_verify_unexplained_gaps_total    counter  holes judged unexplained
//	ferry_verify_missing_events            gauge    events of unexplained holes still missing
//	ferry_verify_repaired_events_total     counter
//	ferry_verify_dropped_events_total      counter  announced drops, with a reason label (reasons seen only)
//
// and for the fleet (no label): messages, undecodable messages, rejected,
// untracked, skipped and unsequenced events, unexplained events, pending
// events, repair requests and refusals, new epochs, gateways, streams,
// the lag histogram and the connection state.

// labelled is one label set's counts: gateway and stream, gateway only
// (stream empty), or none (both empty).
type labelled struct {
	gateway, stream string
	c               Counts
}

// labels returns the label pairs, in buf, with extra pairs after them.
func (l *labelled) labels(buf *[6]string, extra ...string) []string {
	out := buf[:0]
	if l.gateway != "" || l.stream != "" {
		out = append(out, "gateway", l.gateway)
	}
	if l.stream != "" {
		out = append(out, "stream", l.stream)
	}
	return append(out, extra...)
}

// WritePrometheus writes the checker's series to w, labelled per mode
// (LabelsStream, LabelsGateway or LabelsNone).
func (c *Checker) WritePrometheus(w io.Writer, mode string) error {
	c.mu.Lock()
	var sets []labelled
	var fleet Counts
	keys := slices.SortedFunc(maps.Keys(c.streams), func(a, b streamKey) int {
		return cmp.Or(cmp.Compare(a.gateway, b.gateway), cmp.Compare(a.stream, b.stream))
	})
	for _, k := range keys {
		st := c.streams[k]
		var sum Counts
		sum.add(&st.retired)
		for _, sp := range st.epochs {
			sum.add(&sp.c)
		}
		fleet.add(&sum)
		switch mode {
		case LabelsStream:
			sets = append(sets, labelled{k.gateway, k.stream, sum})
		case LabelsGateway:
			if n := len(sets); n > 0 && sets[n-1].gateway == k.gateway {
				sets[n-1].c.add(&sum)
			} else {
				sets = append(sets, labelled{k.gateway, "", sum})
			}
		}
	}
	var pending uint64
	for _, st := range c.streams {
		for _, sp := range st.epochs {
			for _, h := range sp.open {
				pending += h.to - h.from
			}
		}
	}
	gateways := map[string]struct{}{}
	for k := range c.streams {
		gateways[k.gateway] = struct{}{}
	}
	// About 80 bytes a sample, nine samples a label set: one allocation
	// instead of a doubling series of copies (most of a scrape's cost).
	e := &expo{promtext.Writer{B: make([]byte, 0, 4096+len(sets)*9*80)}}
	e.counter("ferry_verify_messages_total", "MQTT messages handled.", c.messages)
	e.counter("ferry_verify_undecodable_messages_total", "Messages that could not be decoded (ignored).", c.undecodable)
	e.counter("ferry_verify_rejected_events_total", "Envelopes with a gateway ID, stream or epoch over 256 bytes, or a seq over 2^62 (ignored).", c.rejected)
	e.counter("ferry_verify_untracked_events_total", "Envelopes of new streams beyond the tracked maximum (ignored).", c.untracked)
	e.counter("ferry_verify_skipped_events_total", "Envelopes of gateways in other partitions (ignored).", c.skipped)
	e.counter("ferry_verify_new_epochs_total", "Epochs that followed another one in a stream (a new buffer file at a gateway).", c.newEpochs)
	e.gauge("ferry_verify_gateways", "Gateways seen.", float64(len(gateways)))
	e.gauge("ferry_verify_streams", "Streams (gateway, stream) seen.", float64(len(c.streams)))
	lag := c.lag
	c.mu.Unlock()

	var buf [6]string
	if mode == LabelsNone {
		sets = []labelled{{c: fleet}}
	}
	e.counter("ferry_verify_unsequenced_events_total", "Envelopes without a sequence number (checked for duplicate IDs only).", fleet.Unsequenced)
	e.counter("ferry_verify_unexplained_events_total", "Events in holes judged unexplained, when judged.", fleet.Unexplained)
	e.gauge("ferry_verify_pending_events", "Events in holes within the settle window, not judged yet.", float64(pending))
	e.counter("ferry_verify_repair_requests_total", "Resend requests sent to gateways.", fleet.RepairRequests)
	e.counter("ferry_verify_repair_refused_total", "Resend requests a gateway refused (events no longer retained).", fleet.RepairRefused)
	for i := range sets {
		s := &sets[i]
		e.counter("ferry_verify_events_total", "Events received (the first copy of each sequence number).", s.c.Received, s.labels(&buf)...)
	}
	for i := range sets {
		s := &sets[i]
		e.counter("ferry_verify_duplicate_events_total", "Further copies of events already received, not marked replay.", s.c.Duplicates, s.labels(&buf)...)
	}
	for i := range sets {
		s := &sets[i]
		e.counter("ferry_verify_replayed_events_total", "Envelopes marked replay (ferry buffer replay, resend requests).", s.c.Replays, s.labels(&buf)...)
	}
	for i := range sets {
		s := &sets[i]
		e.counter("ferry_verify_reordered_events_total", "Events that arrived after a later event of their stream.", s.c.Reordered, s.labels(&buf)...)
	}
	for i := range sets {
		s := &sets[i]
		e.counter("ferry_verify_unexplained_gaps_total", "Holes in a stream neither filled nor announced within the settle window.", s.c.UnexplainedGaps, s.labels(&buf)...)
	}
	for i := range sets {
		s := &sets[i]
		e.gauge("ferry_verify_missing_events", "Events of unexplained holes still missing.", float64(s.c.Missing), s.labels(&buf)...)
	}
	for i := range sets {
		s := &sets[i]
		e.counter("ferry_verify_repaired_events_total", "Events of unexplained holes that arrived later (resent on request, or late).", s.c.Repaired, s.labels(&buf)...)
	}
	for i := range sets {
		s := &sets[i]
		for _, r := range slices.Sorted(maps.Keys(s.c.DroppedBy)) {
			e.counter("ferry_verify_dropped_events_total", "Events the gateways announced as dropped by their buffer, by reason.", s.c.DroppedBy[r], s.labels(&buf, "reason", r)...)
		}
	}
	e.histogram("ferry_verify_lag_seconds", "Time from the gateway accepting an event to the checker receiving it (first copies, replays excluded).", &lag)
	_, err := w.Write(e.B)
	return err
}

// expo is the scrape's writer.
type expo struct{ promtext.Writer }

func (e *expo) counter(name, help string, v uint64, labels ...string) {
	e.Counter(name, help, v, labels...)
}

func (e *expo) gauge(name, help string, v float64, labels ...string) {
	e.Gauge(name, help, v, labels...)
}

func (e *expo) histogram(name, help string, h *lagTotal) {
	var cum uint64
	for i, k := range h.n {
		cum += k
		le := "+Inf"
		if i < len(lagBounds) {
			le = strconv.FormatFloat(lagBounds[i], 'g', -1, 64)
		}
		e.Head(name, "histogram", help, name+"_bucket", []string{"le", le})
		e.B = strconv.AppendUint(e.B, cum, 10)
		e.B = append(e.B, '\n')
	}
	e.Head(name, "histogram", help, name+"_sum", nil)
	e.B = promtext.AppendFloat(e.B, h.sum)
	e.B = append(e.B, '\n')
	e.Head(name, "histogram", help, name+"_count", nil)
	e.B = strconv.AppendUint(e.B, cum, 10)
	e.B = append(e.B, '\n')
}
