package rules

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

// Stage is one step of a pipeline.
type Stage interface {
	// Process handles one record and emits zero or more. An error means
	// this record cannot be processed (a missing field, a wrong type): the
	// runner sends the input event to the dead-letter stream with the
	// error as the reason and goes on with the next.
	Process(r *Record, emit Emit) error
	// Advance tells the stage that time (event time for event-time stages,
	// processing time otherwise, as the runner decides) has reached now:
	// windows that end by now close and emit, absence detectors fire.
	Advance(now time.Time, emit Emit)
	// MarshalState returns the stage's state (open windows, detector
	// states, dedup horizons) in a deterministic encoding, and
	// UnmarshalState restores it. A stateless stage returns nil.
	MarshalState() ([]byte, error)
	UnmarshalState([]byte) error
}

// Errors returned by stages and decoders; check them with errors.Is.
var (
	// ErrMalformed is returned for a payload that does not decode in the
	// configured format.
	ErrMalformed = errors.New("rules: malformed payload")
	// ErrField is returned when a record lacks a field a stage needs, or
	// the field has the wrong type.
	ErrField = errors.New("rules: missing or mistyped field")
	// ErrExpr is returned when an expression fails on a record.
	ErrExpr = errors.New("rules: expression failed")
	// ErrState is returned by UnmarshalState for state it cannot read.
	ErrState = errors.New("rules: unreadable stage state")
)

// numberOf returns v as a float64 if it holds any Go numeric type. Decoders
// produce float64 only; other types can come from expressions.
func numberOf(v any) (float64, bool) {
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
