package expr

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/rules/record"
)

// exprTestTime is the event time of exprTestRecord's records.
var exprTestTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

func exprTestRecord(fields map[string]any) *record.Record {
	return &record.Record{Key: "k1", Time: exprTestTime, Source: "dev1", Topic: "sensors/dev1", Fields: fields}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name     string
		src      string
		kind     Kind
		line     int
		col      int
		contains string
	}{
		{"typo'd function", "avgg(temp_c) > 1", Bool, 1, 1, "unknown func avgg"},
		{"typo'd function later", "temp_c > 8 && abss(x) < 2", Bool, 1, 15, "unknown func abss"},
		{"typo'd function in value", "temp_c * 2 + roundd(x)", Value, 1, 14, "unknown func roundd"},
		{"typo'd function on line 2", "temp_c > 8 &&\n  lenn(s) > 1", Bool, 2, 3, "unknown func lenn"},
		{"leftmost of two typos", "foo(1) + bar(2) > 0", Bool, 1, 1, "unknown func foo"},
		{"syntax error", "temp_c > ", Bool, 1, 9, "unexpected token EOF"},
		{"syntax error mid", "temp_c >> 8", Bool, 1, 9, ""},
		{"unbalanced", "(temp_c > 8", Bool, 1, 11, ""},
		{"now reads a clock", "now() > time", Bool, 1, 1, "func now is not available"},
		{"$env", "$env.x > 1", Bool, 1, 1, "$env is not available"},
		{"bool expression of string type", `source + "x"`, Bool, 1, 1, "expected bool"},
		{"bool expression of number type", `len(s) + 1`, Bool, 1, 1, "expected bool"},
		{"method typo on time", "time.Yearr() > 2000", Bool, 1, 6, "Yearr"},
		{"empty", "  ", Value, 1, 1, "empty expression"},
		{"too many nodes", strings.Repeat("x+", MaxNodes) + "x", Value, 1, 0, "maximum allowed nodes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compile(tt.src, tt.kind)
			if err == nil {
				t.Fatalf("Compile(%q) = %v, want error", tt.src, p)
			}
			var ee *CompileError
			if !errors.As(err, &ee) {
				t.Fatalf("error %v (%T) is not an *CompileError", err, err)
			}
			if ee.Line != tt.line || tt.col != 0 && ee.Column != tt.col {
				t.Errorf("position line %d column %d, want line %d column %d (%v)", ee.Line, ee.Column, tt.line, tt.col, err)
			}
			if !strings.Contains(ee.Msg, tt.contains) {
				t.Errorf("message %q does not contain %q", ee.Msg, tt.contains)
			}
			if ee.Line == 1 && !strings.HasPrefix(err.Error(), "column ") {
				t.Errorf("Error() = %q, want it to start with the column", err.Error())
			}
		})
	}
}

func TestExprErrorFormat(t *testing.T) {
	_, err := Compile("temp_c > avgg(1)", Bool)
	if got, want := err.Error(), "column 10: unknown func avgg"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	_, err = Compile("temp_c > 1 ||\n avgg(1) > 2", Bool)
	if got, want := err.Error(), "line 2, column 2: unknown func avgg"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if _, err := Compile("x", Kind(0)); err == nil {
		t.Error("Compile with kind 0 succeeded")
	}
}

func TestEval(t *testing.T) {
	fields := map[string]any{
		"temp_c": 21.5, "hum": 40.0, "a-b": 3.0, "s": "str", "ok": true,
		"arr":  []any{1.0, 2.0, 3.0},
		"obj":  map[string]any{"x": 1.0},
		"time": "payload's own time field",
	}
	tests := []struct {
		name string
		src  string
		want any
	}{
		{"field", "temp_c", 21.5},
		{"arithmetic", "temp_c * 9 / 5 + 32", 70.7},
		{"int literals become float64", "1 + 2", 3.0},
		{"unknown field is nil", "missing", nil},
		{"nil coalescing", "missing ?? 7", 7.0},
		{"optional chaining", "missing?.x", nil},
		{"source", "source", "dev1"},
		{"topic", "topic + '!'", "sensors/dev1!"},
		{"time is the record's", "time", "2024-05-06T07:08:09Z"},
		{"time methods", "time.Year()", 2024.0},
		{"payload field shadowed by time", `fields["time"]`, "payload's own time field"},
		{"fields for non-identifiers", `fields["a-b"] * 2`, 6.0},
		{"fields missing key", `fields["nope"]`, nil},
		{"nested", "obj.x + arr[2]", 4.0},
		{"let", "let f = temp_c * 9 / 5 + 32; f - 32", 70.7 - 32},
		{"predicate", "filter(arr, # > 1)", []any{2.0, 3.0}},
		{"map literal normalized", "{n: 1, l: [1, 's'], b: ok}", map[string]any{"n": 1.0, "l": []any{1.0, "s"}, "b": true}},
		{"duration in seconds", "duration('1m30s')", 90.0},
		{"date in UTC", "date('2024-01-02')", "2024-01-02T00:00:00Z"},
		{"string functions", "upper(s) + string(len(s))", "STR3"},
		{"unchanged composite shared", "arr", []any{1.0, 2.0, 3.0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compile(tt.src, Value)
			if err != nil {
				t.Fatalf("Compile(%q): %v", tt.src, err)
			}
			r := exprTestRecord(fields)
			got, err := p.Eval(r)
			if err != nil {
				t.Fatalf("Eval(%q): %v", tt.src, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Eval(%q) = %#v (%T), want %#v (%T)", tt.src, got, got, tt.want, tt.want)
			}
		})
	}
}

func TestEvalBool(t *testing.T) {
	fields := map[string]any{"temp_c": 21.5, "door": "open", "ok": true}
	tests := []struct {
		src  string
		want bool
	}{
		{"temp_c > 8", true},
		{"temp_c > 30", false},
		{`door == "open" && source == "dev1"`, true},
		{`topic startsWith "sensors/"`, true},
		{"ok", true},
		{"missing", false}, // nil converts to false, as in expr
		{"missing == nil", true},
		{"missing?.x", false},
		{"time.Hour() == 7", true},
		{`"temp_c" in fields`, true},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			p, err := Compile(tt.src, Bool)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			got, err := p.EvalBool(exprTestRecord(fields))
			if err != nil {
				t.Fatalf("EvalBool: %v", err)
			}
			if got != tt.want {
				t.Errorf("EvalBool = %v, want %v", got, tt.want)
			}
			v, err := p.Eval(exprTestRecord(fields))
			if err != nil || v != tt.want {
				t.Errorf("Eval = %v, %v; want %v", v, err, tt.want)
			}
		})
	}
}

// TestEvalRuntimeErrors covers expressions that fail on a record: each must
// be an ErrEval error, never a panic.
func TestEvalRuntimeErrors(t *testing.T) {
	fields := map[string]any{"temp_c": 21.5, "s": "str", "zero": 0.0, "arr": []any{1.0}, "n": 7.0}
	tests := []struct {
		name     string
		src      string
		kind     Kind
		contains string
	}{
		{"missing field compared", "nope > 8", Bool, "record has no field nope"},
		{"missing field arithmetic", "nope * 2", Value, "record has no field nope"},
		{"wrong type", "s > 5", Bool, "string > int"},
		{"wrong type arithmetic", "s * 2", Value, "invalid operation"},
		{"division by zero", "temp_c / 0", Value, "division by zero"},
		{"division by zero field", "temp_c / zero > 1", Bool, "division by zero"},
		{"integer division by zero", "int(n) / int(zero)", Value, "division by zero"},
		{"integer modulo by zero", "int(n) % int(zero)", Value, "divide by zero"},
		{"index out of range", "arr[3]", Value, "index out of range"},
		{"nil dereference", "nope.x > 1", Bool, "cannot fetch x"},
		{"member of a number", "temp_c.x", Value, "cannot fetch x"},
		{"non-bool condition", "temp_c", Bool, "bool(float64)"},
		{"non-finite result", "1e308 * 10", Value, "not a finite number"},
		{"bad argument", "upper(temp_c)", Value, ""},
		{"len of number", "len(temp_c)", Value, "invalid argument for len"},
		{"huge range", "len(1..100000000) > 0", Bool, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compile(tt.src, tt.kind)
			if err != nil {
				t.Fatalf("Compile(%q): %v", tt.src, err)
			}
			var v any
			if tt.kind == Bool {
				v, err = p.EvalBool(exprTestRecord(fields))
			} else {
				v, err = p.Eval(exprTestRecord(fields))
			}
			if err == nil {
				t.Fatalf("Eval(%q) = %v, want error", tt.src, v)
			}
			if !errors.Is(err, ErrEval) {
				t.Errorf("error %v does not wrap ErrEval", err)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not contain %q", err, tt.contains)
			}
		})
	}
	t.Run("value program as condition", func(t *testing.T) {
		p, err := Compile("s", Value)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.EvalBool(exprTestRecord(fields)); !errors.Is(err, ErrEval) {
			t.Errorf("EvalBool of a string: %v, want ErrEval", err)
		}
	})
	t.Run("nil record and nil fields", func(t *testing.T) {
		p, err := Compile(`fields["x"] == nil && x == nil`, Bool)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.EvalBool(nil); !errors.Is(err, ErrEval) {
			t.Errorf("EvalBool(nil): %v, want ErrEval", err)
		}
		ok, err := p.EvalBool(&record.Record{})
		if err != nil || !ok {
			t.Errorf("EvalBool(empty record) = %v, %v; want true", ok, err)
		}
	})
}

// TestEvalDoesNotLeakBetweenRecords checks the pooled environment: a field
// of one record must not be visible while evaluating the next.
func TestEvalDoesNotLeakBetweenRecords(t *testing.T) {
	p, err := Compile("a ?? source", Value)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := p.Eval(exprTestRecord(map[string]any{"a": 1.0})); v != 1.0 {
		t.Fatalf("first = %v", v)
	}
	if v, _ := p.Eval(exprTestRecord(map[string]any{})); v != "dev1" {
		t.Errorf("second = %v, want dev1 (a leaked from the first record?)", v)
	}
}

func TestEvalAllocs(t *testing.T) {
	p, err := Compile("temp_c > 8", Bool)
	if err != nil {
		t.Fatal(err)
	}
	r := exprTestRecord(map[string]any{"temp_c": 21.5})
	p.EvalBool(r) // fill the pool
	allocs := testing.AllocsPerRun(1000, func() {
		if ok, err := p.EvalBool(r); !ok || err != nil {
			t.Fatal(ok, err)
		}
	})
	if allocs > 0 {
		t.Errorf("EvalBool allocates %v times per record, want 0", allocs)
	}
}

func TestEvalConcurrent(t *testing.T) {
	p, err := Compile("v * 2", Value)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	for g := 0; g < 4; g++ {
		go func(g int) {
			for i := 0; i < 500; i++ {
				want := float64(g*1000 + i)
				v, err := p.Eval(exprTestRecord(map[string]any{"v": want}))
				if err != nil || v != want*2 {
					done <- errors.New("wrong result under concurrency")
					return
				}
			}
			done <- nil
		}(g)
	}
	for g := 0; g < 4; g++ {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// TestEvalNeverPanics runs expressions over payload values of every shape:
// each evaluation returns a value or an ErrEval error.
func TestEvalNeverPanics(t *testing.T) {
	srcs := []string{
		"v > 8", "v * 2", "v / 2", "v % 2", "-v", "v + v", "v[0]", "v[-1]", "v.x", "v?.x.y",
		"v[1:2]", "len(v)", "v in [1, 2]", "2 in v", "v matches 'a+'", "upper(v)", "abs(v)",
		"int(v)", "float(v)", "string(v)", "toJSON(v)", "keys(v)", "sum(v)", "max(v)", "v ?? 1",
		"all(v, # > 1)", "map(v, # * 2)", "v.Year()", "date(v)", "duration(v)", "v == v", "!v",
		"v ** 1e6", "v contains 'a'", "split(v, ',')", "fromJSON(v)", "repeat('x', int(v))",
	}
	vals := []any{
		nil, 0.0, -1.0, 1e308, 3.5, "", "a,b", "2024-01-02", "1h", "{", true,
		[]any{}, []any{1.0, "x", nil}, map[string]any{}, map[string]any{"x": nil},
	}
	for _, src := range srcs {
		for _, kind := range []Kind{Bool, Value} {
			p, err := Compile(src, kind)
			if err != nil {
				continue // a Bool-typed check rejected it: fine
			}
			for _, v := range vals {
				r := exprTestRecord(map[string]any{"v": v})
				if _, err := p.Eval(r); err != nil && !errors.Is(err, ErrEval) {
					t.Errorf("%q on %#v: %v, not ErrEval", src, v, err)
				}
			}
		}
	}
}

func TestEvalLetScope(t *testing.T) {
	p, err := Compile("(let t = 1; t * 10) + t", Value)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := p.Eval(exprTestRecord(map[string]any{"t": 5.0})); err != nil || v != 15.0 {
		t.Errorf("Eval = %v, %v; want 15 (the outer t is the payload field)", v, err)
	}
}
