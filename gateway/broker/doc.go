// Package broker runs ferry's embedded MQTT broker (mochi-mqtt v2) and turns
// every PUBLISH whose topic matches an ingest route into an event in the
// durable log.
//
// Durability contract: mochi calls OnPublish inside the publishing client's
// read loop, before it writes the PUBACK (QoS 1) or PUBREC (QoS 2). The ingest
// hook queues the event for the log's next group commit and defers the rest
// of the PUBLISH to the log's answer (mochi's Deferred, patch 5 in
// third_party/mochi-mqtt/PATCHES.md): the acknowledgement, and the delivery
// to local subscribers, follow the commit, so with the log's sync durability
// the acknowledgement leaves only after the fsync of the event's own
// transaction. The read loop does not wait for it: it goes on to the
// client's next PUBLISH, whose event joins the same commit, so a client
// with several QoS 1 or 2 messages in flight has them stored with one
// fsync, not one fsync each. Acknowledgements still leave in the order the
// PUBLISHes arrived, and local subscribers receive the messages in that
// order, including messages that are not ingested (QoS 0, other topics)
// behind ingested ones. Other packets wait for the publishes before them:
// a PINGRESP or SUBACK never overtakes an acknowledgement, and a
// DISCONNECT right after PUBLISHes ends the connection once their
// acknowledgements are written. A client has at most MaxInflight PUBLISHes
// (any QoS) waiting for the log; the next one waits in its connection,
// which throttles that client alone, as a client waiting for its commit did
// before, and other clients' read loops run on. When the log refuses an
// event (stream full with the reject policy, disk below its
// watermark) the client is told on MQTT 5 (reason 0x97, quota exceeded, in
// the PUBACK for QoS 1 and the PUBREC, which ends the flow, for QoS 2) and,
// on MQTT 3.1.1, gets no acknowledgement, so it resends later; the message
// is not delivered to local subscribers either. Each refusal is logged
// with stream, client and topic, never the payload; the logger
// (Config.Logger) rate-limits the lines. When a connection breaks with
// publishes pending, their events are stored or refused all the same, but
// their acknowledgements cannot be written, so (as when a connection broke
// during a commit before) the QoS 1 and 2 ones are not delivered to local
// subscribers, and a client that keeps its session sends them again: the
// log may then hold them twice (at least once).
//
// Local subscribers receive matching messages live, as from any broker.
// Messages published by the broker's inline client (the gateway itself) are
// not ingested, so a republish cannot loop back into the log.
//
// # TLS
//
// Config.TLS adds a TLS listener (Config.Listen may then be empty: TLS
// only). TLS 1.2 is the minimum (1.3 can be required), TLS 1.3 is
// preferred, and TLS 1.2 offers only ECDHE key exchange with AEAD ciphers.
// The certificate, key and client CA files are re-read without a restart:
// Broker.ReloadTLS loads them at once, handshakes notice changed files
// within a second, and Broker.Reconfigure (the gateway's reload) can point
// the listener at other files and change UsernameFrom. A failed load keeps
// the previous certificate in service. Established connections are
// untouched. The listener's address, RequireClientCert and MinVersion are
// fixed until a restart.
//
// With TLSConfig.ClientCAFile, a client presenting a certificate that
// verifies against those CAs is authenticated by it: its identity (the
// subject CN, or with UsernameFrom "san" the first DNS name, email address
// or URI) is its user name for the ACL (%u) and everything else, and no
// password is needed. A certificate that does not verify fails the
// handshake; one without an identity, or a CONNECT whose user name differs
// from the certificate's, gets CONNACK "bad user name or password".
// Clients without a certificate authenticate by password or anonymously as
// on the plain listener, unless RequireClientCert refuses them in the
// handshake.
//
// # Per-client limits
//
// Each limit bounds what one client can make the broker hold or do; a
// client exceeding one is disconnected (or, for MaxClients, refused) and
// other clients are unaffected.
//
//   - A connection must finish its TLS handshake and send CONNECT within
//     10 seconds; on the websocket listener, send its upgrade request
//     within 10 seconds, then CONNECT within 10 more.
//   - MaxClients: one more client gets CONNACK "server busy" (MQTT 5) or
//     "server unavailable" (3.1.1). Clients are counted once authenticated,
//     so clients connecting at the same moment can overshoot it briefly.
//   - MaxPacketSize: a larger packet disconnects its sender before it is
//     read; MQTT 5 clients are told the limit in CONNACK.
//   - MaxKeepalive: a client asking for no keep-alive, or a longer one, is
//     given MaxKeepalive (MQTT 5: Server Keep Alive in CONNACK; 3.1.1
//     clients cannot be told and are held to it all the same), and every
//     client silent for 1.5 times its keep-alive is disconnected.
//   - MaxInflight: the Receive Maximum. A client with more QoS 2 messages
//     awaiting PUBREL is disconnected (MQTT 5: DISCONNECT 0x93). A QoS 1
//     message counts only while its event is being committed, and a
//     PUBLISH that finds the count taken up by such messages waits for
//     their commit instead (MQTT 3.1.1 clients are never told the limit),
//     so QoS 1 alone never gets a client disconnected: a client that sends
//     faster than the log commits, or does not read its acknowledgements,
//     stalls only itself, until its keep-alive deadline. Outbound, it is
//     the most messages sent to a client unacknowledged (an MQTT 5
//     client's own Receive Maximum is lowered to it); the rest wait in
//     the client's queue.
//   - Budget.MaxSessionQueue (broker.max_queued): at most this many QoS
//     1/2 messages are in flight to, or queued for an offline persistent
//     session of, one client; more are dropped and counted. The queue is
//     resent in publish order (mochi patch 10), its messages keep their
//     expiry, also in the session store (patch 13), and a message is in
//     every subscriber's queue before its publisher is acknowledged, also
//     while a session is being taken over by a new connection (patch 14).
//     The client's own QoS 1/2 flows are kept apart from the messages
//     queued for it, as each side numbers its packets (patch 12).
//   - MaxPendingWrites bounds a client's write buffer (256 packets): a
//     QoS 0 message finding it full, because the client does not read, is
//     dropped and counted (queue_full_total{reason="write_buffer"}); a QoS
//     1/2 one waits in the client's queue (patch 14).
//   - Topic aliases: at most 16 per MQTT 5 client (announced in CONNACK).
//
// # Sessions at rest
//
// With Config.Keys, the session store seals the payloads of retained,
// queued and in-flight messages and of wills before writing them, each
// bound to its topic and client (see sessionStore); payloads that do not
// open on restart are dropped with a warning, never served as ciphertext.
package broker
