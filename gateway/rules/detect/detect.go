package detect

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ferrygw/ferry/gateway/rules/expr"
	"github.com/ferrygw/ferry/gateway/rules/internal/statecbor"
	"github.com/ferrygw/ferry/gateway/rules/record"
)

// Detector kinds, for Config.Kind.
const (
	Threshold   = "threshold"
	Consecutive = "consecutive"
	Absence     = "absence"
	Rate        = "rate"
)

// DefaultMaxGroups is Config.MaxGroups when unset.
const DefaultMaxGroups = 10_000

// GroupBy names that mean the record's own Source and Topic rather than
// payload fields: the names expressions and windows use for them too.
const (
	groupSource = "source"
	groupTopic  = "topic"
)

// Alert states, the "state" field of an alert record.
const (
	AlertRaise = "raise"
	AlertClear = "clear"
)

// Config configures a detector. Options that do not apply to Kind
// must be left zero: New rejects them rather than ignore a typo.
type Config struct {
	Name string // the alert's name: the "alert" field and the key prefix
	Kind string // threshold, consecutive, absence or rate

	// Field is the payload field watched: a number for threshold and
	// rate; any value for consecutive, where it is optional and only
	// reported as the alert's "value". absence does not use it.
	Field string
	// GroupBy names what separates independent state machines: "source"
	// and "topic" are the record's, other names payload fields (a string,
	// number or bool). nil means ["source"]; an empty non-nil slice means
	// one group for all records.
	GroupBy []string

	// threshold: a high alarm raises when the value is > RaiseAbove and
	// clears when it is < ClearBelow (default RaiseAbove); a low alarm
	// raises when < RaiseBelow and clears when > ClearAbove (default
	// RaiseBelow). The gap between the two is the hysteresis that keeps a
	// value hovering near a threshold from flapping. With both pairs set
	// the alarm is one out-of-band alarm: it raises on either side and
	// clears only when back inside (ClearAbove, ClearBelow).
	RaiseAbove, ClearBelow *float64
	RaiseBelow, ClearAbove *float64

	// consecutive: raises when Condition (a Bool expression) has been true
	// for Count records in a row; clears on the first record for which it
	// is false.
	Condition string
	Count     int

	// absence: raises when a group's latest record time is more than
	// Timeout before the time given to Advance (a dead sensor); clears
	// when the group's next record arrives.
	Timeout time.Duration

	// rate: raises when |Δvalue/Δtime|, in value units per Per (default
	// 1s), between a group's consecutive records is > MaxRate; clears when
	// it is < MaxRate.
	MaxRate float64
	Per     time.Duration

	// MaxGroups bounds the groups tracked (default DefaultMaxGroups): a
	// record that would start one more is a record.ErrField error.
	MaxGroups int
}

// Detector is a pattern-detector stage. For each group it runs a small state
// machine and emits an alert record only when the state changes: the
// input records themselves are consumed, not passed on.
//
// An alert's Fields are "alert" (Name), "state" ("raise" or "clear"),
// "value" (the threshold field's value, the rate, the consecutive Field's
// value or nil; nil for absence), "group" (a map of the GroupBy values) and,
// for absence, "last_seen" (RFC 3339, UTC). Its Key is
// "<Name>/<group>/<state>/<suffix>", where group is the GroupBy values
// comma-separated (with '%', ',' and '/' percent-escaped; "*" when there
// is no GroupBy) and suffix the triggering record's Key (its time when it
// has none); an absence raise's suffix and Time are the deadline, the last
// record's time plus Timeout, so the key does not depend on when Advance
// happened to be called. Source and Topic are the triggering record's; an
// absence raise has the group's source when grouped by source.
//
// Time: threshold, consecutive and rate use Record.Time; absence compares
// record times with Advance's now, so the runner must advance absence
// detectors on the records' clock. Records out of time order: threshold
// and consecutive take records in arrival order, whatever their times;
// rate rejects a record older than its group's last one, or as old with
// another value, with a record.ErrField error (a rate over no or negative time
// means nothing) and ignores an exact repeat (same time, same value: a
// redelivery); absence keeps the latest time seen.
//
// A missing or mistyped Field or GroupBy field is a record.ErrField error, a
// failing Condition a expr.ErrEval error: the event goes to the dead letters
// and the group's state is unchanged.
type Detector struct {
	name      string
	kind      string
	field     string
	groupBy   []string
	maxGroups int

	hasHi, hasLo    bool
	hi, hiClear     float64
	lo, loClear     float64
	cond            *expr.Program
	count           int
	timeout         time.Duration
	maxRate         float64
	per             time.Duration
	groupSrcIndex   int // index of "source" in groupBy, or -1
	groups          map[string]*groupState
	bySourceOrTopic []bool // groupBy[i] is the record's source or topic
}

// groupState is one group's state machine.
type groupState struct {
	key    string
	vals   []any // GroupBy values: string, float64 or bool
	raised bool
	n      int       // consecutive: current run of true conditions, capped at Count
	has    bool      // rate: last and t hold a sample
	last   float64   // rate: previous value
	t      time.Time // rate: previous sample's time; absence: latest record time
}

// New validates cfg and compiles its condition.
func New(cfg Config) (*Detector, error) {
	if cfg.Name == "" {
		return nil, errors.New("detect: name is required")
	}
	d := &Detector{
		name:          cfg.Name,
		kind:          cfg.Kind,
		field:         cfg.Field,
		groupBy:       cfg.GroupBy,
		maxGroups:     cfg.MaxGroups,
		groupSrcIndex: -1,
		groups:        map[string]*groupState{},
	}
	if d.groupBy == nil {
		d.groupBy = []string{groupSource}
	}
	seen := map[string]bool{}
	for i, g := range d.groupBy {
		if g == "" {
			return nil, fmt.Errorf("detect %s: group_by[%d]: empty name", cfg.Name, i)
		}
		if seen[g] {
			return nil, fmt.Errorf("detect %s: group_by: %q twice", cfg.Name, g)
		}
		seen[g] = true
		d.bySourceOrTopic = append(d.bySourceOrTopic, g == groupSource || g == groupTopic)
		if g == groupSource {
			d.groupSrcIndex = i
		}
	}
	if d.maxGroups == 0 {
		d.maxGroups = DefaultMaxGroups
	}
	if d.maxGroups < 0 {
		return nil, fmt.Errorf("detect %s: max_groups must be positive", cfg.Name)
	}

	// Options of other kinds, named as in the config file.
	var stray []string
	if cfg.RaiseAbove != nil || cfg.ClearBelow != nil || cfg.RaiseBelow != nil || cfg.ClearAbove != nil {
		if cfg.Kind != Threshold {
			stray = append(stray, "raise_above/clear_below/raise_below/clear_above")
		}
	}
	if cfg.Condition != "" && cfg.Kind != Consecutive {
		stray = append(stray, "condition")
	}
	if cfg.Count != 0 && cfg.Kind != Consecutive {
		stray = append(stray, "count")
	}
	if cfg.Timeout != 0 && cfg.Kind != Absence {
		stray = append(stray, "timeout")
	}
	if (cfg.MaxRate != 0 || cfg.Per != 0) && cfg.Kind != Rate {
		stray = append(stray, "max_rate/per")
	}
	if cfg.Field != "" && cfg.Kind == Absence {
		stray = append(stray, "field")
	}
	if len(stray) > 0 {
		return nil, fmt.Errorf("detect %s: %s not used by kind %q", cfg.Name, strings.Join(stray, ", "), cfg.Kind)
	}

	switch cfg.Kind {
	case Threshold:
		if cfg.Field == "" {
			return nil, fmt.Errorf("detect %s: threshold needs a field", cfg.Name)
		}
		if cfg.RaiseAbove == nil && cfg.RaiseBelow == nil {
			return nil, fmt.Errorf("detect %s: threshold needs raise_above or raise_below", cfg.Name)
		}
		if cfg.ClearBelow != nil && cfg.RaiseAbove == nil {
			return nil, fmt.Errorf("detect %s: clear_below without raise_above", cfg.Name)
		}
		if cfg.ClearAbove != nil && cfg.RaiseBelow == nil {
			return nil, fmt.Errorf("detect %s: clear_above without raise_below", cfg.Name)
		}
		for _, p := range []*float64{cfg.RaiseAbove, cfg.ClearBelow, cfg.RaiseBelow, cfg.ClearAbove} {
			if p != nil && (math.IsNaN(*p) || math.IsInf(*p, 0)) {
				return nil, fmt.Errorf("detect %s: thresholds must be finite numbers", cfg.Name)
			}
		}
		if cfg.RaiseAbove != nil {
			d.hasHi, d.hi, d.hiClear = true, *cfg.RaiseAbove, *cfg.RaiseAbove
			if cfg.ClearBelow != nil {
				d.hiClear = *cfg.ClearBelow
			}
			if d.hiClear > d.hi {
				return nil, fmt.Errorf("detect %s: clear_below %v is above raise_above %v", cfg.Name, d.hiClear, d.hi)
			}
		}
		if cfg.RaiseBelow != nil {
			d.hasLo, d.lo, d.loClear = true, *cfg.RaiseBelow, *cfg.RaiseBelow
			if cfg.ClearAbove != nil {
				d.loClear = *cfg.ClearAbove
			}
			if d.loClear < d.lo {
				return nil, fmt.Errorf("detect %s: clear_above %v is below raise_below %v", cfg.Name, d.loClear, d.lo)
			}
		}
		if d.hasHi && d.hasLo && d.loClear >= d.hiClear {
			// The normal band (clear_above, clear_below) would be empty:
			// a raised alarm could never clear.
			return nil, fmt.Errorf("detect %s: clear_above %v must be below clear_below %v", cfg.Name, d.loClear, d.hiClear)
		}
	case Consecutive:
		if cfg.Count < 1 {
			return nil, fmt.Errorf("detect %s: consecutive needs count >= 1", cfg.Name)
		}
		if cfg.Condition == "" {
			return nil, fmt.Errorf("detect %s: consecutive needs a condition", cfg.Name)
		}
		p, err := expr.Compile(cfg.Condition, expr.Bool)
		if err != nil {
			return nil, fmt.Errorf("condition: %w", err)
		}
		d.cond, d.count = p, cfg.Count
	case Absence:
		if cfg.Timeout <= 0 {
			return nil, fmt.Errorf("detect %s: absence needs a positive timeout", cfg.Name)
		}
		d.timeout = cfg.Timeout
	case Rate:
		if cfg.Field == "" {
			return nil, fmt.Errorf("detect %s: rate needs a field", cfg.Name)
		}
		if !(cfg.MaxRate > 0) || math.IsInf(cfg.MaxRate, 0) {
			return nil, fmt.Errorf("detect %s: rate needs a positive max_rate", cfg.Name)
		}
		if cfg.Per < 0 {
			return nil, fmt.Errorf("detect %s: per must be positive", cfg.Name)
		}
		d.maxRate, d.per = cfg.MaxRate, cfg.Per
		if d.per == 0 {
			d.per = time.Second
		}
	default:
		return nil, fmt.Errorf("detect %s: unknown kind %q (want threshold, consecutive, absence or rate)", cfg.Name, cfg.Kind)
	}
	return d, nil
}

// Process runs r's group's state machine and emits an alert if its state
// changed.
func (d *Detector) Process(r *record.Record, emit record.Emit) error {
	if r == nil {
		return fmt.Errorf("%w: detect %s: nil record", record.ErrField, d.name)
	}
	key, err := d.groupKey(r)
	if err != nil {
		return err
	}
	// In UTC and without a monotonic reading, as restored state has it, so
	// a restored stage compares and emits exactly what this one would.
	t := r.Time.UTC()
	switch d.kind {
	case Threshold:
		v, err := d.number(r)
		if err != nil {
			return err
		}
		g, err := d.group(key, r)
		if err != nil {
			return err
		}
		out := d.hasHi && v > d.hi || d.hasLo && v < d.lo
		in := (!d.hasHi || v < d.hiClear) && (!d.hasLo || v > d.loClear)
		switch {
		case !g.raised && out:
			g.raised = true
			emit(d.alert(g, AlertRaise, v, r, t))
		case g.raised && in:
			g.raised = false
			emit(d.alert(g, AlertClear, v, r, t))
		}
	case Consecutive:
		ok, err := d.cond.EvalBool(r)
		if err != nil {
			return fmt.Errorf("detect %s: %w", d.name, err)
		}
		var v any
		if d.field != "" {
			var present bool
			if v, present = r.Fields[d.field]; !present {
				return fmt.Errorf("%w: detect %s: record has no field %q", record.ErrField, d.name, d.field)
			}
		}
		g, err := d.group(key, r)
		if err != nil {
			return err
		}
		if !ok {
			g.n = 0
			if g.raised {
				g.raised = false
				emit(d.alert(g, AlertClear, v, r, t))
			}
			return nil
		}
		if g.n < d.count {
			g.n++
		}
		if !g.raised && g.n >= d.count {
			g.raised = true
			emit(d.alert(g, AlertRaise, v, r, t))
		}
	case Rate:
		v, err := d.number(r)
		if err != nil {
			return err
		}
		g, err := d.group(key, r)
		if err != nil {
			return err
		}
		if !g.has {
			g.has, g.last, g.t = true, v, t
			return nil
		}
		dt := t.Sub(g.t)
		if dt < 0 || dt == 0 && v != g.last {
			return fmt.Errorf("%w: detect %s: record time %s is not after its group's last record (%s)",
				record.ErrField, d.name, t.UTC().Format(time.RFC3339Nano), g.t.UTC().Format(time.RFC3339Nano))
		}
		if dt == 0 {
			return nil // the same sample again (a redelivery): no rate to compute
		}
		rate := math.Abs(v-g.last) * (float64(d.per) / float64(dt))
		if math.IsInf(rate, 0) || math.IsNaN(rate) {
			return fmt.Errorf("%w: detect %s: rate of change of %q overflows", record.ErrField, d.name, d.field)
		}
		g.last, g.t = v, t
		switch {
		case !g.raised && rate > d.maxRate:
			g.raised = true
			emit(d.alert(g, AlertRaise, rate, r, t))
		case g.raised && rate < d.maxRate:
			g.raised = false
			emit(d.alert(g, AlertClear, rate, r, t))
		}
	case Absence:
		g, err := d.group(key, r)
		if err != nil {
			return err
		}
		if g.raised {
			g.raised = false
			a := d.alert(g, AlertClear, nil, r, t)
			a.Fields["last_seen"] = g.t.UTC().Format(time.RFC3339Nano)
			emit(a)
		}
		if t.After(g.t) {
			g.t = t
		}
	}
	return nil
}

// Advance raises absence alerts for groups silent for more than Timeout
// before now, each once, in deadline order (then group key order). Other
// kinds do nothing on Advance.
func (d *Detector) Advance(now time.Time, emit record.Emit) {
	if d.kind != Absence {
		return
	}
	var due []*groupState
	for _, g := range d.groups {
		if !g.raised && now.Sub(g.t) > d.timeout {
			due = append(due, g)
		}
	}
	sort.Slice(due, func(i, j int) bool {
		if !due[i].t.Equal(due[j].t) {
			return due[i].t.Before(due[j].t)
		}
		return due[i].key < due[j].key
	})
	for _, g := range due {
		g.raised = true
		deadline := g.t.Add(d.timeout)
		src := ""
		if d.groupSrcIndex >= 0 {
			src, _ = g.vals[d.groupSrcIndex].(string)
		}
		a := &record.Record{
			Key:    d.name + "/" + g.key + "/" + AlertRaise + "/" + deadline.UTC().Format(time.RFC3339Nano),
			Time:   deadline,
			Source: src,
			Fields: map[string]any{
				"alert":     d.name,
				"state":     AlertRaise,
				"value":     nil,
				"group":     d.groupMap(g),
				"last_seen": g.t.UTC().Format(time.RFC3339Nano),
			},
		}
		emit(a)
	}
}

// alert builds an alert triggered by record r.
func (d *Detector) alert(g *groupState, state string, value any, r *record.Record, t time.Time) *record.Record {
	suffix := r.Key
	if suffix == "" {
		suffix = t.UTC().Format(time.RFC3339Nano)
	}
	return &record.Record{
		Key:    d.name + "/" + g.key + "/" + state + "/" + suffix,
		Time:   r.Time,
		Source: r.Source,
		Topic:  r.Topic,
		Fields: map[string]any{
			"alert": d.name,
			"state": state,
			"value": value,
			"group": d.groupMap(g),
		},
	}
}

func (d *Detector) groupMap(g *groupState) map[string]any {
	m := make(map[string]any, len(d.groupBy))
	for i, name := range d.groupBy {
		m[name] = g.vals[i]
	}
	return m
}

// number returns the watched field as a finite float64.
func (d *Detector) number(r *record.Record) (float64, error) {
	v, ok := r.Fields[d.field]
	if !ok {
		return 0, fmt.Errorf("%w: detect %s: record has no field %q", record.ErrField, d.name, d.field)
	}
	f, ok := finiteNumber(v)
	if !ok {
		return 0, fmt.Errorf("%w: detect %s: field %q is %s, not a finite number", record.ErrField, d.name, d.field, describe(v))
	}
	return f, nil
}

// group returns key's group, starting it (from r's GroupBy values) if new.
func (d *Detector) group(key string, r *record.Record) (*groupState, error) {
	if g := d.groups[key]; g != nil {
		return g, nil
	}
	if len(d.groups) >= d.maxGroups {
		return nil, fmt.Errorf("%w: detect %s: too many groups (max %d)", record.ErrField, d.name, d.maxGroups)
	}
	g := &groupState{key: key, vals: make([]any, len(d.groupBy))}
	for i, name := range d.groupBy {
		switch name {
		case groupSource:
			g.vals[i] = r.Source
		case groupTopic:
			g.vals[i] = r.Topic
		default:
			g.vals[i], _ = groupValue(r.Fields[name]) // checked by groupKey
		}
	}
	d.groups[key] = g
	return g, nil
}

// groupKey computes r's group key without allocating for a plain source.
func (d *Detector) groupKey(r *record.Record) (string, error) {
	if len(d.groupBy) == 0 {
		return "*", nil
	}
	var parts [4]string
	ps := parts[:0]
	for _, name := range d.groupBy {
		var v any
		switch name {
		case groupSource:
			ps = append(ps, escape(r.Source))
			continue
		case groupTopic:
			ps = append(ps, escape(r.Topic))
			continue
		}
		raw, ok := r.Fields[name]
		if !ok {
			return "", fmt.Errorf("%w: detect %s: record has no group_by field %q", record.ErrField, d.name, name)
		}
		v, ok = groupValue(raw)
		if !ok {
			return "", fmt.Errorf("%w: detect %s: group_by field %q is %s, not a string, number or bool", record.ErrField, d.name, name, describe(raw))
		}
		ps = append(ps, keyPart(v))
	}
	if len(ps) == 1 {
		return ps[0], nil
	}
	return strings.Join(ps, ","), nil
}

// keyFromVals is groupKey over stored values, to check restored state.
func keyFromVals(vals []any) string {
	if len(vals) == 0 {
		return "*"
	}
	ps := make([]string, len(vals))
	for i, v := range vals {
		ps[i] = keyPart(v)
	}
	return strings.Join(ps, ",")
}

func keyPart(v any) string {
	switch x := v.(type) {
	case string:
		return escape(x)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	}
	return ""
}

// escape percent-escapes the characters that separate group values
// and key parts, so distinct groups never share a key.
func escape(s string) string {
	if !strings.ContainsAny(s, "%,/") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '%', ',', '/':
			fmt.Fprintf(&b, "%%%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// groupValue normalizes a GroupBy field value: strings and bools as
// they are, numbers as float64.
func groupValue(v any) (any, bool) {
	switch v.(type) {
	case string, bool:
		return v, true
	}
	if f, ok := finiteNumber(v); ok {
		return f, true
	}
	return nil, false
}

// finiteNumber returns v as a finite float64 if it is a number. Decoders
// produce float64; other numeric types are accepted in case a stage
// upstream computed one.
func finiteNumber(v any) (float64, bool) {
	f, ok := record.Number(v)
	if !ok || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

func describe(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a bool"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	case float64, float32:
		return "not finite"
	}
	return fmt.Sprintf("a %T", v)
}

const stateVersion = 1

type stateWire struct {
	Version int         `cbor:"v"`
	Kind    string      `cbor:"kind"`
	Groups  []groupWire `cbor:"groups"`
}

type groupWire struct {
	Key    string         `cbor:"k"`
	Vals   []any          `cbor:"g"`
	Raised bool           `cbor:"r"`
	N      int            `cbor:"n"`
	Has    bool           `cbor:"h"`
	Last   float64        `cbor:"l"`
	T      statecbor.Time `cbor:"t"`
}

// MarshalState encodes every group's state, in group key order.
func (d *Detector) MarshalState() ([]byte, error) {
	w := stateWire{Version: stateVersion, Kind: d.kind, Groups: make([]groupWire, 0, len(d.groups))}
	for _, g := range d.groups {
		w.Groups = append(w.Groups, groupWire{
			Key: g.key, Vals: g.vals, Raised: g.raised, N: g.n, Has: g.has, Last: g.last, T: statecbor.TimeOf(g.t),
		})
	}
	sort.Slice(w.Groups, func(i, j int) bool { return w.Groups[i].Key < w.Groups[j].Key })
	return statecbor.Marshal(&w)
}

// UnmarshalState replaces the detector's state with b's; empty b means no
// groups. State that does not decode, or does not fit this detector's
// configuration, is a record.ErrState error and leaves the state unchanged.
func (d *Detector) UnmarshalState(b []byte) error {
	if len(b) == 0 {
		d.groups = map[string]*groupState{}
		return nil
	}
	var w stateWire
	if err := statecbor.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("%w: detect %s: %v", record.ErrState, d.name, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: detect %s: %s", record.ErrState, d.name, fmt.Sprintf(format, args...))
	}
	if w.Version != stateVersion {
		return bad("state version %d, want %d", w.Version, stateVersion)
	}
	if w.Kind != d.kind {
		return bad("state of a %q detector, this is %q", w.Kind, d.kind)
	}
	if len(w.Groups) > d.maxGroups {
		return bad("%d groups, more than max_groups %d", len(w.Groups), d.maxGroups)
	}
	groups := make(map[string]*groupState, len(w.Groups))
	for _, gw := range w.Groups {
		if len(gw.Vals) != len(d.groupBy) {
			return bad("group %q has %d values, group_by has %d", gw.Key, len(gw.Vals), len(d.groupBy))
		}
		for i, v := range gw.Vals {
			nv, ok := groupValue(v)
			if _, isStr := v.(string); !ok || d.bySourceOrTopic[i] && !isStr {
				return bad("group %q: bad value for %q", gw.Key, d.groupBy[i])
			}
			gw.Vals[i] = nv
		}
		if keyFromVals(gw.Vals) != gw.Key {
			return bad("group key %q does not match its values", gw.Key)
		}
		if groups[gw.Key] != nil {
			return bad("group %q twice", gw.Key)
		}
		if gw.N < 0 || gw.N > d.count {
			return bad("group %q: run of %d", gw.Key, gw.N)
		}
		if math.IsNaN(gw.Last) || math.IsInf(gw.Last, 0) {
			return bad("group %q: last value not finite", gw.Key)
		}
		t, ok := gw.T.Time()
		if !ok {
			return bad("group %q: bad time", gw.Key)
		}
		vals := gw.Vals
		if vals == nil {
			vals = []any{}
		}
		groups[gw.Key] = &groupState{key: gw.Key, vals: vals, raised: gw.Raised, n: gw.N, has: gw.Has, last: gw.Last, t: t}
	}
	d.groups = groups
	return nil
}
