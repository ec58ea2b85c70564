package window

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/ferrygw/ferry/gateway/rules/record"
)

// DefaultMaxGroups is Config.MaxGroups when it is zero.
const DefaultMaxGroups = 10_000

// MaxClockJump is how far ahead of the watermark an event-time record may
// be. A record further ahead is far more likely a device with a wrong
// clock than a genuine jump, and letting it move the watermark would close
// (and emit, half-filled) every open window and make every following
// on-time record late.
const MaxClockJump = 24 * time.Hour

// Limits that keep the integer time arithmetic far from overflow and the
// per-record work bounded.
const (
	maxWindowSize       = 366 * 24 * time.Hour
	maxWindowsPerRecord = 1000
)

// Record times the window accepts: 1900-01-01 to 2200-01-01 UTC, so that
// start+Size+AllowedLateness+MaxClockJump never overflows int64 nanos.
const (
	minTimeNanos = -2208988800 * int64(time.Second)
	maxTimeNanos = 7258118400 * int64(time.Second)
)

// Reasons a window rejects a record, beyond a missing or mistyped field.
// Errors carrying them also match record.ErrField, so the runner dead-letters the
// record; errors.Is tells the reasons apart (for metrics, say).
var (
	// ErrLate: an event-time record whose windows have all closed.
	ErrLate = errors.New("rules: late record")
	// ErrClockJump: an event-time record more than MaxClockJump ahead of
	// the watermark.
	ErrClockJump = errors.New("rules: clock jump")
	// ErrTooManyGroups: the record would open a group beyond MaxGroups.
	ErrTooManyGroups = errors.New("rules: too many groups")
)

// fieldError is a record error: it matches record.ErrField and, when set, a
// more specific reason.
type fieldError struct {
	reason error
	msg    string
}

func (e *fieldError) Error() string { return e.msg }

func (e *fieldError) Unwrap() []error {
	if e.reason == nil {
		return []error{record.ErrField}
	}
	return []error{record.ErrField, e.reason}
}

func (w *Window) recordErr(reason error, format string, args ...any) error {
	return &fieldError{reason: reason, msg: fmt.Sprintf("rules: window %q: ", w.name) + fmt.Sprintf(format, args...)}
}

// Config configures a Window.
type Config struct {
	// Name names the stage; it is the first part of output keys.
	Name string
	// Size is the window length.
	Size time.Duration
	// Hop is the distance between window starts: 0 or Size gives tumbling
	// windows, less than Size hopping (sliding) windows. Size must be a
	// multiple of Hop, and Size/Hop at most 1000.
	Hop time.Duration
	// EventTime assigns records to windows by Record.Time and closes them
	// by watermark; otherwise by processing time, the last Advance.
	EventTime bool
	// AllowedLateness is how long past its end an event-time window stays
	// open for stragglers. Only with EventTime.
	AllowedLateness time.Duration
	// GroupBy lists the fields whose values make the group key, and may
	// name the pseudo-fields "source" and "topic" (Record.Source and
	// Record.Topic). Empty: one group per window.
	GroupBy []string
	// Aggregates are the output fields computed per window and group.
	Aggregates []Aggregate
	// MaxGroups bounds the open groups, counted per window (a group key
	// open in three windows counts three). 0 means DefaultMaxGroups.
	MaxGroups int
}

// Stats describes a Window's state.
type Stats struct {
	// OpenGroups is the number of (window, group) accumulators, the
	// records the window would emit if every window closed now; it is
	// what MaxGroups bounds.
	OpenGroups int
	// OpenWindows is the number of open windows with at least one group.
	OpenWindows int
	// ApproxBytes estimates the heap held by the open windows: maps,
	// accumulators, sketches and the field values kept for group-by,
	// first and last.
	ApproxBytes int64
}

// Window is the windowed-aggregation stage.
//
// Windows. A record belongs to every window [start, start+Size) that
// contains its time: one for tumbling windows, Size/Hop for hopping ones.
// Window starts are multiples of Hop since the Unix epoch (the same as
// t.Truncate(Hop) for any Hop that divides a day).
//
// Event time (EventTime true). The record's time is Record.Time. The
// watermark is the largest record time accepted so far, or the largest
// time passed to Advance if that is later: the runner advances event-time
// pipelines to their maximum event time so that groups that have gone
// quiet still close. A window [start, end) closes, and emits, once the
// watermark reaches end+AllowedLateness; until then records for it are
// accepted, late or not. A record all of whose windows have closed is
// late: Process returns an error matching record.ErrField and ErrLate and the
// record goes to dead letters. With hopping windows a record whose older
// windows have closed but whose newest is open goes to the open ones only.
// A record more than MaxClockJump (24 h) ahead of the watermark is
// rejected the same way with ErrClockJump rather than moving the
// watermark: one device with a wrong clock must not close every window.
// Advance is trusted and not checked: after a genuine gap longer than
// MaxClockJump (a gateway that was off for days), records are rejected
// until the runner advances the stage into the new era, and the runner
// should take its maximum event time from records stages accepted, or one
// bad clock closes every window anyway. Before the first record or Advance
// there is no watermark and nothing is late. In both modes a record time
// must lie between the years 1900 and 2200 (else record.ErrField), which keeps the
// window arithmetic exact in int64 nanoseconds.
//
// Processing time (EventTime false). A record goes to the windows that
// contain the time of the last Advance, whatever its Record.Time (before
// the first Advance: the windows containing its Record.Time). Windows
// close when Advance reaches their end. Nothing is late.
//
// Aggregates. Per window and group the aggregates take O(1) memory, except
// percentiles, which take a bounded sketch (see Aggregate). A record is
// all or nothing: if any aggregated field is missing or mistyped, or any
// group-by field is missing, Process returns an error matching record.ErrField
// and the record contributes to no aggregate of any window. A record that
// would open more than MaxGroups groups is rejected with ErrTooManyGroups,
// so a flood of device IDs costs dead letters, not memory. A group costs
// about 300 bytes with O(1) aggregates; a percentile sketch adds from
// under 1 KiB (one sensor's readings in a window span a few bins) to about
// 5.5 KiB per sign of the values when they span all 512 bins, so at most
// about 11 KiB per percentile field. Stats reports the estimate.
//
// Groups. The group key is the GroupBy values rendered with fmt's %v, with
// '%' and '/' percent-encoded (%25, %2F) and joined by '/', so keys are
// unambiguous: "a/b" then "c" and "a" then "b/c" are two groups. Values
// that render alike (the string "1" and the number 1) are one group.
//
// Output. When a window closes it emits one record per group that got at
// least one record in it: Key "<Name>/<group key>/<window start in Unix
// nanoseconds>" (with no GroupBy the group key is empty: "<Name>//<start>"),
// Time the window end, Source the group's source if "source" is a GroupBy
// key and Topic its topic if "topic" is, else empty. Fields hold each
// GroupBy field with the group's first record's value, "window_start" and
// "window_end" (RFC 3339 strings with nanoseconds, UTC), every aggregate
// output, and "count", the number of records, as float64. An aggregate
// whose result is not a finite number (a sum that overflowed float64) is
// nil. Windows emit in order of end, groups within a window in order of
// key (bytewise), so a replay from the same state emits the same records
// in the same order.
//
// State. MarshalState encodes the watermark (or processing clock) and
// every open window and group, sketches included, in deterministic CBOR; a
// Window restored from it continues exactly as the original would have.
type Window struct {
	name        string
	size, hop   int64 // nanoseconds
	perRecord   int   // windows per record: size/hop
	eventTime   bool
	lateness    int64
	groupBy     []string
	gbKind      []uint8 // gbField, gbSource or gbTopic per GroupBy entry
	sourceIdx   int     // index of "source" in groupBy, or -1
	topicIdx    int     // index of "topic" in groupBy, or -1
	aggs        []resolvedAgg
	numFields   []string // distinct fields of numeric aggregates
	welford     []bool   // per numFields: stddev wanted
	anyFields   []string // distinct fields of first/last
	sketchSlots []int    // per sketch: its index in numFields
	maxGroups   int
	fingerprint string // what a saved state must have been made with

	// hasClock and clock are the watermark (event time) or the last
	// Advance (processing time), in Unix nanoseconds.
	hasClock bool
	clock    int64
	windows  []*openWindow // open windows, by start
	open     int           // (window, group) accumulators in windows

	// Scratch reused across records so that a record for existing groups
	// allocates nothing.
	nums   []float64
	anys   []any
	keyBuf []byte
	slots  []target
	keys   []string
}

// GroupBy kinds.
const (
	gbField uint8 = iota
	gbSource
	gbTopic
)

// openWindow is one open window.
type openWindow struct {
	start  int64
	groups map[string]*groupAcc
}

// groupAcc is one group's accumulators in one window.
type groupAcc struct {
	key      string
	vals     []any // GroupBy values of the group's first record
	count    int64
	nums     []numAcc
	anys     []anyAcc
	sketches []*ddsketch.DDSketch
}

// target is one window a record goes to, and its group there if any.
type target struct {
	start int64
	win   *openWindow
	grp   *groupAcc
}

// New validates cfg and returns a Window with no open windows.
func New(cfg Config) (*Window, error) {
	if cfg.Name == "" {
		return nil, errors.New("rules: window: name is required")
	}
	errf := func(format string, args ...any) error {
		return fmt.Errorf("rules: window %q: "+format, append([]any{cfg.Name}, args...)...)
	}
	if cfg.Size <= 0 || cfg.Size > maxWindowSize {
		return nil, errf("size %v: want more than 0 and at most %v", cfg.Size, maxWindowSize)
	}
	hop := cfg.Hop
	if hop == 0 {
		hop = cfg.Size
	}
	if hop < 0 || hop > cfg.Size || cfg.Size%hop != 0 {
		return nil, errf("hop %v: want 0 or a divisor of size %v", cfg.Hop, cfg.Size)
	}
	if cfg.Size/hop > maxWindowsPerRecord {
		return nil, errf("size/hop is %d: at most %d windows per record", cfg.Size/hop, maxWindowsPerRecord)
	}
	if cfg.AllowedLateness < 0 || cfg.AllowedLateness > maxWindowSize {
		return nil, errf("allowed lateness %v: want 0 to %v", cfg.AllowedLateness, maxWindowSize)
	}
	if cfg.AllowedLateness > 0 && !cfg.EventTime {
		return nil, errf("allowed lateness needs event time")
	}
	if cfg.MaxGroups < 0 {
		return nil, errf("max groups %d is negative", cfg.MaxGroups)
	}
	w := &Window{
		name:      cfg.Name,
		size:      int64(cfg.Size),
		hop:       int64(hop),
		perRecord: int(cfg.Size / hop),
		eventTime: cfg.EventTime,
		lateness:  int64(cfg.AllowedLateness),
		groupBy:   slices.Clone(cfg.GroupBy),
		sourceIdx: -1,
		topicIdx:  -1,
		maxGroups: cfg.MaxGroups,
	}
	if w.maxGroups == 0 {
		w.maxGroups = DefaultMaxGroups
	}
	// Output names taken so far, so that no two outputs share a field.
	taken := map[string]string{"window_start": "reserved", "window_end": "reserved", "count": "reserved"}
	for i, f := range w.groupBy {
		if f == "" {
			return nil, errf("group_by entry %d is empty", i)
		}
		if _, dup := taken[f]; dup {
			return nil, errf("group_by %q: duplicate or reserved name", f)
		}
		taken[f] = "group_by"
		switch f {
		case "source":
			w.gbKind = append(w.gbKind, gbSource)
			w.sourceIdx = i
		case "topic":
			w.gbKind = append(w.gbKind, gbTopic)
			w.topicIdx = i
		default:
			w.gbKind = append(w.gbKind, gbField)
		}
	}
	numSlot := map[string]int{}
	anySlot := map[string]int{}
	sketchOf := map[int]int{} // numeric slot -> sketch index
	var fp strings.Builder
	fmt.Fprintf(&fp, "window/v1 size=%d hop=%d event=%t group_by=%q aggs=", w.size, w.hop, w.eventTime, w.groupBy)
	for i, a := range cfg.Aggregates {
		fn := strings.ToLower(strings.TrimSpace(a.Func))
		kind, q, err := aggKindOf(fn)
		if err != nil {
			return nil, errf("aggregate %d (%q): %v", i, a.Output, err)
		}
		field := a.Field
		if kind == aggCount {
			if field != "" && field != "*" {
				return nil, errf("aggregate %d: count takes no field, got %q", i, field)
			}
			field = ""
		} else if field == "" || field == "*" {
			return nil, errf("aggregate %d: %s needs a field", i, fn)
		}
		out := a.Output
		if out == "" {
			out = "count"
			if kind != aggCount {
				out = fn + "_" + field
			}
		}
		// An explicit count() may take the name "count": it is the same
		// value.
		if prev, dup := taken[out]; dup && !(out == "count" && kind == aggCount && prev == "reserved") {
			return nil, errf("aggregate %d: output %q is a duplicate or reserved name", i, out)
		}
		taken[out] = "aggregate"
		ca := resolvedAgg{output: out, kind: kind, q: q}
		switch kind {
		case aggSum, aggAvg, aggMin, aggMax, aggStddev, aggPercentile:
			s, ok := numSlot[field]
			if !ok {
				s = len(w.numFields)
				numSlot[field] = s
				w.numFields = append(w.numFields, field)
				w.welford = append(w.welford, false)
			}
			ca.slot = s
			if kind == aggStddev {
				w.welford[s] = true
			}
			if kind == aggPercentile {
				k, ok := sketchOf[s]
				if !ok {
					k = len(w.sketchSlots)
					sketchOf[s] = k
					w.sketchSlots = append(w.sketchSlots, s)
				}
				ca.slot = k
			}
		case aggFirst, aggLast:
			s, ok := anySlot[field]
			if !ok {
				s = len(w.anyFields)
				anySlot[field] = s
				w.anyFields = append(w.anyFields, field)
			}
			ca.slot = s
		}
		w.aggs = append(w.aggs, ca)
		fmt.Fprintf(&fp, "%s(%q),", fn, field)
	}
	w.fingerprint = fp.String()
	w.nums = make([]float64, len(w.numFields))
	w.anys = make([]any, len(w.anyFields))
	w.slots = make([]target, 0, w.perRecord)
	return w, nil
}

// Process adds r to its windows (see Window). In event time it may close,
// and emit, windows the record's time moves the watermark past.
func (w *Window) Process(r *record.Record, emit record.Emit) error {
	if r == nil {
		return w.recordErr(nil, "nil record")
	}
	t := r.Time.UnixNano()
	if sec := r.Time.Unix(); sec < minTimeNanos/int64(time.Second) || sec >= maxTimeNanos/int64(time.Second) {
		return w.recordErr(nil, "record time %v out of range", r.Time)
	}
	at := t // the time that picks the windows
	if w.eventTime {
		if w.hasClock {
			if t > w.clock+int64(MaxClockJump) {
				return w.recordErr(ErrClockJump, "clock jump: record time %s is more than %v ahead of the watermark %s",
					fmtNanos(t), MaxClockJump, fmtNanos(w.clock))
			}
			if newest := floorDiv(t, w.hop) * w.hop; newest+w.size+w.lateness <= w.clock {
				return w.recordErr(ErrLate, "late: record time %s: its windows closed at watermark %s (allowed lateness %v)",
					fmtNanos(t), fmtNanos(w.clock), time.Duration(w.lateness))
			}
		}
	} else if w.hasClock {
		at = w.clock
	}

	// Every check before any change, so that a rejected record leaves no
	// trace.
	for i, f := range w.numFields {
		v, ok := r.Fields[f]
		if !ok {
			return w.recordErr(nil, "field %q missing", f)
		}
		x, ok := record.Number(v)
		if !ok {
			return w.recordErr(nil, "field %q is %T, not a number", f, v)
		}
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return w.recordErr(nil, "field %q is %v, not a finite number", f, x)
		}
		w.nums[i] = x
	}
	for _, s := range w.sketchSlots {
		if !sketchable(w.nums[s]) {
			return w.recordErr(nil, "field %q value %v is beyond a percentile sketch's range", w.numFields[s], w.nums[s])
		}
	}
	for i, f := range w.anyFields {
		v, ok := r.Fields[f]
		if !ok {
			return w.recordErr(nil, "field %q missing", f)
		}
		w.anys[i] = v
	}
	key, keyBytes, err := w.groupKey(r)
	if err != nil {
		return err
	}

	// The record's windows that are still open, oldest first, and its
	// group in each.
	newest := floorDiv(at, w.hop) * w.hop
	w.slots = w.slots[:0]
	missing := 0
	for s := newest - int64(w.perRecord-1)*w.hop; s <= newest; s += w.hop {
		if w.eventTime && w.hasClock && s+w.size+w.lateness <= w.clock {
			continue // closed: the record counts in the newer windows only
		}
		sl := target{start: s, win: w.find(s)}
		if sl.win != nil {
			if keyBytes != nil {
				sl.grp = sl.win.groups[string(keyBytes)]
			} else {
				sl.grp = sl.win.groups[key]
			}
		}
		if sl.grp == nil {
			missing++
		}
		w.slots = append(w.slots, sl)
	}
	if missing > 0 {
		// Windows this record's time is about to close free their groups
		// first.
		freed := 0
		if w.eventTime && (!w.hasClock || t > w.clock) {
			for _, win := range w.windows {
				if win.start+w.size+w.lateness > t {
					break
				}
				freed += len(win.groups)
			}
		}
		if w.open-freed+missing > w.maxGroups {
			return w.recordErr(ErrTooManyGroups, "too many groups: %d open, max %d", w.open-freed, w.maxGroups)
		}
	}

	if w.eventTime && (!w.hasClock || t > w.clock) {
		w.hasClock, w.clock = true, t
		w.closeReady(emit) // never one of the record's windows: they end after t
	}
	var vals []any
	for i := range w.slots {
		sl := &w.slots[i]
		if sl.grp == nil {
			if vals == nil {
				// One key and one set of values shared by the record's new
				// groups: they are immutable.
				vals = w.groupVals(r)
				if keyBytes != nil {
					key = string(keyBytes)
				}
			}
			if sl.win == nil {
				sl.win = w.insert(sl.start)
			}
			sl.grp = w.newGroup(key, vals)
			sl.win.groups[key] = sl.grp
			w.open++
		}
		w.add(sl.grp, t)
	}
	clear(w.anys) // do not keep the record's values alive
	return nil
}

// add folds the record whose values are in the scratch slices into g.
func (w *Window) add(g *groupAcc, t int64) {
	g.count++
	n := g.count
	for i := range g.nums {
		g.nums[i].add(w.nums[i], n, w.welford[i])
	}
	for i := range g.anys {
		g.anys[i].add(w.anys[i], t, n == 1)
	}
	for i, sk := range g.sketches {
		// Cannot fail: Process checked the value is finite and in range.
		_ = sk.Add(w.nums[w.sketchSlots[i]])
	}
}

func (w *Window) newGroup(key string, vals []any) *groupAcc {
	g := &groupAcc{key: key, vals: vals}
	if len(w.numFields) > 0 {
		g.nums = make([]numAcc, len(w.numFields))
	}
	if len(w.anyFields) > 0 {
		g.anys = make([]anyAcc, len(w.anyFields))
	}
	if len(w.sketchSlots) > 0 {
		g.sketches = make([]*ddsketch.DDSketch, len(w.sketchSlots))
		for i := range g.sketches {
			g.sketches[i] = newSketch()
		}
	}
	return g
}

// Advance moves the watermark (event time) or the processing clock to now,
// if later, and closes the windows that are then due.
func (w *Window) Advance(now time.Time, emit record.Emit) {
	t := now.UnixNano()
	if sec := now.Unix(); sec < minTimeNanos/int64(time.Second) {
		return
	} else if sec >= maxTimeNanos/int64(time.Second) {
		t = maxTimeNanos
	}
	if !w.hasClock || t > w.clock {
		w.hasClock, w.clock = true, t
	}
	w.closeReady(emit)
}

// closeReady closes and emits the windows the clock has passed, oldest
// first.
func (w *Window) closeReady(emit record.Emit) {
	if !w.hasClock {
		return
	}
	if emit == nil {
		emit = func(*record.Record) {}
	}
	n := 0
	for _, win := range w.windows {
		end := win.start + w.size
		if w.eventTime {
			end += w.lateness
		}
		if end > w.clock {
			break
		}
		w.emitWindow(win, emit)
		n++
	}
	if n > 0 {
		rest := copy(w.windows, w.windows[n:])
		clear(w.windows[rest:])
		w.windows = w.windows[:rest]
	}
}

func (w *Window) emitWindow(win *openWindow, emit record.Emit) {
	keys := w.keys[:0]
	for k := range win.groups {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	start, end := win.start, win.start+w.size
	startS := time.Unix(0, start).UTC().Format(time.RFC3339Nano)
	endS := time.Unix(0, end).UTC().Format(time.RFC3339Nano)
	suffix := "/" + strconv.FormatInt(start, 10)
	for _, k := range keys {
		g := win.groups[k]
		fields := make(map[string]any, len(w.groupBy)+len(w.aggs)+3)
		for i, f := range w.groupBy {
			fields[f] = g.vals[i]
		}
		fields["window_start"] = startS
		fields["window_end"] = endS
		for _, a := range w.aggs {
			fields[a.output] = w.result(a, g)
		}
		fields["count"] = float64(g.count)
		out := &record.Record{
			Key:    w.name + "/" + k + suffix,
			Time:   time.Unix(0, end).UTC(),
			Fields: fields,
		}
		if w.sourceIdx >= 0 {
			out.Source, _ = g.vals[w.sourceIdx].(string)
		}
		if w.topicIdx >= 0 {
			out.Topic, _ = g.vals[w.topicIdx].(string)
		}
		emit(out)
	}
	w.open -= len(win.groups)
	clear(keys)
	w.keys = keys[:0]
}

// result is one aggregate's output value for g.
func (w *Window) result(a resolvedAgg, g *groupAcc) any {
	switch a.kind {
	case aggCount:
		return float64(g.count)
	case aggSum:
		return finite(g.nums[a.slot].sum)
	case aggAvg:
		return finite(g.nums[a.slot].sum / float64(g.count))
	case aggMin:
		return finite(g.nums[a.slot].min)
	case aggMax:
		return finite(g.nums[a.slot].max)
	case aggStddev:
		return finite(math.Sqrt(g.nums[a.slot].m2 / float64(g.count)))
	case aggFirst:
		return g.anys[a.slot].first
	case aggLast:
		return g.anys[a.slot].last
	case aggPercentile:
		v, err := g.sketches[a.slot].GetValueAtQuantile(a.q)
		if err != nil {
			return nil
		}
		return finite(v)
	}
	return nil
}

// finite returns v, or nil for NaN and infinities, which JSON cannot hold.
func finite(v float64) any {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return v
}

// find returns the open window starting at start, or nil.
func (w *Window) find(start int64) *openWindow {
	// Records mostly go to the newest window.
	if n := len(w.windows); n > 0 && w.windows[n-1].start == start {
		return w.windows[n-1]
	}
	i, ok := slices.BinarySearchFunc(w.windows, start, func(win *openWindow, s int64) int {
		return compareInt64(win.start, s)
	})
	if ok {
		return w.windows[i]
	}
	return nil
}

// insert adds an empty window starting at start, keeping windows sorted.
func (w *Window) insert(start int64) *openWindow {
	i, _ := slices.BinarySearchFunc(w.windows, start, func(win *openWindow, s int64) int {
		return compareInt64(win.start, s)
	})
	win := &openWindow{start: start, groups: make(map[string]*groupAcc)}
	w.windows = slices.Insert(w.windows, i, win)
	return win
}

func compareInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// floorDiv is a/b rounded toward negative infinity (b > 0), so window
// starts before 1970 align like the ones after.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

func fmtNanos(t int64) string { return time.Unix(0, t).UTC().Format(time.RFC3339Nano) }

// Stats reports the window's open state.
func (w *Window) Stats() Stats {
	st := Stats{OpenGroups: w.open, OpenWindows: len(w.windows)}
	const (
		windowBytes = 8 + 48 + 48 // slice slot, struct, empty map
		entryBytes  = 64          // map slot: key header, pointer, control byte, load-factor slack
		groupBytes  = 16 + 24*4 + 8
	)
	n := int64(windowBytes * len(w.windows))
	var data int64
	for _, win := range w.windows {
		for k, g := range win.groups {
			n += entryBytes + groupBytes + int64(len(k))
			n += int64(16*len(g.vals)) + int64(40*len(g.nums)) + int64(48*len(g.anys)) + int64(8*len(g.sketches))
			for _, v := range g.vals {
				data += valueBytes(v, 0)
			}
			for _, a := range g.anys {
				data += valueBytes(a.first, 0) + valueBytes(a.last, 0)
			}
			for _, sk := range g.sketches {
				data += sketchBytes(sk)
			}
		}
	}
	// The structure sizes above are for 64-bit platforms; on 32-bit ARM
	// (Pi Zero) pointers, ints, headers and map slots are about half as
	// big. Values and sketch bins are not scaled.
	st.ApproxBytes = n*bits.UintSize/64 + data
	return st
}

// valueBytes estimates the heap behind a field value (its interface
// header is counted by the caller).
func valueBytes(v any, depth int) int64 {
	if depth > 32 {
		return 0
	}
	switch x := v.(type) {
	case nil, bool:
		return 0
	case string:
		return 16 + int64(len(x))
	case []any:
		n := int64(24 + 16*len(x))
		for _, e := range x {
			n += valueBytes(e, depth+1)
		}
		return n
	case map[string]any:
		n := int64(48)
		for k, e := range x {
			n += 48 + int64(len(k)) + valueBytes(e, depth+1)
		}
		return n
	}
	return 8
}
