package record

import (
	"errors"
	"time"
)

// Record is one event as a pipeline sees it: its identity and its decoded
// payload fields. Field values are float64, string, bool, nil,
// []any or map[string]any (JSON's model), whatever the payload format.
type Record struct {
	// Key identifies the record deterministically: the input event's ID for
	// a decoded event, or a key derived from the stage and its inputs for a
	// record a stage produced, so a replay yields identical keys.
	Key string
	// Time is the record's event time: a timestamp from the payload when
	// the format carries one (SenML "t", or a configured field), else the
	// time the gateway accepted the event.
	Time   time.Time
	Source string // the device: MQTT client ID or driver name
	Topic  string // the MQTT topic the event arrived on
	Fields map[string]any
}

// Clone returns a copy of r whose Fields map can be changed without
// touching r's (values are shared: stages treat them as immutable).
func (r *Record) Clone() *Record {
	c := *r
	c.Fields = make(map[string]any, len(r.Fields)+2)
	for k, v := range r.Fields {
		c.Fields[k] = v
	}
	return &c
}

// Emit receives a stage's output records. The stage must not use a record
// after emitting it.
type Emit func(*Record)

// Errors stages of every kind return; check them with errors.Is. (A
// payload that does not decode and an expression that fails have their
// own errors, in packages payload and expr.)
var (
	// ErrField is returned when a record lacks a field a stage needs, or
	// the field has the wrong type.
	ErrField = errors.New("rules: missing or mistyped field")
	// ErrState is returned by a stage's UnmarshalState for state it
	// cannot read.
	ErrState = errors.New("rules: unreadable stage state")
)

// Number returns v as a float64 if it holds any Go numeric type. Decoders
// produce float64 only; other types can come from expressions.
func Number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case int:
		return float64(x), true
	case int8:
		return float64(x), true
	case int16:
		return float64(x), true
	case int32:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint:
		return float64(x), true
	case uint8:
		return float64(x), true
	case uint16:
		return float64(x), true
	case uint32:
		return float64(x), true
	case uint64:
		return float64(x), true
	}
	return 0, false
}
