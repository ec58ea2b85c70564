package uplink

import (
	"bytes"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// batchHead is the room left at the start of a batch buffer for the array
// opening: '[' for JSON, a CBOR array head of up to 5 bytes (a SenML pack's
// records may number more than 65535).
const batchHead = 5

// Kinds of message a record builds.
const (
	kindEnvelope = iota // JSON or CBOR envelopes (Config.Format)
	kindSenML           // a SenML pack (FormatSenMLCBOR, numeric events)
)

// record is one slot of the in-flight window: a message being built or
// published, or an event that cannot be sent, to be counted in its turn.
// Records and their buffers are reused; a record belongs to the publisher
// until it is sent to the waiter, and to the waiter until it is back in
// Forwarder.slots.
type record struct {
	buf     []byte // backing storage for the message
	zbuf    []byte // backing storage for the compressed message
	msg     []byte // the message, a window of buf or zbuf
	topic   []byte // rendered topic
	stream  *streamState
	from    uint64 // offset of the first event carried
	through uint64 // offset of the last event carried
	events  int
	items   int  // array items: events, or SenML records
	kind    int  // kindEnvelope or kindSenML
	framed  bool // an array: a batch, or a SenML pack
	pack    senmlPack
	resent  int    // events of the message published before
	bytes   int    // payload bytes (len(msg) once sealed)
	drop    string // non-empty: no message; the event is announced as dropped (reason for Status.Dropped)
	unsent  bool   // not published (session ended first): must not ack
	solo    bool   // published alone, to test a suspected poison (poison.go)
	probe   bool   // published to learn whether the cloud accepts anything: never acked (poison.go)
	replay  bool   // resent on request (resend.go): never acked, its stream's position untouched
	topicS  string // topic as a string, for paho
	tok     mqtt.Token
}

func (r *record) reset(st *streamState) {
	r.buf, r.msg, r.topic = r.buf[:0], nil, r.topic[:0]
	r.stream, r.from, r.through, r.events, r.items, r.resent, r.bytes = st, 0, 0, 0, 0, 0, 0
	r.kind, r.framed = kindEnvelope, false
	r.drop, r.unsent, r.solo, r.probe, r.replay, r.topicS, r.tok = "", false, false, false, false, "", nil
}

// open starts a message of kind for events whose topic is topic; batch
// says whether envelopes are batched (a SenML pack is always an array).
func (r *record) open(st *streamState, topic []byte, batch bool, kind int) {
	r.reset(st)
	r.topic = append(r.topic, topic...)
	r.kind = kind
	r.framed = batch || kind == kindSenML
	if kind == kindSenML {
		r.pack.reset()
	}
	if r.framed {
		r.buf = append(r.buf, make([]byte, batchHead)...)
	}
}

// aloneSize is the size of a message carrying only an encoded item of n
// bytes (items array items: a SenML event's records).
func aloneSize(f Format, framed bool, n, items int) int {
	switch {
	case !framed:
		return n
	case f == FormatJSON:
		return n + 2
	default:
		return n + cborArrayHeadLen(items)
	}
}

// sizeWith returns the message size if an encoded item of n bytes and
// items array items were added.
func (r *record) sizeWith(f Format, n, items int) int {
	if !r.framed {
		return n
	}
	size := len(r.buf) - batchHead
	if f != FormatJSON {
		return size + n + cborArrayHeadLen(r.items+items)
	}
	if r.events > 0 {
		size++ // comma
	}
	return size + n + 2 // brackets
}

// add appends one encoded event of items array items.
func (r *record) add(f Format, item []byte, items int, off uint64) {
	if r.framed && f == FormatJSON && r.events > 0 {
		r.buf = append(r.buf, ',')
	}
	r.buf = append(r.buf, item...)
	if r.events == 0 {
		r.from = off
	}
	r.events++
	r.items += items
	r.through = off
}

// seal frames the message and, with comp, compresses an array (a batch or
// a SenML pack) when that pays (see Compressor.Compress).
func (r *record) seal(f Format, comp *Compressor) {
	switch {
	case !r.framed:
		r.msg = r.buf
	case f == FormatJSON:
		r.buf[batchHead-1] = '['
		r.buf = append(r.buf, ']')
		r.msg = r.buf[batchHead-1:]
	default:
		var h [batchHead]byte
		head := appendCBORArrayHead(h[:0], r.items)
		start := batchHead - len(head)
		copy(r.buf[start:batchHead], head)
		r.msg = r.buf[start:]
	}
	if comp != nil && r.framed {
		// Batches and SenML packs only: a single envelope gains under 1%
		// (README, "Wire size"), not worth a consumer's decompression.
		if z, ok := comp.Compress(r.zbuf[:0], r.msg); ok {
			r.zbuf, r.msg = z, z
		}
	}
	r.bytes = len(r.msg)
	st := r.stream
	if !bytes.Equal(st.lastTopicBytes, r.topic) || st.lastTopic == "" {
		st.lastTopic = string(r.topic)
		st.lastTopicBytes = append(st.lastTopicBytes[:0], r.topic...)
	}
	r.topicS = st.lastTopic
}

// cborArrayHeadLen is len(appendCBORArrayHead(nil, n)).
func cborArrayHeadLen(n int) int {
	switch {
	case n < 24:
		return 1
	case n <= 0xff:
		return 2
	case n <= 0xffff:
		return 3
	default:
		return 5
	}
}
