package uplink

import (
	"context"

	"github.com/ferrygw/ferry/event"
)

// Consumer is the name the Forwarder records its positions under in the
// Queue. Buffer files hold the uplink's positions under it, and it is the
// consumer the buffer requires of a stream whose configuration names none
// (buffer.DefaultConsumer): it must not change.
const Consumer = "uplink"

// Queue is the durable log the Forwarder drains. Implementations must be safe for concurrent use.
type Queue interface {
	// Streams lists the streams currently in the log.
	Streams() []string
	// Read calls fn, in offset order, for up to max events of stream whose offset is >= from
	// (events below the oldest kept offset are skipped, not an error). It returns the offset after the last event passed to fn
	// (or from, when there was none). fn must not retain ev past the call.
	Read(stream string, from uint64, max int, fn func(off uint64, ev *event.Event) error) (next uint64, err error)
	// Ack records that every event of stream up to and including offset through reached the cloud, as the position of
	// consumer (the Forwarder passes Consumer); the log may delete them. It must not wait for disk I/O: the log commits
	// acks with its next group commit. Acking an already-acked offset is a no-op.
	Ack(stream, consumer string, through uint64) error
	// Acked returns the offset through which Ack has recorded consumer's delivery on stream, committed or not (0: none).
	// The Forwarder starts each stream after it, so a restarted Forwarder does not resend what its predecessor delivered.
	Acked(stream, consumer string) uint64
	// Changed returns a channel that is closed after the next commit that appends events.
	Changed() <-chan struct{}
}

// DeadLetterer takes the events of a message the cloud would not accept
// (see "Poison" in the package doc). Implementations must be safe for
// concurrent use.
type DeadLetterer interface {
	// DeadLetter stores a copy of ev, with reason, outside ev's stream and
	// returns once the copy is committed as durably as the log commits
	// anything: the Forwarder acks ev in its stream only after that, so
	// the event is never lost. It returns an error wrapping
	// ErrDeadLetterLoop when ev is itself a dead letter (storing it again
	// would feed it back to the uplink); the Forwarder then drops it.
	DeadLetter(ctx context.Context, ev *event.Event, reason string) error
}

// Sequenced is what a Queue offers, optionally, for the sequence fields of
// cloud messages (see "Sequences" in the package doc). The Forwarder finds
// it with a type assertion on its Queue; without it messages carry seq
// (the offset) but no epoch, and gaps announce only the uplink's own drops.
// *buffer.Log implements it.
type Sequenced interface {
	// Epoch identifies the log's file: 16 lowercase hex digits, new with
	// every new file.
	Epoch() string
	// Dropped returns how many offsets of stream strictly between after and
	// before the log deleted by policy (not because consumers were done
	// with them), in total and per reason.
	Dropped(stream string, after, before uint64) (n uint64, reasons map[string]uint64)
	// ReplayedThrough returns consumer's position on stream before the last
	// Rewind, while the consumer has not yet passed it (0: no replay).
	ReplayedThrough(stream, consumer string) uint64
}

// DropRecorder is what a Sequenced Queue offers, optionally, to keep the
// uplink's own drops (events it acks without sending: "oversize",
// "unencodable", "poison") with its policy drops, so that Dropped reports
// them too, across restarts and reloads. Without it the Forwarder keeps
// them in memory until the cloud acknowledges the event that announces
// them, and a new Forwarder (a restart, a reload) in that window does not
// announce them.
type DropRecorder interface {
	// RecordDrop records that the events of stream from through through
	// are dropped for reason. It must not wait for disk I/O; the record
	// must be committed no later than an Ack of those offsets, and count
	// in Dropped at once, committed or not. Recording a range again is a
	// no-op.
	RecordDrop(stream string, from, through uint64, reason string) error
}
