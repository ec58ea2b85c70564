package stage

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/ferrygw/ferry/gateway/rules/expr"
	"github.com/ferrygw/ferry/gateway/rules/record"
)

// Assignment sets one field of a map stage to a Value expression's result.
type Assignment struct {
	Field string
	Expr  string
}

// MapConfig configures a map stage. The steps apply in a fixed order: all
// of Set (in order, each assignment seeing the fields the earlier ones
// set), then Rename, then Drop. So a Set can compute from a field that
// Drop removes, and Rename names refer to fields after Set.
type MapConfig struct {
	Name string // for error messages
	// Set computes fields: unit conversion is just an expression
	// (temp_f = temp_c * 9 / 5 + 32). A nil result sets the field to nil.
	Set []Assignment
	// Rename maps old field names to new ones. Renames are simultaneous
	// ({a: b, b: c} moves a to b and the old b to c), an existing field
	// with a new name is overwritten, and a missing old field is skipped.
	Rename map[string]string
	// Drop removes fields; missing ones are skipped.
	Drop []string
}

// Map is a stage that computes, renames and drops fields. It emits one
// record per input: a copy with the same Key, Time, Source and Topic. It
// is stateless.
type Map struct {
	name   string
	set    []mapSet
	rename []mapRename // sorted by old name, for a deterministic walk
	drop   []string
}

type mapSet struct {
	field string
	prog  *expr.Program
}

type mapRename struct {
	from, to string
}

// NewMap compiles cfg's expressions. A compile error wraps the
// expression's *expr.CompileError (errors.As finds it) with its place,
// "set[2].expr: column 7: unknown func avgg".
func NewMap(cfg MapConfig) (*Map, error) {
	m := &Map{name: cfg.Name}
	if len(cfg.Set) == 0 && len(cfg.Rename) == 0 && len(cfg.Drop) == 0 {
		return nil, errors.New("map: nothing to do: set, rename and drop are all empty")
	}
	for i, a := range cfg.Set {
		if a.Field == "" {
			return nil, fmt.Errorf("set[%d].field: empty field name", i)
		}
		p, err := expr.Compile(a.Expr, expr.Value)
		if err != nil {
			return nil, fmt.Errorf("set[%d].expr: %w", i, err)
		}
		m.set = append(m.set, mapSet{field: a.Field, prog: p})
	}
	targets := make(map[string]string, len(cfg.Rename))
	for from, to := range cfg.Rename {
		if from == "" || to == "" {
			return nil, fmt.Errorf("rename: empty field name in %q: %q", from, to)
		}
		if prev, ok := targets[to]; ok {
			a, b := min(prev, from), max(prev, from) // stable message whatever the map order
			return nil, fmt.Errorf("rename: %q and %q both renamed to %q", a, b, to)
		}
		targets[to] = from
		m.rename = append(m.rename, mapRename{from: from, to: to})
	}
	sort.Slice(m.rename, func(i, j int) bool { return m.rename[i].from < m.rename[j].from })
	for i, f := range cfg.Drop {
		if f == "" {
			return nil, fmt.Errorf("drop[%d]: empty field name", i)
		}
		m.drop = append(m.drop, f)
	}
	return m, nil
}

// Process emits a transformed copy of r; r itself is not changed. An
// expression failure is an error wrapping expr.ErrEval and emits nothing.
func (m *Map) Process(r *record.Record, emit record.Emit) error {
	if r == nil {
		return fmt.Errorf("%w: nil record", record.ErrField)
	}
	c := r.Clone()
	for _, s := range m.set {
		v, err := s.prog.Eval(c)
		if err != nil {
			if m.name != "" {
				return fmt.Errorf("map %s: set %s: %w", m.name, s.field, err)
			}
			return fmt.Errorf("set %s: %w", s.field, err)
		}
		c.Fields[s.field] = v
	}
	if len(m.rename) > 0 {
		// Simultaneous: take every old value out before putting any back,
		// so one rename's target is not another's (already moved) source.
		type taken struct {
			v  any
			ok bool
		}
		var buf [8]taken // no allocation for the usual handful of renames
		vals := buf[:0]
		for _, rn := range m.rename {
			v, ok := c.Fields[rn.from]
			vals = append(vals, taken{v, ok})
			if ok {
				delete(c.Fields, rn.from)
			}
		}
		for i, rn := range m.rename {
			if vals[i].ok {
				c.Fields[rn.to] = vals[i].v
			}
		}
	}
	for _, f := range m.drop {
		delete(c.Fields, f)
	}
	emit(c)
	return nil
}

// Advance does nothing: a map holds no state.
func (m *Map) Advance(time.Time, record.Emit) {}

// MarshalState returns nil: a map holds no state.
func (m *Map) MarshalState() ([]byte, error) { return nil, nil }

// UnmarshalState accepts only empty state: bytes for a map mean the state
// belongs to some other stage.
func (m *Map) UnmarshalState(b []byte) error {
	if len(b) != 0 {
		return fmt.Errorf("%w: map has no state, got %d bytes", record.ErrState, len(b))
	}
	return nil
}
