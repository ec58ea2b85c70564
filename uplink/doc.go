// Package uplink forwards events from the gateway's durable log to a cloud
// MQTT broker (AWS IoT Core, Azure IoT Hub, EMQX, HiveMQ, Mosquitto), and
// defines the cloud message format.
//
// # Messages
//
// An event travels in an envelope: JSON (AppendEnvelopeJSON), CBOR
// (AppendEnvelopeCBOR: event.Marshal's array extended by the sequence
// fields) or, with FormatSenMLCBOR and a numeric payload, records of a
// SenML pack. With batching on, a message is a JSON or CBOR array of
// envelopes of one stream and one rendered topic (a SenML pack is always
// an array). With CompressionZstd an array is sent as its zstd frame when
// that is smaller (see Compression). DecodeEnvelopes reads every form
// back, messages from before sequence numbers included; DecodeMessage
// returns just the events.
//
// # Sequences
//
// Every envelope carries seq, the event's offset in its stream (offsets
// are contiguous and never reused), and, when the Queue implements
// Sequenced, epoch, the buffer file's ID: (gateway, stream, epoch, seq)
// names an event, and seq is contiguous within (gateway, stream, epoch)
// except where an envelope announces a gap. The forwarder announces, on
// the first event it sends after a hole, how many offsets between the
// previous event it sent (at the start of a session: its acked position,
// less the dropped events that position ends with) and this one were
// dropped, and why: the Queue's policy drops (Sequenced.Dropped) and its
// own (events it acks without sending: "oversize", "unencodable",
// "poison"). So every hole the cloud sees is announced or a bug. The
// announcement is made again whenever the event is resent. A Queue that
// is a DropRecorder keeps the uplink's drops with its own, so a restarted
// or reloaded Forwarder announces them too; without one the Forwarder
// keeps them in memory until the cloud acknowledges the event that
// announces them, and a restart or reload in that window loses the
// announcement (the hole then looks unexplained; poison events are in the
// dead letters). Events at or below Sequenced.ReplayedThrough when the
// stream is first read carry replay: they were sent before (`ferry buffer
// replay`).
//
// # Resend on request
//
// Forwarder.Resend (a ResendRequest from the cloud, through the
// downlink) sends a range of a stream's events again from what the Queue
// still has (events kept by retention after their ack): those the cloud
// acknowledged, from the first one kept, marked replay and encoded as the
// live path encodes them, each with the gap announced between it and the
// event resent before it (the first: counted from the request's
// from_seq). The publisher serves them between live messages, with at
// most half the window while live events wait; their PUBACKs ack nothing
// in the Queue and leave the stream's position alone, and a resent
// message whose publish fails (its connection lost) goes back into the
// range and is sent over the next connection, for up to 3 lost
// connections per request (so a message the cloud will never take does
// not end connections forever; the cloud's next request tries again). A stream has at
// most one pending range (a request is merged into it), spanning at most
// MaxResendEvents; pending ranges are lost with the Forwarder (a reload),
// and the cloud asks again. A resent gap is what Sequenced.Dropped still
// reports: a buffer that prunes its drop records once every consumer is
// past them (buffer.Log) announces a policy drop inside an acknowledged
// range no more, so a hole whose announcing message was lost keeps its
// dropped offsets unexplained. A resent message the cloud will not take
// ends the connection like any other, and is never judged poison.
//
// # SenML
//
// With FormatSenMLCBOR an event whose payload is a JSON object of numbers
// (without exponent, at most 18 digits) and booleans with SenML-name keys,
// or a bare number or boolean, and that has a source usable as a SenML
// name, a time after 1978 and no attrs, goes in a SenML pack (RFC 8428 §6,
// CBOR with integer labels): one record per member, the first carrying
// bn = source + "/" (when it changes), bt = the event's time in seconds
// (a decimal fraction, to the millisecond), n and v (a decimal fraction
// with the digits sent: 21.370 stays 21.370) or vb; a bare value has no
// n. Other events of the stream go as CBOR envelopes, in messages of their
// own. ferry's fields use text labels (RFC 8428 §6: the integer labels
// are conclusive, extensions use text), beginning with '_' and not ending
// with '_' (not must-understand, so a generic SenML reader ignores them):
// on a pack's first record _gw (gateway), _st (stream), _ep (epoch, 8
// bytes when it is 16 hex digits); on an event's first record _sq (seq,
// when it is not the previous event's + 1, always on the first), _gp
// (gap: [dropped, {reason: count}]), _rp (replay: true), _tp (topic) or
// _tt ([prefix, suffix]: this and the following events' topic is prefix +
// source + suffix), and _ct (content type) when they change. A record with
// bt starts an event. A pack carries no event IDs: (gateway, stream,
// epoch, seq) identifies its events; DecodeEnvelopes returns them with a
// zero ID, their times to the millisecond and their payloads as compact
// JSON.
//
// # Compression
//
// With CompressionZstd a batch or SenML pack of at least MinCompressBytes
// is sent as its zstd frame (RFC 8878, no checksum, content size in the
// header) when that is smaller; single envelopes never are (they gain
// under 1%). A compressed message starts with the zstd magic number 28 B5
// 2F FD, which no JSON or CBOR message starts with, so a consumer tells
// the forms apart by the first bytes. Messages larger than
// MaxDecompressedBytes are never compressed, and DecodeEnvelopes inflates
// no message beyond it.
//
// # Batching a live stream
//
// Config.BatchMaxDelay lets a stream whose unsent events would not fill a
// batch wait, up to that long after its oldest unsent event, for more:
// a live stream then goes out as one message per delay.
//
// # Delivery guarantees
//
// With QoS 1 delivery is at least once: an event is acked in the Queue,
// which may then delete it, only after the cloud broker's PUBACK for the
// message that carried it. Per stream, order is never broken: a stream's
// acked offset advances only over a contiguous prefix of acknowledged
// messages, and after a connection loss every stream is rewound to the
// event after its last acked one and resent in order. Duplicates happen only
// for messages whose PUBACK was lost (or arrived after an earlier message of
// the same stream failed) and for probes of a suspected poison (see
// Poison); the cloud drops them by event ID. Events of
// different streams are not ordered relative to each other.
//
// With QoS 0 delivery is at most once: an event is acked once its message
// was written to the socket, and is lost if the connection or the broker
// fails before the broker handled it.
//
// An event too large to fit a message of Config.MaxMessageBytes on its own
// can never be sent; it is acked without being sent, logged and counted in
// Status.Dropped["oversize"], so it cannot block its stream forever.
//
// # Topics
//
// Config.Topic renders every event to a valid topic name whatever its
// fields hold (see appendTopic): characters MQTT or a common cloud broker
// refuses in a topic (wildcards, control characters, non-characters,
// invalid UTF-8) become '_', a '$' a field puts first becomes '_', and a
// topic longer than Config.MaxTopicBytes (default 256, AWS IoT Core's
// limit) is cut on a character boundary and ends in "~" and a 64-bit hash
// of the whole. The mapping is deterministic, not one-to-one; messages
// carry the original fields.
//
// # Poison
//
// With QoS 1 a message the cloud will not take (too large for the broker,
// refused by its policy) ends the connection or is never acknowledged, and
// being resent first after every reconnect it would stop its stream. The
// forwarder isolates it after Config.PoisonAttempts (default 3) sessions,
// without mistaking an outage for poison (see poison.go): only sessions
// the cloud had accepted count; the message is then sent alone, nothing
// else in flight, on a connection that stood a second without it and on
// which the cloud has just acknowledged a copy of a message it took before
// (a cluster node that cannot store while its cluster recovers holds the
// copy too); and it
// is judged poison only when that session also ends before its PUBACK, the
// very next connection attempt succeeds and, on that connection, the cloud
// acknowledges another message (other streams' traffic, or a probe: a copy
// of a small message it acknowledged before, else the next event of the
// stream, never acked in the queue). Its events then go to
// Config.DeadLetters, durably, and only then are they acked, counted in
// Status.Dropped["poison"] and described in Status.LastPoison; the stream
// goes on after them, in order. A message acknowledged at any step is
// cleared. If nothing is acknowledged on that connection, the cloud refuses
// every publish (a policy denying them all, a packet limit every message
// exceeds): the verdict is withdrawn, counted in Status.RefusedAll (and
// Status.RefusingAll set until the next PUBACK), and the message is
// retried with backoff, never dead-lettered. Each isolation costs
// PoisonAttempts reconnects, with their backoff.
//
// # Reconnecting
//
// The Forwarder runs its own reconnect loop: paho's auto-reconnect and
// connect retry are off, and each attempt is a fresh client. Endpoints
// are tried in rounds: every endpoint once, in the configured order,
// starting with the first, or, after a connection was lost, with the
// endpoint after the one lost (the likeliest to be gone, so it is tried
// last; a clustered cloud's nodes are its endpoints). A connection lost
// less than StableAfter after it was accepted, while endpoints of the
// round remain, is followed by the next endpoint at once (a random pause
// below ProbeInterval/4, no backoff step): that is a node dying or a
// cluster moving what the connection needs. Only a round in which every
// endpoint failed counts as a failure below. The pause before the next
// round depends on why the last one failed, so that a returning cloud is
// found within seconds while a fleet neither hammers a cloud that refuses
// it nor comes back in step:
//
//   - No endpoint could be dialled (ErrUnreachable: connection refused,
//     dial timeout, no route, name not resolved): retrying costs the cloud
//     nothing, so the forwarder probes again after a random pause in
//     [ProbeInterval/2, ProbeInterval) (default 2 s). A cloud back on its
//     address is found within ProbeInterval plus the connect time, however
//     long it was away.
//   - An endpoint answered but did not accept (ErrRefused: a CONNACK
//     refusal such as bad credentials, not authorized or server
//     unavailable, or a TLS or MQTT handshake that failed or timed out), or
//     the connection to the round's last endpoint was lost less than
//     StableAfter (default 10 s) after it was accepted: capped exponential backoff with full jitter, a random
//     pause below a cap doubling from BackoffMin to BackoffMax (1 s to
//     60 s). Probes of an unreachable cloud in between neither grow nor
//     reset it.
//   - A connection that had been up for StableAfter was lost: the backoff
//     starts over and the first attempt comes after a random pause in
//     [0, ProbeInterval), so a fleet that lost the cloud at one instant
//     does not come back at one instant.
//
// Every pause is drawn from Config.Rand, so the boards of a fleet drift out
// of step while they probe and a returning cloud sees their connections
// spread over a probe interval: about N/(0.75·ProbeInterval) a second for
// N boards. Raise ProbeInterval for a fleet the cloud cannot take that fast.
//
// # Priorities and the data budget
//
// Config.Priorities ranks streams, 0 the highest: the free window slots
// go to the streams of the highest priority with events waiting first,
// round-robin among them, and a lower priority gets what they leave (it
// can starve, but only while a higher one has a backlog). Config.Budget
// bounds the bytes the link carries per month (each publish's MQTT
// packet, its PUBACK and TLS records): priority p may start a message
// while the period's usage is below Bytes × (1 − Reserve[p]); events held
// stay in the Queue until the next period. A Queue that is a BudgetStore
// keeps the usage across restarts. See budget.go.
//
// # Concurrency
//
// A Forwarder runs in the goroutine that calls Run plus one token waiter
// per connection (and paho's own goroutines), never one per message. The
// Run goroutine connects (see Reconnecting), reads the streams by
// priority, round-robin within one, into a window of Config.Inflight outstanding publishes and publishes
// them; the waiter takes the publishes in order, waits for each token and
// acks the queue. Waiting for new events uses Queue.Changed, never polling.
// Status is safe to call from any goroutine. Run returns after all of its
// goroutines stopped.
package uplink
