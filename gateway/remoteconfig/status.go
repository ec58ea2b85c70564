package remoteconfig

import (
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/ferrygw/ferry/gateway/config"
)

// The outcomes a status reports.
const (
	StatusApplied    = "applied"
	StatusRefused    = "refused"
	StatusRolledBack = "rolled_back"
)

// Status is the payload published, retained, on the status topic
// (remote_config.status_topic) after each outcome.
type Status struct {
	// GatewayID is the gateway reporting.
	GatewayID string `json:"gateway_id"`
	// Version is the version the outcome is about (for a refused
	// envelope that does not parse: 0).
	Version uint64 `json:"version"`
	// Status is applied, refused or rolled_back.
	Status string `json:"status"`
	// Errors are why it was refused or rolled back; empty when applied.
	Errors []StatusError `json:"errors"`
	// Running is the version in force after the outcome (0: the local
	// file).
	Running uint64 `json:"running"`
	// Time is when it happened (UTC).
	Time time.Time `json:"time"`
}

// StatusError is one problem: for a problem with the document, its key
// path and line (in the YAML document, not counting the envelope's
// header); else Key is empty and Line 0.
type StatusError struct {
	Key     string `json:"key"`
	Line    int    `json:"line"`
	Message string `json:"message"`
}

// errorList turns err into StatusErrors: one per config.Error it holds,
// else one for the whole error.
func errorList(err error) []StatusError {
	if err == nil {
		return []StatusError{}
	}
	var es config.Errors
	if errors.As(err, &es) {
		out := make([]StatusError, 0, len(es))
		for _, e := range es {
			out = append(out, StatusError{Key: e.Path, Line: e.Line, Message: e.Msg})
		}
		return out
	}
	var e *config.Error
	if errors.As(err, &e) {
		return []StatusError{{Key: e.Path, Line: e.Line, Message: e.Msg}}
	}
	return []StatusError{{Message: err.Error()}}
}

// marshalStatus returns the payload of a status.
func marshalStatus(gatewayID string, version, running uint64, status string, errs []StatusError, now time.Time) json.RawMessage {
	b, _ := json.Marshal(Status{GatewayID: gatewayID, Version: version, Status: status, Errors: errs,
		Running: running, Time: now.UTC()})
	return b
}

// sameOutcome reports whether payload (a stored status) reports status
// with errs about version: saying it again would tell the cloud nothing.
func sameOutcome(payload json.RawMessage, version uint64, status string, errs []StatusError) bool {
	if len(payload) == 0 {
		return false
	}
	var s Status
	if json.Unmarshal(payload, &s) != nil {
		return false
	}
	return s.Version == version && s.Status == status && slices.Equal(s.Errors, errs)
}

// aboutVersion reports whether payload (a stored status) is about version.
func aboutVersion(payload json.RawMessage, version uint64) bool {
	var s Status
	return len(payload) > 0 && json.Unmarshal(payload, &s) == nil && s.Version == version
}
