package event

import (
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// Limits on decoded events. Anything larger is rejected as malformed rather
// than allocated: the decoder reads bytes from disk and from the network.
const (
	// MaxPayload is the largest payload an event may carry (16 MiB).
	MaxPayload = 16 << 20
	// MaxAttrs is the most attributes an event may carry.
	MaxAttrs = 64
)

// ErrMalformed is returned by Decode when the bytes are not an encoded Event.
var ErrMalformed = errors.New("event: malformed encoding")

// wire is the on-disk and on-wire form: a CBOR array, not a map, so field
// names cost no bytes. Fields are only ever appended, never reordered.
type wire struct {
	_           struct{} `cbor:",toarray"`
	ID          []byte
	Stream      string
	Source      string
	Topic       string
	Time        int64 // Unix nanoseconds
	ContentType string
	Payload     []byte
	Attrs       map[string]string
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err) // static options: a failure is a programming error
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   4,
		MaxArrayElements:  16,
		MaxMapPairs:       MaxAttrs,
		UTF8:              cbor.UTF8RejectInvalid,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Marshal returns the CBOR encoding of e.
func Marshal(e *Event) ([]byte, error) {
	return encMode.Marshal(toWire(e))
}

// AppendMarshal appends the CBOR encoding of e to dst.
func AppendMarshal(dst []byte, e *Event) ([]byte, error) {
	b, err := encMode.Marshal(toWire(e))
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

func toWire(e *Event) *wire {
	w := &wire{
		ID:          e.ID[:],
		Stream:      e.Stream,
		Source:      e.Source,
		Topic:       e.Topic,
		ContentType: e.ContentType,
		Payload:     e.Payload,
		Attrs:       e.Attrs,
	}
	if !e.Time.IsZero() {
		w.Time = e.Time.UnixNano()
	}
	if w.Payload == nil {
		w.Payload = []byte{}
	}
	return w
}

// Unmarshal decodes data into e. It never panics; any input that is not a
// well-formed, bounded Event yields an error wrapping ErrMalformed.
func Unmarshal(data []byte, e *Event) error {
	var w wire
	if err := decMode.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(w.ID) != len(e.ID) {
		return fmt.Errorf("%w: id has %d bytes, want %d", ErrMalformed, len(w.ID), len(e.ID))
	}
	if len(w.Payload) > MaxPayload {
		return fmt.Errorf("%w: payload of %d bytes exceeds %d", ErrMalformed, len(w.Payload), MaxPayload)
	}
	*e = Event{
		Stream:      w.Stream,
		Source:      w.Source,
		Topic:       w.Topic,
		ContentType: w.ContentType,
		Payload:     w.Payload,
		Attrs:       w.Attrs,
	}
	copy(e.ID[:], w.ID)
	if w.Time != 0 {
		e.Time = time.Unix(0, w.Time)
	}
	return nil
}
