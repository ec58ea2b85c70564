package buffer

import (
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/ferrygw/ferry/internal/keyring"
)

// Durability says when Append returns relative to the disk.
type Durability int

const (
	// DurabilitySync returns after the event's transaction is fsynced.
	DurabilitySync Durability = iota
	// DurabilityBatch returns once the event is queued; commits (with
	// fsync) happen at most every BatchInterval. A crash loses the queue.
	DurabilityBatch
	// DurabilityNone returns after the transaction reached the OS, without
	// fsync: safe against a killed process, not against a power cut.
	DurabilityNone
)

// ParseDurability parses "sync", "batch" or "none".
func ParseDurability(s string) (Durability, error) {
	switch s {
	case "sync", "":
		return DurabilitySync, nil
	case "batch":
		return DurabilityBatch, nil
	case "none":
		return DurabilityNone, nil
	}
	return 0, fmt.Errorf("buffer: unknown durability %q (want sync, batch or none)", s)
}

// Defaults of Options (see the fields).
const (
	DefaultAckInterval    = 5 * time.Second
	DefaultBatchInterval  = 2 * time.Second
	DefaultCommitInterval = 500 * time.Millisecond
	DefaultPageSize       = 1024
	// DefaultRollupInterval is the aggregation interval of a Rollup
	// stream whose StreamConfig.RollupInterval is 0.
	DefaultRollupInterval = 5 * time.Minute
)

// Overflow is what a stream does when an append would exceed its bounds.
// The zero value is DropLargest.
type Overflow int

const (
	// DropLargest deletes, until the new event fits, the oldest event of
	// the source (event.Event.Source) that holds the most of the stream,
	// so that one source cannot evict the others' events (see fair.go); a
	// stream with one source behaves as with DropOldest.
	DropLargest Overflow = iota
	// DropOldest deletes the oldest events until the new one fits,
	// whoever sent them.
	DropOldest
	// Reject refuses the new event with ErrFull.
	Reject
	// Rollup replaces the oldest events by per-interval aggregates
	// (count, min, max, avg and last of each numeric field, per source
	// and topic) until the new event fits, so a long outage costs
	// resolution rather than data; see rollup.go. Events without numeric
	// fields, and a stream whose oldest events cannot be made smaller,
	// fall back to DropOldest.
	Rollup
)

// ParseOverflow parses "drop_largest" (the default, also for ""),
// "drop_oldest", "reject" or "rollup".
func ParseOverflow(s string) (Overflow, error) {
	switch s {
	case "drop_largest", "":
		return DropLargest, nil
	case "drop_oldest":
		return DropOldest, nil
	case "reject":
		return Reject, nil
	case "rollup":
		return Rollup, nil
	}
	return 0, fmt.Errorf("buffer: unknown overflow policy %q (want drop_largest, drop_oldest, reject or rollup)", s)
}

// CorruptPolicy is what Open does with a file it cannot read.
type CorruptPolicy int

const (
	// CorruptQuarantine renames the file aside (path.corrupt-UNIXTIME),
	// logs loudly and starts an empty log.
	CorruptQuarantine CorruptPolicy = iota
	// CorruptFail returns an error wrapping ErrCorrupt.
	CorruptFail
)

// StreamConfig bounds one stream. Zero bounds mean unbounded.
type StreamConfig struct {
	Name      string
	MaxEvents int64
	MaxBytes  int64
	Overflow  Overflow
	TTL       time.Duration
	// Consumers lists who must process an event before it is deleted:
	// the names they Ack under (the uplink, outbox deliverers, pipelines).
	// Empty: DefaultConsumer alone. Positions of other consumers never
	// delete: when events are deleted before such a consumer processed
	// them, they are counted as DropUnconsumed; Configure (and Open)
	// forget the positions of consumers a stream no longer lists.
	Consumers []string
	// Inherit renames consumers without losing their place: a required
	// consumer listed here (key) that has no position of its own starts
	// from the position stored under its former name (value), which is
	// then forgotten unless the stream still requires it. The new
	// position reaches the file with the stream's next commit; until then
	// a restart inherits again, from the same former position.
	Inherit map[string]string
	// Retain keeps processed events this long after they were accepted,
	// so a consumer can be rewound to them (Rewind); bounds and TTL still
	// apply. 0: delete once processed.
	Retain time.Duration
	// RollupInterval is the aggregation interval of Overflow Rollup
	// (0: DefaultRollupInterval); other policies ignore it.
	RollupInterval time.Duration
}

// Options configure a Log. The zero value is usable: sync durability, no
// bounds, no watermark.
type Options struct {
	Durability    Durability
	BatchInterval time.Duration // DurabilityBatch: commit this often, or when MaxBatch appends wait (default 2s)
	MaxBatch      int           // appends per transaction at most (default 2048)
	QueueLen      int           // appends waiting for the commit loop before Append blocks (default 4096)
	// MaxLinger bounds how long a commit waits for the writers of the
	// previous commit to come back (see Log.Run); default 2ms, negative
	// disables the wait.
	MaxLinger time.Duration

	// AckInterval bounds how long acks (Ack, and the positions and state
	// of UpdateDeferred) wait for a commit when nothing is appended; while
	// events are appended they ride in those commits and cost nothing
	// extra. A crash loses at most this long of acknowledgements: those
	// events are forwarded (or processed) again, never lost. Default 5s
	// (DefaultAckInterval); negative commits every ack at once.
	AckInterval time.Duration
	// CommitInterval groups sparse traffic in sync durability: when an
	// append arrives after a quiet spell (nobody was waiting for the
	// previous commit), the commit is held open up to this long (or
	// until it holds 64 events) for other writers to join, so sensors
	// publishing every few seconds share one fsync instead of paying one
	// each. The hold is shorter when, at the recent arrival rate, 64
	// events arrive sooner, and there is none when not even one more
	// append is expected within it (a lone sensor would wait for
	// nobody). Writers that come back as soon as their commit ends (a
	// busy publisher) are not held: their commits start at once. Default
	// 500ms (DefaultCommitInterval); negative disables it.
	CommitInterval time.Duration
	// PageSize is the page size of a new file (bbolt's; an existing file
	// keeps its own). Default 1024 (DefaultPageSize): the pages a small
	// commit rewrites (root, streams, the stream's bucket, its last leaf,
	// the freelist) then share one or two 4 KiB pages of the page cache
	// and the card instead of taking one each: 6.1 KB written per reading
	// at 10 sensors' readings a second with 4096, 2.5 KB with 1024
	// (BenchmarkWear). The disk bound counts such pages in filesystem
	// blocks (see disk.go).
	PageSize int

	// syncFreelist writes bbolt's freelist in every commit, as before
	// (benchmarks only: WithSyncFreelist in export_test.go).
	syncFreelist bool

	// MinFreeDisk is the free-space watermark in bytes on the file's
	// filesystem: appends are refused (ErrDiskFull) rather than take free
	// space below it, except those that fit in the file's own free pages
	// (left by a drained backlog). It also bounds bbolt's growth step to a
	// quarter of it (at most 1 MiB). 0 disables the check; a commit that
	// fails for lack of space still refuses its events with ErrDiskFull.
	MinFreeDisk uint64
	// FreeDisk reports free bytes for a path; nil uses fstatfs on the open
	// file.
	FreeDisk func(path string) (uint64, error)

	// Streams configures known streams; DefaultStream applies to streams
	// first seen by Append.
	Streams       []StreamConfig
	DefaultStream StreamConfig

	OnCorrupt CorruptPolicy

	// Keys seals event and state values at rest, so that the file on a
	// pulled SD card gives nothing away: new values are sealed with the
	// active key, values sealed with any key of the ring are read, and
	// values written in the clear (before encryption was turned on) are
	// still read. Open fails with ErrWrongKey when the file holds values
	// sealed with a key the ring lacks. A sealed event is keyring.Overhead
	// (45) bytes larger, which counts against MaxBytes. Nil stores events
	// in the clear.
	Keys *keyring.Ring

	// SweepInterval is how often TTLs are swept and the disk-full state
	// is refreshed while no events arrive (default 1s); appends check the
	// watermark in every commit.
	SweepInterval time.Duration

	// OnCommit, if set, is called by the commit loop after each successful
	// commit with the number of events it appended and how long it took
	// (what CommitStats adds up), e.g. to feed a latency histogram. It runs
	// on the commit path, so it must be quick and must not call the Log.
	OnCommit func(events int, took time.Duration)

	// BootID identifies the machine's current boot (Linux:
	// /proc/sys/kernel/random/boot_id), to tell a power cut from a killed
	// process (see state.go); "" if unknown.
	BootID string

	// Rand is the randomness of a new file's epoch (Log.Epoch); nil:
	// crypto/rand.
	Rand io.Reader

	// Numbers reads the numeric fields of payloads for the rollup
	// overflow policy; nil: JSONNumbers.
	Numbers Numbers

	Now func() time.Time
	// Logger receives the log's lines. It logs each failed commit, and
	// while the disk fails that is every commit: give it a rate-limited
	// handler (the gateway's, internal/logging). Nil: discarded.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.BatchInterval <= 0 {
		o.BatchInterval = DefaultBatchInterval
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 2048
	}
	if o.MaxLinger == 0 {
		o.MaxLinger = 2 * time.Millisecond
	}
	if o.AckInterval == 0 {
		o.AckInterval = DefaultAckInterval
	}
	if o.CommitInterval == 0 {
		o.CommitInterval = DefaultCommitInterval
	}
	if o.PageSize <= 0 {
		o.PageSize = DefaultPageSize
	}
	if o.QueueLen <= 0 {
		o.QueueLen = 4096
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}
