// Package buffer is ferry's durable store-and-forward log, kept in one bbolt
// file.
//
// A Log holds named streams. Each stream is a FIFO of events under
// monotonically increasing offsets (starting at 1, never reused). Producers
// Append; the uplink Reads from a cursor it keeps and Acks what the cloud
// confirmed, and the Log deletes acknowledged events.
//
// Concurrency: every method is safe for concurrent use. All writes go
// through one commit loop (Log.Run) that groups the appends and acks of all
// callers into one bbolt transaction and one fsync (group commit): the next
// commit starts as soon as the previous one ends, so throughput grows with
// the number of concurrent writers instead of being capped by a timer.
// Reads are bbolt read transactions and never wait for the commit loop.
//
// Durability: with DurabilitySync, Append returns only after the event's
// transaction is fsynced. With DurabilityNone the transaction is written to
// the OS but not fsynced: a killed process loses nothing, a power cut may
// lose recent events. With DurabilityBatch, Append returns once the event is
// queued and commits happen at most every BatchInterval: a crash loses what
// was queued. Acks are never waited for; an ack lost in a crash only means
// the event is forwarded again (at-least-once, deduplicated by event ID).
//
// Ordering: within a stream, events keep the order in which their Appends
// were queued; events appended by one goroutine keep that goroutine's order.
//
// Bounds: each stream is bounded by event count and bytes, with a policy on
// overflow (drop the oldest, or reject the new event), an optional TTL, and a
// free-disk watermark below which new events are refused. Every event that
// is dropped or refused is counted by reason in the file itself.
//
// Start-up reads one small metadata record per stream: reopening a log with
// millions of events does not scan them.
//
// Encryption at rest: with Options.Keys, event and state values are sealed
// (XChaCha20-Poly1305, see internal/keyring) with the stream or state name
// as associated data; keys, offsets and counters stay in the clear. Values
// written before encryption was turned on are still read in the clear, and
// values sealed with any key of the ring are read, so a key rotation needs
// no rewrite: an old key may leave the key file once its events are
// acknowledged. Open looks at the oldest and newest event of each stream
// and refuses a key file that lacks their key with ErrWrongKey, never
// treating it as corruption. Turning encryption on does not scrub what was
// written in the clear: those events stay readable on the card until
// delivered, and bbolt's free pages may keep old bytes until reused; start
// from a drained (or new) buffer file to be sure.
package buffer
