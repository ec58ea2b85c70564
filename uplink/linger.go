package uplink

import (
	"time"

	"github.com/ferrygw/ferry/event"
)

// Lingering (Config.BatchMaxDelay): a stream whose unsent events would not
// fill a batch waits, up to BatchMaxDelay after its oldest unsent event,
// for more, so that a live stream of a few events a second goes out as
// one message per delay rather than one per event. It runs in the
// publisher, before a stream is read into the window.

// linger reports whether st should wait for its batch to fill, and sets
// st.lingerUntil when it should. It reads the stream's next events to
// count them (at most BatchMaxEvents): a full batch, or one the bytes cap
// would close, goes at once; so does an event older than the delay.
func (f *Forwarder) linger(st *streamState) bool {
	if f.cfg.BatchMaxDelay <= 0 || f.cfg.BatchMaxEvents <= 1 || st.backlog {
		return false // a backlog's batches are full: no need to count
	}
	n, size := 0, 0
	var first time.Time
	_, err := f.q.Read(st.name, st.next, f.cfg.BatchMaxEvents, func(_ uint64, ev *event.Event) error {
		if n == 0 {
			first = ev.Time
		}
		n++
		size += len(ev.Payload) + len(ev.Topic) + len(ev.Source) + lingerOverhead
		return nil
	})
	switch {
	case err != nil, n == 0, n >= f.cfg.BatchMaxEvents, size >= f.cfg.BatchMaxBytes, first.IsZero():
		st.lingerUntil = time.Time{}
		return false // a read error is the normal path's to report
	}
	until := first.Add(f.cfg.BatchMaxDelay)
	if !f.cfg.Now().Before(until) {
		st.lingerUntil = time.Time{}
		return false
	}
	st.lingerUntil = until
	return true
}

// lingerOverhead estimates an envelope's bytes besides its payload,
// topic and source, for the bytes cap of a lingering batch.
const lingerOverhead = 150

// lingerWait returns a channel that fires when the first lingering
// stream's delay ends; nil when no stream lingers.
func (f *Forwarder) lingerWait() <-chan time.Time {
	var until time.Time
	for _, st := range f.active {
		if !st.lingerUntil.IsZero() && (until.IsZero() || st.lingerUntil.Before(until)) {
			until = st.lingerUntil
		}
	}
	if until.IsZero() {
		return nil
	}
	d := max(until.Sub(f.cfg.Now()), time.Millisecond)
	if f.lingerT == nil {
		f.lingerT = time.NewTimer(d)
	} else {
		f.lingerT.Reset(d)
	}
	return f.lingerT.C
}

// lingerDue marks the streams whose delay ended for reading.
func (f *Forwarder) lingerDue() {
	now := f.cfg.Now()
	for _, st := range f.active {
		if !st.lingerUntil.IsZero() && !now.Before(st.lingerUntil) {
			st.lingerUntil = time.Time{}
			st.dirty = true
		}
	}
}
