package opsapi

import (
	"bytes"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ferrygw/ferry/internal/promtext"

	"github.com/VictoriaMetrics/metrics"
	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/drivers"
)

// GET /metrics serves the Prometheus text format (version 0.0.4). Every
// ferry series is named ferry_*, with its unit in the name; labels are few
// and bounded by the configuration: stream, pipeline and driver names, and
// drop reasons from a fixed list. Almost everything is read at scrape time
// from the same snapshot GET /status returns (Reporter.Status), so the
// ingest, commit and forwarding paths carry no metrics code; the one
// exception is the commit latency histogram, which needs every commit and
// is fed once per commit (not per event) by buffer.Options.OnCommit. Go
// runtime and process series (go_*, process_*) come from the library.
//
// The library is github.com/VictoriaMetrics/metrics, not
// prometheus/client_golang: see "Metrics" in README.md for the measured
// binary size and per-scrape allocations.

// commitBuckets are the upper bounds, in seconds, of the commit latency
// histogram: from 0.5 ms (a commit without fsync, or on a fast disk) to 1 s
// (an SD card stalling on a write), about three buckets per decade; slower
// commits land in +Inf.
var commitBuckets = []float64{0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1}

// Metrics are the series a gateway updates as things happen, as opposed
// to those computed at scrape time. Each has its own metrics.Set, so two
// gateways in one process (tests) do not share, or collide on, the
// library's global set. Safe for concurrent use.
type Metrics struct {
	set       *metrics.Set
	commit    *metrics.PrometheusHistogram
	committed *metrics.Counter
}

// metadataOnce turns on HELP and TYPE lines, a process-wide switch of the
// library (off by default; ferry is its only user in the binary): without
// TYPE lines a scraper files every series, histograms included, as untyped.
var metadataOnce sync.Once

// NewMetrics creates a gateway's metrics; their OnCommit is the hook the
// buffer calls after each commit (buffer.Options.OnCommit).
func NewMetrics() *Metrics {
	metadataOnce.Do(func() { metrics.ExposeMetadata(true) })
	s := metrics.NewSet()
	return &Metrics{
		set:       s,
		commit:    s.NewPrometheusHistogramExt("ferry_buffer_commit_duration_seconds", commitBuckets),
		committed: s.NewCounter("ferry_buffer_committed_events_total"),
	}
}

// OnCommit records one commit of events that took took. It is called on
// the commit loop once per commit: a mutex, a bucket search and an atomic
// add, no allocation.
func (m *Metrics) OnCommit(events int, took time.Duration) {
	m.commit.Update(took.Seconds())
	m.committed.Add(events)
}

// scratch recycles the buffer the scrape-time series are written into.
var scratch = sync.Pool{New: func() any { return new(expo) }}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	e := scratch.Get().(*expo)
	e.Reset()
	st := s.cfg.Reporter.Status()
	e.status(&st)
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.writeTo(e)
	}
	_, _ = w.Write(e.B)
	if len(e.B) <= 64<<10 { // do not pin a freak large buffer
		scratch.Put(e)
	}
	metrics.WriteProcessMetrics(w)
}

// setHelp is the HELP text of the series in a gateway's Set, which the
// library writes with an empty HELP line.
var setHelp = [][2]string{
	{"ferry_buffer_commit_duration_seconds", "Duration of each buffer commit (write and, with durability sync or batch, fsync)."},
	{"ferry_buffer_committed_events_total", "Events appended by buffer commits; divided by commits: events per group commit."},
}

// writeTo appends the Set's series to e with their HELP text filled in.
func (m *Metrics) writeTo(e *expo) {
	start := len(e.B)
	m.set.WritePrometheus(e)
	out := e.B[start:]
	for _, h := range setHelp {
		out = bytes.Replace(out, []byte("# HELP "+h[0]+"\n"), []byte("# HELP "+h[0]+" "+h[1]+"\n"), 1)
	}
	e.B = append(e.B[:start], out...)
}

// Known reasons are written even at zero, so that the first drop shows as
// an increase instead of as a new series (which rate() and increase()
// cannot see).
var (
	bufferDropReasons = []string{buffer.DropOverflow, buffer.DropFull, buffer.DropDiskFull, buffer.DropExpired, buffer.DropTooLarge, buffer.DropUnconsumed, buffer.DropRollup}
	uplinkDropReasons = []string{"oversize", "unencodable", "poison"} // see uplink.Status.Dropped
)

// status writes the series computed from one Status snapshot, family by
// family (the text format wants a family's samples together).
func (e *expo) status(st *Status) {
	e.counter("ferry_ingest_events_total", "Events the broker appended to the buffer (each acknowledged to its publisher per ingest.durability).", st.Ingest.Ingested)
	e.counter("ferry_ingest_refused_total", "PUBLISHes the buffer refused (stream full, disk full, too large); never acknowledged to the publisher.", st.Ingest.Refused)
	e.counter("ferry_ingest_ignored_total", "PUBLISHes that matched no ingest route.", st.Ingest.Ignored)
	e.gauge("ferry_broker_clients", "MQTT clients connected to the embedded broker.", float64(st.Ingest.Clients))
	// The broker's memory budget (broker.max_connect_size ... max_queue_bytes).
	bu := st.Ingest.Budget
	e.gauge("ferry_broker_budget_connecting", "Connections that have not completed CONNECT (broker.max_connecting).", float64(bu.Connecting))
	e.counter("ferry_broker_budget_connect_refused_total", "Connections closed at accept: broker.max_connecting reached.", bu.ConnectRefused)
	e.counter("ferry_broker_budget_connect_too_large_total", "Connections closed: CONNECT larger than broker.max_connect_size.", bu.ConnectTooLarge)
	e.counter("ferry_broker_budget_connect_timeouts_total", "Connections closed: no CONNECT within broker.connect_timeout.", bu.ConnectTimeouts)
	e.gauge("ferry_broker_budget_retained", "Retained messages held (broker.max_retained).", float64(bu.Retained))
	e.gauge("ferry_broker_budget_retained_bytes", "Topic and payload bytes of the retained messages (broker.max_retained_bytes).", float64(bu.RetainedBytes))
	e.counter("ferry_broker_budget_retained_refused_total", "New retained messages refused (0x97) or not retained: retained budget reached.", bu.RetainedRefused)
	e.gauge("ferry_broker_budget_subscriptions", "Subscriptions held (broker.max_subscriptions).", float64(bu.Subscriptions))
	e.counter("ferry_broker_budget_subscriptions_refused_total", "Subscription filters refused (SUBACK 0x97/0x80): subscription budget reached.", bu.SubscriptionsRefused)
	e.gauge("ferry_broker_budget_offline_sessions", "Persistent sessions kept while their clients are away (broker.max_offline_sessions).", float64(bu.OfflineSessions))
	e.counter("ferry_broker_budget_sessions_refused_total", "New persistent sessions refused (CONNACK 0x97/0x03): broker.max_offline_sessions reached.", bu.SessionsRefused)
	e.gauge("ferry_broker_budget_queued_bytes", "QoS 1/2 payload bytes in flight to or queued for clients (broker.max_queue_bytes).", float64(bu.QueuedBytes))
	e.counter("ferry_broker_budget_queue_dropped_total", "Messages dropped for a client whose queue was full (count or bytes).", bu.QueueDropped)
	for _, r := range []struct {
		why string
		n   uint64
	}{{"session_count", bu.QueueFullCount}, {"session_bytes", bu.QueueFullBytes}, {"total_bytes", bu.QueueFullTotal}, {"write_buffer", bu.WriteBufferFull}} {
		e.counter("ferry_broker_budget_queue_full_total", "Messages dropped for a client, by the limit reached: session_count (broker.max_queued), session_bytes (broker.max_session_queue_bytes), total_bytes (broker.max_queue_bytes), write_buffer (QoS 0 to a connected client whose 256-packet write buffer is full).", r.n, "reason", r.why)
	}
	e.counter("ferry_broker_budget_store_dropped_total", "Stored sessions, subscriptions and messages left out at start to fit the budget.", bu.StoreDropped)

	e.counter("ferry_buffer_commits_total", "Buffer transactions committed (appends, acks and expiry grouped).", st.Commits)
	e.gauge("ferry_buffer_disk_full", "1 while free disk is below buffer.min_free_disk and new events are refused.", bool01(st.DiskFull))
	for _, s := range st.Streams {
		e.gauge("ferry_backlog_events", "Events kept in the buffer: not yet processed by every consumer of the stream.", float64(s.Events), "stream", s.Name)
	}
	for _, s := range st.Streams {
		e.gauge("ferry_backlog_bytes", "Bytes of the events kept in the buffer, as stored.", float64(s.Bytes), "stream", s.Name)
	}
	for _, s := range st.Streams {
		e.gauge("ferry_backlog_oldest_age_seconds", "Age of the oldest event kept in the stream; 0 when it is empty.", time.Duration(s.OldestAge).Seconds(), "stream", s.Name)
	}
	for _, s := range st.Streams {
		if s.MaxEvents > 0 {
			e.gauge("ferry_backlog_max_events", "The stream's event bound (only for bounded streams).", float64(s.MaxEvents), "stream", s.Name)
		}
	}
	for _, s := range st.Streams {
		if s.MaxBytes > 0 {
			e.gauge("ferry_backlog_max_bytes", "The stream's byte bound (only for bounded streams).", float64(s.MaxBytes), "stream", s.Name)
		}
	}
	for _, s := range st.Streams {
		for _, why := range reasons(bufferDropReasons, s.Drops) {
			e.counter("ferry_buffer_dropped_events_total", "Events refused or deleted unforwarded by the buffer, by reason.", s.Drops[why], "stream", s.Name, "reason", why)
		}
	}
	for _, s := range st.Streams {
		// At most 17 sources a stream: the first 16 to lose events and "(other)".
		for _, src := range slices.Sorted(maps.Keys(s.SourceDrops)) {
			e.counter("ferry_buffer_overflow_dropped_events_total", "Events deleted unforwarded to make room in a full stream (reason overflow), by the source that sent them.", s.SourceDrops[src], "stream", s.Name, "source", src)
		}
	}

	if l := st.Link; l != nil {
		e.gauge("ferry_uplink_connected", "1 while the connection to the cloud is up.", bool01(l.Connected))
		e.counter("ferry_uplink_reconnects_total", "Successful cloud connections after the first.", l.Reconnects)
		e.counter("ferry_uplink_forwarded_events_total", "Events the cloud acknowledged (QoS 1) or that were written (QoS 0).", l.ForwardedEvents)
		e.counter("ferry_uplink_forwarded_messages_total", "MQTT messages the cloud acknowledged (one carries several events when batching).", l.ForwardedMessages)
		e.counter("ferry_uplink_forwarded_bytes_total", "Payload bytes of the forwarded messages.", l.ForwardedBytes)
		e.counter("ferry_uplink_resent_events_total", "Events published again after a reconnect; duplicates at the cloud are at most this many.", l.Resent)
		e.counter("ferry_uplink_resend_requests_total", "Resend requests from the cloud the uplink took (downlink.resend).", l.ResendRequests)
		e.counter("ferry_uplink_resent_on_request_events_total", "Events resent on the cloud's request, marked replay, that the cloud acknowledged.", l.ResentOnRequest)
		e.gauge("ferry_uplink_inflight_messages", "Publishes awaiting the cloud's acknowledgement.", float64(l.Inflight))
		e.gauge("ferry_uplink_cloud_refusing_all", "1 while the cloud refuses every publish (a suspected poison was not isolated: nothing else was acknowledged).", bool01(l.RefusingAll))
		e.counter("ferry_uplink_refused_all_total", "Poison verdicts withdrawn because the cloud acknowledged nothing else.", l.RefusedAll)
		if b := l.Budget; b != nil {
			e.gauge("ferry_uplink_budget_bytes", "The uplink's data budget per period.", float64(b.Bytes))
			e.gauge("ferry_uplink_budget_used_bytes", "Bytes the uplink put on the wire in the current budget period (publishes, their PUBACKs and TLS records).", float64(b.Used))
			e.gauge("ferry_uplink_budget_remaining_bytes", "Bytes left in the current budget period.", float64(b.Remaining))
			e.gauge("ferry_uplink_budget_held_streams", "Streams with events waiting that the data budget holds until the next period.", float64(len(b.HeldStreams)))
			for _, p := range b.Held {
				e.gauge("ferry_uplink_budget_held", "1 for each stream priority the data budget holds.", 1, "priority", strconv.Itoa(p))
			}
		}
		for _, why := range reasons(uplinkDropReasons, l.Dropped) {
			e.counter("ferry_uplink_dropped_events_total", "Events acknowledged to the buffer without being forwarded, by reason.", l.Dropped[why], "reason", why)
		}
	}

	for _, p := range st.Pipelines {
		e.counter("ferry_pipeline_input_events_total", "Input events a pipeline matched.", p.In, "pipeline", p.Name)
	}
	for _, p := range st.Pipelines {
		e.counter("ferry_pipeline_output_events_total", "Events a pipeline wrote to its outputs.", p.Out, "pipeline", p.Name)
	}
	for _, p := range st.Pipelines {
		e.counter("ferry_pipeline_dead_letters_total", "Input events a pipeline sent to the dead letter stream.", p.DeadLetters, "pipeline", p.Name)
	}

	for _, d := range st.Drivers {
		e.counter("ferry_driver_reads_total", "Samples a sensor driver emitted.", d.Reads, "driver", d.Name)
	}
	for _, d := range st.Drivers {
		e.counter("ferry_driver_errors_total", "Failed sensor reads, all causes (timeouts included).", d.Errors, "driver", d.Name)
	}
	e.gauge("ferry_status_connections", "Open connections to the status listener.", float64(st.Listener.Conns))
	e.gauge("ferry_status_max_connections", "The status listener's connection cap.", float64(st.Listener.MaxConns))
	e.counter("ferry_status_refused_connections_total", "Connections to the status listener refused (503) at its cap.", st.Listener.Refused)
	e.counter("ferry_status_streams_refused_total", "Status page event streams refused (503): all slots taken.", st.Listener.StreamsRefused)
	e.counter("ferry_status_streams_expired_total", "Status page event streams ended at their maximum lifetime (the page reconnects).", st.Listener.StreamsExpired)

	for _, d := range st.Drivers {
		e.gauge("ferry_driver_failing", "1 while a sensor driver is failing or hung.", bool01(d.State != drivers.StateOK), "driver", d.Name)
	}
}

// reasons returns known followed by the other keys of counts, sorted.
func reasons(known []string, counts map[string]uint64) []string {
	out := slices.Clone(known)
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		if !slices.Contains(known, k) {
			out = append(out, k)
		}
	}
	return out
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// expo is the scrape's writer; the gateway's series are its methods.
type expo struct{ promtext.Writer }

func (e *expo) counter(name, help string, v uint64, labels ...string) {
	e.Counter(name, help, v, labels...)
}

func (e *expo) gauge(name, help string, v float64, labels ...string) {
	e.Gauge(name, help, v, labels...)
}
