package expr

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	exprlang "github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
	"github.com/expr-lang/expr/vm/runtime"
	"github.com/ferrygw/ferry/gateway/rules/record"
)

// Kind says what an expression must produce.
type Kind int

const (
	// Bool expressions decide: filters and detector conditions. Their type
	// is checked at compile time and their result must be a bool.
	Bool Kind = iota + 1
	// Value expressions compute: map outputs and keys. Their result is
	// converted to the Record field model (see Program.Eval).
	Value
)

// Errors of evaluation; check them with errors.Is.
var (
	// ErrEval is returned, wrapped with the expression and the reason,
	// when an expression fails on a record: a missing field used in
	// arithmetic, a wrong type, division by zero.
	ErrEval = errors.New("rules: expression failed")
)

// MaxNodes bounds an expression's syntax tree. Expressions run once per
// record on small boards; a bound keeps a config typo (or a generated
// config) from producing a program that costs milliseconds per record.
const MaxNodes = 1000

// memoryBudget bounds what one evaluation may allocate in expr's own
// accounting (ranges, array and map literals). expr's default (1e6) is
// meant for servers; a Raspberry Pi Zero has 512 MiB for everything.
const memoryBudget = 100_000

// Names an expression sees besides the payload fields. They win over
// payload fields of the same name; those stay reachable as fields["time"].
const (
	varSource = "source"
	varTopic  = "topic"
	varTime   = "time"
	varFields = "fields"
)

// divFunc replaces expr's "/" operator: expr divides in float64 and
// yields ±Inf or NaN on a zero divisor, which no JSON encoder downstream
// can carry and no threshold should compare against. It is an environment
// value, not an exprlang.Function: a func(any, any) any in the environment is
// called directly (expr's OpCallTyped), where a registered function goes
// through an argument buffer that costs allocations on every record.
const divFunc = "__ferry_div"

// compileEnv types the names every expression can use. Payload fields
// are not in it: they are allowed as undefined variables, typed unknown at
// compile time and nil at run time when absent.
var compileEnv = map[string]any{
	varSource: "",
	varTopic:  "",
	varTime:   time.Time{},
	varFields: map[string]any{},
	divFunc:   divide,
}

// CompileError is a compile error in an expression, positioned so a config
// loader can point at it: "ferry.yaml:14: pipelines[0].stages[1].filter:
// column 7: unknown func avgg".
type CompileError struct {
	Line   int    // 1-based line within the expression
	Column int    // 1-based column (in characters) within that line
	Msg    string // what is wrong, without the position
}

// Error returns "column C: msg", or "line L, column C: msg" for a
// multi-line expression's later lines.
func (e *CompileError) Error() string {
	if e.Line > 1 {
		return fmt.Sprintf("line %d, column %d: %s", e.Line, e.Column, e.Msg)
	}
	return fmt.Sprintf("column %d: %s", e.Column, e.Msg)
}

// Program is a compiled expression. Compile it once at config load and
// evaluate it per record; evaluation reuses pooled VMs and environments so
// it does not allocate for the common cases. A Program may be evaluated
// from several goroutines.
type Program struct {
	src  string
	kind Kind
	prog *vm.Program

	// names are the payload fields the expression reads, sorted: Eval
	// copies just these into the environment instead of the whole payload.
	names                                  []string
	useSource, useTopic, useTime, useField bool

	// spare is the scratch of the last evaluation, ready for the next:
	// stages evaluate from one goroutine, and an atomic swap is cheaper
	// than the pool (which also drops items at random under -race).
	// Concurrent evaluations fall back to the pool.
	spare atomic.Pointer[scratch]
	pool  sync.Pool // of *scratch
}

// scratch is the per-evaluation scratch: a VM whose stack is reused and an
// environment map whose keys stay put between runs (only values change, so
// assignments do not allocate).
type scratch struct {
	vm  vm.VM
	env map[string]any
}

// Compile compiles src. Syntax errors, calls to unknown functions and (for
// Bool) a result type that cannot be bool fail here, as a *CompileError.
// Unknown variable names are payload fields and are accepted: at run time
// a field the record lacks is nil.
//
// The environment has every payload field by name (temp_c > 8), plus
// source, topic (strings), time (time.Time, the record's event time) and
// fields (the whole payload map, for names that are not identifiers:
// fields["a-b"]). now() is not available: stages read no clock (use time);
// date() parses in UTC unless given a zone.
func Compile(src string, kind Kind) (*Program, error) {
	if kind != Bool && kind != Value {
		return nil, fmt.Errorf("rules: invalid expression kind %d", kind)
	}
	if strings.TrimSpace(src) == "" {
		return nil, &CompileError{Line: 1, Column: 1, Msg: "empty expression"}
	}
	sc := &scanner{src: src, callees: map[*ast.IdentifierNode]bool{}}
	opts := []exprlang.Option{
		exprlang.Env(compileEnv),
		exprlang.AllowUndefinedVariables(),
		exprlang.MaxNodes(MaxNodes),
		exprlang.DisableBuiltin("now"),
		exprlang.Timezone("UTC"),
		exprlang.Patch(sc),
	}
	if kind == Bool {
		opts = append(opts, exprlang.AsBool())
	}
	prog, err := exprlang.Compile(src, opts...)
	// The scan's error first: with undefined variables allowed, expr's own
	// checker does not see a typo'd function name, and any type error it
	// reports for the same expression is a consequence of the typo.
	if sc.err != nil {
		return nil, compileError(sc.err)
	}
	if err != nil {
		return nil, compileError(err)
	}

	p := &Program{src: src, kind: kind, prog: prog}
	seen := map[string]bool{}
	for _, id := range sc.idents {
		name := id.Value
		// A let-bound name is copied too, harmlessly: the VM reads let
		// variables from its own slots, and the same name outside the
		// let's scope is the payload field.
		if sc.callees[id] || seen[name] {
			continue
		}
		seen[name] = true
		switch name {
		case varSource:
			p.useSource = true
		case varTopic:
			p.useTopic = true
		case varTime:
			p.useTime = true
		case varFields:
			p.useField = true
		case divFunc:
			// always in the environment
		default:
			p.names = append(p.names, name)
		}
	}
	sort.Strings(p.names)
	n := len(p.names) + len(compileEnv)
	p.pool.New = func() any {
		st := &scratch{vm: vm.VM{MemoryBudget: memoryBudget}, env: make(map[string]any, n)}
		st.env[divFunc] = divide
		return st
	}
	return p, nil
}

// String returns the expression's source.
func (p *Program) String() string { return p.src }

// Eval evaluates the program on r. A Value program's result is in the
// Record field model: numbers become float64 (non-finite ones are an
// error), time.Time an RFC 3339 string in UTC, time.Duration seconds as
// float64, slices []any and string-keyed maps map[string]any. Failures
// (a missing field used in arithmetic, a wrong type, division by zero, an
// index out of range) are errors wrapping ErrEval, never panics.
func (p *Program) Eval(r *record.Record) (any, error) {
	out, err := p.run(r)
	if err != nil {
		return nil, err
	}
	if p.kind == Bool {
		if _, ok := out.(bool); !ok {
			return nil, p.resultError(out)
		}
		return out, nil
	}
	v, err := normalize(out, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrEval, p.Quoted(), err)
	}
	return v, nil
}

// EvalBool evaluates the program on r as a condition. A nil result (a
// missing field on its own, or x?.y) is false, as in expr's own bool
// conversion; any other non-bool result is an ErrEval error.
func (p *Program) EvalBool(r *record.Record) (bool, error) {
	out, err := p.run(r)
	if err != nil {
		return false, err
	}
	switch b := out.(type) {
	case bool:
		return b, nil
	case nil:
		return false, nil
	}
	return false, p.resultError(out)
}

func (p *Program) run(r *record.Record) (any, error) {
	if r == nil {
		return nil, fmt.Errorf("%w: %s: nil record", ErrEval, p.Quoted())
	}
	st := p.spare.Swap(nil)
	if st == nil {
		st = p.pool.Get().(*scratch)
	}
	env := st.env
	for _, name := range p.names {
		env[name] = r.Fields[name] // nil when absent
	}
	if p.useSource {
		env[varSource] = r.Source
	}
	if p.useTopic {
		env[varTopic] = r.Topic
	}
	if p.useTime {
		env[varTime] = r.Time
	}
	if p.useField {
		fields := r.Fields
		if fields == nil {
			fields = map[string]any{} // so fields["x"] is nil, not a fetch error
		}
		env[varFields] = fields
	}
	// expr's VM recovers panics (integer division by zero, nil
	// dereference, index out of range, a function's error) into a
	// *file.Error, so a hostile payload cannot crash the runner.
	out, err := st.vm.Run(p.prog, env)
	for _, name := range p.names {
		env[name] = nil // keep no record alive from the pool
	}
	if p.useSource {
		env[varSource] = nil
	}
	if p.useTopic {
		env[varTopic] = nil
	}
	if p.useTime {
		env[varTime] = nil
	}
	if p.useField {
		env[varFields] = nil
	}
	if !p.spare.CompareAndSwap(nil, st) {
		p.pool.Put(st)
	}
	if err != nil {
		return nil, p.runtimeError(err, r)
	}
	return out, nil
}

func (p *Program) resultError(out any) error {
	return fmt.Errorf("%w: %s: result is %T, not bool", ErrEval, p.Quoted(), out)
}

// runtimeError turns expr's error into an ErrEval error naming the position
// and the fields the record lacks: a nil in "invalid operation: <nil> > int"
// is nearly always a missing field, and the dead-letter reason should say so.
func (p *Program) runtimeError(err error, r *record.Record) error {
	var b strings.Builder
	b.WriteString(p.Quoted())
	b.WriteString(": ")
	var fe *file.Error
	if errors.As(err, &fe) {
		if fe.Line > 1 {
			fmt.Fprintf(&b, "line %d, ", fe.Line)
		}
		fmt.Fprintf(&b, "column %d: %s", fe.Column+1, fe.Message)
	} else {
		b.WriteString(err.Error())
	}
	var missing []string
	for _, name := range p.names {
		if _, ok := r.Fields[name]; !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		fmt.Fprintf(&b, " (record has no field %s)", strings.Join(missing, ", "))
	}
	return fmt.Errorf("%w: %s", ErrEval, b.String())
}

// Quoted returns the source quoted for error messages, shortened: dead-letter
// reasons should identify the expression, not repeat a page of it.
func (p *Program) Quoted() string {
	const limit = 60
	s := p.src
	if utf8.RuneCountInString(s) > limit {
		s = string([]rune(s)[:limit]) + "…"
	}
	return fmt.Sprintf("%q", s)
}

func compileError(err error) *CompileError {
	var fe *file.Error
	if errors.As(err, &fe) {
		return &CompileError{Line: max(fe.Line, 1), Column: fe.Column + 1, Msg: fe.Message}
	}
	return &CompileError{Line: 1, Column: 1, Msg: err.Error()}
}

// scanner is an expr patcher that runs after parsing, before type checks.
// It records the identifiers an expression reads (to copy only those
// fields per evaluation), rejects calls to functions that do not exist
// (expr would accept them as calls of an undefined variable and fail per
// record), and routes "/" through divide.
type scanner struct {
	src     string
	idents  []*ast.IdentifierNode
	callees map[*ast.IdentifierNode]bool
	err     *file.Error
}

// Visit implements ast.Visitor. Walks are post-order: a call's callee is
// visited before the call, so callees are told apart only after the walk.
func (s *scanner) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		s.idents = append(s.idents, n)
		if n.Value == "$env" {
			s.fail(n, "$env is not available; use fields[\"name\"]")
		}
	case *ast.CallNode:
		id, ok := n.Callee.(*ast.IdentifierNode)
		if !ok {
			return // a method call: typed calls are checked by expr
		}
		s.callees[id] = true
		if _, ok := compileEnv[id.Value]; ok {
			return // expr reports calling a non-function itself
		}
		if _, ok := builtin.Index[id.Value]; ok {
			s.fail(id, fmt.Sprintf("func %s is not available in ferry expressions", id.Value))
			return
		}
		s.fail(id, "unknown func "+id.Value)
	case *ast.BinaryNode:
		if n.Operator == "/" {
			ast.Patch(node, &ast.CallNode{
				Callee:    &ast.IdentifierNode{Value: divFunc},
				Arguments: []ast.Node{n.Left, n.Right},
			})
		}
	}
}

// fail keeps the leftmost error: the walk is post-order, and the first
// problem in reading order is the one a person fixes first.
func (s *scanner) fail(n ast.Node, msg string) {
	if s.err != nil && s.err.From <= n.Location().From {
		return
	}
	e := &file.Error{Location: n.Location(), Message: msg}
	s.err = e.Bind(file.NewSource(s.src))
}

// divide is "/" with a zero divisor as an error. It reports errors
// by panicking, deliberately: it only ever runs inside expr's VM, which
// recovers the panic into the evaluation's error, and the func(any, any)
// any signature is what lets the VM call it without allocating.
func divide(a, b any) any {
	if isZero(b) {
		panic("division by zero")
	}
	return runtime.Divide(a, b) // panics on non-numbers, recovered the same way
}

func isZero(v any) bool {
	f, ok := record.Number(v)
	return ok && f == 0
}

// maxDepth bounds the nesting normalize walks.
const maxDepth = 32

// normalize converts an expression result to the Record field model.
// It copies a slice or map only when an element needs converting.
func normalize(v any, depth int) (any, error) {
	if depth > maxDepth {
		return nil, errors.New("result nested too deeply")
	}
	switch x := v.(type) {
	case nil, string, bool:
		return v, nil
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return nil, fmt.Errorf("result %v is not a finite number", x)
		}
		return v, nil
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano), nil
	case time.Duration:
		return x.Seconds(), nil
	case []any:
		var out []any
		for i, e := range x {
			n, err := normalize(e, depth+1)
			if err != nil {
				return nil, err
			}
			if out == nil && !same(n, e) {
				out = make([]any, len(x))
				copy(out, x[:i])
			}
			if out != nil {
				out[i] = n
			}
		}
		if out == nil {
			return v, nil
		}
		return out, nil
	case map[string]any:
		var out map[string]any
		for k, e := range x {
			n, err := normalize(e, depth+1)
			if err != nil {
				return nil, err
			}
			if out == nil && !same(n, e) {
				out = make(map[string]any, len(x))
				for k2, e2 := range x {
					out[k2] = e2
				}
			}
			if out != nil {
				out[k] = n
			}
		}
		if out == nil {
			return v, nil
		}
		return out, nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return float64(rv.Int()), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return float64(rv.Uint()), nil
	case reflect.Float32:
		return normalize(rv.Float(), depth)
	case reflect.String:
		return rv.String(), nil
	case reflect.Bool:
		return rv.Bool(), nil
	case reflect.Slice, reflect.Array:
		out := make([]any, rv.Len())
		for i := range out {
			n, err := normalize(rv.Index(i).Interface(), depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = n
		}
		return out, nil
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			return nil, fmt.Errorf("result is a %T: only string-keyed maps are allowed", v)
		}
		out := make(map[string]any, rv.Len())
		it := rv.MapRange()
		for it.Next() {
			n, err := normalize(it.Value().Interface(), depth+1)
			if err != nil {
				return nil, err
			}
			out[it.Key().String()] = n
		}
		return out, nil
	}
	return nil, fmt.Errorf("result of type %T cannot be a field value", v)
}

// same reports whether normalizing left a value unchanged. Only
// scalars are compared: a converted slice or map is always a new one.
func same(a, b any) bool {
	switch a.(type) {
	case nil, string, bool, float64:
		return reflect.TypeOf(a) == reflect.TypeOf(b) && a == b
	}
	// Composite values: unchanged if it is the very same object.
	ra, rb := reflect.ValueOf(a), reflect.ValueOf(b)
	if ra.Kind() != rb.Kind() || ra.Type() != rb.Type() {
		return false
	}
	switch ra.Kind() {
	case reflect.Slice, reflect.Map:
		return ra.Pointer() == rb.Pointer() && ra.Len() == rb.Len()
	}
	return false
}
