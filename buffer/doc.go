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
package buffer
