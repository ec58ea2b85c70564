package uplink

import (
	"slices"
	"strconv"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/internal/jsonstr"
)

// Envelope is one event as a cloud message carries it: the event, the
// gateway that sent it and the event's place in its stream (see
// "Sequences" in the package doc).
type Envelope struct {
	Event event.Event
	// Gateway is the sending gateway's ID ("" when the message did not
	// carry it: CBOR messages from before sequence numbers).
	Gateway string
	// Seq is the event's offset in its stream, contiguous per (gateway,
	// stream, epoch) except where Gap announces a hole; 0 when the message
	// carries none (a message from before sequence numbers).
	Seq uint64
	// Epoch identifies the buffer file the sequence numbers count in: 16
	// lowercase hex digits, new when the gateway starts a new buffer file
	// (after quarantining a damaged one). "" when not carried.
	Epoch string
	// Gap, when not nil, announces that the events between the stream's
	// previous event and this one were dropped by the gateway, not lost.
	Gap *Gap
	// Replay marks an event sent again by `ferry buffer replay`: the cloud
	// had it before (or had it announced as dropped), so it is neither a
	// duplicate nor out of order.
	Replay bool
}

// Gap is a hole before an event that the gateway announces: Dropped
// offsets between the previous event of the stream it sent and this one
// were deleted on purpose, counted per reason (buffer policies: "overflow",
// "ttl", "disk", "unconsumed", "rollup"; the uplink's own: "oversize",
// "unencodable", "poison"). The counts add up to Dropped.
type Gap struct {
	Dropped uint64
	Reasons map[string]uint64
}

// seqMeta is the sequence part of an envelope, passed by pointer so the
// encoders need not copy an Event into an Envelope.
type seqMeta struct {
	seq    uint64
	epoch  string
	gap    *Gap
	replay bool
}

func metaOf(env *Envelope) seqMeta {
	return seqMeta{seq: env.Seq, epoch: env.Epoch, gap: env.Gap, replay: env.Replay}
}

// AppendEnvelopeJSON appends the JSON envelope of env to dst: AppendJSON's
// fields with, after "stream",
//
//	"seq":<n>,"epoch":"<hex>","gap":{"dropped":<n>,"reasons":{"<reason>":<n>,...}},"replay":true
//
// "seq" is omitted when 0, "epoch" when empty, "gap" when nil (its
// reasons sorted), "replay" when false. It does not allocate when dst has
// room and env has no gap.
func AppendEnvelopeJSON(dst []byte, env *Envelope) []byte {
	m := metaOf(env)
	return appendJSON(dst, env.Gateway, &env.Event, &m)
}

// AppendEnvelopeCBOR appends the CBOR envelope of env to dst: the array of
// event.Marshal extended by the sequence fields,
//
//	[id, stream, source, topic, time, content_type, payload, attrs,
//	 gateway, seq, epoch, gap?, replay?]
//
// gateway and epoch text strings, seq an unsigned integer; gap, present
// when there is one or when replay follows, is null or [dropped,
// {reason: count}] (keys in deterministic order); replay, present only
// when true, is true. So the array has 11, 12 or 13 items; event.Marshal's
// 8-item array is the form of messages without sequence fields.
func AppendEnvelopeCBOR(dst []byte, env *Envelope) ([]byte, error) {
	m := metaOf(env)
	return appendCBOREnvelope(dst, env.Gateway, &env.Event, &m)
}

// EncodeEnvelopes appends the message carrying envs in format f to dst. With
// batch false envs must hold exactly one envelope and the message is that
// envelope alone; with batch true the message is an array (even of one).
// FormatSenMLCBOR writes a SenML pack (an array, whatever batch says) when
// every envelope can go in one (see "SenML" in the package doc), and CBOR
// envelopes otherwise. Compression is a separate step (see Compressor).
func EncodeEnvelopes(dst []byte, f Format, envs []Envelope, batch bool) ([]byte, error) {
	pack := f == FormatSenMLCBOR && senmlAll(envs)
	if len(envs) == 0 || (!batch && len(envs) != 1 && !pack) {
		return dst, ErrBatchShape
	}
	start := len(dst)
	switch f {
	case FormatJSON, "":
		if !batch {
			return AppendEnvelopeJSON(dst, &envs[0]), nil
		}
		dst = append(dst, '[')
		for i := range envs {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = AppendEnvelopeJSON(dst, &envs[i])
		}
		return append(dst, ']'), nil
	case FormatCBOR, FormatSenMLCBOR:
		if pack {
			var p senmlPack
			dst = appendCBORHead(dst, cborArray, uint64(senmlRecords(envs)))
			for i := range envs {
				m := metaOf(&envs[i])
				dst = p.appendEvent(dst, envs[i].Gateway, &envs[i].Event, &m)
			}
			return dst, nil
		}
		if batch {
			dst = appendCBORArrayHead(dst, len(envs))
		}
		for i := range envs {
			var err error
			if dst, err = AppendEnvelopeCBOR(dst, &envs[i]); err != nil {
				return dst[:start], err
			}
		}
		return dst, nil
	default:
		return dst, ErrFormat
	}
}

// appendJSONSeq appends the sequence fields of m, each with its leading comma.
func appendJSONSeq(dst []byte, m *seqMeta) []byte {
	if m.seq != 0 {
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendUint(dst, m.seq, 10)
	}
	if m.epoch != "" {
		dst = append(dst, `,"epoch":`...)
		dst = jsonstr.AppendQuoted(dst, m.epoch)
	}
	if m.gap != nil {
		dst = append(dst, `,"gap":{"dropped":`...)
		dst = strconv.AppendUint(dst, m.gap.Dropped, 10)
		dst = append(dst, `,"reasons":{`...)
		for i, k := range sortedReasons(m.gap.Reasons) {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = jsonstr.AppendQuoted(dst, k)
			dst = append(dst, ':')
			dst = strconv.AppendUint(dst, m.gap.Reasons[k], 10)
		}
		dst = append(dst, "}}"...)
	}
	if m.replay {
		dst = append(dst, `,"replay":true`...)
	}
	return dst
}

// sortedReasons returns the keys of a gap's reasons, shortest first and
// then bytewise: the order of their CBOR encodings (RFC 8949 §4.2.1), used
// for JSON too so both forms list them alike.
func sortedReasons(reasons map[string]uint64) []string {
	keys := make([]string, 0, len(reasons))
	for k := range reasons {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if len(a) != len(b) {
			return len(a) - len(b)
		}
		if a < b {
			return -1
		}
		if a > b {
			return 1
		}
		return 0
	})
	return keys
}

// appendCBORGap appends a gap: [dropped, {reason: count}].
func appendCBORGap(dst []byte, g *Gap) []byte {
	dst = append(dst, cborArray|2)
	dst = appendCBORHead(dst, cborUint, g.Dropped)
	keys := sortedReasons(g.Reasons)
	dst = appendCBORHead(dst, cborMap, uint64(len(keys)))
	for _, k := range keys {
		dst = appendCBORText(dst, k)
		dst = appendCBORHead(dst, cborUint, g.Reasons[k])
	}
	return dst
}

// appendCBOREnvelope appends event.Marshal(ev) extended by gateway and m
// (see AppendEnvelopeCBOR).
func appendCBOREnvelope(dst []byte, gatewayID string, ev *event.Event, m *seqMeta) ([]byte, error) {
	start := len(dst)
	out, err := event.AppendMarshal(dst, ev)
	if err != nil {
		return dst, wrapEncode(err)
	}
	if out[start] != cborArray|8 {
		return dst, wrapEncode(errEventShape)
	}
	n := byte(11)
	switch {
	case m.replay:
		n = 13
	case m.gap != nil:
		n = 12
	}
	out[start] = cborArray | n
	out = appendCBORText(out, gatewayID)
	out = appendCBORHead(out, cborUint, m.seq)
	out = appendCBORText(out, m.epoch)
	if n >= 12 {
		if m.gap != nil {
			out = appendCBORGap(out, m.gap)
		} else {
			out = append(out, cborNull)
		}
	}
	if n == 13 {
		out = append(out, cborTrue)
	}
	return out, nil
}
