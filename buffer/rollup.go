package buffer

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/internal/jsonstr"
	bolt "go.etcd.io/bbolt"
)

// Rollup (Overflow Rollup): a full numeric stream loses resolution, not
// data. When an append finds the stream at a bound, a round takes the
// oldest events (a tenth of the bound that overflows, at most
// maxRollupChunk events, the leading run of events with numeric fields)
// and, in the append's transaction, replaces them by aggregates: one
// event per source, topic and interval window (the event's accept time
// truncated to the interval), whose payload holds, for each numeric
// field, the count, min, max, avg and last value:
//
//	{"humidity":{"count":30,"min":41,"max":45.5,"avg":43.1,"last":42},"temperature":{...}}
//
// (content type application/json; fields sorted by name; numbers as Go's
// shortest float text). Numeric fields are the top-level numbers of a
// JSON or CBOR object, a bare number (field "value"), or the numeric
// records of a SenML pack (field = the resolved name), decoded as rules
// pipelines decode payloads (gateway/rules/payload). An event with no
// numeric field, or more than maxRollupFields, cannot be rolled up: when
// it is the oldest, it is dropped with reason overflow, as with
// drop_oldest.
//
// Sequence semantics: the aggregates are appended at the tail and take
// new offsets, after events newer than what they summarise; the offsets
// they replace become a drop range with reason rollup (gaps.go), which a
// reader announces like any other drop. Each aggregate says what it
// summarises in attributes: rollup_from and rollup_to (the first and last
// offset of the events it replaced, of any source: the round's span),
// rollup_interval (the window's length, Go duration text); its window is
// [Time truncated to rollup_interval, + rollup_interval), and its Time is
// the accept time of the newest event it summarises (so TTL and retain
// treat it as they would have treated that event). Its other attributes
// are the newest summarised event's, its ID is derived from what it
// summarises (the same if a commit is retried).
//
// Aggregates roll up again when they are the oldest: with the events and
// aggregates of the same window and interval they merge (counts add,
// averages are weighted, last is the value with the latest time). A round
// must leave fewer events, and fewer bytes when the stream is over its
// byte bound (else the aggregates must fit within it); when the interval
// does not achieve it (every event of the chunk in a window of its own),
// it is doubled, up to 65,536 times the configured interval (windows of
// powers of two of it nest, so aggregates merge into coarser ones), and
// when even that does not, the oldest event is dropped as overflow. Each
// round thus shrinks the stream, and an append ends. A summarised event
// that the uplink had sent but not yet had acknowledged reaches the cloud
// twice (raw and in an aggregate whose rollup_from/rollup_to cover it).

// Attributes of a rollup aggregate.
const (
	AttrRollupFrom     = "rollup_from"     // first offset summarised (decimal)
	AttrRollupTo       = "rollup_to"       // last offset summarised (decimal)
	AttrRollupInterval = "rollup_interval" // window length (Go duration text, e.g. "5m0s")
)

const (
	// rollupShare: a round takes 1/rollupShare of the bound that overflows.
	rollupShare = 10
	// maxRollupChunk bounds the events a round reads, so that one append
	// cannot make its commit huge.
	maxRollupChunk = 4096
	// minRollupChunk: fewer events cannot be made fewer.
	minRollupChunk = 2
	// maxRollupDoublings bounds how far a round coarsens the interval
	// (65,536 times: 5 minutes become 227 days).
	maxRollupDoublings = 16
	// maxRollupFields bounds the numeric fields of one event (and so an
	// aggregate's size and a round's memory).
	maxRollupFields = 64
)

// fieldAgg is the summary of one numeric field.
type fieldAgg struct {
	count               uint64
	min, max, avg, last float64
	lastT               time.Time
}

// merge adds b to a. The average is weighted without summing (which
// could overflow float64): each term stays within the values' range.
func (a *fieldAgg) merge(b fieldAgg) {
	if a.count == 0 {
		*a = b
		return
	}
	n := a.count + b.count
	a.avg = a.avg*(float64(a.count)/float64(n)) + b.avg*(float64(b.count)/float64(n))
	a.min, a.max = min(a.min, b.min), max(a.max, b.max)
	if !b.lastT.Before(a.lastT) {
		a.last, a.lastT = b.last, b.lastT
	}
	a.count = n
}

// rollupIn is one event of a round, decoded.
type rollupIn struct {
	off      uint64
	src      string
	topic    string
	t        time.Time
	attrs    map[string]string
	fields   map[string]fieldAgg
	iv       time.Duration // an aggregate's interval; 0 for a raw event
	from, to uint64        // offsets summarised
}

// rollupKey identifies an aggregate: source, topic and window.
type rollupKey struct {
	src, topic string
	start      int64 // window start, Unix nanoseconds
	iv         time.Duration
}

type rollupGroup struct {
	key      rollupKey
	fields   map[string]*fieldAgg
	newest   time.Time
	attrs    map[string]string
	from, to uint64
}

// rollup runs one round on s (stream name, events bucket b): it reports
// false, having changed nothing, when the oldest events cannot be rolled
// up (the caller then drops the oldest event).
func (ts *txState) rollup(name string, s *stream, b *bolt.Bucket, size int64) (bool, error) {
	iv := s.cfg.RollupInterval
	if iv <= 0 {
		iv = DefaultRollupInterval
	}
	wantN := int(s.cfg.MaxEvents / rollupShare)
	wantBytes := s.cfg.MaxBytes / rollupShare
	processed := s.processed()
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], s.meta.First)
	c := b.Cursor()
	var chunk []rollupIn
	var inBytes int64
	for k, v := c.Seek(key[:]); k != nil && len(chunk) < maxRollupChunk; k, v = c.Next() {
		if len(chunk) >= minRollupChunk && len(chunk) >= wantN && inBytes >= wantBytes {
			break
		}
		off := binary.BigEndian.Uint64(k)
		if off <= processed {
			return false, nil // processed (retained) events are trimmed first
		}
		in, ok := ts.rollupInput(name, off, v)
		if !ok {
			break // the leading run of numeric events ends here
		}
		chunk = append(chunk, in)
		inBytes += int64(len(v))
	}
	if len(chunk) < minRollupChunk {
		return false, nil
	}
	// The aggregates' bytes: fewer than the events' when the stream is
	// over its byte bound, else within it.
	maxOut := int64(math.MaxInt64)
	if s.cfg.MaxBytes > 0 {
		if s.meta.Bytes+size > s.cfg.MaxBytes {
			maxOut = inBytes - 1
		} else {
			maxOut = s.cfg.MaxBytes - size - (s.meta.Bytes - inBytes)
		}
	}
	for d := 0; d <= maxRollupDoublings; d++ {
		window := iv << d
		if window>>d != iv {
			break // past what a Duration holds
		}
		vals, srcs, ok := ts.aggregate(name, chunk, window, maxOut)
		if !ok {
			continue
		}
		last := chunk[len(chunk)-1].off
		for range chunk {
			_, off, deleted, err := ts.deleteFirst(name, s, b, last, false)
			if err != nil {
				return false, err
			}
			if !deleted {
				break
			}
			s.drops[DropRollup]++
			s.recordDrop(off, DropRollup)
		}
		for i, val := range vals {
			cost, _ := ts.l.appendCost(len(val))
			ts.room.charge(cost)
			if err := ts.put(name, s, b, srcs[i], val); err != nil {
				return false, err
			}
		}
		return true, nil
	}
	return false, nil
}

// rollupInput decodes the stored event off; ok is false for one that
// cannot be rolled up (unreadable, or without numeric fields).
func (ts *txState) rollupInput(stream string, off uint64, v []byte) (rollupIn, bool) {
	plain, err := openValue(ts.l.opts.Keys, nil, v, []byte(stream), "stream", stream)
	if err != nil {
		return rollupIn{}, false
	}
	var ev event.Event
	if event.Unmarshal(plain, &ev) != nil {
		return rollupIn{}, false
	}
	in := rollupIn{off: off, src: ev.Source, topic: ev.Topic, t: ev.Time, attrs: ev.Attrs, from: off, to: off}
	var ok bool
	if ivText, agg := ev.Attrs[AttrRollupInterval]; agg {
		in.iv, err = time.ParseDuration(ivText)
		if err != nil || in.iv <= 0 {
			return rollupIn{}, false
		}
		if in.fields, ok = aggregateFields(ev.Payload, ev.Time); !ok {
			return rollupIn{}, false
		}
		from, ferr := strconv.ParseUint(ev.Attrs[AttrRollupFrom], 10, 64)
		to, terr := strconv.ParseUint(ev.Attrs[AttrRollupTo], 10, 64)
		if ferr == nil && terr == nil && from > 0 && from <= to && to < off {
			in.from, in.to = from, to
		}
		return in, true
	}
	in.fields, ok = numericFields(ts.l.opts.Numbers, ev.ContentType, ev.Payload, ev.Time)
	return in, ok
}

// Numbers reports the numeric fields of an event's payload, for the rollup
// overflow policy: it calls yield for each (a name may come more than once,
// as in a SenML pack) and returns false when the payload is not numeric
// data. Options.Numbers; the default, JSONNumbers, reads the top-level
// numbers of a JSON object or a bare JSON number; the gateway passes its
// payload decoders (JSON, CBOR, SenML), which the buffer does not import.
type Numbers func(contentType string, payload []byte, yield func(name string, v float64) bool) bool

// JSONNumbers is the default Numbers: a JSON object's top-level numbers,
// or a bare JSON number as field "value".
func JSONNumbers(_ string, p []byte, yield func(string, float64) bool) bool {
	var v any
	d := json.NewDecoder(bytes.NewReader(p))
	if d.Decode(&v) != nil || d.More() {
		return false
	}
	switch x := v.(type) {
	case float64:
		return yield("value", x)
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(x)) {
			if f, ok := x[k].(float64); ok && !yield(k, f) {
				return false
			}
		}
		return true
	}
	return false
}

// numericFields returns the numeric fields of a raw event's payload.
func numericFields(numbers Numbers, contentType string, p []byte, t time.Time) (map[string]fieldAgg, bool) {
	if numbers == nil {
		numbers = JSONNumbers
	}
	out := map[string]fieldAgg{}
	ok := numbers(contentType, p, func(name string, x float64) bool {
		if name == "" || math.IsNaN(x) || math.IsInf(x, 0) {
			return true
		}
		if _, dup := out[name]; !dup && len(out) >= maxRollupFields {
			return false
		}
		a := fieldAgg{count: 1, min: x, max: x, avg: x, last: x, lastT: t}
		if old, dup := out[name]; dup { // a SenML pack naming a quantity twice
			old.merge(a)
			a = old
		}
		out[name] = a
		return true
	})
	return out, ok && len(out) > 0 && len(out) <= maxRollupFields
}

// aggregateFields parses an aggregate's payload (what encodeAggregate
// writes); ok is false for anything else.
func aggregateFields(p []byte, t time.Time) (map[string]fieldAgg, bool) {
	var fields map[string]any
	d := json.NewDecoder(bytes.NewReader(p))
	if d.Decode(&fields) != nil || d.More() || len(fields) == 0 || len(fields) > maxRollupFields {
		return nil, false
	}
	out := make(map[string]fieldAgg, len(fields))
	for name, v := range fields {
		m, ok := v.(map[string]any)
		if !ok || name == "" {
			return nil, false
		}
		var a fieldAgg
		var nums [5]float64
		for i, k := range [5]string{"count", "min", "max", "avg", "last"} {
			if nums[i], ok = m[k].(float64); !ok {
				return nil, false
			}
		}
		count := nums[0]
		if count < 1 || count > 1<<53 || count != math.Trunc(count) || nums[1] > nums[2] {
			return nil, false
		}
		a = fieldAgg{count: uint64(count), min: nums[1], max: nums[2], avg: nums[3], last: nums[4], lastT: t}
		out[name] = a
	}
	return out, true
}

// aggregate groups chunk by source, topic and window of iv (or an
// aggregate's own interval when longer) and returns the aggregates'
// encoded values and sources, in window order; ok is false when they
// would not be fewer events than chunk, or would take more than maxOut
// bytes.
func (ts *txState) aggregate(stream string, chunk []rollupIn, iv time.Duration, maxOut int64) (vals [][]byte, srcs []string, ok bool) {
	groups := map[rollupKey]*rollupGroup{}
	for _, in := range chunk {
		gi := max(iv, in.iv)
		k := rollupKey{src: in.src, topic: in.topic, start: in.t.Truncate(gi).UnixNano(), iv: gi}
		g := groups[k]
		if g == nil {
			if len(groups)+1 >= len(chunk) {
				return nil, nil, false // as many aggregates as events
			}
			g = &rollupGroup{key: k, fields: map[string]*fieldAgg{}, from: in.from, to: in.to}
			groups[k] = g
		}
		for name, f := range in.fields {
			a := g.fields[name]
			if a == nil {
				a = &fieldAgg{}
				g.fields[name] = a
			}
			a.merge(f)
		}
		if !in.t.Before(g.newest) {
			g.newest, g.attrs = in.t, in.attrs
		}
		g.from, g.to = min(g.from, in.from), max(g.to, in.to)
	}
	order := slices.SortedFunc(maps.Values(groups), func(a, b *rollupGroup) int {
		switch {
		case a.key.start != b.key.start:
			return cmpInt(a.key.start, b.key.start)
		case a.key.src != b.key.src:
			return strings.Compare(a.key.src, b.key.src)
		case a.key.topic != b.key.topic:
			return strings.Compare(a.key.topic, b.key.topic)
		}
		return cmpInt(int64(a.key.iv), int64(b.key.iv))
	})
	var out int64
	for _, g := range order {
		if len(g.fields) > maxRollupFields {
			return nil, nil, false
		}
		ev := g.event(stream)
		val, err := event.Marshal(ev)
		if err != nil {
			return nil, nil, false
		}
		val = sealValue(ts.l.opts.Keys, val, "", stream)
		if out += int64(len(val)); out > maxOut {
			return nil, nil, false
		}
		vals = append(vals, val)
		srcs = append(srcs, g.key.src)
	}
	return vals, srcs, true
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// event is the aggregate of g.
func (g *rollupGroup) event(stream string) *event.Event {
	ev := &event.Event{
		Stream: stream, Source: g.key.src, Topic: g.key.topic, Time: g.newest,
		ContentType: "application/json", Payload: encodeAggregate(g.fields),
	}
	ev.Attrs = make(map[string]string, len(g.attrs)+3)
	if len(g.attrs)+3 <= event.MaxAttrs {
		for k, v := range g.attrs {
			ev.Attrs[k] = v
		}
	}
	ev.Attrs[AttrRollupFrom] = strconv.FormatUint(g.from, 10)
	ev.Attrs[AttrRollupTo] = strconv.FormatUint(g.to, 10)
	ev.Attrs[AttrRollupInterval] = g.key.iv.String()
	// The ID is derived from what the aggregate summarises: a retried
	// commit builds the same one. Its time part is the aggregate's Time.
	h := sha256.New()
	var n [8]byte
	for _, x := range []uint64{g.from, g.to, uint64(g.key.start), uint64(g.key.iv)} {
		binary.BigEndian.PutUint64(n[:], x)
		h.Write(n[:])
	}
	h.Write([]byte(stream + "\x00" + g.key.src + "\x00" + g.key.topic))
	sum := h.Sum(nil)
	ev.ID, _ = event.NewID(g.newest, bytesReader(sum))
	return ev
}

// encodeAggregate renders fields as the aggregate's JSON payload.
func encodeAggregate(fields map[string]*fieldAgg) []byte {
	b := make([]byte, 0, 16+len(fields)*96)
	b = append(b, '{')
	for i, name := range slices.Sorted(maps.Keys(fields)) {
		a := fields[name]
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonstr.AppendQuoted(b, name)
		b = append(b, `:{"count":`...)
		b = strconv.AppendUint(b, a.count, 10)
		for _, kv := range [4]struct {
			k string
			v float64
		}{{"min", a.min}, {"max", a.max}, {"avg", a.avg}, {"last", a.last}} {
			b = append(b, ',', '"')
			b = append(b, kv.k...)
			b = append(b, '"', ':')
			b = strconv.AppendFloat(b, finite(kv.v), 'g', -1, 64)
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

// finite guards the JSON against a value it cannot hold (payload decoding
// refuses NaN and infinities, so none should reach here).
func finite(x float64) float64 {
	switch {
	case math.IsNaN(x):
		return 0
	case math.IsInf(x, 1):
		return math.MaxFloat64
	case math.IsInf(x, -1):
		return -math.MaxFloat64
	}
	return x
}

// bytesReader reads p, then zeros.
type bytesReader []byte

func (r bytesReader) Read(p []byte) (int, error) {
	n := copy(p, r)
	clear(p[n:])
	return len(p), nil
}
