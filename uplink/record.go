package uplink

import (
	"bytes"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// batchHead is the room left at the start of a batch buffer for the array
// opening: '[' for JSON, a CBOR array head of up to 5 bytes (MaxBatchEvents).
const batchHead = 5

// record is one slot of the in-flight window: a message being built or
// published, or an oversize event to be acked in its turn. Records and
// their buffers are reused; a record belongs to the publisher until it is
// sent to the waiter, and to the waiter until it is back in Forwarder.slots.
type record struct {
	buf     []byte // backing storage for the message
	msg     []byte // the message, a window of buf
	topic   []byte // rendered topic
	stream  *streamState
	from    uint64 // offset of the first event carried
	through uint64 // offset of the last event carried
	events  int
	resent  int    // events of the message published before
	bytes   int    // payload bytes (len(msg) once sealed)
	drop    string // non-empty: no message, ack the event (reason for Status.Dropped)
	unsent  bool   // not published (session ended first): must not ack
	solo    bool   // published alone, to test a suspected poison (poison.go)
	probe   bool   // published to learn whether the cloud accepts anything: never acked (poison.go)
	topicS  string // topic as a string, for paho
	tok     mqtt.Token
}

func (r *record) reset(st *streamState) {
	r.buf, r.msg, r.topic = r.buf[:0], nil, r.topic[:0]
	r.stream, r.from, r.through, r.events, r.resent, r.bytes = st, 0, 0, 0, 0, 0
	r.drop, r.unsent, r.solo, r.probe, r.topicS, r.tok = "", false, false, false, "", nil
}

// open starts a message for an event encoded in enc whose topic is topic.
func (r *record) open(st *streamState, topic []byte, batch bool) {
	r.reset(st)
	r.topic = append(r.topic, topic...)
	if batch {
		r.buf = append(r.buf, make([]byte, batchHead)...)
	}
}

// aloneSize is the size of a message carrying only an encoded event of n bytes.
func aloneSize(f Format, batch bool, n int) int {
	switch {
	case !batch:
		return n
	case f == FormatCBOR:
		return n + 1
	default:
		return n + 2
	}
}

// sizeWith returns the message size if an encoded event of n bytes were added.
func (r *record) sizeWith(f Format, batch bool, n int) int {
	if !batch {
		return n
	}
	items := len(r.buf) - batchHead
	if f == FormatCBOR {
		return items + n + cborArrayHeadLen(r.events+1)
	}
	if r.events > 0 {
		items++ // comma
	}
	return items + n + 2 // brackets
}

// add appends one encoded event.
func (r *record) add(f Format, batch bool, item []byte, off uint64) {
	if batch && f == FormatJSON && r.events > 0 {
		r.buf = append(r.buf, ',')
	}
	r.buf = append(r.buf, item...)
	if r.events == 0 {
		r.from = off
	}
	r.events++
	r.through = off
}

// seal frames the message.
func (r *record) seal(f Format, batch bool) {
	if !batch {
		r.msg = r.buf
	} else if f == FormatJSON {
		r.buf[batchHead-1] = '['
		r.buf = append(r.buf, ']')
		r.msg = r.buf[batchHead-1:]
	} else {
		var h [batchHead]byte
		head := appendCBORArrayHead(h[:0], r.events)
		start := batchHead - len(head)
		copy(r.buf[start:batchHead], head)
		r.msg = r.buf[start:]
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
