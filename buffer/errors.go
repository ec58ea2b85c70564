package buffer

import "errors"

// Errors returned by the Log; check them with errors.Is.
var (
	// ErrFull is returned by Append when a stream with the reject overflow
	// policy is at its event or byte bound.
	ErrFull = errors.New("buffer: stream full")

	// ErrDiskFull is returned by Append for an event that would take the
	// filesystem's free space below the watermark and does not fit in the
	// file's own free pages, and for the events of a commit that failed
	// for lack of space (ENOSPC): they were not stored.
	ErrDiskFull = errors.New("buffer: free disk space below watermark")

	// ErrClosed is returned by calls made after the commit loop stopped.
	ErrClosed = errors.New("buffer: log closed")

	// ErrCorrupt is returned by Open when the file is not a readable buffer
	// and the policy is CorruptFail.
	ErrCorrupt = errors.New("buffer: file corrupt")

	// ErrOffsetGone is returned by Rewind for an offset the stream no
	// longer (or does not yet) hold.
	ErrOffsetGone = errors.New("buffer: offset not stored")

	// ErrLocked is returned by Open when another process holds the file.
	ErrLocked = errors.New("buffer: file locked by another process")

	// ErrTooLarge is returned by Append for an event larger than the
	// stream's byte bound: it could never be stored.
	ErrTooLarge = errors.New("buffer: event larger than stream bound")

	// ErrWrongKey is returned by Open when the file holds values sealed
	// with a key that is not in Options.Keys, or sealed values while
	// Options.Keys is nil; the message names the key id, the stream (or
	// state) and the key file. Read and State return it for such a value
	// that Open did not look at. It is a configuration problem, never
	// corruption: the file is left as it is (no quarantine), and the right
	// key file opens it.
	ErrWrongKey = errors.New("buffer: wrong encryption key")

	// ErrUpdatePanic is returned by Update when its function panicked. The
	// panic is recovered so it cannot stop the commit loop, and the
	// function's writes are discarded.
	ErrUpdatePanic = errors.New("buffer: update function panicked")
)

// Drop reasons, as counted in StreamStats.Drops.
const (
	DropOverflow = "overflow"  // oldest event dropped to make room (drop_oldest)
	DropFull     = "full"      // new event refused (reject)
	DropDiskFull = "disk_full" // new event refused below the disk watermark
	DropExpired  = "expired"   // event older than the stream's TTL
	DropTooLarge = "too_large" // event larger than the stream's byte bound
	// DropUnconsumed counts events deleted before a consumer that holds a
	// position on the stream but is not among its required consumers had
	// processed them (see StreamConfig.Consumers).
	DropUnconsumed = "unconsumed"
	// DropRollup counts events replaced by aggregates (Overflow Rollup):
	// their data lives on, at a coarser resolution, in the aggregates.
	DropRollup = "rollup"
)

// errNoEpoch wraps a failure to draw a new file's epoch from
// Options.Rand: Open returns it as it is, never as ErrCorrupt (the file
// is fine).
var errNoEpoch = errors.New("buffer: no randomness for the file's epoch")
