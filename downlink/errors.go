package downlink

import "errors"

// Sentinel errors. Callers test for them with errors.Is; the package wraps
// them with detail once, at the layer that detects the condition.
var (
	// ErrConfig is returned by New for an invalid Config.
	ErrConfig = errors.New("downlink: invalid config")
	// ErrRunning is returned by Run when the Client is already running.
	ErrRunning = errors.New("downlink: client already running")
	// ErrConnect is recorded when no endpoint accepted a connection. It
	// wraps each endpoint's error, itself wrapping ErrUnreachable or
	// ErrRefused.
	ErrConnect = errors.New("downlink: cannot connect")
	// ErrUnreachable is an endpoint that could not be dialled: connection
	// refused, dial timed out, no route, name not resolved. The client
	// probes again within Config.ProbeInterval.
	ErrUnreachable = errors.New("downlink: endpoint unreachable")
	// ErrRefused is an endpoint that was reached but did not accept the
	// connection: a CONNACK refusal, or a TLS, WebSocket or MQTT handshake
	// that failed or timed out. The client backs off.
	ErrRefused = errors.New("downlink: endpoint refused the connection")
	// ErrConnectionLost is recorded when an established connection failed
	// or the cloud sent DISCONNECT.
	ErrConnectionLost = errors.New("downlink: connection lost")
	// ErrSink is recorded when a CommandSink or ConfigSink failed: the
	// message was not acknowledged and the session ends, so that the cloud
	// delivers it again after the reconnect.
	ErrSink = errors.New("downlink: sink failed")
	// ErrQueue is recorded when the reply Queue fails to read or ack.
	ErrQueue = errors.New("downlink: queue")
	// ErrPacketTooLarge ends a connection on which the cloud sent a packet
	// larger than the Maximum Packet Size the client announced.
	ErrPacketTooLarge = errors.New("downlink: packet from the cloud exceeds the announced maximum size")
	// ErrTopic is returned by MapTopic for a cloud topic that does not map
	// to a valid local topic name.
	ErrTopic = errors.New("downlink: cannot map topic")
)
