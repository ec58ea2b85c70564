package uplink

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/ferrygw/ferry/event"
)

// ResendTopicSuffix follows the gateway ID in a resend request's topic:
// {gateway_id}/cmd/ferry/resend.
const ResendTopicSuffix = "/cmd/ferry/resend"

// ResendRequest asks a gateway to send a stream's events FromSeq to ToSeq
// (both included) of Epoch again. It is published, QoS 1, to
// {gateway_id}/cmd/ferry/resend as JSON:
//
//	{"id":"4f3c2a1b0e9d8c7a","gateway":"gw-1","stream":"telemetry",
//	 "epoch":"9b1f04c2d3e4a5b6","from_seq":120,"to_seq":129,
//	 "reply_to":"ferry-verify-host/resend-reply"}
//
// The gateway serves it from the events it retains
// (buffer.streams[].retain), sending them through its uplink as usual
// with "replay":true (Forwarder.Resend), and answers on reply_to with a
// ResendReply. The reply topic is in the payload because the checker
// (ferry verify) speaks MQTT 3.1.1 (NATS' MQTT interface has no MQTT 5);
// a gateway that received the request over MQTT 5 with a Response Topic
// answers there instead.
type ResendRequest struct {
	ID      string `json:"id"`
	Gateway string `json:"gateway"`
	Stream  string `json:"stream"`
	Epoch   string `json:"epoch"`
	FromSeq uint64 `json:"from_seq"`
	ToSeq   uint64 `json:"to_seq"`
	ReplyTo string `json:"reply_to,omitempty"`
}

// Topic is the request's topic: {gateway_id}/cmd/ferry/resend.
func (r *ResendRequest) Topic() string { return r.Gateway + ResendTopicSuffix }

// Resend reply statuses.
const (
	// ReplyOK: the gateway is resending the events it still has.
	ReplyOK = "ok"
	// ReplyRefused: it has none of them (FirstSeq is its first retained
	// one), or cannot serve the request (Error says why: "gateway",
	// "stream", "epoch", "retained", "range", "busy", "queue").
	ReplyRefused = "refused"
)

// ResendReply is a gateway's answer to a ResendRequest, echoing its
// fields:
//
//	{"id":"4f3c2a1b0e9d8c7a","gateway":"gw-1","stream":"telemetry",
//	 "epoch":"9b1f04c2d3e4a5b6","from_seq":120,"to_seq":129,
//	 "status":"refused","first_seq":400,"error":"retained"}
//
// With "ok", FirstSeq > FromSeq says that only FirstSeq..ToSeq are coming.
type ResendReply struct {
	ID       string `json:"id"`
	Gateway  string `json:"gateway"`
	Stream   string `json:"stream"`
	Epoch    string `json:"epoch"`
	FromSeq  uint64 `json:"from_seq"`
	ToSeq    uint64 `json:"to_seq"`
	Status   string `json:"status"`
	FirstSeq uint64 `json:"first_seq,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Bounds of a resend request.
const (
	// MaxResendRequestBytes bounds a request's JSON.
	MaxResendRequestBytes = 4096
	// maxResendField bounds the request's ID, gateway, stream and epoch
	// (as ferry verify bounds what it tracks).
	maxResendField = 256
	// maxReplyTopic bounds reply_to (an MQTT topic is at most 65535
	// bytes; a reply topic longer than this is not a reply topic).
	maxReplyTopic = 1024
	// MaxResendEvents bounds the events one stream's pending resends span
	// (Forwarder.Resend): a request beyond it is refused with
	// ErrResendRange, and one that would widen a stream's pending range
	// beyond it with ErrResendBusy.
	MaxResendEvents = 100_000
)

// DecodeResendRequest decodes a ResendRequest. The input is network
// input: it never panics, refuses more than MaxResendRequestBytes, and
// returns an error wrapping ErrMalformedResend for anything but an object
// with a gateway, a stream and an epoch of at most 256 bytes, from_seq <=
// to_seq, and a reply_to of at most 1 KiB.
func DecodeResendRequest(b []byte) (*ResendRequest, error) {
	if len(b) > MaxResendRequestBytes {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformedResend, len(b), MaxResendRequestBytes)
	}
	var r ResendRequest
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedResend, err)
	}
	if d.More() {
		return nil, fmt.Errorf("%w: data after the object", ErrMalformedResend)
	}
	switch {
	case r.Gateway == "" || r.Stream == "" || r.Epoch == "":
		return nil, fmt.Errorf("%w: gateway, stream and epoch are required", ErrMalformedResend)
	case len(r.ID) > maxResendField || len(r.Gateway) > maxResendField ||
		len(r.Stream) > maxResendField || len(r.Epoch) > maxResendField:
		return nil, fmt.Errorf("%w: a field is longer than %d bytes", ErrMalformedResend, maxResendField)
	case len(r.ReplyTo) > maxReplyTopic:
		return nil, fmt.Errorf("%w: reply_to is longer than %d bytes", ErrMalformedResend, maxReplyTopic)
	case r.FromSeq > r.ToSeq:
		return nil, fmt.Errorf("%w: from_seq %d after to_seq %d", ErrMalformedResend, r.FromSeq, r.ToSeq)
	}
	return &r, nil
}

// resendRange is a stream's pending resend: offsets next..to, the event
// before next having been prev (for its gap announcement).
type resendRange struct {
	next, to uint64
	prev     uint64 // the offset before the first one requested, then the last one sent
	gen      uint64 // counts merges: a range merged while the publisher read it
}

// Resend asks the forwarder to publish stream's events from..to again,
// marked replay, as a resend request from the cloud wants (see
// ResendRequest). It does not wait: the publisher (Run's goroutine) sends
// them between the live stream's messages, encoded as the live path
// encodes them (format, batching, compression, topic), each event's gap
// announced again, counted from the request's from. Only events the cloud
// acknowledged are resent: those after the stream's acked position are
// coming anyway, in order. It returns first, the stream's first retained
// offset (its next offset when it retains nothing), and an error:
// ErrResendStream for a stream the forwarder does not send, ErrResendGone
// when to is below first (nothing of the range is kept), ErrResendRange
// when the range, from first, spans more than MaxResendEvents, and
// ErrResendBusy when the stream's pending resend and this one would
// together. A stream has at most one pending range: a request is merged
// into it (the events between are sent too). Resent messages not
// acknowledged when the connection is lost go back into the pending range
// and are sent on the next connection, after up to 3 lost connections per
// request; the pending ranges are lost with the Forwarder (a reload): the
// cloud asks again. Safe to
// call from any goroutine; it reads the queue once (the stream's first
// retained event).
func (f *Forwarder) Resend(stream string, from, to uint64) (first uint64, err error) {
	if from > to {
		return 0, fmt.Errorf("%w: from %d after to %d", ErrResendRange, from, to)
	}
	if !f.forwards(stream) {
		return 0, fmt.Errorf("%w: %q", ErrResendStream, stream)
	}
	acked := f.q.Acked(stream, Consumer)
	first = acked + 1 // nothing retained: the next event to send
	if _, err := f.q.Read(stream, 0, 1, func(off uint64, _ *event.Event) error {
		first = off
		return nil
	}); err != nil {
		return 0, fmt.Errorf("%w: read %s: %w", ErrQueue, stream, err)
	}
	if to < first {
		return first, fmt.Errorf("%w: %d is before %d", ErrResendGone, to, first)
	}
	from = max(from, first)
	if to-from >= MaxResendEvents {
		return first, fmt.Errorf("%w: %d events, more than %d", ErrResendRange, to-from+1, MaxResendEvents)
	}
	to = min(to, acked)
	if acked == 0 || from > to {
		return first, nil // none of them was acknowledged: they are coming
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.queueResend(stream, from, to); err != nil {
		return first, err
	}
	delete(f.requeues, stream) // a new request: lost connections counted afresh
	f.status.ResendRequests++
	return first, nil
}

// maxResendRequeues is how many lost connections a stream's resent
// messages are sent again after, per request: a message the cloud will
// never take (it ends the connection, see poison.go) is not resent
// forever; the cloud's next request tries again.
const maxResendRequeues = 3

// requeueCount counts the connections a stream's resends were lost with.
type requeueCount struct {
	conn uint64 // the last one counted
	n    int
}

// requeue puts a resent record that was not acknowledged on connection
// c back into its stream's pending resend, unless the stream's resends
// were already lost with maxResendRequeues connections since its last
// request. The caller holds f.mu.
func (f *Forwarder) requeue(c *conn, r *record) {
	name := r.stream.name
	rc := f.requeues[name]
	if rc.conn != c.id {
		rc = requeueCount{conn: c.id, n: rc.n + 1}
		if f.requeues == nil {
			f.requeues = map[string]requeueCount{}
		}
		f.requeues[name] = rc
	}
	if rc.n > maxResendRequeues {
		f.log.Warn("resend not sent again: its messages were lost with too many connections", "stream", name,
			"from", r.from, "through", r.through, "connections", rc.n)
		return
	}
	if err := f.queueResend(name, r.from, r.through); err != nil {
		f.log.Warn("resend not sent again after a lost connection", "stream", name,
			"from", r.from, "through", r.through, "err", err)
	}
}

// queueResend merges from..to into stream's pending resend and wakes the
// publisher. The caller holds f.mu.
func (f *Forwarder) queueResend(stream string, from, to uint64) error {
	if f.resends == nil {
		f.resends = map[string]*resendRange{}
	}
	rg := f.resends[stream]
	if rg == nil {
		if len(f.resends) >= maxResendStreams {
			return fmt.Errorf("%w: resends pending for %d streams", ErrResendBusy, len(f.resends))
		}
		f.resends[stream] = &resendRange{next: from, to: to, prev: from - 1}
	} else {
		lo, hi := min(rg.next, from), max(rg.to, to)
		if hi-lo >= MaxResendEvents {
			return fmt.Errorf("%w: the stream's pending resend of %d..%d and %d..%d span more than %d events",
				ErrResendBusy, rg.next, rg.to, from, to, MaxResendEvents)
		}
		if from < rg.next {
			rg.prev = from - 1
		}
		rg.next, rg.to = lo, hi
		rg.gen++
	}
	select {
	case f.resendWake <- struct{}{}:
	default:
	}
	return nil
}

// maxResendStreams bounds the streams with a pending resend.
const maxResendStreams = 1024

// forwards reports whether the forwarder sends stream.
func (f *Forwarder) forwards(stream string) bool {
	names := f.cfg.Streams
	if names == nil {
		names = f.q.Streams()
	}
	return slices.Contains(names, stream)
}

// takeResend returns a pending resend to serve, and its stream; nil when
// there is none (or only of streams not read yet, or held by a suspected
// poison or by the data budget). Publisher only.
func (f *Forwarder) takeResend() (*streamState, *resendRange) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, rg := range f.resends {
		st := f.streams[name]
		if st == nil || f.held(st) || f.budget != nil && f.budget.held[st.prio] {
			continue // a poison isolation, or the budget, holds the stream: its resend waits too
		}
		return st, rg
	}
	return nil, nil
}

// resendPending reports whether a resend waits. Publisher only.
func (f *Forwarder) resendPending() bool {
	st, _ := f.takeResend()
	return st != nil
}

// fillResends fills up to len(recs) records with pending resends and
// returns how many it filled.
func (f *Forwarder) fillResends(recs []*record) (int, error) {
	used := 0
	for used < len(recs) {
		st, rg := f.takeResend()
		if st == nil {
			break
		}
		f.mu.Lock()
		cur := *rg
		f.mu.Unlock()
		start := cur.next
		got, done, err := f.readResend(st, &cur, recs[used:])
		used += got
		f.mu.Lock()
		if f.resends[st.name] == rg {
			merged := rg.gen != cur.gen
			if !merged || rg.next == start {
				// Not widened below what was read: go on after it.
				rg.next, rg.prev = cur.next, cur.prev
			}
			if err != nil || rg.next > rg.to || done && (!merged || rg.to == cur.to) {
				delete(f.resends, st.name)
			}
		}
		f.mu.Unlock()
		if err != nil {
			return used, err
		}
		if got == 0 {
			break
		}
	}
	return used, nil
}

// errResendEnd stops a resend's Read past its range.
var errResendEnd = errors.New("end of the resend range")

// readResend fills recs with the events of rg, from rg.next, updating
// rg.next and rg.prev. It reports how many records it filled and whether
// the range is done.
func (f *Forwarder) readResend(st *streamState, rg *resendRange, recs []*record) (int, bool, error) {
	batch := f.cfg.BatchMaxEvents > 1
	perRecord := f.cfg.BatchMaxEvents
	var cur *record
	used, seen := 0, 0
	seal := func() {
		if cur != nil {
			cur.seal(f.cfg.Format, f.comp)
			cur = nil
		}
	}
	span := rg.to - rg.next + 1
	maxEvents := min(uint64(len(recs)*perRecord), span)
	next, err := f.q.Read(st.name, rg.next, int(maxEvents), func(off uint64, ev *event.Event) error {
		if off > rg.to {
			return errResendEnd
		}
		seen++
		m := seqMeta{seq: off, epoch: f.epoch, gap: f.gapAfter(st.name, rg.prev, off), replay: true}
		kind, items, encErr := f.encode(nil, ev, &m)
		f.topicBuf = f.topic.appendTopic(f.topicBuf[:0], ev)
		framed := batch || kind == kindSenML
		if encErr != nil || len(ev.Payload) > f.cfg.MaxMessageBytes ||
			aloneSize(f.cfg.Format, framed, len(f.scratch), items) > f.cfg.MaxMessageBytes {
			// Dropped when first sent (and announced, with a
			// DropRecorder): the next event's gap announces it again.
			rg.next = off + 1
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
				return errSlotsFull
			}
			cur = recs[used]
			used++
			cur.open(st, f.topicBuf, batch, kind)
			cur.replay = true
		}
		if kind == kindSenML {
			cur.pack.commit(ev, &m)
		}
		cur.add(f.cfg.Format, f.scratch, items, off)
		cur.resent++
		rg.next = off + 1
		rg.prev = off
		return nil
	})
	seal()
	if cap(f.scratch) > 2*f.cfg.MaxMessageBytes {
		f.scratch = nil
	}
	switch {
	case errors.Is(err, errSlotsFull):
		return used, false, nil
	case errors.Is(err, errResendEnd):
		return used, true, nil
	case err != nil:
		return used, true, fmt.Errorf("%w: resend %s from %d: %w", ErrQueue, st.name, rg.next, err)
	}
	if next > rg.next {
		rg.next = next // past records the queue skipped
	}
	// Fewer events than asked for: the queue has no more of the range.
	return used, rg.next > rg.to || uint64(seen) < maxEvents, nil
}

// gapAfter returns the gap to announce on the resent event at off of
// stream, prev being the event resent before it (or the one before the
// range): the offsets between them the queue dropped, its own and the
// uplink's (with a DropRecorder); nil when there are none.
func (f *Forwarder) gapAfter(stream string, prev, off uint64) *Gap {
	if f.seq == nil || off <= prev+1 {
		return nil
	}
	n, reasons := f.seq.Dropped(stream, prev, off)
	if n == 0 {
		return nil
	}
	g := &Gap{Dropped: n, Reasons: map[string]uint64{}}
	for r, k := range reasons {
		g.Reasons[r] += k
	}
	return g
}

// completeReplay finishes a resent record in the waiter: it acks nothing
// in the queue and leaves the stream's acked position alone (its events
// were acked before). A record not acknowledged (the connection ended
// first, or it was never published) goes back into the stream's pending
// resend, to be sent on the next connection (see requeue for the bound).
func (f *Forwarder) completeReplay(c *conn, r *record, err error, published bool) {
	f.mu.Lock()
	if published {
		f.status.Inflight--
		if err == nil {
			f.status.ResentOnRequest += uint64(r.events)
		}
	}
	if err != nil && r.events > 0 {
		f.requeue(c, r)
	}
	f.mu.Unlock()
	if published && err != nil && err != errUnsent {
		c.fail(fmt.Errorf("%w: resend publish to %s: %v", ErrConnectionLost, c.url, err))
	}
	r.tok = nil
	f.slots <- r
}
