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
	if f.seq != nil {
		f.epoch = f.seq.Epoch()
	}
	f.refreshStreams()
	f.mu.Lock()
	for _, st := range f.streams {
		st.next = st.ackedNext // rewind: resend everything not acked, in order
		st.rewindGap()
		st.dirty = true
	}
	f.mu.Unlock()
	for _, st := range f.streams {
		f.skipDroppedTail(st)
	}
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
		if !f.anyDirty() && !f.resendPending() {
			select {
			case <-changed:
				continue
			case <-f.resendWake:
				continue
			case <-c.ctx.Done():
				return
			case <-f.heldTimer(): // nil unless a poison waits for a retry
				continue
			case <-f.evidenceWait(c): // nil unless a poison verdict awaits a PUBACK
				continue
			case <-f.lingerWait(): // nil unless a stream waits for its batch to fill
				f.lingerDue()
				continue
			case <-f.budgetWait(): // nil unless the budget holds a stream with events
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
		// Resends (resend.go) take at most half the window while live
		// events wait.
		nr := 0
		var rerr error
		if f.resendPending() {
			share := len(recs)
			if f.anyDirty() {
				share = max(1, len(recs)/2)
			}
			nr, rerr = f.fillResends(recs[:share])
		}
		used, err := f.fill(recs[nr:])
		used += nr
		if err == nil {
			err = rerr
		}
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
			st = &streamState{name: name, dirty: true, drops: map[string]uint64{}, prio: f.cfg.DefaultPriority}
			if p, ok := f.cfg.Priorities[name]; ok {
				st.prio = p
			}
			if through := f.q.Acked(name, Consumer); through > 0 {
				st.next, st.ackedNext = through+1, through+1
			}
			st.rewindGap()
			f.skipDroppedTail(st)
			if f.seq != nil {
				st.replayed = f.seq.ReplayedThrough(name, Consumer)
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
	f.budgetCheck()
	defer f.noteHeld()
	for _, st := range f.active {
		if f.ready(st) {
			return true
		}
	}
	return false
}

// fill reads events into recs, priority by priority (budget.go): the
// streams of the highest priority with unread events first, each with an
// equal share of the free slots, starting one stream further each call
// so that no stream's backlog starves another of its priority; a lower
// priority gets the slots they leave. It returns how many records, a
// prefix of recs, it filled.
func (f *Forwarder) fill(recs []*record) (int, error) {
	if len(f.active) == 0 {
		return 0, nil
	}
	used := 0
	var spent uint64 // the budget's estimate of the messages filled so far
	for p := 0; p <= MaxPriority && used < len(recs); p++ {
		got, err := f.fillPriority(p, recs[used:], &spent)
		used += got
		if err != nil {
			return used, err
		}
	}
	f.rr = (f.rr + 1) % len(f.active)
	return used, nil
}

// fillPriority is fill for the streams of priority p. With a budget it
// reads no more than the priority's allowance, less spent, lets through
// (the last message may pass it), and adds what it read to spent.
func (f *Forwarder) fillPriority(p int, recs []*record, spent *uint64) (int, error) {
	n := len(f.active)
	dirty := 0
	for _, st := range f.active {
		if st.prio == p && f.ready(st) {
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
			if st.prio != p || !f.ready(st) {
				continue
			}
			if f.linger(st) {
				st.dirty = false // until more events come or its delay ends
				continue
			}
			k := min(quantum, len(recs)-used)
			if f.budget != nil {
				room := f.budgetRoom(p, *spent)
				if room == 0 {
					return used, nil // the rest waits for the next check
				}
				k = min(k, max(1, int(min(room/f.maxWire(), uint64(k)))))
			}
			got, more, err := f.readStream(st, recs[used:used+k], f.cfg.BatchMaxEvents)
			if f.budget != nil {
				for _, r := range recs[used : used+got] {
					if r.drop == "" {
						*spent += wireBytes(len(r.topic), len(r.msg), f.cfg.QoS, true)
					}
				}
			}
			st.backlog = more
			used += got
			if err != nil {
				return used, err
			}
			st.dirty = more
			progressed = progressed || got > 0
		}
	}
	return used, nil
}

// ready reports whether st may be read: it may have unread events, and
// neither a poison isolation nor the budget holds it.
func (f *Forwarder) ready(st *streamState) bool {
	return st.dirty && !f.held(st) && !f.budgetHeld(st)
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
			cur.seal(f.cfg.Format, f.comp)
			cur = nil
		}
	}
	next, err := f.q.Read(st.name, st.next, maxEvents, func(off uint64, ev *event.Event) error {
		seen++
		m := seqMeta{seq: off, epoch: f.epoch, gap: f.gapBefore(st, off), replay: off <= st.replayed}
		kind, items, encErr := f.encode(nil, ev, &m)
		f.topicBuf = f.topic.appendTopic(f.topicBuf[:0], ev)
		framed := batch || kind == kindSenML
		reason := ""
		switch {
		case encErr != nil:
			reason = "unencodable"
		case len(ev.Payload) > f.cfg.MaxMessageBytes ||
			aloneSize(f.cfg.Format, framed, len(f.scratch), items) > f.cfg.MaxMessageBytes:
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
			f.dropped(st, off, reason) // announced with the next event sent
			f.log.Warn("dropping an event that cannot be sent",
				"reason", reason, "stream", st.name, "offset", off, "id", ev.ID.String(),
				"bytes", len(f.scratch), "max_message_bytes", f.cfg.MaxMessageBytes, "err", encErr)
			return nil
		}
		if cur != nil {
			var joins bool
			if joins, items = f.joins(cur, ev, &m, kind, items, perRecord); !joins {
				seal()
			}
		}
		if cur == nil {
			if used == len(recs) {
				full = true
				return errSlotsFull
			}
			cur = recs[used]
			used++
			cur.open(st, f.topicBuf, batch, kind)
		}
		if kind == kindSenML {
			cur.pack.commit(ev, &m)
		}
		cur.add(f.cfg.Format, f.scratch, items, off)
		if off < st.sentNext {
			cur.resent++
		}
		st.next = off + 1
		st.prev = off
		clear(st.drops)
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

// encode encodes ev with its sequence fields m into f.scratch: as a JSON
// or CBOR envelope, or, with FormatSenMLCBOR and a numeric event, as SenML
// records, following those of pack (nil: as a pack's first event). It
// returns the kind of message the event goes in and the array items it
// takes.
// joins reports whether ev, encoded alone (in f.scratch) as kind taking
// items, joins the open record cur: the same kind and rendered topic
// (f.topicBuf), fewer than perRecord events, and room under
// batch.max_bytes. It returns the items ev takes, encoded in f.scratch
// for where it goes: records after a SenML pack's first repeat less, so
// such an event is encoded against cur, and alone again when it does not
// join after all. The caller seals cur when it does not.
func (f *Forwarder) joins(cur *record, ev *event.Event, m *seqMeta, kind, items, perRecord int) (bool, int) {
	if cur.events >= perRecord || cur.kind != kind || !bytes.Equal(cur.topic, f.topicBuf) {
		return false, items
	}
	if kind == kindSenML {
		_, items, _ = f.encode(cur, ev, m)
	}
	if cur.sizeWith(f.cfg.Format, len(f.scratch), items) > f.cfg.BatchMaxBytes {
		if kind == kindSenML {
			_, items, _ = f.encode(nil, ev, m)
		}
		return false, items
	}
	return true, items
}

func (f *Forwarder) encode(pack *record, ev *event.Event, m *seqMeta) (kind, items int, err error) {
	f.scratch = f.scratch[:0]
	switch {
	case len(ev.Payload) > f.cfg.MaxMessageBytes:
		// Oversize whatever the encoding: do not even encode it.
		return kindEnvelope, 1, nil
	case f.cfg.Format == FormatSenMLCBOR:
		var p *senmlPack
		if pack != nil {
			p = &pack.pack
		} else {
			f.firstPack.reset()
			p = &f.firstPack
		}
		var n int
		if f.scratch, n = p.encode(f.scratch, f.cfg.GatewayID, ev, m, &f.fields); n > 0 {
			return kindSenML, n, nil
		}
		fallthrough
	case f.cfg.Format == FormatCBOR:
		f.scratch, err = appendCBOREnvelope(f.scratch, f.cfg.GatewayID, ev, m)
		return kindEnvelope, 1, err
	default:
		f.scratch = appendJSON(f.scratch, f.cfg.GatewayID, ev, m)
		return kindEnvelope, 1, nil
	}
}

// gapBefore returns the gap to announce on the event at off of st: the
// offsets after st.prev the queue dropped by policy and those the uplink
// could not send; nil when there are none.
func (f *Forwarder) gapBefore(st *streamState, off uint64) *Gap {
	if off <= st.prev+1 && len(st.drops) == 0 {
		return nil
	}
	g := &Gap{Reasons: map[string]uint64{}}
	if f.seq != nil && off > st.prev+1 {
		n, reasons := f.seq.Dropped(st.name, st.prev, off)
		g.Dropped = n
		for r, k := range reasons {
			g.Reasons[r] += k
		}
	}
	for r, k := range st.drops {
		g.Reasons[r] += k
		g.Dropped += k
	}
	if g.Dropped == 0 {
		return nil
	}
	return g
}

// skipDroppedTail moves st.prev, at the start of a session, back over the
// dropped events the acked position ends with (the uplink acks the events
// it drops, and the DropRecorder keeps them): the gap of the next event
// counts from the last one sent, so it announces them again in every
// session, as it must until the cloud has acknowledged it.
func (f *Forwarder) skipDroppedTail(st *streamState) {
	acked := st.prev
	if f.drec == nil || acked == 0 {
		return
	}
	if n, _ := f.seq.Dropped(st.name, acked-1, acked+1); n == 0 {
		return // the acked event was sent: the common case, one call
	}
	// The most k for which the k offsets up to acked are all dropped.
	lo, hi := uint64(1), acked
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if n, _ := f.seq.Dropped(st.name, acked-mid, acked+1); n == mid {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	st.prev = acked - lo
}

// dropped records that the event at off of st will not be sent, for
// reason: in the Queue when it is a DropRecorder (Dropped then reports it),
// else in st.drops, for the next event's gap.
func (f *Forwarder) dropped(st *streamState, off uint64, reason string) {
	if f.drec != nil {
		err := f.drec.RecordDrop(st.name, off, off, reason)
		if err == nil {
			return
		}
		f.setError(fmt.Errorf("%w: record the drop of %s %d: %w", ErrQueue, st.name, off, err))
		f.log.Error("cannot record a dropped event in the queue; announcing it from memory", "err", err)
	}
	st.drops[reason]++
}

// rewindGap sets where a new session resumes announcing gaps: after the
// last acked event, or before the events the uplink dropped whose
// announcement the cloud has not acknowledged. The caller holds f.mu.
func (st *streamState) rewindGap() {
	st.prev = 0
	if st.ackedNext > 0 {
		st.prev = st.ackedNext - 1
	}
	clear(st.drops)
	if u := st.unannounced; len(u.reasons) > 0 && u.through == st.prev {
		st.prev = u.from - 1
		for r, n := range u.reasons {
			st.drops[r] = n
		}
	}
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
				f.spend(c, r)
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
