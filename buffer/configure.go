package buffer

import (
	"context"
	"fmt"
)

// Configure replaces the configuration of the named streams (and of
// streams first seen later) while the log runs: bounds, TTL and required
// consumers. Events already stored stay; a consumer that is new to a
// stream starts before its first stored event, so none of them is deleted
// before it has processed them. Bounds apply from the next append; a stream
// not listed keeps its configuration.
func (l *Log) Configure(streams []StreamConfig) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.opts.Streams = append([]StreamConfig(nil), streams...)
	for _, sc := range streams {
		s, ok := l.streams[sc.Name]
		if !ok {
			continue // streamLocked picks it up from l.opts.Streams
		}
		s.cfg = sc
	}
}

// retaining lists the streams holding processed events kept by Retain,
// which a sweep may now delete.
func (l *Log) retaining() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var names []string
	for name, s := range l.streams {
		if s.cfg.Retain > 0 && s.meta.Count > 0 && s.processed() >= s.meta.First {
			names = append(names, name)
		}
	}
	return names
}

// Rewind moves consumer's position on stream back so that it reads the
// stream again from offset to (Read from to), the event-streaming model
// of a consumer rejoining the log. The offset must still be stored (see
// StreamConfig.Retain), else the error wraps ErrOffsetGone. The caller
// stops the consumer first: an acknowledgement of the old position
// arriving after the rewind would move it forward again.
func (l *Log) Rewind(stream, consumer string, to uint64) error {
	l.mu.Lock()
	if _, ok := l.streams[stream]; !ok {
		l.mu.Unlock()
		return fmt.Errorf("%w: no stream %q", ErrOffsetGone, stream)
	}
	delete(l.acks, ackKey{stream, consumer}) // pending acks of the old position
	l.mu.Unlock()
	var rerr error // a refusal must not abort the others' group commit
	if err := l.Update(context.Background(), func(tx *Tx) error {
		rerr = tx.ts.rewind(stream, consumer, to)
		return nil
	}); err != nil {
		return err
	}
	return rerr
}

// Acked returns the offset through which the uplink's acknowledgements
// (Ack) reach on stream, committed or still pending (0: none).
func (l *Log) Acked(stream string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var through uint64
	if s, ok := l.streams[stream]; ok {
		through = s.consumers[UplinkConsumer]
	}
	return max(through, l.acks[ackKey{stream, UplinkConsumer}])
}
