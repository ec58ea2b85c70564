package uplink

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/ferrygw/ferry/event"
)

// batchDecMode decodes the outer array of a CBOR message; the elements are
// then decoded by event.Unmarshal, which applies its own limits.
var batchDecMode cbor.DecMode

func init() {
	var err error
	batchDecMode, err = cbor.DecOptions{
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		MaxNestedLevels:  8,
		MaxArrayElements: MaxBatchEvents,
		MaxMapPairs:      event.MaxAttrs,
	}.DecMode()
	if err != nil {
		panic(err) // static options: a failure is a programming error
	}
}

// envelope is the decoded form of one JSON envelope (see AppendJSON).
type envelope struct {
	ID          string            `json:"id"`
	Gateway     string            `json:"gateway"`
	Stream      string            `json:"stream"`
	Source      string            `json:"source"`
	Topic       string            `json:"topic"`
	TS          string            `json:"ts"`
	ContentType string            `json:"content_type"`
	Payload     json.RawMessage   `json:"payload"`
	PayloadB64  *string           `json:"payload_b64"`
	Attrs       map[string]string `json:"attrs"`
}

// DecodeMessage decodes a cloud message in any of its four forms (JSON
// envelope, JSON array of envelopes, CBOR event, CBOR array of events) back
// to its events, payloads restored to their original bytes. The input is
// untrusted: DecodeMessage never panics, bounds every size, and returns an
// error wrapping ErrMalformedMessage for anything else. The gateway field of
// JSON envelopes is not part of an Event and is dropped.
func DecodeMessage(b []byte) ([]event.Event, error) {
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
		ev, err := env.event()
		if err != nil {
			return nil, err
		}
		return []event.Event{ev}, nil
	case c == '[':
		return decodeJSONBatch(b)
	case c>>5 == 4: // CBOR array
		return decodeCBOR(b)
	default:
		return nil, malformed("neither JSON nor a CBOR array (first byte %#x)", c)
	}
}

func decodeJSONBatch(b []byte) ([]event.Event, error) {
	var envs []envelope
	if err := json.Unmarshal(b, &envs); err != nil {
		return nil, malformed("json batch: %v", err)
	}
	if len(envs) == 0 || len(envs) > MaxBatchEvents {
		return nil, malformed("json batch of %d events", len(envs))
	}
	evs := make([]event.Event, len(envs))
	for i := range envs {
		var err error
		if evs[i], err = envs[i].event(); err != nil {
			return nil, err
		}
	}
	return evs, nil
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

func decodeCBOR(b []byte) ([]event.Event, error) {
	var items []cbor.RawMessage
	if err := batchDecMode.Unmarshal(b, &items); err != nil {
		return nil, malformed("cbor: %v", err)
	}
	if len(items) == 0 {
		return nil, malformed("empty cbor batch")
	}
	if len(items[0]) > 0 && items[0][0]>>5 == 2 { // byte string: the event ID
		var ev event.Event
		if err := event.Unmarshal(b, &ev); err != nil {
			return nil, malformed("cbor event: %v", err)
		}
		return []event.Event{ev}, nil
	}
	evs := make([]event.Event, len(items))
	for i, it := range items {
		if err := event.Unmarshal(it, &evs[i]); err != nil {
			return nil, malformed("cbor batch item %d: %v", i, err)
		}
	}
	return evs, nil
}
