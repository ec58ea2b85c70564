package buffer

import (
	"context"
	"fmt"
)

// Configure replaces the configuration of the named streams (and of
// streams first seen later) while the log runs: bounds, TTL and required
// consumers. Events already stored stay; a consumer that is new to a
// stream starts before its first stored event, so none of them is deleted
// before it has processed them. A consumer the stream no longer requires
// loses its position, and a late Consume or Ack of one that was required
// before (a removed pipeline still stopping) is ignored, so a stale
// position can neither delete events nor be counted against later
// deletions. Bounds apply from the next append; a stream not listed keeps
// its configuration.
func (l *Log) Configure(streams []StreamConfig) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.opts.Streams = append([]StreamConfig(nil), streams...)
	l.cfgGen++
	for _, sc := range streams {
		s, ok := l.streams[sc.Name]
		if !ok {
			continue // streamLocked picks it up from l.opts.Streams
		}
		for _, c := range required(s.cfg) {
			if !requires(sc, c) {
				if l.retired == nil {
					l.retired = map[string]map[string]bool{}
				}
				if l.retired[sc.Name] == nil {
					l.retired[sc.Name] = map[string]bool{}
				}
				l.retired[sc.Name][c] = true
			}
		}
		for _, c := range required(sc) {
			delete(l.retired[sc.Name], c)
		}
		s.cfg = sc
		s.forgetUnrequired()
	}
}

// uplinkOnly is what an empty StreamConfig.Consumers means.
var uplinkOnly = []string{UplinkConsumer}

// required returns the consumers that must process an event of a stream
// configured with cfg before it is deleted.
func required(cfg StreamConfig) []string {
	if len(cfg.Consumers) == 0 {
		return uplinkOnly
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
func (s *stream) forgetUnrequired() {
	for c := range s.consumers {
		if !requires(s.cfg, c) {
			delete(s.consumers, c)
			s.prune = true
		}
	}
}

// retiredLocked reports whether Configure dropped consumer from stream.
// l.mu must be held.
func (l *Log) retiredLocked(stream, consumer string) bool {
	return l.retired[stream][consumer]
}

// deletable lists the streams holding processed events: kept by Retain,
// which a sweep may now delete, or left by a commit that bounded its
// deletions (see disk.go) or by a required consumer Configure removed.
func (l *Log) deletable() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var names []string
	for name, s := range l.streams {
		if s.meta.Count > 0 && s.processed() >= s.meta.First {
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
	k := ackKey{stream, UplinkConsumer}
	return max(through, l.acks[k], l.committing[k])
}
