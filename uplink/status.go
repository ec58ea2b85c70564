package uplink

import (
	"maps"
	"time"
)

// Status is a snapshot of a Forwarder's state, for health endpoints and logs.
type Status struct {
	// Connected reports whether a cloud connection is up.
	Connected bool
	// Endpoint is the URL of the current (or last) connection.
	Endpoint string
	// Reconnects counts successful connections after the first.
	Reconnects uint64
	// LastError describes the last connection, publish or queue failure.
	LastError string
	// LastConnected and LastDisconnected are when the link last came up and went down.
	LastConnected, LastDisconnected time.Time
	// ForwardedEvents, ForwardedMessages and ForwardedBytes count what the
	// cloud acknowledged (QoS 1) or what was written (QoS 0).
	ForwardedEvents, ForwardedMessages, ForwardedBytes uint64
	// Resent counts events published again after a reconnect because an
	// earlier publish of them was not acknowledged; duplicates at the cloud
	// are at most this many.
	Resent uint64
	// ResendRequests counts the resend requests taken (Forwarder.Resend),
	// and ResentOnRequest the events they resent that the cloud
	// acknowledged (or that were written, QoS 0).
	ResendRequests, ResentOnRequest uint64
	// Inflight is the number of publishes awaiting acknowledgement now, and
	// PeakInflight the most there ever were at once.
	Inflight, PeakInflight int
	// Acked maps each stream to the highest offset acked to the queue.
	Acked map[string]uint64
	// Dropped counts events acked without being forwarded, by reason
	// ("oversize": larger than MaxMessageBytes alone; "unencodable";
	// "poison": a message the cloud refused, moved to the dead letters).
	Dropped map[string]uint64
	// LastPoison describes the last message isolated as poison: stream,
	// offsets and reason ("" when none).
	LastPoison string `json:",omitempty"`
	// RefusingAll reports that the cloud refused a suspected poison and
	// then the next publish too, and has acknowledged nothing since: an
	// outage or a policy that denies every publish, not poison, so nothing
	// is dead-lettered and the forwarder keeps retrying with backoff.
	// RefusedAll counts the times a poison verdict was withdrawn that way,
	// and the connections on which the cloud did not acknowledge a copy of
	// a message it took before, sent ahead of a suspect (see poison.go).
	RefusingAll bool
	RefusedAll  uint64
	// Budget is the data budget's state; nil without a budget.
	Budget *BudgetStatus `json:",omitempty"`
	// EventsPerSecond is the forwarded-event rate over the last complete
	// rateWindow seconds of the injected clock.
	EventsPerSecond float64
}

// rateWindow is the number of whole seconds EventsPerSecond averages.
const rateWindow = 10

// rateMeter counts events in per-second buckets of a ring.
type rateMeter struct {
	secs   [rateWindow]int64
	counts [rateWindow]uint64
}

func bucket(s int64) int { return int(((s % rateWindow) + rateWindow) % rateWindow) }

func (m *rateMeter) add(now time.Time, n uint64) {
	s := now.Unix()
	i := bucket(s)
	if m.secs[i] != s {
		m.secs[i], m.counts[i] = s, 0
	}
	m.counts[i] += n
}

// rate averages the rateWindow whole seconds before the current one.
func (m *rateMeter) rate(now time.Time) float64 {
	s := now.Unix()
	var sum uint64
	for i := range m.secs {
		if m.secs[i] >= s-rateWindow && m.secs[i] < s {
			sum += m.counts[i]
		}
	}
	return float64(sum) / rateWindow
}

// Status returns a snapshot of the forwarder's state. It is safe to call
// concurrently with Run.
func (f *Forwarder) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.status
	st.Acked = maps.Clone(f.status.Acked)
	st.Dropped = maps.Clone(f.status.Dropped)
	st.EventsPerSecond = f.meter.rate(f.cfg.Now())
	st.Budget = f.budgetStatus()
	return st
}
