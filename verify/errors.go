package verify

import "errors"

// Sentinel errors. Callers test for them with errors.Is; the package wraps
// them with detail once, at the layer that detects the condition.
var (
	// ErrConfig is returned by New and NewChecker for an invalid Config.
	ErrConfig = errors.New("verify: invalid config")
	// ErrConnect is returned by Run when the first connection to the cloud
	// broker failed (later losses are retried, not returned).
	ErrConnect = errors.New("verify: cannot connect")
	// ErrSubscribe is returned by Run when the cloud broker refused the
	// first subscription.
	ErrSubscribe = errors.New("verify: cannot subscribe")
	// ErrListen is returned by Run when the metrics listener cannot be
	// opened.
	ErrListen = errors.New("verify: cannot listen")
	// ErrRunning is returned by Run when the Verifier is already running
	// or has run (a Verifier runs once: its report is final).
	ErrRunning = errors.New("verify: already run")
	// ErrUndecodable wraps every error of DecodeReply:
	// the bytes are not a message of the expected form.
	ErrUndecodable = errors.New("verify: undecodable message")
)
