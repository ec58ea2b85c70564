package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/internal/keyring"
	bolt "go.etcd.io/bbolt"
)

// Fair eviction (Overflow DropLargest). A bounded stream shared by many
// sources must not let one of them (a flooding client) evict the others'
// events: when an append overflows, the event deleted is the oldest one
// of the source that holds the most of the stream (events for MaxEvents,
// bytes for MaxBytes), so a source never loses an event while another
// holds more than it does, and a lone source gets drop_oldest.
//
// Largest-holder-first rather than fixed per-source shares: shares need
// the number of sources, which is unknown (sensors come and go), and a
// share left unused by a quiet source would be wasted while the stream
// is full; largest-first uses the whole bound and converges to equal
// shares among the sources that fill it.
//
// Holdings are kept exactly, in the file, for up to maxHolders sources
// per stream (one small record next to the stream's metadata, written in
// the same transaction, so a crash cannot make it disagree with the
// events and start-up reads one record, not the backlog). Further
// sources (and names longer than maxHolderName) share one pooled holding,
// which competes as one source. A source's holding counts its events from
// its since offset on; its older events (appended while it was pooled or
// while the stream was not tracked) stay in the pool, so a source can be
// tracked from any moment on without reading the backlog. A holding that
// falls to zero frees its slot.
//
// Deleting from the middle of the stream leaves gaps in its offsets:
// readers seek and step over them (Read never relied on contiguity), and
// meta.First stays a lower bound of the oldest kept offset, made exact by
// the next deletion from the front.

const (
	// maxHolders bounds how many sources a stream tracks exactly: the
	// record is rewritten by every commit that touches the stream, so it
	// must stay small (about 25 bytes a sensor).
	maxHolders = 32
	// maxHolderName bounds the source names tracked: longer ones are
	// pooled (a 64 KiB client ID must not be written in every commit).
	maxHolderName = 64
	// maxSourceDrops bounds the sources whose overflow drops are counted
	// by name (StreamStats.SourceDrops); the rest are counted under
	// OtherSources. The first sources to lose events get the names.
	maxSourceDrops = 16
	// holdingsVersion is the first byte of the holdings record.
	holdingsVersion = 1
)

// OtherSources is the key of StreamStats.SourceDrops that counts the
// drops of sources beyond the first 16 named.
const OtherSources = "(other)"

// Keys in a stream's bucket (see the layout in log.go):
//
//	streams/<name>/holdings        version(1) next poolHint n {len name since hint count bytes} (uvarints)
//	streams/<name>/srcdrops/<src>  count(8): events of src deleted by overflow
var (
	keyHoldings    = []byte("holdings")
	bktSourceDrops = []byte("srcdrops")
)

// holding is one tracked source's share of a stream.
type holding struct {
	since uint64 // the first offset counted here
	hint  uint64 // no event of this holding lies below it
	count int64
	bytes int64
}

// sources is a stream's per-source state.
type sources struct {
	held     map[string]holding // nil: holdings not tracked
	poolHint uint64             // no pooled event lies below it
	dirty    bool               // held or poolHint changed: rewrite the record
	stored   bool               // a holdings record is in the file
	drops    map[string]uint64  // overflow drops by source (bounded)
	dropsNew bool               // drops changed: rewrite them
}

func (s sources) clone() sources {
	c := s
	c.held = maps.Clone(s.held)
	c.drops = maps.Clone(s.drops)
	return c
}

// fair reports whether cfg evicts from the largest holder.
func fair(cfg StreamConfig) bool {
	return cfg.Overflow == DropLargest && (cfg.MaxEvents > 0 || cfg.MaxBytes > 0)
}

// reconcileSources starts or stops tracking holdings as s's configuration
// asks. Tracking starts with every event already stored in the pool.
func (s *stream) reconcileSources() {
	switch on := fair(s.cfg); {
	case on && s.src.held == nil:
		s.src.held = map[string]holding{}
		s.src.poolHint = s.meta.First
		s.src.dirty = true
	case !on && s.src.held != nil:
		s.src.held = nil
		s.src.dirty = false
	}
}

// owner names the holding event off of src counts under, "" and false
// for the pool.
func (s *stream) owner(src string, off uint64) (string, bool) {
	if h, ok := s.src.held[src]; ok && off >= h.since {
		return src, true
	}
	return "", false
}

// added counts a new event of src at offset off.
func (s *stream) added(src string, off uint64, size int64) {
	if s.src.held == nil {
		return
	}
	h, ok := s.src.held[src]
	switch {
	case ok:
	case len(s.src.held) < maxHolders && len(src) <= maxHolderName:
		h = holding{since: off, hint: off}
	default:
		return // pooled
	}
	h.count++
	h.bytes += size
	s.src.held[src] = h
	s.src.dirty = true
}

// removed uncounts the deleted event off of src, which was the oldest of
// its holding (every deletion is: from the front, or a holding's oldest).
func (s *stream) removed(src string, off uint64, size int64) {
	if s.src.held == nil {
		return
	}
	s.src.dirty = true
	name, ok := s.owner(src, off)
	if !ok {
		s.src.poolHint = max(s.src.poolHint, off+1)
		return
	}
	h := s.src.held[name]
	h.count--
	h.bytes -= size
	h.hint = max(h.hint, off+1)
	if h.count <= 0 {
		delete(s.src.held, name)
		return
	}
	s.src.held[name] = h
}

// pool is what the untracked sources hold together.
func (s *stream) pool() (count, bytes int64) {
	count, bytes = s.meta.Count, s.meta.Bytes
	for _, h := range s.src.held {
		count -= h.count
		bytes -= h.bytes
	}
	return max(count, 0), max(bytes, 0)
}

// dropped counts an overflow drop of src's event.
func (s *stream) dropped(src string) {
	if s.src.drops == nil {
		s.src.drops = map[string]uint64{}
	}
	if _, ok := s.src.drops[src]; !ok && len(s.src.drops) >= maxSourceDrops {
		src = OtherSources // the one key past the bound
	}
	s.src.drops[src]++
	s.src.dropsNew = true
}

// victim picks the holding to evict from for an append of size bytes by
// src: the largest by the bound that overflows (bytes when MaxBytes does,
// else events). On a tie the appending source's own holding loses, then
// the one whose oldest event is oldest. pooled says the pool was picked.
func (s *stream) victim(src string, size int64) (name string, hint uint64, pooled bool) {
	byBytes := s.cfg.MaxBytes > 0 && s.meta.Bytes+size > s.cfg.MaxBytes
	mine, mineTracked := src, false
	if _, ok := s.src.held[src]; ok {
		mineTracked = true
	}
	type cand struct {
		name   string
		pooled bool
		size   int64
		hint   uint64
	}
	var best *cand
	better := func(c cand) bool {
		switch {
		case best == nil || c.size > best.size:
			return true
		case c.size < best.size:
			return false
		}
		cMine := (c.pooled && !mineTracked) || (!c.pooled && mineTracked && c.name == mine)
		bMine := (best.pooled && !mineTracked) || (!best.pooled && mineTracked && best.name == mine)
		if cMine != bMine {
			return cMine
		}
		return c.hint < best.hint || (c.hint == best.hint && c.name < best.name)
	}
	measure := func(count, bytes int64) int64 {
		if byBytes {
			return bytes
		}
		return count
	}
	if pc, pb := s.pool(); pc > 0 {
		c := cand{pooled: true, size: measure(pc, pb), hint: s.src.poolHint}
		best = &c
	}
	// Ties are broken by hint and name: the choice does not depend on
	// map order.
	for n, h := range s.src.held {
		if c := (cand{name: n, size: measure(h.count, h.bytes), hint: h.hint}); better(c) {
			best = &c
		}
	}
	if best == nil {
		return "", s.meta.First, true
	}
	return best.name, best.hint, best.pooled
}

// evictLargest deletes the oldest event of the largest holding of s to
// make room for an append of size bytes by src, and returns the deleted
// event's source and offset. The scan starts at the holding's hint, which
// only moves forward, so events passed over are passed over once per
// holding.
func (ts *txState) evictLargest(name string, s *stream, b *bolt.Bucket, src string, size int64) (string, uint64, error) {
	want, hint, pooled := s.victim(src, size)
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], max(hint, s.meta.First))
	c := b.Cursor()
	for k, v := c.Seek(key[:]); k != nil; k, v = c.Next() {
		if len(k) != 8 {
			continue // damage (see dropMalformedKeys)
		}
		off := binary.BigEndian.Uint64(k)
		evSrc, err := ts.sourceOf(name, v)
		if err != nil {
			// Unreadable: it cannot be attributed, and is deleted as the
			// pool's (so it cannot pin the stream).
			evSrc = "\x00unreadable"
		}
		if got, ok := s.owner(evSrc, off); ok == pooled || (ok && got != want) {
			continue
		}
		vlen := int64(len(v))
		if err := c.Delete(); err != nil {
			return "", 0, err
		}
		ts.freed += vlen
		s.meta.Count--
		s.meta.Bytes -= vlen
		s.removed(evSrc, off, vlen)
		switch {
		case s.meta.Count == 0:
			s.meta.First = s.meta.Next
		case off == s.meta.First:
			s.meta.First = off + 1
		}
		return evSrc, off, nil
	}
	// The holdings disagree with the events (they cannot, short of a bug):
	// forget them, so that everything is pooled, and drop the oldest.
	ts.l.logger.Error("buffer holdings disagree with the stream: reset", "stream", name, "holding", want, "pooled", pooled)
	s.src.held = map[string]holding{}
	s.src.poolHint = s.meta.First
	s.src.dirty = true
	evSrc, off, _, err := ts.deleteFirst(name, s, b, math.MaxUint64, true)
	return evSrc, off, err
}

// sourceOf reads the source of a stored event value.
func (ts *txState) sourceOf(stream string, v []byte) (string, error) {
	sealed := keyring.IsSealed(v)
	v, err := openValue(ts.l.opts.Keys, ts.scratch[:0], v, []byte(stream), "stream", stream)
	if err != nil {
		return "", err
	}
	if sealed {
		ts.scratch = v[:0] // reused by the next event
	}
	if src, ok := peekSource(v); ok {
		return src, nil
	}
	var ev event.Event
	if err := event.Unmarshal(v, &ev); err != nil {
		return "", err
	}
	return ev.Source, nil
}

// peekSource reads the Source field of an encoded event (the third
// element of its CBOR array, see event/codec.go) without decoding the
// rest; ok is false for anything it does not expect.
func peekSource(v []byte) (string, bool) {
	major, n, rest, ok := cborHead(v)
	if !ok || major != 4 || n < 3 {
		return "", false
	}
	for i := 0; i < 2; i++ { // ID (bytes, or null), Stream (text)
		if len(rest) > 0 && rest[0] == 0xf6 {
			rest = rest[1:]
			continue
		}
		major, n, rest, ok = cborHead(rest)
		if !ok || (major != 2 && major != 3) || n > uint64(len(rest)) {
			return "", false
		}
		rest = rest[n:]
	}
	major, n, rest, ok = cborHead(rest)
	if !ok || major != 3 || n > uint64(len(rest)) {
		return "", false
	}
	return string(rest[:n]), true
}

// cborHead decodes the head of a CBOR data item (definite lengths only).
func cborHead(b []byte) (major byte, n uint64, rest []byte, ok bool) {
	if len(b) == 0 {
		return 0, 0, nil, false
	}
	major, info := b[0]>>5, b[0]&0x1f
	b = b[1:]
	switch {
	case info < 24:
		return major, uint64(info), b, true
	case info == 24 && len(b) >= 1:
		return major, uint64(b[0]), b[1:], true
	case info == 25 && len(b) >= 2:
		return major, uint64(binary.BigEndian.Uint16(b)), b[2:], true
	case info == 26 && len(b) >= 4:
		return major, uint64(binary.BigEndian.Uint32(b)), b[4:], true
	case info == 27 && len(b) >= 8:
		return major, binary.BigEndian.Uint64(b), b[8:], true
	}
	return 0, 0, nil, false
}

// encodeHoldings is the holdings record of s.
func encodeHoldings(s *stream) []byte {
	buf := make([]byte, 0, 16+len(s.src.held)*(16+binary.MaxVarintLen64))
	buf = append(buf, holdingsVersion)
	buf = binary.AppendUvarint(buf, s.meta.Next)
	buf = binary.AppendUvarint(buf, s.src.poolHint)
	buf = binary.AppendUvarint(buf, uint64(len(s.src.held)))
	for _, n := range slices.Sorted(maps.Keys(s.src.held)) {
		h := s.src.held[n]
		buf = binary.AppendUvarint(buf, uint64(len(n)))
		buf = append(buf, n...)
		buf = binary.AppendUvarint(buf, h.since)
		buf = binary.AppendUvarint(buf, h.hint-h.since)
		buf = binary.AppendUvarint(buf, uint64(h.count))
		buf = binary.AppendUvarint(buf, uint64(h.bytes))
	}
	return buf
}

var errHoldings = errors.New("holdings record malformed")

// decodeHoldings parses a holdings record written when s's metadata was
// m; one written with other metadata (a recount after a power cut) is
// refused, like a malformed one.
func decodeHoldings(b []byte, m streamMeta) (map[string]holding, uint64, error) {
	if len(b) == 0 || b[0] != holdingsVersion {
		return nil, 0, errHoldings
	}
	b = b[1:]
	next := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			b = nil
			return math.MaxUint64
		}
		b = b[n:]
		return v
	}
	if next() != m.Next {
		return nil, 0, fmt.Errorf("%w: written at another offset", errHoldings)
	}
	poolHint, n := next(), next()
	if n > maxHolders {
		return nil, 0, errHoldings
	}
	held := make(map[string]holding, n)
	var count, bytes int64
	for range n {
		l := next()
		if l > maxHolderName || l > uint64(len(b)) {
			return nil, 0, errHoldings
		}
		name := string(b[:l])
		b = b[l:]
		h := holding{since: next()}
		h.hint = h.since + next()
		h.count, h.bytes = int64(next()), int64(next())
		if b == nil || h.count <= 0 || h.bytes < 0 || h.since >= m.Next {
			return nil, 0, errHoldings
		}
		count += h.count
		bytes += h.bytes
		held[name] = h
	}
	if len(b) != 0 || count > m.Count || bytes > m.Bytes {
		return nil, 0, errHoldings
	}
	return held, poolHint, nil
}

// readSources reads a stream's holdings and per-source drops at load.
// Holdings that cannot be used are forgotten: every event is then in the
// pool, which is consistent with any stream.
func (l *Log) readSources(name []byte, b *bolt.Bucket, s *stream) {
	if v := b.Get(keyHoldings); v != nil {
		s.src.stored = true
		held, hint, err := decodeHoldings(v, s.meta)
		if err != nil {
			l.logger.Warn("buffer stream holdings unusable: every stored event counts as one pooled source", "stream", string(name), "err", err)
			held, hint = map[string]holding{}, s.meta.First
			s.src.dirty = true
		}
		s.src.held, s.src.poolHint = held, hint
	}
	if d := b.Bucket(bktSourceDrops); d != nil {
		s.src.drops = map[string]uint64{}
		_ = d.ForEach(func(k, v []byte) error {
			if len(v) == 8 && len(s.src.drops) <= maxSourceDrops {
				s.src.drops[string(k)] = binary.BigEndian.Uint64(v)
			}
			return nil
		})
	}
}

// writeSources stores what changed of s's per-source state.
func writeSources(sb *bolt.Bucket, s *stream) error {
	switch {
	case s.src.held != nil && s.src.dirty:
		if err := sb.Put(keyHoldings, encodeHoldings(s)); err != nil {
			return err
		}
		s.src.stored, s.src.dirty = true, false
	case s.src.held == nil && s.src.stored:
		if err := sb.Delete(keyHoldings); err != nil {
			return err
		}
		s.src.stored = false
	}
	if s.src.dropsNew {
		if err := putCounters(sb, bktSourceDrops, s.src.drops); err != nil {
			return err
		}
		s.src.dropsNew = false
	}
	return nil
}

// checkSources verifies s's holdings against its events (for Check).
func (l *Log) checkSources(tx *bolt.Tx, name string, s *stream) error {
	if s.src.held == nil {
		return nil
	}
	b := eventsBucket(tx, name)
	got := map[string]holding{}
	if b != nil {
		ts := &txState{l: l}
		err := b.ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return nil // damage (see dropMalformedKeys)
			}
			off := binary.BigEndian.Uint64(k)
			src, err := ts.sourceOf(name, v)
			if err != nil {
				return nil // unreadable events cannot be attributed
			}
			owner, ok := s.owner(src, off)
			if !ok {
				if off < s.src.poolHint {
					return fmt.Errorf("pooled event %d below the pool's hint %d", off, s.src.poolHint)
				}
				return nil
			}
			h := got[owner]
			h.count++
			h.bytes += int64(len(v))
			got[owner] = h
			if want := s.src.held[owner]; off < want.hint {
				return fmt.Errorf("event %d of %q below its hint %d", off, owner, want.hint)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("stream %q holdings: %w", name, err)
		}
	}
	for n, h := range s.src.held {
		if g := got[n]; g.count != h.count || g.bytes != h.bytes {
			return fmt.Errorf("stream %q holdings: %q holds %d events, %d bytes; recorded %d, %d", name, n, g.count, g.bytes, h.count, h.bytes)
		}
	}
	return nil
}
