package rules

import (
	"time"

	"github.com/ferrygw/ferry/gateway/rules/detect"
	"github.com/ferrygw/ferry/gateway/rules/record"
	"github.com/ferrygw/ferry/gateway/rules/stage"
	"github.com/ferrygw/ferry/gateway/rules/window"
)

// Stage is one step of a pipeline, as the Runner drives it.
type Stage interface {
	// Process handles one record and emits zero or more. An error means
	// this record cannot be processed (a missing field, a wrong type): the
	// runner sends the input event to the dead-letter stream with the
	// error as the reason and goes on with the next.
	Process(r *record.Record, emit record.Emit) error
	// Advance tells the stage that time (event time for event-time stages,
	// processing time otherwise, as the runner decides) has reached now:
	// windows that end by now close and emit, absence detectors fire.
	Advance(now time.Time, emit record.Emit)
	// MarshalState returns the stage's state (open windows, detector
	// states, dedup horizons) in a deterministic encoding, and
	// UnmarshalState restores it. A stateless stage returns nil.
	MarshalState() ([]byte, error)
	UnmarshalState([]byte) error
}

// The stages a pipeline is built of. They live in packages of their own,
// which know nothing of the runner, so the check is made here.
var (
	_ Stage = (*stage.Filter)(nil)
	_ Stage = (*stage.Map)(nil)
	_ Stage = (*stage.Dedup)(nil)
	_ Stage = (*window.Window)(nil)
	_ Stage = (*detect.Detector)(nil)
)
