package window

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/encoding"
	"github.com/DataDog/sketches-go/ddsketch/mapping"
	"github.com/DataDog/sketches-go/ddsketch/store"
)

// Aggregate is one output field of a window: Output <- Func(Field).
//
// Func is one of:
//
//   - count: the number of records (Field must be "" or "*"); float64.
//   - sum, avg, min, max: over a numeric field. avg is sum/count.
//   - stddev: the population standard deviation (divides by n, not n-1)
//     of a numeric field, computed with Welford's online algorithm so a
//     long window does not lose precision to catastrophic cancellation.
//   - first, last: the field's value in the record with the earliest
//     (latest) record time, ties going to the earlier (later) arrival.
//     Any JSON value.
//   - pNN for NN in 1..99 (p50, p95, p99, ...): the NN-th percentile of a
//     numeric field, from a DDSketch with 1% relative accuracy. The sketch
//     keeps at most 512 bins per sign and collapses the lowest ones beyond
//     that, so its memory is bounded whatever the number of values; the
//     accuracy guarantee then only holds for values within a factor of
//     about 28,000 (1.0202^512) of the largest. All percentiles of one
//     field share one sketch. The value at quantile q is the one of rank
//     q*(n-1) in sorted order (no interpolation), within 1%.
//
// A numeric field must hold a finite number; a record whose field is
// missing, not a number, NaN or infinite is an error for the whole record
// (see Window). Output defaults to "count" for count and to
// "<func>_<field>" otherwise.
type Aggregate struct {
	Output string
	Func   string
	Field  string
}

// ParseAggregate parses the "func(field)" form of an aggregate:
// "avg(temp_c)" gives ("avg", "temp_c"), and "count()" and "count(*)" give
// ("count", ""). The function name is case-insensitive and returned in
// lower case; an unknown function is an error naming it.
func ParseAggregate(s string) (fn, field string, err error) {
	t := strings.TrimSpace(s)
	open := strings.IndexByte(t, '(')
	if open <= 0 || !strings.HasSuffix(t, ")") {
		return "", "", fmt.Errorf("rules: aggregate %q: want func(field)", s)
	}
	fn = strings.ToLower(strings.TrimSpace(t[:open]))
	field = strings.TrimSpace(t[open+1 : len(t)-1])
	if strings.ContainsAny(field, "()") {
		return "", "", fmt.Errorf("rules: aggregate %q: want func(field)", s)
	}
	if _, _, err := aggKindOf(fn); err != nil {
		return "", "", fmt.Errorf("rules: aggregate %q: %w", s, err)
	}
	if fn == "count" {
		if field != "" && field != "*" {
			return "", "", fmt.Errorf("rules: aggregate %q: count takes no field: count() or count(*)", s)
		}
		return fn, "", nil
	}
	if field == "" || field == "*" {
		return "", "", fmt.Errorf("rules: aggregate %q: %s needs a field", s, fn)
	}
	return fn, field, nil
}

// aggKind is what an aggregate computes.
type aggKind uint8

const (
	aggCount aggKind = iota
	aggSum
	aggAvg
	aggMin
	aggMax
	aggStddev
	aggFirst
	aggLast
	aggPercentile
)

// aggKindOf maps a function name to its kind and, for pNN, the quantile.
func aggKindOf(fn string) (aggKind, float64, error) {
	switch fn {
	case "count":
		return aggCount, 0, nil
	case "sum":
		return aggSum, 0, nil
	case "avg":
		return aggAvg, 0, nil
	case "min":
		return aggMin, 0, nil
	case "max":
		return aggMax, 0, nil
	case "stddev":
		return aggStddev, 0, nil
	case "first":
		return aggFirst, 0, nil
	case "last":
		return aggLast, 0, nil
	}
	if len(fn) >= 2 && fn[0] == 'p' {
		// Only the canonical spelling (p5, not p05) so that one percentile
		// has one name in configs and outputs.
		if n, err := strconv.Atoi(fn[1:]); err == nil && n >= 1 && n <= 99 && strconv.Itoa(n) == fn[1:] {
			return aggPercentile, float64(n) / 100, nil
		}
	}
	return 0, 0, fmt.Errorf("unknown aggregate function %q (want count, sum, avg, min, max, stddev, first, last or p1..p99)", fn)
}

// resolvedAgg is one aggregate resolved against the window's accumulator
// layout.
type resolvedAgg struct {
	output string
	kind   aggKind
	q      float64 // quantile, for aggPercentile
	slot   int     // index into numAcc/anyAcc/sketches, by kind
}

// numAcc accumulates one numeric field in O(1) memory.
type numAcc struct {
	sum  float64
	min  float64
	max  float64
	mean float64 // Welford running mean, kept only when stddev is asked
	m2   float64 // Welford sum of squared deviations from the mean
}

// add folds v into the accumulator; n is the count including v.
func (a *numAcc) add(v float64, n int64, welford bool) {
	a.sum += v
	if n == 1 {
		a.min, a.max = v, v
	} else {
		if v < a.min {
			a.min = v
		}
		if v > a.max {
			a.max = v
		}
	}
	if welford {
		// Explicit conversions stop the compiler fusing into FMA
		// instructions on some architectures, so the same input gives
		// the same bits on every gateway.
		d := v - a.mean
		a.mean += float64(d / float64(n))
		a.m2 += float64(d * float64(v-a.mean))
	}
}

// anyAcc keeps the first and last value of one field by record time.
type anyAcc struct {
	first  any
	last   any
	firstT int64 // unix nanos
	lastT  int64
}

// add folds v at record time t in; first is whether it is the group's
// first record.
func (a *anyAcc) add(v any, t int64, first bool) {
	if first {
		a.first, a.last, a.firstT, a.lastT = v, v, t, t
		return
	}
	if t < a.firstT { // strictly: a tie keeps the earlier arrival
		a.first, a.firstT = v, t
	}
	if t >= a.lastT { // a tie goes to the later arrival
		a.last, a.lastT = v, t
	}
}

// Sketch parameters: 1% relative accuracy; 512 bins per sign bound a
// sketch to about 4 KiB of bins for values of one sign.
const (
	sketchAccuracy = 0.01
	sketchMaxBins  = 512
)

// sketchMapping is shared by every sketch: it is immutable, and sharing
// saves its allocation per group.
var sketchMapping = sketchMappingMust()

func sketchMappingMust() *mapping.LogarithmicMapping {
	m, err := mapping.NewLogarithmicMapping(sketchAccuracy)
	if err != nil { // a constant argument: cannot happen
		panic(err)
	}
	return m
}

// Index bounds of sketchMapping, for validating decoded sketches.
var (
	sketchMinIndex = sketchMapping.Index(sketchMapping.MinIndexableValue()) - 1
	sketchMaxIndex = sketchMapping.Index(sketchMapping.MaxIndexableValue()) + 1
)

func newSketch() *ddsketch.DDSketch {
	return ddsketch.NewDDSketch(sketchMapping,
		store.NewCollapsingLowestDenseStore(sketchMaxBins),
		store.NewCollapsingLowestDenseStore(sketchMaxBins))
}

// sketchable reports whether v can go into a sketch: the mapping cannot
// index values beyond about ±1.8e308.
func sketchable(v float64) bool {
	return math.Abs(v) <= sketchMapping.MaxIndexableValue()
}

// encodeSketch appends the sketch's bins (without the index mapping, which
// is a constant of this package).
func encodeSketch(s *ddsketch.DDSketch) []byte {
	var b []byte
	s.Encode(&b, true)
	return b
}

// sketchCheckedStore validates every bin a decoded sketch adds before it reaches
// the real store: ddsketch's decoder ignores store errors and trusts bin
// indices and counts, and an absurd index makes the dense store allocate
// or index out of range.
type sketchCheckedStore struct {
	*store.CollapsingLowestDenseStore
	err error
}

func (c *sketchCheckedStore) Add(index int) { c.AddWithCount(index, 1) }

func (c *sketchCheckedStore) AddBin(bin store.Bin) { c.AddWithCount(bin.Index(), bin.Count()) }

func (c *sketchCheckedStore) AddWithCount(index int, count float64) {
	if c.err != nil {
		return
	}
	if index < sketchMinIndex || index > sketchMaxIndex {
		c.err = fmt.Errorf("sketch bin index %d out of range", index)
		return
	}
	// Counts are whole numbers of values: anything else is corrupt.
	if !(count >= 0 && count <= 1<<53) || count != math.Trunc(count) {
		c.err = fmt.Errorf("sketch bin count %v invalid", count)
		return
	}
	c.CollapsingLowestDenseStore.AddWithCount(index, count)
}

func (c *sketchCheckedStore) DecodeAndMergeWith(b *[]byte, mode encoding.SubFlag) error {
	if err := store.DecodeAndMergeWith(c, b, mode); err != nil && c.err == nil {
		c.err = err
	}
	return c.err
}

// decodeSketch decodes a sketch encoded by encodeSketch holding exactly
// count values. It never panics: the third-party decoder runs under a
// recover as a last line of defence against input it was not written for.
func decodeSketch(b []byte, count int64) (s *ddsketch.DDSketch, err error) {
	pos := &sketchCheckedStore{CollapsingLowestDenseStore: store.NewCollapsingLowestDenseStore(sketchMaxBins)}
	neg := &sketchCheckedStore{CollapsingLowestDenseStore: store.NewCollapsingLowestDenseStore(sketchMaxBins)}
	stores := []*sketchCheckedStore{pos, neg}
	provider := func() store.Store {
		st := stores[0]
		stores = stores[1:]
		return st
	}
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("sketch: %v", r)
		}
	}()
	d, err := ddsketch.DecodeDDSketch(b, provider, sketchMapping)
	if err != nil {
		return nil, fmt.Errorf("sketch: %w", err)
	}
	if pos.err != nil || neg.err != nil {
		return nil, fmt.Errorf("sketch: %w", errors.Join(pos.err, neg.err))
	}
	zero := d.GetZeroCount()
	if !(zero >= 0 && zero <= 1<<53) || zero != math.Trunc(zero) {
		return nil, fmt.Errorf("sketch: zero count %v invalid", zero)
	}
	if got := d.GetCount(); got != float64(count) {
		return nil, fmt.Errorf("sketch holds %v values, group has %d", got, count)
	}
	// Rebuild on the bare stores, so the checks cost nothing after
	// decoding. NewDDSketch starts with no zeros: add them back.
	s = ddsketch.NewDDSketch(sketchMapping, pos.CollapsingLowestDenseStore, neg.CollapsingLowestDenseStore)
	if err := s.AddWithCount(0, zero); err != nil {
		return nil, fmt.Errorf("sketch: %w", err)
	}
	return s, nil
}

// sketchBytes estimates a sketch's heap: its structs plus the bins of the
// two stores. The dense stores allocate about 64 bins beyond the index
// range they cover, up to the 512 cap, and append may round capacity up:
// the estimate allows a quarter for that.
func sketchBytes(s *ddsketch.DDSketch) int64 {
	const structs = 56 + 2*80
	n := int64(structs)
	for _, st := range []store.Store{s.GetPositiveValueStore(), s.GetNegativeValueStore()} {
		lo, err1 := st.MinIndex()
		hi, err2 := st.MaxIndex()
		if err1 != nil || err2 != nil {
			continue
		}
		bins := int64(hi-lo+1) + 64
		if bins > sketchMaxBins {
			bins = sketchMaxBins
		}
		n += bins * 8 * 5 / 4
	}
	return n
}
