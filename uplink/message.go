package uplink

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/internal/jsonstr"
)

// Format is the encoding of cloud messages.
type Format string

// Message formats.
const (
	// FormatJSON sends JSON envelopes (see AppendJSON); a batch is a JSON array.
	FormatJSON Format = "json"
	// FormatCBOR sends CBOR envelopes (see AppendEnvelopeCBOR); a batch is
	// a CBOR array of them.
	FormatCBOR Format = "cbor"
	// FormatSenMLCBOR sends the events of numeric streams as SenML packs in
	// CBOR (RFC 8428 §6, see "SenML" in the package doc), and every other
	// event as FormatCBOR does.
	FormatSenMLCBOR Format = "senml+cbor"
)

// MaxBatchEvents is the most events DecodeMessage accepts in one batch.
const MaxBatchEvents = 1 << 16

// EncodeMessage appends the message carrying evs in format f to dst. With
// batch false evs must hold exactly one event and the message is a single
// envelope; with batch true the message is an array (even of one event).
func EncodeMessage(dst []byte, f Format, gatewayID string, evs []event.Event, batch bool) ([]byte, error) {
	if len(evs) == 0 || (!batch && len(evs) != 1) {
		return dst, ErrBatchShape
	}
	switch f {
	case FormatJSON, "":
		if batch {
			return AppendJSONBatch(dst, gatewayID, evs), nil
		}
		return AppendJSON(dst, gatewayID, &evs[0]), nil
	case FormatCBOR:
		if batch {
			return AppendCBORBatch(dst, evs)
		}
		return AppendCBOR(dst, &evs[0])
	case FormatSenMLCBOR:
		envs := make([]Envelope, len(evs))
		for i := range evs {
			envs[i] = Envelope{Event: evs[i], Gateway: gatewayID}
		}
		return EncodeEnvelopes(dst, f, envs, batch)
	default:
		return dst, ErrFormat
	}
}

// AppendJSON appends the JSON envelope of ev to dst:
//
//	{"id":"<ULID>","gateway":"...","stream":"...","source":"...","topic":"...",
//	 "ts":"<RFC3339Nano UTC>","content_type":"...","payload":<raw JSON>,
//	 "attrs":{...}}
//
// The payload is embedded as is when it is valid UTF-8 JSON without leading
// or trailing white space; otherwise it is sent as "payload_b64" (standard
// base64) instead. "ts" is omitted for a zero time and "attrs" when empty;
// attrs keys are sorted, so the bytes are deterministic. Strings are escaped
// per RFC 8259; invalid UTF-8 in them (which event decoding already rejects)
// is replaced by U+FFFD. AppendJSON does not allocate when dst has room.
func AppendJSON(dst []byte, gatewayID string, ev *event.Event) []byte {
	return appendJSON(dst, gatewayID, ev, nil)
}

// appendJSON appends the JSON envelope of ev with the sequence fields of m
// (none when m is nil) after "stream".
func appendJSON(dst []byte, gatewayID string, ev *event.Event, m *seqMeta) []byte {
	dst = append(dst, `{"id":"`...)
	dst = ev.ID.AppendText(dst)
	dst = append(dst, `","gateway":`...)
	dst = jsonstr.AppendQuoted(dst, gatewayID)
	dst = append(dst, `,"stream":`...)
	dst = jsonstr.AppendQuoted(dst, ev.Stream)
	if m != nil {
		dst = appendJSONSeq(dst, m)
	}
	dst = append(dst, `,"source":`...)
	dst = jsonstr.AppendQuoted(dst, ev.Source)
	dst = append(dst, `,"topic":`...)
	dst = jsonstr.AppendQuoted(dst, ev.Topic)
	if !ev.Time.IsZero() {
		dst = append(dst, `,"ts":"`...)
		dst = ev.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"content_type":`...)
	dst = jsonstr.AppendQuoted(dst, ev.ContentType)
	if embeddable(ev.Payload) {
		dst = append(dst, `,"payload":`...)
		dst = append(dst, ev.Payload...)
	} else {
		dst = append(dst, `,"payload_b64":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, ev.Payload)
		dst = append(dst, '"')
	}
	if len(ev.Attrs) > 0 {
		dst = append(dst, `,"attrs":{`...)
		var arr [16]string
		keys := arr[:0]
		for k := range ev.Attrs {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = jsonstr.AppendQuoted(dst, k)
			dst = append(dst, ':')
			dst = jsonstr.AppendQuoted(dst, ev.Attrs[k])
		}
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

// AppendJSONBatch appends a JSON array of the envelopes of evs to dst.
func AppendJSONBatch(dst []byte, gatewayID string, evs []event.Event) []byte {
	dst = append(dst, '[')
	for i := range evs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendJSON(dst, gatewayID, &evs[i])
	}
	return append(dst, ']')
}

// AppendCBOR appends event.Marshal(ev) to dst.
func AppendCBOR(dst []byte, ev *event.Event) ([]byte, error) {
	out, err := event.AppendMarshal(dst, ev)
	if err != nil {
		return dst, wrapEncode(err)
	}
	return out, nil
}

// AppendCBORBatch appends a CBOR array whose elements are event.Marshal of
// each of evs (embedded items, not byte strings) to dst.
func AppendCBORBatch(dst []byte, evs []event.Event) ([]byte, error) {
	start := len(dst)
	dst = appendCBORArrayHead(dst, len(evs))
	for i := range evs {
		var err error
		if dst, err = AppendCBOR(dst, &evs[i]); err != nil {
			return dst[:start], err
		}
	}
	return dst, nil
}

// appendCBORArrayHead appends the head of a CBOR array of n items in its
// shortest (deterministic) form.
func appendCBORArrayHead(dst []byte, n int) []byte {
	return appendCBORHead(dst, cborArray, uint64(n))
}

// embeddable reports whether p can be embedded in an envelope verbatim and
// decoded back to the very same bytes.
func embeddable(p []byte) bool {
	if len(p) == 0 || isJSONSpace(p[0]) || isJSONSpace(p[len(p)-1]) {
		return false
	}
	return utf8.Valid(p) && json.Valid(p)
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
