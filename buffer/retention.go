package buffer

import (
	"encoding/binary"
	"errors"
	"math"
	"time"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/internal/keyring"
	bolt "go.etcd.io/bbolt"
)

// Retention: what the log may delete. An event is deleted once every
// consumer its stream requires has processed it (their positions, see
// positions.go), unless the stream's Retain keeps it for a rewind; the
// stream's TTL deletes events however far the consumers are. Deletions
// ride the commits that move positions; a sweep (Options.SweepInterval)
// deletes what those left (kept by Retain, bounded by a commit's delete
// budget, or freed by a required consumer Configure removed) and what
// expired, touching the file only when there is something to delete.

// maxSweep bounds how many expired events one commit deletes, so a TTL
// sweep after a long outage cannot make one transaction huge.
const maxSweep = 10000

// deleteProcessed deletes the events of s through offset through, keeping
// those accepted within the stream's Retain of now.
// An event past the position of any consumer holding one (a consumer the
// stream does not require) is counted as DropUnconsumed.
func (ts *txState) deleteProcessed(name string, s *stream, b *bolt.Bucket, through uint64, now time.Time) error {
	lowest := s.lowest()
	for s.meta.Count > 0 && s.meta.First <= through {
		if s.cfg.Retain > 0 && !firstExpired(ts.tx, ts.l.opts.Keys, name, s.meta.First, now.Add(-s.cfg.Retain)) {
			break // kept for replay; a later sweep deletes it
		}
		if !ts.mayDelete(s.avgSize()) {
			break // the next commit goes on (see disk.go)
		}
		_, off, deleted, err := ts.deleteFirst(name, s, b, through, false)
		if err != nil || !deleted {
			return err // !deleted: the oldest event lies past through
		}
		if off > lowest {
			s.drops[DropUnconsumed]++
			s.recordDrop(off, DropUnconsumed)
		}
	}
	return nil
}

// avgSize is the average stored size of s's events, what deleting one
// is charged against a commit's delete budget.
func (s *stream) avgSize() int64 {
	return s.meta.Bytes / max(s.meta.Count, 1)
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

// expire is the sweep: it deletes the processed events commits left
// (deletable) and the events older than their stream's TTL, at most
// maxSweep of each stream per commit.
func (ts *txState) expire(now time.Time) error {
	ts.l.mu.Lock()
	var names []string
	for name, s := range ts.l.streams {
		if s.cfg.TTL > 0 && s.meta.Count > 0 {
			names = append(names, name)
		}
	}
	ts.l.mu.Unlock()
	for _, name := range ts.l.deletable() {
		s, b, err := ts.get(name)
		if err != nil {
			return err
		}
		if err := ts.deleteProcessed(name, s, b, min(s.processed(), s.meta.First+maxSweep-1), now); err != nil {
			return err
		}
	}
	for _, name := range names {
		if !firstExpired(ts.tx, ts.l.opts.Keys, name, ts.first(name), ts.cutoff(name, now)) {
			continue // touch nothing: an idle sweep must not write
		}
		s, b, err := ts.get(name)
		if err != nil {
			return err
		}
		for n := 0; n < maxSweep && s.meta.Count > 0 && firstExpired(ts.tx, ts.l.opts.Keys, name, s.meta.First, now.Add(-s.cfg.TTL)) &&
			ts.mayDelete(s.avgSize()); n++ {
			_, off, deleted, err := ts.deleteFirst(name, s, b, math.MaxUint64, false)
			if err != nil {
				return err
			}
			s.drops[DropExpired]++
			if deleted {
				s.recordDrop(off, DropExpired)
			}
		}
	}
	return nil
}

// first is the committed first offset of name (the sweep's starting point).
func (ts *txState) first(name string) uint64 {
	ts.l.mu.Lock()
	defer ts.l.mu.Unlock()
	return ts.l.streams[name].meta.First
}

func (ts *txState) cutoff(name string, now time.Time) time.Time {
	ts.l.mu.Lock()
	defer ts.l.mu.Unlock()
	return now.Add(-ts.l.streams[name].cfg.TTL)
}

// firstExpired reports whether the oldest event of stream was accepted
// before cutoff. An undecodable record counts as expired so it cannot pin
// the stream; a record sealed with a key that keys lacks does not: the
// right key file would read it, so it is not deleted unread.
func firstExpired(tx *bolt.Tx, keys *keyring.Ring, stream string, first uint64, cutoff time.Time) bool {
	b := eventsBucket(tx, stream)
	if b == nil {
		return false
	}
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], first)
	_, v := b.Cursor().Seek(key[:])
	if v == nil {
		return false
	}
	v, err := openValue(keys, nil, v, []byte(stream), "stream", stream)
	if errors.Is(err, ErrWrongKey) {
		return false
	}
	var ev event.Event
	if err != nil || event.Unmarshal(v, &ev) != nil {
		return true
	}
	return ev.Time.Before(cutoff)
}

// anyExpired reports, in a read transaction, whether a sweep would delete
// anything, so an idle gateway does not write (and wear the SD card) every
// sweep interval.
func (l *Log) anyExpired(now time.Time) bool {
	l.mu.Lock()
	type sweep struct {
		first  uint64
		cutoff time.Time
	}
	cut := map[string]sweep{}
	for name, s := range l.streams {
		if s.cfg.TTL > 0 && s.meta.Count > 0 {
			cut[name] = sweep{s.meta.First, now.Add(-s.cfg.TTL)}
		}
	}
	retained := map[string]sweep{}
	for name, s := range l.streams {
		if s.meta.Count == 0 || s.processed() < s.meta.First {
			continue
		}
		if s.cfg.Retain == 0 {
			l.mu.Unlock()
			return true // processed, not yet deleted (see deletable)
		}
		retained[name] = sweep{s.meta.First, now.Add(-s.cfg.Retain)}
	}
	l.mu.Unlock()
	found := false
	_ = l.db.View(func(tx *bolt.Tx) error {
		for name, c := range retained {
			if firstExpired(tx, l.opts.Keys, name, c.first, c.cutoff) {
				found = true
				return nil
			}
		}
		for name, c := range cut {
			if firstExpired(tx, l.opts.Keys, name, c.first, c.cutoff) {
				found = true
				return nil
			}
		}
		return nil
	})
	return found
}
