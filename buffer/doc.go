// Package buffer is ferry's durable store-and-forward log, kept in one bbolt
// file.
//
// A Log holds named streams. Each stream is a FIFO of events under
// monotonically increasing offsets (starting at 1, never reused).
// Producers Append; consumers Read from a position of their own and
// acknowledge what they have processed, and the Log deletes events every
// consumer the stream requires has processed.
//
// Positions (positions.go): the Log keeps, per stream, each consumer's
// position: the offset through which it has processed the stream, stored
// in the file under the consumer's name (the uplink, and each outbox's
// deliverer on its own outbox stream, ack as DefaultConsumer, "uplink";
// pipelines as "pipeline:<name>"). A consumer moves its position in one
// of two ways:
//
//   - Log.Ack(stream, consumer, through) records it without waiting: the
//     next commit applies it. A crash before then has the consumer process
//     those events again, so a consumer that acks after delivering
//     elsewhere (the uplink, the outbox deliverers) delivers at least
//     once, and the receiver deduplicates by event ID.
//   - Tx.Ack(stream, consumer, through), inside Log.Update, commits it
//     atomically with what the same transaction appends and stores
//     (Tx.Append, Tx.PutState): a consumer whose results stay in the log
//     (a pipeline) processes each event exactly once as far as the log
//     shows.
//
// Acked returns the latest acknowledgement, committed or still pending
// (where a reader that restarts goes on); Position the committed one
// (what a crash keeps). Rewind moves a position back to events still
// stored, for a replay. Positions only move forward otherwise: an ack at
// or below the position is a no-op, one past the newest event is cut to
// it.
//
// Retention (retention.go): an event is deleted once every consumer its
// stream requires (StreamConfig.Consumers; none listed: DefaultConsumer
// alone) has processed it, unless StreamConfig.Retain keeps it for a
// replay; TTL deletes events however far the consumers are. Other
// positions never delete anything, so a pipeline that got ahead of the
// uplink and was then removed cannot take unsent events with it;
// Configure and Open forget the positions of consumers a stream no longer
// requires, and ignore their late acks. An event deleted before a
// consumer that holds a position had processed it is counted
// (DropUnconsumed).
//
// Concurrency: every method is safe for concurrent use. All writes go
// through one commit loop (Log.Run) that groups the appends and acks of all
// callers into one bbolt transaction and one fsync (group commit): the next
// commit starts as soon as the previous one ends, so throughput grows with
// the number of concurrent writers instead of being capped by a timer.
// Reads are bbolt read transactions and never wait for the commit loop.
// A function passed to Update that fails or panics is taken out of its
// group, which commits without it (as bbolt's DB.Batch does), so one
// caller's failure never refuses the others' events.
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
// Read returns them in offset order. Rollup aggregates take offsets at the
// tail, after events newer than those they summarise (rollup.go). In a commit, pending acks are applied
// before the appends and transactions it groups, and a transaction's
// Tx.Ack, appends and state commit together or not at all. Deletions for
// positions, Retain and TTL take a stream's oldest events first; only
// overflow with fair eviction (fair.go) deletes from the middle.
//
// Bounds: each stream is bounded by event count and bytes, with a policy on
// overflow (drop the oldest event of the source holding the most, drop the
// oldest, reject the new event, or replace the oldest events by
// per-interval aggregates; see fair.go and rollup.go), and an optional
// TTL. Every event that is dropped or refused is counted by reason in the
// file itself.
//
// Gap-proof streams: offsets are contiguous and never reused within the
// file's epoch (Epoch, epoch.go: a random id stored in the file; a file
// replacing a quarantined one has a new one). Every event deleted before a
// consumer processed it (by overflow, TTL, rollup, or unconsumed) is
// recorded, as an offset range and reason, in the transaction that deletes
// it (gaps.go), so a reader finding offsets missing between two events asks
// Dropped how many and why: a gap it cannot explain is a loss, or a bug.
// Events refused at append take no offset and leave no gap. Rewind keeps
// where the consumer was (ReplayedThrough, replay.go), so the events it
// reads again are known as replays, also after a restart.
//
// Disk: with Options.MinFreeDisk, every commit checks, before it writes,
// that its appends cannot take the filesystem's free space below the
// watermark, counting the file's growth step (bbolt's AllocSize, bounded
// to a quarter of the watermark and at most 1 MiB) and the pages a commit
// rewrites; events beyond that are refused with ErrDiskFull, and DiskFull
// reports it. The reserve below the watermark is left for acks, deletions
// and pipeline state, so a backlog can always drain. bbolt never shrinks
// its file, but a drained backlog leaves free pages in it: events that
// fit in those are accepted even while the filesystem is below the
// watermark (another program filled it, or the watermark was raised), so
// the log recovers by itself once the backlog drains, also across
// restarts. Below the watermark, commits delete a bounded amount each, so
// that bbolt's freelist, when a commit writes it whole, fits in the
// file's free pages; the file may still grow by a few pages when bbolt
// needs contiguous pages its free pages do not have. A commit that fails
// for lack of space anyway (ENOSPC) refuses only its own events, with
// ErrDiskFull, never acknowledging them, and the log goes on; if the
// filesystem is entirely full, acknowledgements wait (they are kept, not
// lost) until some space is freed.
//
// Start-up reads one small metadata record per stream (and its drop
// records, at most a little over 1,024): reopening a log with millions of
// events does not scan them.
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
