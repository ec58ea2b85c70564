package buffer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/bits"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// Drop records: which offsets the log deleted before a consumer had
// processed them, and why, so that a reader finding a gap in the offsets
// can say how many events are missing and for what reason (the uplink
// announces it to the cloud: a gap that is not announced is a loss).
//
// A stream's offsets are contiguous and never reused, so an offset a
// reader never sees was deleted either after every consumer holding or
// requiring a position had processed it (acknowledged: nobody misses it,
// not recorded), or by policy before that: overflow (drop_oldest, fair
// eviction, and events without numeric fields in a rollup stream),
// expired (TTL), unconsumed (see DropUnconsumed) and rollup (replaced by
// aggregates). Each such deletion is recorded in the transaction that
// deletes the event, under streams/<name>/gaps:
//
//	key   from(8)   the first offset of the record
//	value to(8) uvarint(dropped) uvarint(n) n × {uvarint(len) reason uvarint(count)}
//
// with the reasons sorted by name (strictly: no duplicates) and their
// counts summing to dropped.
// Events refused at append (full, disk_full, too_large) never got an
// offset and leave no gap.
//
// A record is exact when it is one run of contiguous offsets deleted for
// one reason (dropped = to-from+1): adjacent deletions of one reason are
// merged into it, so a drop_oldest or TTL stream keeps one record per
// outage. Bound: at most maxGapRecords (1,024) records per stream; beyond
// that the two oldest are merged into one coarse record, which may span
// offsets that were not dropped (events still stored, or deleted once
// processed) and may mix reasons. Counts stay exact: a coarse record keeps
// the exact number of offsets dropped in its span and per reason; what
// coarsens is where in the span they lie, so Dropped apportions the
// reasons of a record that a query covers in part (largest remainder),
// and counts such a part's missing offsets as those not stored, which is
// exact for the reader's question Dropped is for: two consecutive events
// it reads, whose offsets in between are then all missing.
//
// Records every consumer has passed are pruned: those wholly at or below
// every consumer's position and below the oldest stored event (so a
// Rewind, which only goes back to stored events, never needs them).

var bktGaps = []byte("gaps")

const (
	// maxGapReasons bounds the reasons of one record when decoding
	// (there are six).
	maxGapReasons = 16
	// maxGapReason bounds a reason's length when decoding.
	maxGapReason = 32
)

// maxGapRecords bounds a stream's drop records (a variable for tests).
var maxGapRecords = 1024

// dropRun is a run of contiguous offsets a transaction deleted
// unprocessed for one reason.
type dropRun struct {
	from, to uint64
	reason   string
}

// gapIndex is what the log keeps in memory of a stream's drop records,
// so that commits which drop nothing touch none of them.
type gapIndex struct {
	n       int    // records in the file
	firstTo uint64 // the lowest record's to (when n > 0)
}

// gapRec is one decoded drop record.
type gapRec struct {
	from, to uint64
	dropped  uint64
	reasons  map[string]uint64
}

// exact reports whether every offset of r was dropped, for one reason.
func (r *gapRec) exact() bool { return r.dropped == r.to-r.from+1 && len(r.reasons) == 1 }

func (r *gapRec) dense() bool { return r.dropped == r.to-r.from+1 }

// absorb adds o's drops to r and stretches r over o's span.
func (r *gapRec) absorb(o gapRec) {
	r.from, r.to = min(r.from, o.from), max(r.to, o.to)
	r.dropped += o.dropped
	for why, n := range o.reasons {
		r.reasons[why] += n
	}
}

func gapKey(from uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, from)
	return k
}

func encodeGap(r gapRec) []byte {
	buf := make([]byte, 8, 8+2*binary.MaxVarintLen64+len(r.reasons)*(16+binary.MaxVarintLen64))
	binary.BigEndian.PutUint64(buf, r.to)
	buf = binary.AppendUvarint(buf, r.dropped)
	buf = binary.AppendUvarint(buf, uint64(len(r.reasons)))
	for _, why := range slices.Sorted(maps.Keys(r.reasons)) {
		buf = binary.AppendUvarint(buf, uint64(len(why)))
		buf = append(buf, why...)
		buf = binary.AppendUvarint(buf, r.reasons[why])
	}
	return buf
}

var errGapRecord = errors.New("drop record malformed")

// decodeGap parses the drop record under key k. It never panics: the
// bytes come from the disk.
func decodeGap(k, v []byte) (gapRec, error) {
	if len(k) != 8 || len(v) < 8 {
		return gapRec{}, errGapRecord
	}
	r := gapRec{from: binary.BigEndian.Uint64(k), to: binary.BigEndian.Uint64(v)}
	v = v[8:]
	next := func() (uint64, bool) {
		x, n := binary.Uvarint(v)
		if n <= 0 {
			return 0, false
		}
		v = v[n:]
		return x, true
	}
	var ok bool
	if r.dropped, ok = next(); !ok || r.from == 0 || r.to < r.from || r.dropped == 0 || r.dropped-1 > r.to-r.from {
		return gapRec{}, fmt.Errorf("%w: span %d-%d, %d dropped", errGapRecord, r.from, r.to, r.dropped)
	}
	n, ok := next()
	if !ok || n == 0 || n > maxGapReasons {
		return gapRec{}, errGapRecord
	}
	r.reasons = make(map[string]uint64, n)
	var sum uint64
	prev := ""
	for range n {
		l, ok := next()
		if !ok || l == 0 || l > maxGapReason || l > uint64(len(v)) {
			return gapRec{}, errGapRecord
		}
		why := string(v[:l])
		v = v[l:]
		c, ok := next()
		if !ok || why <= prev || c == 0 || c > r.dropped-sum { // sorted, so no duplicates
			return gapRec{}, errGapRecord
		}
		prev = why
		sum += c
		r.reasons[why] = c
	}
	if len(v) != 0 || sum != r.dropped {
		return gapRec{}, errGapRecord
	}
	return r, nil
}

// floorPos is the lowest position among the consumers s requires and
// those holding one: an event past it has not been processed by someone.
func (s *stream) floorPos() uint64 {
	return min(s.processed(), s.lowest())
}

// recordDrop notes that the transaction just deleted event off of s for
// reason, unless every consumer requiring or holding a position had
// processed it and it lay below every stored event (a retained event
// trimmed from the front: nobody reads it again, as Rewind goes back to
// stored events only; one evicted from the middle is recorded, for a
// consumer rewound past it).
func (s *stream) recordDrop(off uint64, reason string) {
	if off <= s.floorPos() && off < s.meta.First {
		return
	}
	if n := len(s.dropping); n > 0 {
		if last := &s.dropping[n-1]; last.reason == reason && last.to+1 == off {
			last.to = off
			return
		}
	}
	s.dropping = append(s.dropping, dropRun{from: off, to: off, reason: reason})
}

// pruneFloor is the offset at or below which no record is needed any
// more: every consumer is past it, and no stored event lies at or below
// it (Rewind goes back to stored events only).
func (s *stream) pruneFloor() uint64 {
	return min(s.floorPos(), s.meta.First-1)
}

// writeGaps stores the drops the transaction recorded for s and prunes
// the records every consumer has passed. A commit that dropped nothing
// and has nothing to prune touches nothing.
func writeGaps(sb *bolt.Bucket, s *stream) error {
	if len(s.dropping) == 0 && s.gaps.n == 0 {
		return nil // the path of every append: nothing to look at
	}
	floor := s.pruneFloor()
	if len(s.dropping) == 0 && s.gaps.firstTo > floor {
		return nil
	}
	gb, err := sb.CreateBucketIfNotExists(bktGaps)
	if err != nil {
		return err
	}
	runs := coalesce(s.dropping)
	s.dropping = nil
	for _, r := range runs {
		if err := insertGap(gb, &s.gaps, r); err != nil {
			return err
		}
	}
	for s.gaps.n > maxGapRecords {
		if err := coarsenFirst(gb, &s.gaps); err != nil {
			return err
		}
	}
	return pruneGaps(gb, &s.gaps, floor)
}

// coalesce sorts runs and merges the adjacent ones of one reason (fair
// eviction deletes out of offset order).
func coalesce(runs []dropRun) []gapRec {
	slices.SortFunc(runs, func(a, b dropRun) int {
		switch {
		case a.from < b.from:
			return -1
		case a.from > b.from:
			return 1
		}
		return 0
	})
	out := make([]gapRec, 0, len(runs))
	for _, r := range runs {
		if n := len(out); n > 0 {
			if last := &out[n-1]; last.to+1 == r.from && last.reasons[r.reason] == last.dropped {
				last.to = r.to
				last.dropped += r.to - r.from + 1
				last.reasons[r.reason] = last.dropped
				continue
			}
		}
		n := r.to - r.from + 1
		out = append(out, gapRec{from: r.from, to: r.to, dropped: n, reasons: map[string]uint64{r.reason: n}})
	}
	return out
}

// insertGap adds r (one exact run) to the records: into a coarse record
// whose span holds it, or merged with the exact records of its reason
// that it touches, else as a record of its own.
func insertGap(gb *bolt.Bucket, idx *gapIndex, r gapRec) error {
	c := gb.Cursor()
	k, v := c.Seek(gapKey(r.from))
	var succ, pred *gapRec
	if k != nil {
		g, err := decodeGap(k, v)
		if err != nil {
			return fmt.Errorf("key %x: %w", k, err)
		}
		succ = &g
		k, v = c.Prev()
	} else {
		k, v = c.Last()
	}
	if k != nil {
		g, err := decodeGap(k, v)
		if err != nil {
			return fmt.Errorf("key %x: %w", k, err)
		}
		pred = &g
	}
	oneReason := func(g *gapRec) bool { return g.exact() && g.reasons[firstReason(r)] > 0 }
	cur := r
	added := 1
	switch {
	case pred != nil && pred.to >= r.from:
		// Inside a coarse record's span (a hole: an event stored when
		// the record was merged, dropped now).
		pred.absorb(r)
		if err := gb.Put(gapKey(pred.from), encodeGap(*pred)); err != nil {
			return err
		}
		return refreshFirst(gb, idx)
	case pred != nil && pred.to+1 == r.from && oneReason(pred):
		pred.absorb(r)
		cur, added = *pred, 0
	}
	if succ != nil && succ.from == cur.to+1 && oneReason(succ) {
		cur.absorb(*succ)
		if err := gb.Delete(gapKey(succ.from)); err != nil {
			return err
		}
		added--
	}
	if err := gb.Put(gapKey(cur.from), encodeGap(cur)); err != nil {
		return err
	}
	idx.n += added
	return refreshFirst(gb, idx)
}

func firstReason(r gapRec) string {
	for why := range r.reasons {
		return why
	}
	return ""
}

// refreshFirst rereads the index's lowest record.
func refreshFirst(gb *bolt.Bucket, idx *gapIndex) error {
	k, v := gb.Cursor().First()
	if k == nil {
		idx.n, idx.firstTo = 0, 0
		return nil
	}
	g, err := decodeGap(k, v)
	if err != nil {
		return fmt.Errorf("key %x: %w", k, err)
	}
	idx.firstTo = g.to
	return nil
}

// coarsenFirst merges the two lowest records into one coarse record.
func coarsenFirst(gb *bolt.Bucket, idx *gapIndex) error {
	c := gb.Cursor()
	k1, v1 := c.First()
	k2, v2 := c.Next()
	if k1 == nil || k2 == nil {
		return nil
	}
	a, err := decodeGap(k1, v1)
	if err != nil {
		return fmt.Errorf("key %x: %w", k1, err)
	}
	b, err := decodeGap(k2, v2)
	if err != nil {
		return fmt.Errorf("key %x: %w", k2, err)
	}
	a.absorb(b)
	if err := gb.Delete(gapKey(b.from)); err != nil {
		return err
	}
	if err := gb.Put(gapKey(a.from), encodeGap(a)); err != nil {
		return err
	}
	idx.n--
	idx.firstTo = a.to
	return nil
}

// pruneGaps deletes the lowest records that end at or below floor.
func pruneGaps(gb *bolt.Bucket, idx *gapIndex, floor uint64) error {
	var gone [][]byte
	c := gb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(v) < 8 || binary.BigEndian.Uint64(v) > floor {
			break
		}
		gone = append(gone, bytes.Clone(k))
	}
	for _, k := range gone {
		if err := gb.Delete(k); err != nil {
			return err
		}
	}
	idx.n -= len(gone)
	if len(gone) > 0 || idx.n <= 0 {
		return refreshFirst(gb, idx)
	}
	return nil
}

// readGapIndex counts a stream's drop records at load (at most a little
// over maxGapRecords: start-up does not depend on the backlog).
func readGapIndex(b *bolt.Bucket) gapIndex {
	gb := b.Bucket(bktGaps)
	if gb == nil {
		return gapIndex{}
	}
	var idx gapIndex
	c := gb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if idx.n == 0 && len(v) >= 8 {
			idx.firstTo = binary.BigEndian.Uint64(v)
		}
		idx.n++
	}
	return idx
}

// Dropped returns how many offsets strictly between after and before the
// log deleted by policy before they were processed, and how many for each
// reason (DropOverflow, DropExpired, DropUnconsumed, DropRollup; nil when
// none). A reader that has read event after and now reads event before
// calls it to tell a gap from a loss: for a consumer the stream requires
// (or that holds a position), reading in order and asking as it reads,
// before-after-1 equals the events it read in between plus n (an event it
// read that was deleted by policy afterwards is no gap for it, but counts
// in n if asked later). Records are pruned once every consumer is past
// them, so ask about offsets past your own position. n is exact; the split
// by reason is exact unless the stream's drops outgrew its records (see
// the bound above), where it is apportioned. It is one read transaction
// (none when before is after+1); a record that does not decode is logged
// and counts nothing.
func (l *Log) Dropped(stream string, after, before uint64) (n uint64, reasons map[string]uint64) {
	if before <= after || before-after < 2 {
		return 0, nil
	}
	lo, hi := after+1, before-1
	_ = l.db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bktStreams)
		if root == nil {
			return nil
		}
		sb := root.Bucket([]byte(stream))
		if sb == nil {
			return nil
		}
		gb := sb.Bucket(bktGaps)
		if gb == nil {
			return nil
		}
		add := func(k, v []byte) bool {
			r, err := decodeGap(k, v)
			if err != nil {
				l.logger.Error("buffer drop record unreadable: not counted", "stream", stream, "err", err)
				return true
			}
			if r.from > hi {
				return false
			}
			a, b := max(r.from, lo), min(r.to, hi)
			if a > b {
				return true
			}
			var m uint64
			switch {
			case a == r.from && b == r.to:
				m = r.dropped
			case r.dense():
				m = b - a + 1
			default:
				m = min(b-a+1-stored(sb.Bucket(bktEvents), a, b), r.dropped)
			}
			if m == 0 {
				return true
			}
			if reasons == nil {
				reasons = map[string]uint64{}
			}
			n += m
			apportion(reasons, r, m)
			return true
		}
		c := gb.Cursor()
		var k, v []byte
		if k, _ = c.Seek(gapKey(lo)); k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		if k != nil && len(v) >= 8 && binary.BigEndian.Uint64(v) >= lo {
			add(k, v) // a record starting before lo that reaches into it
		}
		for k, v := c.Seek(gapKey(lo)); k != nil && add(k, v); k, v = c.Next() {
		}
		return nil
	})
	return n, reasons
}

// stored counts the events of eb at offsets lo through hi.
func stored(eb *bolt.Bucket, lo, hi uint64) uint64 {
	if eb == nil {
		return 0
	}
	var n uint64
	c := eb.Cursor()
	for k, _ := c.Seek(gapKey(lo)); len(k) == 8 && binary.BigEndian.Uint64(k) <= hi; k, _ = c.Next() {
		n++
	}
	return n
}

// apportion adds m of r's drops to reasons: all of r's counts when m is
// all of them, else shares by the largest-remainder method (ties by
// reason name), so the shares sum to m.
func apportion(reasons map[string]uint64, r gapRec, m uint64) {
	if m == r.dropped || len(r.reasons) == 1 {
		if len(r.reasons) == 1 {
			reasons[firstReason(r)] += m
			return
		}
		for why, c := range r.reasons {
			reasons[why] += c
		}
		return
	}
	type share struct {
		why    string
		q, rem uint64
	}
	names := slices.Sorted(maps.Keys(r.reasons))
	shares := make([]share, len(names))
	var given uint64
	for i, why := range names {
		hi, lo := bits.Mul64(r.reasons[why], m)
		q, rem := bits.Div64(hi, lo, r.dropped) // hi < dropped: count*m < dropped²
		shares[i] = share{why: why, q: q, rem: rem}
		given += q
	}
	order := make([]int, len(shares))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case shares[a].rem > shares[b].rem:
			return -1
		case shares[a].rem < shares[b].rem:
			return 1
		}
		return 0
	})
	for _, i := range order {
		if given >= m {
			break
		}
		shares[i].q++
		given++
	}
	for _, s := range shares {
		if s.q > 0 {
			reasons[s.why] += s.q
		}
	}
}

// checkGaps verifies s's drop records against its events (for Check):
// each decodes, they are disjoint and ordered, an exact record's span
// holds no stored event, a coarse one's no more than it did not drop,
// and the index matches the file.
func checkGaps(tx *bolt.Tx, name string, s *stream) error {
	sb := tx.Bucket(bktStreams).Bucket([]byte(name))
	if sb == nil {
		if s.gaps.n != 0 {
			return fmt.Errorf("stream %q: %d drop records indexed, none in the file", name, s.gaps.n)
		}
		return nil
	}
	gb := sb.Bucket(bktGaps)
	var n int
	var prev gapRec
	var firstTo uint64
	if gb != nil {
		err := gb.ForEach(func(k, v []byte) error {
			r, err := decodeGap(k, v)
			if err != nil {
				return fmt.Errorf("key %x: %w", k, err)
			}
			if n == 0 {
				firstTo = r.to
			} else if r.from <= prev.to {
				return fmt.Errorf("record %d-%d overlaps %d-%d", r.from, r.to, prev.from, prev.to)
			}
			if r.to >= s.meta.Next {
				return fmt.Errorf("record %d-%d past the next offset %d", r.from, r.to, s.meta.Next)
			}
			if in := stored(sb.Bucket(bktEvents), r.from, r.to); in > r.to-r.from+1-r.dropped {
				return fmt.Errorf("record %d-%d of %d drops spans %d stored events", r.from, r.to, r.dropped, in)
			}
			n++
			prev = r
			return nil
		})
		if err != nil {
			return fmt.Errorf("stream %q drop records: %w", name, err)
		}
	}
	if n != s.gaps.n || (n > 0 && firstTo != s.gaps.firstTo) {
		return fmt.Errorf("stream %q drop records: %d in the file (first ends at %d), index says %d (%d)", name, n, firstTo, s.gaps.n, s.gaps.firstTo)
	}
	return nil
}
