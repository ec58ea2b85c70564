package uplink

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/ferrygw/ferry/event"
)

// envelope is the decoded form of one JSON envelope (see AppendEnvelopeJSON).
type envelope struct {
	ID          string            `json:"id"`
	Gateway     string            `json:"gateway"`
	Stream      string            `json:"stream"`
	Seq         uint64            `json:"seq"`
	Epoch       string            `json:"epoch"`
	Gap         *jsonGap          `json:"gap"`
	Replay      bool              `json:"replay"`
	Source      string            `json:"source"`
	Topic       string            `json:"topic"`
	TS          string            `json:"ts"`
	ContentType string            `json:"content_type"`
	Payload     json.RawMessage   `json:"payload"`
	PayloadB64  *string           `json:"payload_b64"`
	Attrs       map[string]string `json:"attrs"`
}

type jsonGap struct {
	Dropped uint64            `json:"dropped"`
	Reasons map[string]uint64 `json:"reasons"`
}

// DecodeMessage decodes a cloud message in any of its forms (see
// DecodeEnvelopes) back to its events. The gateway and sequence fields are
// dropped; a SenML pack's events have a zero ID.
func DecodeMessage(b []byte) ([]event.Event, error) {
	envs, err := DecodeEnvelopes(b)
	if err != nil {
		return nil, err
	}
	evs := make([]event.Event, len(envs))
	for i := range envs {
		evs[i] = envs[i].Event
	}
	return evs, nil
}

// DecodeEnvelopes decodes a cloud message in any of its forms: a JSON
// envelope, a JSON array of them, a CBOR envelope (with or without the
// sequence fields), a CBOR array of them, a SenML pack in CBOR, and the
// zstd frame of any of these (see the package doc). Payloads are restored
// to their original bytes, except a SenML pack's, which come back as
// compact JSON with the numbers' digits as sent. Fields a message does not
// carry are zero: Seq 0 and Epoch "" in messages from before sequence
// numbers, Gateway "" in CBOR messages from before them, the ID in SenML.
//
// The input is untrusted: DecodeEnvelopes never panics, bounds every size
// (a compressed message inflates to at most MaxDecompressedBytes, a batch
// holds at most MaxBatchEvents events) and returns an error wrapping
// ErrMalformedMessage for anything else. It is safe for concurrent use.
func DecodeEnvelopes(b []byte) ([]Envelope, error) {
	if IsCompressed(b) {
		raw, err := decompress(b)
		if err != nil {
			return nil, err
		}
		if IsCompressed(raw) {
			return nil, malformed("compressed twice")
		}
		b = raw
	}
	trimmed := bytes.TrimLeft(b, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, malformed("empty message")
	}
	switch c := trimmed[0]; {
	case c == '{':
		var env envelope
		if err := json.Unmarshal(b, &env); err != nil {
			return nil, malformed("json: %v", err)
		}
		e, err := env.envelope()
		if err != nil {
			return nil, err
		}
		return []Envelope{e}, nil
	case c == '[':
		return decodeJSONBatch(b)
	case c&0xe0 == cborArray:
		return decodeCBOR(b)
	default:
		return nil, malformed("neither JSON nor a CBOR array (first byte %#x)", c)
	}
}

func decodeJSONBatch(b []byte) ([]Envelope, error) {
	var envs []envelope
	if err := json.Unmarshal(b, &envs); err != nil {
		return nil, malformed("json batch: %v", err)
	}
	if len(envs) == 0 || len(envs) > MaxBatchEvents {
		return nil, malformed("json batch of %d events", len(envs))
	}
	out := make([]Envelope, len(envs))
	for i := range envs {
		var err error
		if out[i], err = envs[i].envelope(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (env *envelope) envelope() (Envelope, error) {
	ev, err := env.event()
	if err != nil {
		return Envelope{}, err
	}
	out := Envelope{Event: ev, Gateway: env.Gateway, Seq: env.Seq, Epoch: env.Epoch, Replay: env.Replay}
	if env.Gap != nil {
		if len(env.Gap.Reasons) > maxGapReasons {
			return Envelope{}, malformed("gap with %d reasons", len(env.Gap.Reasons))
		}
		out.Gap = &Gap{Dropped: env.Gap.Dropped, Reasons: env.Gap.Reasons}
		if out.Gap.Reasons == nil {
			out.Gap.Reasons = map[string]uint64{}
		}
	}
	return out, nil
}

func (env *envelope) event() (event.Event, error) {
	id, err := event.ParseID(env.ID)
	if err != nil {
		return event.Event{}, malformed("id %q: %v", env.ID, err)
	}
	ev := event.Event{
		ID:          id,
		Stream:      env.Stream,
		Source:      env.Source,
		Topic:       env.Topic,
		ContentType: env.ContentType,
		Attrs:       env.Attrs,
	}
	if env.TS != "" {
		if ev.Time, err = time.Parse(time.RFC3339Nano, env.TS); err != nil {
			return event.Event{}, malformed("ts: %v", err)
		}
	}
	switch {
	case env.Payload != nil && env.PayloadB64 != nil:
		return event.Event{}, malformed("both payload and payload_b64")
	case env.Payload != nil:
		ev.Payload = []byte(env.Payload)
	case env.PayloadB64 != nil:
		if base64.StdEncoding.DecodedLen(len(*env.PayloadB64)) > event.MaxPayload+3 {
			return event.Event{}, malformed("payload too large")
		}
		if ev.Payload, err = base64.StdEncoding.DecodeString(*env.PayloadB64); err != nil {
			return event.Event{}, malformed("payload_b64: %v", err)
		}
	default:
		ev.Payload = []byte{}
	}
	if len(ev.Payload) > event.MaxPayload {
		return event.Event{}, malformed("payload of %d bytes exceeds %d", len(ev.Payload), event.MaxPayload)
	}
	if len(ev.Attrs) > event.MaxAttrs {
		return event.Event{}, malformed("%d attrs exceed %d", len(ev.Attrs), event.MaxAttrs)
	}
	return ev, nil
}

// decodeCBOR decodes a CBOR message: an envelope (its first item the ID, a
// byte string), an array of envelopes, or a SenML pack (an array of maps).
func decodeCBOR(b []byte) ([]Envelope, error) {
	r := &cborReader{b: b}
	n := r.arrayLen(MaxBatchEvents * senmlMaxFields)
	major, _, _ := r.peek()
	if r.err != nil {
		return nil, r.err
	}
	switch {
	case n == 0:
		return nil, malformed("empty cbor batch")
	case major == cborBytes: // the ID: one envelope
		r.off = 0
		env := r.envelope()
		if r.err == nil && !r.done() {
			r.fail("trailing bytes")
		}
		if r.err != nil {
			return nil, r.err
		}
		return []Envelope{env}, nil
	case major == cborMap:
		return decodeSenML(b)
	case major != cborArray:
		return nil, malformed("cbor array of neither envelopes nor SenML records")
	case n > MaxBatchEvents:
		return nil, malformed("cbor batch of %d events", n)
	}
	envs := make([]Envelope, 0, min(n, 1024))
	for i := 0; i < n && r.err == nil; i++ {
		envs = append(envs, r.envelope())
	}
	if r.err == nil && !r.done() {
		r.fail("trailing bytes")
	}
	if r.err != nil {
		return nil, r.err
	}
	return envs, nil
}

// envelope reads a CBOR envelope (see AppendEnvelopeCBOR): the event's
// 8 items, decoded by event.Unmarshal with its limits, then the sequence
// fields when present.
func (r *cborReader) envelope() Envelope {
	start := r.off
	n := r.arrayLen(13)
	if r.err != nil {
		return Envelope{}
	}
	if n != 8 && (n < 11 || n > 13) {
		r.fail("envelope of %d items (8, 11, 12 or 13)", n)
		return Envelope{}
	}
	itemsStart := r.off
	for range 8 {
		r.skip()
	}
	if r.err != nil {
		return Envelope{}
	}
	var env Envelope
	evBytes := r.b[start:r.off]
	if n != 8 {
		evBytes = append([]byte{cborArray | 8}, r.b[itemsStart:r.off]...)
	}
	if err := event.Unmarshal(evBytes, &env.Event); err != nil {
		r.err = malformed("cbor event: %v", err)
		return Envelope{}
	}
	if n == 8 {
		return env
	}
	env.Gateway = r.text(maxTextField)
	env.Seq = r.uint()
	env.Epoch = r.text(maxTextField)
	if n >= 12 && !r.null() {
		env.Gap = r.gap()
	}
	if n == 13 {
		env.Replay = r.bool()
	}
	return env
}
