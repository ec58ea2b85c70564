package window

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/ferrygw/ferry/gateway/rules/record"
	"github.com/fxamacker/cbor/v2"
)

// State encoding. Structs encode as CBOR arrays (compact; field order is
// the format) and floats keep their exact bits, so a restored window
// computes exactly what the original would have.

const stateVersion = 1

type savedState struct {
	_           struct{} `cbor:",toarray"`
	Version     int
	Fingerprint string
	HasClock    bool
	Clock       int64
	Windows     []savedWindow
}

type savedWindow struct {
	_      struct{} `cbor:",toarray"`
	Start  int64
	Groups []savedGroup
}

type savedGroup struct {
	_        struct{} `cbor:",toarray"`
	Key      string
	Vals     []any
	Count    int64
	Nums     []savedNum
	Anys     []savedAny
	Sketches [][]byte
}

type savedNum struct {
	_                       struct{} `cbor:",toarray"`
	Sum, Min, Max, Mean, M2 float64
}

type savedAny struct {
	_             struct{} `cbor:",toarray"`
	First, Last   any
	FirstT, LastT int64
}

var (
	stateEnc = newEncMode()
	stateDec = newDecMode()
)

// The modes are built from constant options; an error is a programming
// error caught by any test.
func newEncMode() cbor.EncMode {
	m, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return m
}

func newDecMode() cbor.DecMode {
	m, err := cbor.DecOptions{
		DupMapKey:      cbor.DupMapKeyEnforcedAPF,
		IndefLength:    cbor.IndefLengthForbidden,
		DefaultMapType: reflect.TypeOf(map[string]any(nil)),
		// Field values are Go strings, which need not be valid UTF-8; a
		// state that holds one must still load.
		UTF8: cbor.UTF8DecodeInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}

// MarshalState encodes the clock and every open window and group, in
// order of window start and group key, as deterministic CBOR.
func (w *Window) MarshalState() ([]byte, error) {
	st := savedState{
		Version:     stateVersion,
		Fingerprint: w.fingerprint,
		HasClock:    w.hasClock,
		Clock:       w.clock,
		Windows:     make([]savedWindow, 0, len(w.windows)),
	}
	for _, win := range w.windows {
		sw := savedWindow{Start: win.start, Groups: make([]savedGroup, 0, len(win.groups))}
		for _, g := range win.groups {
			sg := savedGroup{Key: g.key, Vals: g.vals, Count: g.count}
			for _, a := range g.nums {
				sg.Nums = append(sg.Nums, savedNum{Sum: a.sum, Min: a.min, Max: a.max, Mean: a.mean, M2: a.m2})
			}
			for _, a := range g.anys {
				sg.Anys = append(sg.Anys, savedAny{First: a.first, Last: a.last, FirstT: a.firstT, LastT: a.lastT})
			}
			for _, sk := range g.sketches {
				sg.Sketches = append(sg.Sketches, encodeSketch(sk))
			}
			sw.Groups = append(sw.Groups, sg)
		}
		slices.SortFunc(sw.Groups, func(a, b savedGroup) int { return strings.Compare(a.Key, b.Key) })
		st.Windows = append(st.Windows, sw)
	}
	b, err := stateEnc.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("rules: window %q: state: %w", w.name, err)
	}
	return b, nil
}

// UnmarshalState replaces the window's state with one MarshalState made
// for the same Size, Hop, EventTime, GroupBy and aggregate functions and
// fields. Empty input restores the initial, empty state. State it cannot
// read, or made for another configuration, is an error matching record.ErrState
// and leaves the window as it was.
func (w *Window) UnmarshalState(b []byte) error {
	if len(b) == 0 {
		w.hasClock, w.clock, w.windows, w.open = false, 0, nil, 0
		return nil
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: window %q: %s", record.ErrState, w.name, fmt.Sprintf(format, args...))
	}
	var st savedState
	if err := stateDec.Unmarshal(b, &st); err != nil {
		return bad("%v", err)
	}
	if st.Version != stateVersion {
		return bad("version %d, want %d", st.Version, stateVersion)
	}
	if st.Fingerprint != w.fingerprint {
		return bad("made for another configuration (%s), this is %s", st.Fingerprint, w.fingerprint)
	}
	if st.HasClock && (st.Clock < minTimeNanos || st.Clock > maxTimeNanos) {
		return bad("clock %d out of range", st.Clock)
	}
	windows := make([]*openWindow, 0, len(st.Windows))
	open := 0
	for i, sw := range st.Windows {
		if sw.Start < minTimeNanos || sw.Start > maxTimeNanos || floorDiv(sw.Start, w.hop)*w.hop != sw.Start {
			return bad("window start %d is not a hop boundary in range", sw.Start)
		}
		if i > 0 && sw.Start <= st.Windows[i-1].Start {
			return bad("windows out of order")
		}
		if len(sw.Groups) == 0 {
			continue
		}
		win := &openWindow{start: sw.Start, groups: make(map[string]*groupAcc, len(sw.Groups))}
		for j, sg := range sw.Groups {
			if j > 0 && sg.Key <= sw.Groups[j-1].Key {
				return bad("groups out of order in window %d", sw.Start)
			}
			g, err := w.restoreGroup(sg)
			if err != nil {
				return bad("window %d group %q: %v", sw.Start, sg.Key, err)
			}
			win.groups[g.key] = g
		}
		open += len(win.groups)
		windows = append(windows, win)
	}
	w.hasClock, w.clock, w.windows, w.open = st.HasClock, st.Clock, windows, open
	return nil
}

func (w *Window) restoreGroup(sg savedGroup) (*groupAcc, error) {
	if sg.Count < 1 {
		return nil, fmt.Errorf("count %d", sg.Count)
	}
	if len(sg.Vals) != len(w.groupBy) || len(sg.Nums) != len(w.numFields) ||
		len(sg.Anys) != len(w.anyFields) || len(sg.Sketches) != len(w.sketchSlots) {
		return nil, errors.New("layout does not match the configuration")
	}
	g := &groupAcc{key: sg.Key, count: sg.Count}
	if len(sg.Vals) > 0 {
		g.vals = make([]any, len(sg.Vals))
		var key []byte
		for i, v := range sg.Vals {
			v, err := fieldValue(v, 0)
			if err != nil {
				return nil, err
			}
			if w.gbKind[i] != gbField {
				if _, ok := v.(string); !ok {
					return nil, fmt.Errorf("%s is %T", w.groupBy[i], v)
				}
			}
			g.vals[i] = v
			if i > 0 {
				key = append(key, '/')
			}
			key = appendKey(key, v)
		}
		if !bytes.Equal(key, []byte(sg.Key)) {
			return nil, errors.New("key does not match the group's values")
		}
	} else if sg.Key != "" {
		return nil, errors.New("key without group_by")
	}
	g.nums = make([]numAcc, len(sg.Nums))
	for i, a := range sg.Nums {
		g.nums[i] = numAcc{sum: a.Sum, min: a.Min, max: a.Max, mean: a.Mean, m2: a.M2}
	}
	g.anys = make([]anyAcc, len(sg.Anys))
	for i, a := range sg.Anys {
		first, err := fieldValue(a.First, 0)
		if err != nil {
			return nil, err
		}
		last, err := fieldValue(a.Last, 0)
		if err != nil {
			return nil, err
		}
		g.anys[i] = anyAcc{first: first, last: last, firstT: a.FirstT, lastT: a.LastT}
	}
	g.sketches = make([]*ddsketch.DDSketch, len(sg.Sketches))
	for i, b := range sg.Sketches {
		sk, err := decodeSketch(b, sg.Count)
		if err != nil {
			return nil, err
		}
		g.sketches[i] = sk
	}
	if len(g.nums) == 0 {
		g.nums = nil
	}
	if len(g.anys) == 0 {
		g.anys = nil
	}
	if len(g.sketches) == 0 {
		g.sketches = nil
	}
	return g, nil
}

// fieldValue checks a decoded value is of JSON's model, as Record.Fields
// values are. CBOR integers (which only a field value that was not
// float64 can have produced) become float64.
func fieldValue(v any, depth int) (any, error) {
	if depth > 32 {
		return nil, errors.New("value nested too deep")
	}
	switch x := v.(type) {
	case nil, bool, string, float64:
		return v, nil
	case uint64:
		return float64(x), nil
	case int64:
		return float64(x), nil
	case []any:
		for i, e := range x {
			e, err := fieldValue(e, depth+1)
			if err != nil {
				return nil, err
			}
			x[i] = e
		}
		return x, nil
	case map[string]any:
		for k, e := range x {
			e, err := fieldValue(e, depth+1)
			if err != nil {
				return nil, err
			}
			x[k] = e
		}
		return x, nil
	}
	return nil, fmt.Errorf("value of type %T is not a field value", v)
}
