// Package downlink is ferry's MQTT 5 session with the cloud for what flows
// down and back: commands for the board's devices, their replies,
// configurations pushed by the fleet, and the gateway's presence.
//
// The uplink (package uplink) speaks MQTT 3.1.1, which cannot carry a
// response topic, correlation data or message expiry; a broker strips
// them for a 3.1.1 subscriber. So a Client keeps a second cloud session,
// MQTT 5 (paho.golang), to the same endpoints with the same credentials
// and its own client ID. The package imports neither the gateway, the
// buffer, the uplink nor the drivers: it declares the interfaces it needs
// (CommandSink, ConfigSink, ResendSink, Queue).
//
// # Commands
//
// Each Subscription is a cloud topic filter. A message received on it is
// mapped to a local topic (Subscription.MapTopic: the cloud prefix
// replaced by the local one) and handed to Config.Commands as a Command,
// with its MQTT 5 properties: response topic (or the subscription's reply
// topic), correlation data, content type, user properties, and the
// expiry, computed from the Message Expiry Interval the cloud sent and
// Config.Now. A message whose interval is zero has expired and is dropped.
//
// A command is acknowledged (PUBACK) only after the sink returned nil,
// which it does once the command is durable. When the sink fails, the
// connection is closed before anything more is acknowledged, the session
// ends and the client reconnects with backoff; the cloud then delivers
// the unacknowledged messages again. Delivery to the sink is therefore at
// least once: a message whose PUBACK was lost comes again.
//
// The session is persistent: Clean Start off and Config.SessionExpiry
// (default 24 h), so the cloud keeps QoS 1 commands sent while the link is
// down or the gateway is off, within that time and the broker's own limits
// (the granted expiry is logged and in Status). Messages the cloud sends
// right after the CONNACK of a resumed session, before the client has
// subscribed again, are routed the same way, by topic. Subscriptions use
// Retain Handling 1, so a retained command is delivered when a session
// first subscribes, not again on every reconnect; No Local is set too.
//
// A message is acknowledged and dropped, counted in Status.Dropped, and
// never reaches a sink when: no subscription or the config topic matches
// its topic ("unmatched": a filter removed from the config stays in the
// cloud's session until it expires); it maps to no valid local topic, or
// to one under Config.ReservedLocal ("topic"); its payload exceeds
// Config.MaxPayload ("oversize"); it expired ("expired"). The client
// announces a Maximum Packet Size of MaxPayload + 128 KiB and a Receive
// Maximum of 8, and ends a connection on which the cloud sends a larger
// packet before reading it, so a burst of commands holds bounded memory.
// The subscription QoS is at most 1: the cloud downgrades QoS 2 commands.
//
// # Loops
//
// A message from the cloud goes to a sink and nowhere else. The client
// publishes only presence, Retained entries and replies, and never to a
// topic it subscribes to: New refuses a presence, config or reply topic a
// command filter matches and overlapping filters (a message would come
// twice), and replies and Retained entries to such topics are dropped.
//
// # Replies
//
// Config.Replies is the durable log's reply stream. The client reads it
// from the Consumer's position and publishes each event, QoS 1, to its
// AttrResponseTopic with the correlation data (AttrCorrelationData,
// base64) and content type; an event is acked in the queue after its
// PUBACK, in offset order, with up to Config.ReplyInflight publishes in
// flight (replies may then reach the cloud in a different order; each
// carries its correlation data). An event without a valid response topic
// or with bad attributes, or that the cloud refuses with an error reason
// code, is acked and counted in Status.RepliesDropped, logged without its
// payload. New events are noticed through Queue.Changed, never by polling.
//
// # Configurations
//
// Messages on Config.ConfigTopic go to Config.Configs with the same
// acknowledgement rule as commands; the sink verifies, applies and
// reports them (through a Retained status).
//
// # Resend requests
//
// Messages on Config.ResendTopic ({gateway_id}/cmd/ferry/resend: the
// cloud asks for events it missed, see uplink.ResendRequest) go to
// Config.Resends and nowhere else, never to the local broker, even when a
// command filter covers the topic (the client then does not subscribe to
// it again: the filter's subscription brings it). The sink decodes and
// queues the request without waiting and returns the reply; the request
// is acknowledged whatever it made of it (the cloud asks again for what
// does not come). Replies are best effort: up to 16 wait, the rest are
// dropped; one goroutine of the session publishes them, QoS 1, with the
// request's correlation data, to the topic the sink chose (the request's
// response topic or its reply_to), unless the client subscribes to that
// topic; a reply not sent when the session ends is dropped, counted in
// Status.ResendRepliesDropped.
//
// # Presence and retained status
//
// With Presence.Topic set, the CONNECT carries a will: Offline, retained,
// QoS 1. After each connect, once its subscriptions are acknowledged (so
// that a command sent on seeing Online is received), the client publishes
// Online, retained, QoS 1.
// On a clean shutdown it sends DISCONNECT with reason 0x04 (disconnect
// with will message), so the cloud publishes Offline then too; on a lost
// connection the cloud publishes it when it notices. A Retained holds the
// latest payload of a few topics; it outlives Clients, and each running
// Client publishes every entry after each connect and each new one while
// connected.
//
// # Reconnecting
//
// The schedule is the uplink's: endpoints tried in order; a cloud that
// cannot be dialled (ErrUnreachable) probed every [ProbeInterval/2,
// ProbeInterval); a refusal (ErrRefused), a connection lost before
// StableAfter or a failing sink (ErrSink) backs off exponentially with
// full jitter from BackoffMin to BackoffMax; a connection lost after
// StableAfter is retried within ProbeInterval. All pauses are drawn from
// Config.Rand.
//
// # Concurrency and ordering
//
// Run's goroutine connects and waits for the session to end. On each
// connection paho runs its reader, pinger and one router goroutine; the
// router calls the sinks one message at a time, in the order the cloud
// sent them, and the PUBACKs follow in that order. One goroutine publishes
// presence and Retained entries, in the order they were Set; one reads the
// reply stream, with one short-lived goroutine per reply in flight. Run
// returns after every goroutine of the session stopped. On a clean
// shutdown it first waits up to a second for the PUBACKs of publishes in
// flight. Status is safe to call from any goroutine; Retained.Set from any
// goroutine at any time.
package downlink
