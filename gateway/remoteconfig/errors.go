package remoteconfig

import "errors"

// Errors of Offer and of the outcome reported on the status topic; check
// them with errors.Is. The reasons from package signed (ErrBadSignature,
// ErrNotNewer, ...) are wrapped alongside.
var (
	// ErrRefused is returned by Offer for a configuration that will not be
	// applied: too large, not signed by a trusted key, for another
	// gateway, or not newer. The message was handled: acknowledge it.
	// Any other error of Offer (the disk) means it was not stored.
	ErrRefused = errors.New("remote configuration refused")
	// ErrDisabled is returned (wrapped in ErrRefused) when the local file
	// does not enable remote_config.
	ErrDisabled = errors.New("remote configuration is not enabled in the local file")
	// ErrInterrupted is reported when applying a version was interrupted
	// (the gateway stopped or crashed) maxAttempts times: it is refused
	// rather than tried again.
	ErrInterrupted = errors.New("applying was interrupted")
	// ErrNoUplink is reported when the uplink did not connect within
	// remote_config.rollback_after of an apply (status rolled_back).
	ErrNoUplink = errors.New("the uplink did not connect under this configuration")
)
