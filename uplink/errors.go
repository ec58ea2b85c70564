package uplink

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers test for them with errors.Is; the package wraps
// them with detail once, at the layer that detects the condition.
var (
	// ErrMalformedMessage is returned by DecodeEnvelopes and DecodeMessage
	// for bytes that are not one of the message forms.
	ErrMalformedMessage = errors.New("uplink: malformed message")
	// ErrBatchShape is returned by EncodeMessage for an empty event list, or
	// for several events when batch is false.
	ErrBatchShape = errors.New("uplink: a single message needs exactly one event")
	// ErrFormat is returned for a Format other than FormatJSON, FormatCBOR
	// or FormatSenMLCBOR.
	ErrFormat = errors.New("uplink: unknown message format")
	// ErrEncode is returned when an event cannot be encoded.
	ErrEncode = errors.New("uplink: cannot encode event")
	// ErrConfig is returned by New for an invalid Config.
	ErrConfig = errors.New("uplink: invalid config")
	// ErrConnect is recorded when no endpoint accepted a connection. It
	// wraps each endpoint's error, itself wrapping ErrUnreachable or
	// ErrRefused.
	ErrConnect = errors.New("uplink: cannot connect")
	// ErrUnreachable is an endpoint that could not be dialled: connection
	// refused, dial timed out, no route, name not resolved. Retrying costs
	// the cloud nothing, so the forwarder probes again within
	// Config.ProbeInterval.
	ErrUnreachable = errors.New("uplink: endpoint unreachable")
	// ErrRefused is an endpoint that was reached but did not accept the
	// connection: a CONNACK refusal (bad credentials, not authorized,
	// server unavailable), or a TLS or MQTT handshake that failed or timed
	// out. The forwarder backs off (Config.BackoffMin, BackoffMax).
	ErrRefused = errors.New("uplink: endpoint refused the connection")
	// ErrConnectionLost is recorded when an established connection failed.
	ErrConnectionLost = errors.New("uplink: connection lost")
	// ErrRunning is returned by Run when the Forwarder is already running.
	ErrRunning = errors.New("uplink: forwarder already running")
	// ErrQueue is returned when the Queue fails to read or ack.
	ErrQueue = errors.New("uplink: queue")
	// ErrDeadLetterLoop is returned by a DeadLetterer for an event that is
	// itself a dead letter; the Forwarder drops such a poison message.
	ErrDeadLetterLoop = errors.New("uplink: the event is a dead letter already")
	// ErrPoison is the reason given to DeadLetterer for a message the
	// cloud refused: it ended the connection PoisonAttempts times, the
	// last time sent alone, while the cloud accepted a new connection.
	ErrPoison = errors.New("uplink: the cloud refused the message")
	// ErrMalformedResend is returned by DecodeResendRequest for bytes
	// that are not a valid resend request.
	ErrMalformedResend = errors.New("uplink: malformed resend request")
	// ErrResendStream is returned by Forwarder.Resend for a stream the
	// forwarder does not send.
	ErrResendStream = errors.New("uplink: resend of a stream not forwarded")
	// ErrResendGone is returned by Forwarder.Resend when every event
	// asked for is older than the stream's first retained one.
	ErrResendGone = errors.New("uplink: resend of events no longer retained")
	// ErrResendRange is returned by Forwarder.Resend for a range of more
	// than MaxResendEvents retained events (or from after to).
	ErrResendRange = errors.New("uplink: resend range too large")
	// ErrResendBusy is returned by Forwarder.Resend when the stream's
	// pending resend cannot take the range (see MaxResendEvents).
	ErrResendBusy = errors.New("uplink: resend pending")
)

// Internal outcomes of a publish; they end up in Status.LastError only
// wrapped in ErrConnectionLost.
var (
	errUnsent       = errors.New("not published: the session ended first")
	errTokenTimeout = errors.New("paho did not complete the publish token after the connection ended")
	errNoPuback     = errors.New("no PUBACK in time on a live connection")
	errEventShape   = errors.New("event encoding is not an 8-item array")
)

func wrapEncode(err error) error { return fmt.Errorf("%w: %v", ErrEncode, err) }

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformedMessage}, args...)...)
}
