package uplink

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ferrygw/ferry/event"
)

// Poison isolation (see "Poison" in the package doc). A message the cloud
// will not take ends the connection (Mosquitto's max_packet_size, AWS IoT
// Core's policy or topic checks) or is never acknowledged; resent in
// order after every reconnect, it would stop its stream forever. The
// forwarder tells it from an outage by four pieces of evidence, all on
// connections the cloud had accepted:
//
//  1. PoisonAttempts-1 sessions ended with the message among its stream's
//     failed publishes, from the oldest unacknowledged one to the last
//     (see judge: the suspect range narrows with each such session);
//  2. then it is sent alone, nothing else in flight, on a connection that
//     had stayed up for soloSettle with nothing in flight and on which the
//     cloud has just acknowledged a copy of the last small message it took
//     (Forwarder.good; see preProbe), and that session ends before its
//     PUBACK too (a cloud that drops every connection, as one restarting
//     or behind a failing proxy does, fails this step: it drops the
//     connection before the message is sent; so does a cluster node that
//     cannot store messages while its cluster recovers, as NATS JetStream
//     does for seconds after losing a stream leader: it holds the copy, and
//     then closes the connection, as it would on the suspect);
//  3. then the very next connection attempt succeeds: the cloud is up;
//  4. and on that connection the cloud acknowledges another message (any
//     stream's traffic, or a probe, see probe): it accepts messages, just
//     not this one.
//
// Without a copy (nothing acknowledged since the start) step 2 goes
// without it. A connection on which the cloud does not acknowledge the
// copy is counted like a withdrawn verdict (Status.RefusedAll) and is
// no evidence against the suspect.
//
// Only then are its events handed to Config.DeadLetters and acked, and the
// stream goes on after it, in order. A connection that fails to come back
// at step 3 means an outage: the message is sent alone again. A session
// that ends at step 4 with nothing acknowledged means a cloud that refuses
// every publish (a policy that denies them all, a broker whose packet limit
// every message exceeds): the verdict is withdrawn, counted in
// Status.RefusedAll, and the message is retried with backoff, never
// dead-lettered. The evidence must come after the message failed alone,
// not before: a cloud that accepted the first messages of a session and
// then started refusing everything (a policy revoked) would otherwise lose
// the first message it refused. A message acknowledged at any step is
// cleared.

// poisonReason is the Status.Dropped key of isolated events.
const poisonReason = "poison"

// soloSettle is the longest a connection must stay up with nothing in
// flight before a suspect is sent alone on it (at most StableAfter).
const soloSettle = time.Second

// probeMaxBytes bounds the copy of the last acknowledged message kept as
// a probe (Forwarder.good): the memory it holds, and the copy per PUBACK.
const probeMaxBytes = 4 << 10

// maxProbeAhead bounds how far past a suspect a probe may read its stream
// (see probe): far enough to get past a short run of poison.
const maxProbeAhead = 16

// maxReasonErr bounds the connection error quoted in a dead letter's reason.
const maxReasonErr = 200

// failure is the range of a stream's publishes that failed in a session
// on the established connection: from its oldest unacknowledged message
// to the last one that failed.
type failure struct {
	stream        *streamState
	from, through uint64
	solo          bool // one message, published alone
}

// failed records that the published record r failed. It runs in the waiter.
func (c *conn) failed(r *record) {
	if c.fails == nil {
		c.fails = map[*streamState]*failure{}
	}
	if ff := c.fails[r.stream]; ff != nil {
		ff.through = max(ff.through, r.through)
		return
	}
	c.fails[r.stream] = &failure{stream: r.stream, from: r.from, through: r.through, solo: r.solo}
}

// suspect is a message suspected of ending the cloud connection, at most
// one a stream. Suspects are owned by the goroutine running Run.
type suspect struct {
	stream        *streamState
	from, through uint64
	strikes       int    // sessions that ended with it as its stream's first failed publish
	verdict       bool   // a session ended with it sent alone: isolate once a connection is up
	confirmed     bool   // the cloud acknowledged another message after the verdict: never revoked
	lastErr       string // why the last of those sessions ended, bounded
	acksAtVerdict uint64 // Forwarder.pubacks when the verdict was given
	probedGood    bool   // the last probe for it was Forwarder.good
	probeAhead    uint64 // how many events past it the next event probe reads
}

// goodCopy is a message the cloud acknowledged, kept to probe whether the
// cloud accepts anything: it took these bytes on this topic before, so
// only a cloud that now refuses everything (or this topic) refuses it. The
// cloud drops the duplicate by event ID.
type goodCopy struct {
	topic string
	msg   []byte
}

// puback records a PUBACK (QoS 1) as evidence that the cloud accepts
// messages and keeps a small acknowledged message as the next probe. It
// runs in the waiter.
func (f *Forwarder) puback(c *conn, r *record) {
	if f.cfg.QoS == 0 {
		return
	}
	f.mu.Lock()
	f.pubacks++
	f.status.RefusingAll = false
	if len(r.msg) <= probeMaxBytes {
		f.good.topic = r.topicS
		f.good.msg = append(f.good.msg[:0], r.msg...)
	}
	f.mu.Unlock()
	select {
	case c.acked <- struct{}{}:
	default:
	}
}

func (f *Forwarder) pubackCount() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pubacks
}

// completeProbe finishes a probe in the waiter: its PUBACK was counted by
// puback; it acks nothing in the queue (a probe is a copy, or an event
// after an unacknowledged one).
func (f *Forwarder) completeProbe(c *conn, r *record, err error, published bool) {
	if published {
		f.mu.Lock()
		f.status.Inflight--
		f.mu.Unlock()
		if err != nil && err != errUnsent {
			c.fail(fmt.Errorf("%w: probe publish to %s: %v", ErrConnectionLost, c.url, err))
		}
	}
	r.tok = nil
	f.slots <- r
}

// probe publishes a message other than the suspect s so that its PUBACK
// shows whether the cloud accepts anything (step 4): a copy of the last
// small message the cloud acknowledged (Forwarder.good), or, when there is
// none (nothing was acknowledged since the start, or that copy was refused
// too), the event s.probeAhead events after s in its stream, sent before s
// is settled: it is never acked in the queue and is sent again, in order,
// once s is isolated; it reaches the cloud ahead of s only if s is
// poison. It reports whether it sent one.
func (f *Forwarder) probe(c *conn, s *suspect) bool {
	var r *record
	select {
	case r = <-f.slots:
	default:
		return false // the window is full: its PUBACKs are evidence too
	}
	st := s.stream
	f.mu.Lock()
	topic, n := f.good.topic, len(f.good.msg)
	if n > 0 {
		r.reset(st)
		r.buf = append(r.buf, f.good.msg...)
	}
	f.mu.Unlock()
	s.probedGood = n > 0
	if n > 0 {
		r.msg, r.bytes, r.topicS = r.buf, len(r.buf), topic
	} else {
		// Read ahead of the suspect, then put the stream's position and
		// gap accounting back: the probe is not part of the stream yet.
		next, prev, drops := st.next, st.prev, maps.Clone(st.drops)
		st.next = s.through + 1 + s.probeAhead
		used, _, err := f.readStream(st, []*record{r}, 1)
		st.next, st.prev, st.drops = next, prev, drops
		if used == 0 || err != nil || r.drop != "" {
			if used > 0 && r.drop != "" {
				s.probeAhead = min(s.probeAhead+1, maxProbeAhead) // cannot be sent: try the one after
			}
			f.slots <- r // nothing to probe with yet: other streams' PUBACKs count too
			return false
		}
	}
	r.probe = true
	f.log.Info("probing whether the cloud accepts other messages before isolating a suspected poison",
		"stream", st.name, "offset", s.from, "through", s.through, "probe_is_copy", s.probedGood)
	f.send(c, []*record{r})
	return true
}

// evidenceWait returns c.acked while a verdict awaits evidence (step 4),
// so that the pump wakes on the next PUBACK; nil otherwise.
func (f *Forwarder) evidenceWait(c *conn) <-chan struct{} {
	for _, s := range f.suspects {
		if s.verdict && !s.confirmed {
			return c.acked
		}
	}
	return nil
}

// judge weighs the evidence of a session that ended (not by
// cancellation), after its waiter finished. The suspect of a stream is a
// range of messages: a poison ends the session with it and every later
// publish unacknowledged, and messages sent just before it may lose their
// PUBACK when the cloud closes the connection, so the oldest
// unacknowledged message need not be the poison. A poison lies in the
// failed range of every session it ended: a failure overlapping the
// stream's suspect narrows the suspect to the overlap and strikes it; one
// that does not starts a new suspect. Sending alone then tries the range
// message by message, in order.
func (f *Forwarder) judge(c *conn, why error) {
	if f.cfg.QoS == 0 {
		return // a QoS 0 publish is acked once written: nothing waits on it
	}
	for st, s := range f.suspects {
		if !s.verdict && f.ackedNextOf(st) > s.through {
			delete(f.suspects, st) // delivered after all
		}
	}
	pubacks := f.pubackCount()
	if c.preProbeFailed {
		// The cloud did not take a copy of a message it took before: it
		// refuses (or cannot store) everything now; the suspect was not
		// sent, and the session is no evidence against it.
		f.mu.Lock()
		f.status.RefusingAll = true
		f.status.RefusedAll++
		n := f.status.RefusedAll
		f.mu.Unlock()
		f.log.Warn("cloud did not acknowledge a message it took before: not sending the suspected poison alone yet, retrying",
			"refused_all", n, "err", boundErr(why))
	}
	for _, s := range f.suspects {
		if !s.verdict || s.confirmed {
			continue
		}
		if pubacks > s.acksAtVerdict {
			s.confirmed = true // step 4 held; isolated on the next connection
			continue
		}
		// Step 4 failed: nothing acknowledged since the message failed
		// alone, the probe included. Everything is refused, not this one.
		s.verdict = false
		if s.probedGood {
			f.mu.Lock()
			f.good.msg = f.good.msg[:0] // refused too: probe with events next time
			f.mu.Unlock()
		} else {
			s.probeAhead = min(s.probeAhead+1, maxProbeAhead) // the next event may be poison too
		}
		f.mu.Lock()
		f.status.RefusingAll = true
		f.status.RefusedAll++
		n := f.status.RefusedAll
		f.mu.Unlock()
		f.log.Warn("cloud refuses every publish: not isolating the suspected poison, retrying",
			"stream", s.stream.name, "offset", s.from, "through", s.through, "refused_all", n, "err", boundErr(why))
	}
	for _, ff := range c.fails {
		s := f.suspects[ff.stream]
		if s != nil && s.verdict {
			continue // awaits isolation
		}
		if s == nil || ff.through < s.from || ff.from > s.through {
			s = &suspect{stream: ff.stream, from: ff.from, through: ff.through}
			f.suspects[ff.stream] = s
		} else {
			s.from, s.through = max(s.from, ff.from), min(s.through, ff.through)
		}
		s.strikes++
		s.lastErr = boundErr(why)
		s.verdict = ff.solo
		s.acksAtVerdict = pubacks // evidence must come later (step 4)
		f.log.Warn("cloud connection ended with a message unacknowledged",
			"stream", s.stream.name, "offset", s.from, "through", s.through, "strikes", s.strikes,
			"sent_alone", ff.solo, "poison_attempts", f.cfg.PoisonAttempts)
	}
}

// connectFailed revokes unconfirmed verdicts: the cloud did not take the
// connection right after the message was sent alone, so the session may
// have ended in an outage rather than because of the message.
func (f *Forwarder) connectFailed() {
	for _, s := range f.suspects {
		if s.verdict && !s.confirmed {
			s.verdict = false
		}
	}
}

// held reports whether st waits for its poison to be isolated: nothing of
// it is sent meanwhile.
func (f *Forwarder) held(st *streamState) bool {
	s := f.suspects[st]
	return s != nil && s.verdict
}

// heldTimer fires when isolating a held stream's poison should be tried
// again; nil when no stream is held.
func (f *Forwarder) heldTimer() <-chan time.Time {
	for _, s := range f.suspects {
		if s.verdict && s.confirmed {
			return time.After(max(f.heldUntil.Sub(f.cfg.Now()), time.Millisecond))
		}
	}
	return nil
}

// poisonStep isolates the messages judged poison and sends the next
// suspect that had its strikes alone. It reports whether it sent one (the
// pump then starts its loop over); false lets the pump go on with the
// streams that are not held.
func (f *Forwarder) poisonStep(c *conn) bool {
	var alone *suspect
	awaiting := false
	for _, s := range f.suspects {
		switch {
		case s.verdict:
			if !s.confirmed && f.pubackCount() > s.acksAtVerdict {
				s.confirmed = true
			}
			if !s.confirmed {
				awaiting = true // step 4: the streams not held go on meanwhile
				if !c.probed {
					c.probed = f.probe(c, s)
				}
				continue
			}
			if !f.cfg.Now().Before(f.heldUntil) && !f.isolate(c, s) {
				f.heldUntil = f.cfg.Now().Add(queueRetry)
			}
		case s.strikes >= f.cfg.PoisonAttempts-1:
			if alone == nil || s.stream.name < alone.stream.name {
				alone = s // one at a time, in a stable order
			}
		}
	}
	if alone == nil || awaiting {
		return false // one trial at a time: a solo failure now would say nothing
	}
	f.sendAlone(c, alone)
	return true
}

func (f *Forwarder) ackedNextOf(st *streamState) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return st.ackedNext
}

// isolate moves the poison's events to the dead letters, durably, then
// acks them so the stream goes on. It reports false when that failed; the
// stream stays held and the pump tries again after queueRetry.
func (f *Forwarder) isolate(c *conn, s *suspect) bool {
	s.confirmed = true
	st := s.stream
	acked := f.ackedNextOf(st)
	if acked > s.through {
		delete(f.suspects, st) // acked meanwhile: nothing to do
		return true
	}
	// acked is 0 when nothing was: the stream's first offset is unknown.
	var evs []event.Event
	gap := false
	_, err := f.q.Read(st.name, acked, int(min(s.through-min(acked, s.from)+1, 1<<16)), func(off uint64, ev *event.Event) error {
		switch {
		case off > s.through:
			return errSlotsFull
		case off < s.from:
			gap = true // an earlier event is not acked: acking through the poison would skip it
			return errSlotsFull
		}
		evs = append(evs, cloneEvent(ev))
		return nil
	})
	if gap {
		delete(f.suspects, st) // start over
		st.dirty = true
		return true
	}
	if err != nil && !errors.Is(err, errSlotsFull) {
		err = fmt.Errorf("%w: read %s from %d: %w", ErrQueue, st.name, acked, err)
		f.setError(err)
		f.log.Error("cannot read a poison message to isolate it; holding its stream", "err", err)
		return false
	}
	reason := fmt.Sprintf("%v: it ended the cloud connection %d times, the last time sent alone, while the cloud acknowledged other messages (%s)",
		ErrPoison, s.strikes, s.lastErr)
	stored, looped := 0, 0
	if f.cfg.DeadLetters != nil {
		for i := range evs {
			err := f.cfg.DeadLetters.DeadLetter(c.ctx, &evs[i], reason)
			switch {
			case errors.Is(err, ErrDeadLetterLoop):
				looped++
			case err != nil:
				f.setError(fmt.Errorf("uplink: dead-letter a poison message of %s: %w", st.name, err))
				f.log.Error("cannot store a poison message in the dead letters; holding its stream",
					"stream", st.name, "offset", s.from, "retry_in", queueRetry, "err", err)
				return false // stored copies are stored again on the retry: at least once
			default:
				stored++
			}
		}
	}
	if f.drec != nil {
		if err := f.drec.RecordDrop(st.name, s.from, s.through, poisonReason); err != nil {
			err = fmt.Errorf("%w: record the drop of %s %d..%d: %w", ErrQueue, st.name, s.from, s.through, err)
			f.setError(err)
			f.log.Error("cannot record a poison message's drop; holding its stream", "err", err)
			return false
		}
	}
	if err := f.q.Ack(st.name, Consumer, s.through); err != nil {
		err = fmt.Errorf("%w: ack %s through %d: %w", ErrQueue, st.name, s.through, err)
		f.setError(err)
		f.log.Error("ack failed", "err", err)
		return false
	}
	f.mu.Lock()
	st.ackedNext = max(st.ackedNext, s.through+1)
	f.status.Acked[st.name] = max(f.status.Acked[st.name], s.through)
	f.status.Dropped[poisonReason] += uint64(len(evs))
	if f.drec == nil {
		// Announced in the gap of the stream's next event, in every
		// session until the cloud acknowledges that one. (A DropRecorder
		// has it, and Dropped reports it.)
		st.unannounced.add(s.from, s.through, poisonReason)
		st.drops[poisonReason] += s.through - s.from + 1
	}
	f.status.LastPoison = fmt.Sprintf("%s offsets %d..%d: %s", st.name, s.from, s.through, reason)
	f.mu.Unlock()
	st.next = max(st.next, s.through+1)
	st.dirty = true
	msg := "cloud refused a message: moved it to the dead letters"
	if stored == 0 {
		msg = "cloud refused a message: dropped it (no dead-letter stream, or it is a dead letter)"
	}
	f.log.Warn(msg, "stream", st.name, "offset", s.from, "through", s.through,
		"events", len(evs), "dead_lettered", stored, "dead_letter_loops", looped, "attempts", s.strikes, "err", s.lastErr)
	delete(f.suspects, st)
	return true
}

// sendAlone publishes the suspect's next event alone, the window otherwise
// empty, and waits for its outcome. The suspect is cleared once all of its
// events were acknowledged.
func (f *Forwarder) sendAlone(c *conn, s *suspect) {
	st := s.stream
	if f.ackedNextOf(st) > s.through {
		f.log.Info("suspected message delivered when sent alone: not poison",
			"stream", st.name, "offset", s.from, "through", s.through)
		delete(f.suspects, st)
		st.dirty = true
		return
	}
	if !c.settled {
		// Show that the connection stands without the message first.
		sleep(c.ctx, min(soloSettle, f.cfg.StableAfter))
		if c.ctx.Err() != nil {
			return
		}
		c.settled = true
	}
	if !f.preProbe(c, s) {
		return
	}
	var r *record
	select {
	case r = <-f.slots:
	case <-c.ctx.Done():
		return
	}
	recs := []*record{r}
	used, _, err := f.readStream(st, recs, 1)
	if used == 0 {
		f.slots <- r
		if err != nil {
			f.setError(err)
			f.log.Error("queue read failed", "err", err)
			sleep(c.ctx, queueRetry)
			return
		}
		delete(f.suspects, st) // its events are gone (evicted): nothing to test
		st.dirty = true
		return
	}
	r.solo = true
	f.send(c, recs)
	select {
	case <-c.soloDone:
	case <-c.ctx.Done():
	}
}

// preProbe shows, before the suspect s is sent alone on c, that the cloud
// stores messages on this connection now (step 2): it publishes a copy of
// the last small message the cloud acknowledged (Forwarder.good; the cloud
// drops the duplicate by event ID) and waits for its PUBACK. It reports
// whether the suspect may be sent: true once the copy was acknowledged or
// when there is no copy to send; false when the session ended first
// (c.preProbeFailed is then set, see judge). Once per connection.
func (f *Forwarder) preProbe(c *conn, s *suspect) bool {
	if c.preProbed {
		return true
	}
	var r *record
	select {
	case r = <-f.slots:
	case <-c.ctx.Done():
		return false
	}
	f.mu.Lock()
	topic, n, before := f.good.topic, len(f.good.msg), f.pubacks
	if n > 0 {
		r.reset(s.stream)
		r.buf = append(r.buf, f.good.msg...)
	}
	f.mu.Unlock()
	c.preProbed = true
	if n == 0 {
		f.slots <- r
		return true
	}
	r.msg, r.bytes, r.topicS = r.buf, len(r.buf), topic
	r.probe = true
	f.log.Info("probing whether the cloud takes messages before sending a suspected poison alone",
		"stream", s.stream.name, "offset", s.from, "through", s.through)
	f.send(c, []*record{r})
	for f.pubackCount() <= before {
		select {
		case <-c.acked:
		case <-c.ctx.Done():
			c.preProbeFailed = true
			return false
		}
	}
	return true
}

// cloneEvent copies ev so that it outlives a Queue.Read callback.
func cloneEvent(ev *event.Event) event.Event {
	out := *ev
	out.Payload = slices.Clone(ev.Payload)
	out.Attrs = maps.Clone(ev.Attrs)
	return out
}

// boundErr returns err's text cut to maxReasonErr bytes on a character
// boundary; "" for nil.
func boundErr(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if len(s) <= maxReasonErr {
		return s
	}
	return strings.ToValidUTF8(s[:maxReasonErr], "") + "…"
}
