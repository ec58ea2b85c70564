package stage

import (
	"container/heap"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/ferrygw/ferry/gateway/rules/expr"
	"github.com/ferrygw/ferry/gateway/rules/internal/statecbor"
	"github.com/ferrygw/ferry/gateway/rules/record"
)

// DefaultMaxKeys is DedupConfig.MaxKeys when unset.
const DefaultMaxKeys = 100_000

// DedupConfig configures a dedup stage.
type DedupConfig struct {
	// Key is a Value expression whose result identifies duplicates
	// (strings as they are, numbers and bools in their shortest text,
	// arrays and objects as JSON); empty means the record's Key, which
	// catches redelivered events.
	Key string
	// Horizon is how long, in record time, a key suppresses repeats.
	Horizon time.Duration
	// MaxKeys bounds the keys remembered (default DefaultMaxKeys); when
	// full, the oldest is forgotten first.
	MaxKeys int
}

// Dedup is a stage that passes a record unless a record with the same key
// was passed within Horizon of it, by record time. The window is anchored
// at the first record passed: repeats inside it are dropped and do not
// extend it, so a key that keeps arriving passes once per Horizon.
//
// State is bounded: Advance(now) forgets keys whose window ended by now
// (on the records' clock), and a new key arriving when MaxKeys are held
// evicts the oldest first (least record time, then least key: the order
// is a function of the input alone, so replays evict identically). A
// record older than its key's window start still counts as within it
// when less than Horizon older, and does not move the window back.
type Dedup struct {
	key     *expr.Program // nil: the record's Key
	horizon time.Duration
	maxKeys int
	entries map[string]*dedupEntry
	order   dedupHeap
}

type dedupEntry struct {
	key string
	t   time.Time // start of the key's window
	idx int       // position in the heap
}

// NewDedup validates cfg and compiles its key expression.
func NewDedup(cfg DedupConfig) (*Dedup, error) {
	if cfg.Horizon <= 0 {
		return nil, errors.New("dedup: horizon must be positive")
	}
	if cfg.MaxKeys < 0 {
		return nil, errors.New("dedup: max_keys must be positive")
	}
	d := &Dedup{horizon: cfg.Horizon, maxKeys: cfg.MaxKeys, entries: map[string]*dedupEntry{}}
	if d.maxKeys == 0 {
		d.maxKeys = DefaultMaxKeys
	}
	if cfg.Key != "" {
		p, err := expr.Compile(cfg.Key, expr.Value)
		if err != nil {
			return nil, fmt.Errorf("key: %w", err)
		}
		d.key = p
	}
	return d, nil
}

// Process emits r unless it is a duplicate. A key expression failure is an
// expr.ErrEval error; a nil key, or no record Key, a record.ErrField error.
func (d *Dedup) Process(r *record.Record, emit record.Emit) error {
	if r == nil {
		return fmt.Errorf("%w: dedup: nil record", record.ErrField)
	}
	k, err := d.keyOf(r)
	if err != nil {
		return err
	}
	// In UTC and without a monotonic reading, as restored state has it, so
	// a restored stage compares and emits exactly what this one would.
	t := r.Time.UTC()
	if e := d.entries[k]; e != nil {
		gap := t.Sub(e.t)
		if gap < 0 {
			gap = -gap
		}
		if gap < d.horizon {
			return nil // a duplicate: dropped
		}
		if t.After(e.t) {
			e.t = t // a new window
			heap.Fix(&d.order, e.idx)
		}
		emit(r)
		return nil
	}
	if len(d.entries) >= d.maxKeys {
		old := heap.Pop(&d.order).(*dedupEntry)
		delete(d.entries, old.key)
	}
	e := &dedupEntry{key: k, t: t}
	d.entries[k] = e
	heap.Push(&d.order, e)
	emit(r)
	return nil
}

func (d *Dedup) keyOf(r *record.Record) (string, error) {
	if d.key == nil {
		if r.Key == "" {
			return "", fmt.Errorf("%w: dedup: record has no key", record.ErrField)
		}
		return r.Key, nil
	}
	v, err := d.key.Eval(r)
	if err != nil {
		return "", fmt.Errorf("dedup key: %w", err)
	}
	switch x := v.(type) {
	case string:
		return x, nil
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), nil
	case bool:
		return strconv.FormatBool(x), nil
	case nil:
		return "", fmt.Errorf("%w: dedup: key %s is null (a missing field?)", record.ErrField, d.key.Quoted())
	}
	b, err := json.Marshal(v) // []any or map[string]any: map keys sorted, deterministic
	if err != nil {
		return "", fmt.Errorf("%w: dedup: key %s: %v", expr.ErrEval, d.key.Quoted(), err)
	}
	return string(b), nil
}

// Advance forgets the keys whose window ended by now: a record at now or
// later with the same key is not a duplicate.
func (d *Dedup) Advance(now time.Time, _ record.Emit) {
	for len(d.order) > 0 && now.Sub(d.order[0].t) >= d.horizon {
		old := heap.Pop(&d.order).(*dedupEntry)
		delete(d.entries, old.key)
	}
}

// Len returns the number of keys remembered.
func (d *Dedup) Len() int { return len(d.entries) }

const dedupStateVersion = 1

type dedupWire struct {
	Version int              `cbor:"v"`
	Entries []dedupEntryWire `cbor:"e"`
}

type dedupEntryWire struct {
	_   struct{} `cbor:",toarray"`
	Key string
	T   statecbor.Time
}

// MarshalState encodes the remembered keys in eviction order.
func (d *Dedup) MarshalState() ([]byte, error) {
	es := make([]*dedupEntry, len(d.order))
	copy(es, d.order)
	// Sorted rather than heap order: the heap's layout depends on history,
	// the sorted order only on the set.
	dedupSort(es)
	w := dedupWire{Version: dedupStateVersion, Entries: make([]dedupEntryWire, len(es))}
	for i, e := range es {
		w.Entries[i] = dedupEntryWire{Key: e.key, T: statecbor.TimeOf(e.t)}
	}
	return statecbor.Marshal(&w)
}

// UnmarshalState replaces the remembered keys with b's; empty b means none.
// Unreadable state is a record.ErrState error and leaves the state unchanged.
func (d *Dedup) UnmarshalState(b []byte) error {
	if len(b) == 0 {
		d.entries, d.order = map[string]*dedupEntry{}, nil
		return nil
	}
	var w dedupWire
	if err := statecbor.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("%w: dedup: %v", record.ErrState, err)
	}
	if w.Version != dedupStateVersion {
		return fmt.Errorf("%w: dedup: state version %d, want %d", record.ErrState, w.Version, dedupStateVersion)
	}
	if len(w.Entries) > d.maxKeys {
		return fmt.Errorf("%w: dedup: %d keys, more than max_keys %d", record.ErrState, len(w.Entries), d.maxKeys)
	}
	entries := make(map[string]*dedupEntry, len(w.Entries))
	order := make(dedupHeap, 0, len(w.Entries))
	for _, ew := range w.Entries {
		t, ok := ew.T.Time()
		if !ok {
			return fmt.Errorf("%w: dedup: key %q: bad time", record.ErrState, ew.Key)
		}
		if entries[ew.Key] != nil {
			return fmt.Errorf("%w: dedup: key %q twice", record.ErrState, ew.Key)
		}
		e := &dedupEntry{key: ew.Key, t: t, idx: len(order)}
		entries[ew.Key] = e
		order = append(order, e)
	}
	heap.Init(&order)
	d.entries, d.order = entries, order
	return nil
}

// dedupHeap orders entries oldest first: by window start, then key.
type dedupHeap []*dedupEntry

func dedupLess(a, b *dedupEntry) bool {
	if !a.t.Equal(b.t) {
		return a.t.Before(b.t)
	}
	return a.key < b.key
}

func dedupSort(es []*dedupEntry) {
	sort.Slice(es, func(i, j int) bool { return dedupLess(es[i], es[j]) })
}

func (h dedupHeap) Len() int           { return len(h) }
func (h dedupHeap) Less(i, j int) bool { return dedupLess(h[i], h[j]) }
func (h dedupHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx = i
	h[j].idx = j
}

// Push implements heap.Interface.
func (h *dedupHeap) Push(x any) {
	e := x.(*dedupEntry)
	e.idx = len(*h)
	*h = append(*h, e)
}

// Pop implements heap.Interface.
func (h *dedupHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}
