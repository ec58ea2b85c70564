// Package verify is the cloud side's check that a fleet's streams are
// complete: `ferry verify`. It subscribes to the cloud broker the
// gateways uplink to, decodes every message, and tracks each
// (gateway, stream, epoch) by the sequence numbers the gateways put on
// their events, reporting what was received, duplicated, replayed,
// reordered, announced as dropped, and what is missing without
// explanation. Nothing in ferry imports it; it imports event (and, wired
// in by cmd/ferry, uplink's decoder).
//
// # Sequence numbers
//
// Each envelope carries seq, the event's offset in its stream's buffer at
// the gateway (contiguous, never reused), and epoch, the buffer file's
// random ID (a new file after quarantine is a new epoch, and a new
// sequence space). When the buffer deleted events on purpose (overflow,
// TTL, full disk, unconsumed, rollup) the next event sent announces them:
// gap.dropped = n says the n offsets right before its seq are gone, with
// a count per reason. So, within an epoch, every offset between the first
// and the last one seen is either received or announced; anything else is
// a hole.
//
// # What is counted
//
// Per (gateway, stream, epoch) the Checker keeps the lowest and highest
// offsets seen and the holes between them:
//
//   - An event above the highest offset opens a hole for the offsets
//     skipped that its gap does not announce.
//   - An event inside an open hole fills it: it counts as received and
//     reordered (a later event came first: QoS 1 resends after a
//     reconnect, or a broker that does not keep order).
//   - A hole still open Config.Settle (default 30 s) after it opened is
//     judged unexplained: counted in UnexplainedGaps (one per hole) and
//     its events in Unexplained and Missing. Finish (the end of a run)
//     judges every open hole at once. An event of an unexplained hole
//     that comes later counts as repaired and is no longer missing; so
//     does an offset a late gap announcement covers.
//   - A copy of an event already received is a duplicate, unless it is
//     marked replay (ferry buffer replay, a resend request): replays are
//     counted apart and are neither duplicates nor reordered. A replayed
//     event that fills a hole counts as received.
//   - The first event of a stream sets its lowest offset. For one settle
//     window after that, an earlier offset extends the stream downwards
//     (the checker started while a gateway was resending); after it, an
//     offset below the lowest is a duplicate (replays apart).
//   - A gap announcement counts once, on the first copy of the event
//     carrying it (reasons missing from it count as "unspecified"); it
//     explains its offsets whether they were open, unexplained, or not
//     yet reached. A further copy can announce more than the first (the
//     buffer dropped events sent once but not acknowledged): the holes it
//     explains then count as dropped, their reasons taken from its own in
//     name order. An announced offset that arrives anyway later is
//     counted as a duplicate; an event received and then announced is
//     both received and dropped.
//   - An envelope without seq (a gateway older than sequence numbers) is
//     unsequenced: checked for duplicate event IDs among its stream's last
//     128, nothing else.
//   - Lag is now − the event's ts, for first copies (replays excluded), in
//     a histogram per sequence space and one for the fleet.
//
// A new epoch in a stream starts a new sequence space and is counted
// (NewEpochs) and logged; the previous epochs stay tracked, so late
// messages of the old buffer file are still checked, up to MaxEpochs (4)
// per stream: a fifth retires the oldest, its open holes judged and its
// counts kept in the stream's sums.
//
// What the checker cannot see: the tail of a stream. Events lost after
// the last one received leave no hole until a later event arrives; the
// report's last_seen and last_seq per stream show a stream gone quiet.
//
// # Memory
//
// State is per sequence space: its counts, a 64-byte lag histogram, its
// holes (at most Config.MaxHoles, default 64, open or unexplained;
// beyond, the oldest open hole is judged at once or the oldest
// unexplained one is forgotten, its events still counted as missing), a
// map of drop reasons once a gap was announced and, for unsequenced
// streams, a 2 KiB ring of IDs. Config.MaxStreams (default 100,000)
// bounds the sequence spaces; envelopes of further streams are counted as
// untracked. Gateway IDs, stream names and epochs over 256 bytes, and
// sequence numbers over 2^62, are rejected. A fleet of 1,000 gateways ×
// 10 streams, each with a hole and an announced drop, takes about 9 MiB
// of heap, under 1 KiB a stream (TestFleetScale).
//
// # Concurrency and ordering
//
// A Checker is safe for concurrent use: one mutex guards its state, taken
// once per message (Handle, Observe), per Tick, Finish and Report, and
// per scrape (aggregation only; formatting is done outside it). The
// Verifier's MQTT client delivers messages on one goroutine in the
// order the broker sent them and acknowledges each (QoS 1) after the
// checker has seen it, so a message is never acknowledged unchecked.
// Ordering across streams is not assumed; within a stream any order is
// tolerated, judged only after the settle window.
//
// # Scaling out: shared subscriptions and partitions
//
// The checker must see every message of a stream to judge its holes.
// MQTT shared subscriptions ($share/<group>/<filter>, Config.Share)
// split messages, not streams: with the usual round-robin strategy each
// instance sees part of every stream and reports holes that another
// instance filled. Use Config.Share only with a broker that pins a topic
// to one member (EMQX: shared_subscription_strategy = hash_topic; the
// uplink's default topic starts with the gateway ID), and accept that a
// member leaving moves topics mid-stream. The alternative is
// Config.Partition (-partition i/N): every instance subscribes to the
// whole filter and checks only the gateways whose ID hashes (FNV-1a 64,
// modulo N) to i, decoding everything (N times the traffic), or split
// the fleet by topic filter (-topic 'site-a/#') where the topic tree
// allows it.
//
// # Repair
//
// With Config.Repair, each unexplained hole gets a ResendRequest
// published to {gateway_id}/cmd/ferry/resend (see ResendRequest for the
// JSON), up to Config.RepairAttempts times one settle window apart. The
// gateway resends from what it retains, marked replay; the events that
// then arrive count as repaired. A ResendReply with status "refused"
// (or "ok" with a later first_seq) stops the requests for what the
// gateway no longer has.
//
// # Metrics
//
// Verifier serves GET /metrics on Config.Listen (see metrics.go for the
// series). With the default labels, gateway and stream, the eight
// per-stream families have one series each per (gateway, stream), plus
// ferry_verify_dropped_events_total per reason seen: 80,000 series for
// 1,000 gateways × 10 streams (10,000 a family). LabelsGateway divides
// that by the streams per gateway, LabelsNone leaves the fleet totals.
package verify
