package buffer

import (
	"context"
	"fmt"
	"math"
)

// Consumer positions. A consumer's position on a stream is the offset
// through which it has processed the stream (0: nothing yet), kept in the
// file under streams/<name>/consumers/<consumer>. The vocabulary:
//
//   - Ack (Log.Ack) moves a position forward without waiting for a commit
//     of its own: at least once, for readers that deliver elsewhere (the
//     uplink, the outbox deliverers).
//   - Tx.Ack moves it forward inside a caller's transaction, atomically
//     with what the transaction appends and stores: exactly once, for
//     readers whose results stay in the log (pipelines).
//   - Acked reads the latest acknowledgement, committed or not: where a
//     reader that restarts goes on.
//   - Position reads the committed position: what survives a crash.
//   - Rewind moves a position back to reprocess retained events.
//
// Which positions delete events is retention's business (retention.go).

// DefaultConsumer is the consumer a stream requires when its
// StreamConfig lists none. It is the name the uplink acks under: files
// written before consumers were named hold the uplink's positions under
// it, so it must not change.
const DefaultConsumer = "uplink"

// defaultConsumers is what an empty StreamConfig.Consumers means.
var defaultConsumers = []string{DefaultConsumer}

// ackKey names one consumer's position in one stream.
type ackKey struct{ stream, consumer string }

// Ack records that consumer has processed every event of stream up to and
// including through, so the log may delete them (once every other consumer
// the stream requires has processed them too). It does not wait, and it
// starts no commit of its own: the next commit that appends applies it,
// or one after Options.AckInterval when nothing is appended. A crash
// before then has the consumer process those events again
// (at-least-once). It is ignored for a consumer that Configure removed
// from the stream.
func (l *Log) Ack(stream, consumer string, through uint64) error {
	select {
	case <-l.stopped:
		return ErrClosed
	default:
	}
	// Not clamped to the committed Next here: a reader sees an event as
	// soon as its transaction commits, before l.streams does, so the ack
	// of a just-forwarded event would be cut back. The commit applying
	// the ack clamps it to what its transaction holds.
	l.mu.Lock()
	k := ackKey{stream, consumer}
	if through > l.acks[k] {
		l.acks[k] = through
	}
	l.mu.Unlock()
	select {
	case l.acked <- struct{}{}:
	default:
	}
	return nil
}

// Ack records, atomically with the rest of the transaction, that consumer
// has processed stream through offset through; events every consumer the
// stream requires has processed are deleted (see StreamConfig.Consumers).
// It is ignored for a consumer that Configure removed from the stream.
func (tx *Tx) Ack(stream, consumer string, through uint64) error {
	return tx.ts.ack(stream, consumer, through)
}

// Acked returns the offset through which consumer's acknowledgements
// reach on stream, committed or still pending (0: none): a reader that
// restarts goes on after it, so it does not process again what its
// predecessor acknowledged.
func (l *Log) Acked(stream, consumer string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var through uint64
	if s, ok := l.streams[stream]; ok {
		through = s.consumers[consumer]
	}
	k := ackKey{stream, consumer}
	return max(through, l.acks[k], l.committing[k])
}

// Position returns consumer's committed position on stream (0: nothing):
// how far it has processed the stream as far as a crash is concerned.
func (l *Log) Position(stream, consumer string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.streams[stream]; ok {
		return s.consumers[consumer]
	}
	return 0
}

// Rewind moves consumer's position on stream back so that it reads the
// stream again from offset to (Read from to), the event-streaming model
// of a consumer rejoining the log. The offset must still be stored (see
// StreamConfig.Retain), else the error wraps ErrOffsetGone. The caller
// stops the consumer first: an acknowledgement of the old position
// arriving after the rewind would move it forward again. The position it
// had reached, pending acknowledgements included, is kept as its replay
// mark (ReplayedThrough).
func (l *Log) Rewind(stream, consumer string, to uint64) error {
	l.mu.Lock()
	s, ok := l.streams[stream]
	if !ok {
		l.mu.Unlock()
		return fmt.Errorf("%w: no stream %q", ErrOffsetGone, stream)
	}
	k := ackKey{stream, consumer}
	reached := max(s.consumers[consumer], l.acks[k], l.committing[k])
	delete(l.acks, k) // pending acks of the old position
	l.mu.Unlock()
	var rerr error // a refusal must not abort the others' group commit
	if err := l.Update(context.Background(), func(tx *Tx) error {
		rerr = tx.ts.rewind(stream, consumer, to, reached)
		return nil
	}); err != nil {
		return err
	}
	return rerr
}

// acksPending reports whether acks wait for a commit.
func (l *Log) acksPending() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acks) > 0 || len(l.usage) > 0
}

// ack moves consumer's position on stream forward to through (clamped to
// the stream's newest offset), and deletes what every required consumer
// of the stream has processed.
func (ts *txState) ack(name, consumer string, through uint64) error {
	s, b, err := ts.get(name)
	if err != nil {
		return err
	}
	if through >= s.meta.Next {
		through = s.meta.Next - 1
	}
	ts.l.mu.Lock()
	retired := ts.l.retiredLocked(name, consumer)
	ts.l.mu.Unlock()
	if retired {
		return nil // dropped by Configure: its position must not come back
	}
	if through > s.consumers[consumer] {
		s.consumers[consumer] = through
	}
	s.replay.passed(consumer, s.consumers[consumer])
	return ts.deleteProcessed(name, s, b, s.processed(), ts.l.opts.Now())
}

// rewind moves consumer's position on stream back so that it processes
// again from offset to, which must still be stored; reached is where it
// was (with pending acks), kept as its replay mark.
func (ts *txState) rewind(name, consumer string, to, reached uint64) error {
	s, _, err := ts.get(name)
	if err != nil {
		return err
	}
	switch {
	case to < s.meta.First || to == 0:
		return fmt.Errorf("%w: stream %q holds offsets %d to %d, not %d (keep forwarded events with buffer.streams[].retain)",
			ErrOffsetGone, name, s.meta.First, s.meta.Next-1, to)
	case to > s.meta.Next:
		return fmt.Errorf("%w: stream %q has no offset %d yet (next is %d)", ErrOffsetGone, name, to, s.meta.Next)
	}
	reached = min(max(reached, s.consumers[consumer]), s.meta.Next-1)
	if reached >= to {
		s.replay.mark(consumer, reached)
	}
	s.consumers[consumer] = to - 1
	return nil
}

// required returns the consumers that must process an event of a stream
// configured with cfg before it is deleted.
func required(cfg StreamConfig) []string {
	if len(cfg.Consumers) == 0 {
		return defaultConsumers
	}
	return cfg.Consumers
}

func requires(cfg StreamConfig, consumer string) bool {
	for _, c := range required(cfg) {
		if c == consumer {
			return true
		}
	}
	return false
}

// forgetUnrequired drops the positions of consumers s's configuration
// does not require; the next commit that touches s removes them from the
// file.
//
// First, a required consumer with no position of its own inherits the one
// of its former name (StreamConfig.Inherit).
func (s *stream) forgetUnrequired() {
	for c, former := range s.cfg.Inherit {
		if _, own := s.consumers[c]; own || !requires(s.cfg, c) {
			continue
		}
		if p, ok := s.consumers[former]; ok {
			s.consumers[c] = p
			s.prune = true
		}
	}
	for c := range s.consumers {
		if !requires(s.cfg, c) {
			delete(s.consumers, c)
			s.prune = true
		}
	}
	s.replay.forget(func(c string) bool { return requires(s.cfg, c) })
}

// retiredLocked reports whether Configure dropped consumer from stream.
// l.mu must be held.
func (l *Log) retiredLocked(stream, consumer string) bool {
	return l.retired[stream][consumer]
}

// processed is the offset through which every required consumer of s has
// processed it (with none configured: DefaultConsumer).
func (s *stream) processed() uint64 {
	through := s.meta.Next - 1
	for _, c := range required(s.cfg) {
		through = min(through, s.consumers[c])
	}
	return through
}

// lowest is the lowest position any consumer holds on s.
func (s *stream) lowest() uint64 {
	low := uint64(math.MaxUint64)
	for _, p := range s.consumers {
		low = min(low, p)
	}
	return low
}
