package downlink

import (
	"maps"
	"time"
)

// Status is a snapshot of a Client's state, for health endpoints and logs.
type Status struct {
	// Connected reports whether the cloud session's connection is up.
	Connected bool
	// Endpoint is the URL of the current (or last) connection.
	Endpoint string
	// SessionPresent reports whether the cloud resumed the session at the
	// last connect (false: commands sent while away were lost, or none
	// existed yet).
	SessionPresent bool
	// SessionExpiry is what the cloud granted at the last connect.
	SessionExpiry time.Duration
	// LastConnected and LastDisconnected are when the link last came up
	// and went down.
	LastConnected, LastDisconnected time.Time
	// LastError describes the last connection, sink, queue or publish
	// failure.
	LastError string
	// Reconnects counts successful connections after the first.
	Reconnects uint64
	// Commands counts commands the CommandSink accepted.
	Commands uint64
	// ConfigsReceived counts configurations the ConfigSink accepted.
	ConfigsReceived uint64
	// Dropped counts cloud messages acknowledged without reaching a sink,
	// by reason: "unmatched" (no subscription or config topic matches its
	// topic: a filter dropped from the config still in the session),
	// "topic" (no valid local topic: see Subscription.MapTopic),
	// "oversize" (payload above MaxPayload), "expired" (no expiry
	// interval left).
	Dropped map[string]uint64
	// Replies counts replies the cloud acknowledged.
	Replies uint64
	// RepliesDropped counts reply events acknowledged in the queue without
	// being sent: no or an invalid response topic, bad attributes, too
	// large, a topic the client subscribes to, or refused by the cloud.
	RepliesDropped uint64
	// ResendRequests counts the resend requests handed to the
	// ResendSink, ResendRefused those it refused; ResendReplies counts
	// their replies the cloud acknowledged, ResendRepliesDropped those
	// dropped (too many waiting, an invalid topic, refused by the cloud,
	// or the connection lost first).
	ResendRequests, ResendRefused, ResendReplies, ResendRepliesDropped uint64
	// RetainedPublished counts retained messages (presence and Retained
	// entries) the cloud acknowledged.
	RetainedPublished uint64
}

// Status returns a snapshot of the client's state. It is safe to call
// concurrently with Run.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.status
	st.Dropped = maps.Clone(c.status.Dropped)
	return st
}

func (c *Client) update(f func(*Status)) {
	c.mu.Lock()
	f(&c.status)
	c.mu.Unlock()
}

func (c *Client) setError(err error) {
	c.update(func(s *Status) { s.LastError = err.Error() })
}

func (c *Client) drop(reason string) {
	c.update(func(s *Status) { s.Dropped[reason]++ })
}
