package uplink

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/ferrygw/ferry/event"
)

// errSlotsFull stops a Read when the window has no slot for the next event.
var errSlotsFull = errors.New("window full")

// pump is the publisher: it reads the streams round-robin into free window
// slots and publishes them, until the session ends. It runs in Run's goroutine.
func (f *Forwarder) pump(c *conn) {
	changed := f.q.Changed()
	f.refreshStreams()
	f.mu.Lock()
	for _, st := range f.streams {
		st.next = st.ackedNext // rewind: resend everything not acked, in order
		st.dirty = true
	}
	f.mu.Unlock()
	recs := make([]*record, 0, f.cfg.Inflight)
	for c.ctx.Err() == nil {
		if len(f.suspects) > 0 && f.poisonStep(c) {
			continue // a suspected poison was sent alone (poison.go)
		}
		select {
		case <-changed:
			changed = f.q.Changed()
			f.refreshStreams()
			for _, st := range f.active {
				st.dirty = true
			}
		default:
		}
		if !f.anyDirty() {
			select {
			case <-changed:
				continue
			case <-c.ctx.Done():
				return
			case <-f.heldTimer(): // nil unless a poison waits for a retry
				continue
			case <-f.evidenceWait(c): // nil unless a poison verdict awaits a PUBACK
				continue
			}
		}
		// Wait for one free slot, then take every other free one.
		select {
		case r := <-f.slots:
			recs = append(recs[:0], r)
		case <-c.ctx.Done():
			return
		}
	more:
		for len(recs) < cap(recs) {
			select {
			case r := <-f.slots:
				recs = append(recs, r)
			default:
				break more
			}
		}
		used, err := f.fill(recs)
		for _, r := range recs[used:] {
			f.slots <- r
		}
		f.send(c, recs[:used])
		if err != nil {
			f.setError(err)
			f.log.Error("queue read failed", "err", err)
			sleep(c.ctx, queueRetry)
		}
	}
}

// refreshStreams updates the active stream list from the config or the queue.
func (f *Forwarder) refreshStreams() {
	names := f.cfg.Streams
	if names == nil {
		names = f.q.Streams()
	}
	f.active = f.active[:0]
	for _, name := range names {
		st := f.streams[name]
		if st == nil {
			st = &streamState{name: name, dirty: true}
			if through := f.q.Acked(name, Consumer); through > 0 {
				st.next, st.ackedNext = through+1, through+1
			}
			f.mu.Lock()
			f.streams[name] = st
			f.mu.Unlock()
		}
		f.active = append(f.active, st)
	}
	if f.rr >= len(f.active) {
		f.rr = 0
	}
}

func (f *Forwarder) anyDirty() bool {
	for _, st := range f.active {
		if st.dirty && !f.held(st) {
			return true
		}
	}
	return false
}

// fill reads events into recs, giving each stream with unread events an
// equal share of the free slots, starting one stream further each call so
// that no stream's backlog starves another. It returns how many records,
// a prefix of recs, it filled.
func (f *Forwarder) fill(recs []*record) (int, error) {
	n := len(f.active)
	dirty := 0
	for _, st := range f.active {
		if st.dirty && !f.held(st) {
			dirty++
		}
	}
	if dirty == 0 {
		return 0, nil
	}
	quantum := max(1, len(recs)/dirty)
	used := 0
	for progressed := true; progressed && used < len(recs); {
		progressed = false
		for i := 0; i < n && used < len(recs); i++ {
			st := f.active[(f.rr+i)%n]
			if !st.dirty || f.held(st) {
				continue
			}
			k := min(quantum, len(recs)-used)
			got, more, err := f.readStream(st, recs[used:used+k], f.cfg.BatchMaxEvents)
			used += got
			if err != nil {
				return used, err
			}
			st.dirty = more
			progressed = progressed || got > 0
		}
	}
	f.rr = (f.rr + 1) % n
	return used, nil
}

// readStream fills up to len(recs) records of at most perRecord events
// each with the next events of st. It reports how many it filled and
// whether the stream may have more.
func (f *Forwarder) readStream(st *streamState, recs []*record, perRecord int) (int, bool, error) {
	batch := f.cfg.BatchMaxEvents > 1
	maxEvents := len(recs) * perRecord
	var cur *record // open message
	used, seen, full := 0, 0, false
	seal := func() {
		if cur != nil {
			cur.seal(f.cfg.Format, batch)
			cur = nil
		}
	}
	next, err := f.q.Read(st.name, st.next, maxEvents, func(off uint64, ev *event.Event) error {
		seen++
		var encErr error
		f.scratch = f.scratch[:0]
		switch {
		case len(ev.Payload) > f.cfg.MaxMessageBytes:
			// Oversize whatever the encoding: do not even encode it.
		case f.cfg.Format == FormatCBOR:
			f.scratch, encErr = AppendCBOR(f.scratch, ev)
		default:
			f.scratch = AppendJSON(f.scratch, f.cfg.GatewayID, ev)
		}
		f.topicBuf = f.topic.appendTopic(f.topicBuf[:0], ev)
		reason := ""
		switch {
		case encErr != nil:
			reason = "unencodable"
		case len(ev.Payload) > f.cfg.MaxMessageBytes ||
			aloneSize(f.cfg.Format, batch, len(f.scratch)) > f.cfg.MaxMessageBytes:
			reason = "oversize"
		}
		if reason != "" {
			seal() // its events precede this one and must be acked first
			if used == len(recs) {
				full = true
				return errSlotsFull
			}
			r := recs[used]
			used++
			r.reset(st)
			r.drop, r.from, r.through, r.events = reason, off, off, 1
			st.next = off + 1
			f.log.Warn("dropping an event that cannot be sent",
				"reason", reason, "stream", st.name, "offset", off, "id", ev.ID.String(),
				"bytes", len(f.scratch), "max_message_bytes", f.cfg.MaxMessageBytes, "err", encErr)
			return nil
		}
		if cur != nil && (cur.events >= perRecord || !bytes.Equal(cur.topic, f.topicBuf) ||
			cur.sizeWith(f.cfg.Format, batch, len(f.scratch)) > f.cfg.BatchMaxBytes) {
			seal()
		}
		if cur == nil {
			if used == len(recs) {
				full = true
				return errSlotsFull
			}
			cur = recs[used]
			used++
			cur.open(st, f.topicBuf, batch)
		}
		cur.add(f.cfg.Format, batch, f.scratch, off)
		if off < st.sentNext {
			cur.resent++
		}
		st.next = off + 1
		return nil
	})
	seal()
	if cap(f.scratch) > 2*f.cfg.MaxMessageBytes {
		f.scratch = nil // do not keep a huge event's buffer
	}
	switch {
	case errors.Is(err, errSlotsFull):
	case err != nil:
		return used, true, fmt.Errorf("%w: read %s from %d: %w", ErrQueue, st.name, st.next, err)
	case next > st.next:
		st.next = next // past records the queue skipped after the last event
	}
	return used, full || seen >= maxEvents, nil
}

// send publishes the filled records in order and hands them to the waiter.
func (f *Forwarder) send(c *conn, recs []*record) {
	for _, r := range recs {
		if r.drop == "" {
			if c.ctx.Err() == nil {
				if d := f.pacer.reserve(f.cfg.Now(), r.bytes); d > 0 {
					sleep(c.ctx, d)
				}
			}
			if c.ctx.Err() != nil {
				r.unsent = true
			} else {
				r.tok = c.client.Publish(r.topicS, f.cfg.QoS, false, r.msg)
				r.stream.sentNext = max(r.stream.sentNext, r.through+1)
				f.mu.Lock()
				f.status.Resent += uint64(r.resent)
				f.status.Inflight++
				f.status.PeakInflight = max(f.status.PeakInflight, f.status.Inflight)
				f.mu.Unlock()
			}
		}
		c.pending <- r // never blocks: pending holds a whole window
	}
}
