package buffer

import (
	"encoding/binary"
	"fmt"
	"maps"

	bolt "go.etcd.io/bbolt"
)

// Replay marks. Rewind moves a consumer back over events it had
// processed (ferry buffer replay); the events it then reads again up to
// where it was are replays, which the uplink marks as such for the cloud.
// So Rewind records the consumer's position before the rewind (its latest
// acknowledgement, pending ones included), as the larger of it and a mark
// the consumer has not passed yet, under streams/<name>/replay/<consumer>
// (8 bytes), in the rewind's transaction: a restarted reader still knows.
// The mark is cleared by the commit that moves the consumer's position to
// it or past it, and forgotten with the consumer's position when the
// stream no longer requires it.

var bktReplay = []byte("replay")

// replayState is a stream's replay marks.
type replayState struct {
	through map[string]uint64 // consumer -> position before its last rewind
	dirty   bool              // changed: rewrite the bucket
}

func (r replayState) clone() replayState {
	return replayState{through: maps.Clone(r.through), dirty: r.dirty}
}

// mark records that consumer had processed through before a rewind.
func (r *replayState) mark(consumer string, through uint64) {
	if through <= r.through[consumer] {
		return
	}
	if r.through == nil {
		r.through = map[string]uint64{}
	}
	r.through[consumer] = through
	r.dirty = true
}

// passed clears consumer's mark once its position reached it.
func (r *replayState) passed(consumer string, pos uint64) {
	if m, ok := r.through[consumer]; ok && pos >= m {
		delete(r.through, consumer)
		r.dirty = true
	}
}

// forget drops the marks of consumers keep rejects.
func (r *replayState) forget(keep func(string) bool) {
	for c := range r.through {
		if !keep(c) {
			delete(r.through, c)
			r.dirty = true
		}
	}
}

// ReplayedThrough returns the position consumer had reached on stream
// before its last Rewind (0: never rewound, or since passed): the events
// it reads at or below this offset it had processed before, and are sent
// again. It survives restarts, and is cleared once the consumer's
// committed position reaches it.
func (l *Log) ReplayedThrough(stream, consumer string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.streams[stream]; ok {
		return s.replay.through[consumer]
	}
	return 0
}

func readReplay(b *bolt.Bucket) replayState {
	var r replayState
	rb := b.Bucket(bktReplay)
	if rb == nil {
		return r
	}
	_ = rb.ForEach(func(k, v []byte) error {
		if len(v) == 8 {
			if r.through == nil {
				r.through = map[string]uint64{}
			}
			r.through[string(k)] = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return r
}

// writeReplay stores s's replay marks if they changed.
func writeReplay(sb *bolt.Bucket, s *stream) error {
	if !s.replay.dirty {
		return nil
	}
	s.replay.dirty = false
	if len(s.replay.through) == 0 && sb.Bucket(bktReplay) == nil {
		return nil
	}
	if err := pruneCounters(sb, bktReplay, s.replay.through); err != nil {
		return err
	}
	return putCounters(sb, bktReplay, s.replay.through)
}

// checkReplay verifies that the file holds s's replay marks (for Check).
func checkReplay(tx *bolt.Tx, name string, s *stream) error {
	sb := tx.Bucket(bktStreams).Bucket([]byte(name))
	if sb == nil || s.replay.dirty {
		return nil
	}
	got := readReplay(sb)
	if !maps.Equal(got.through, s.replay.through) {
		return fmt.Errorf("stream %q replay marks: file has %v, log has %v", name, got.through, s.replay.through)
	}
	return nil
}
