package stage

import (
	"errors"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/rules/expr"
	"github.com/ferrygw/ferry/gateway/rules/record"
)

func TestFilter(t *testing.T) {
	tests := []struct {
		name    string
		src     string
		fields  map[string]any
		keep    bool
		wantErr error
	}{
		{"true", "temp_c > 8", map[string]any{"temp_c": 21.5}, true, nil},
		{"false", "temp_c > 8", map[string]any{"temp_c": 3.0}, false, nil},
		{"source and topic", `source == "dev1" && topic matches "^sensors/"`, nil, true, nil},
		{"missing bool field is false", "door_open", map[string]any{}, false, nil},
		{"guarded missing field", "temp_c != nil && temp_c > 8", map[string]any{}, false, nil},
		{"missing field compared", "temp_c > 8", map[string]any{"hum": 3.0}, false, expr.ErrEval},
		{"wrong type", "temp_c > 8", map[string]any{"temp_c": "hot"}, false, expr.ErrEval},
		{"division by zero", "temp_c / d > 1", map[string]any{"temp_c": 1.0, "d": 0.0}, false, expr.ErrEval},
		{"non-bool result", "temp_c", map[string]any{"temp_c": 1.0}, false, expr.ErrEval},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := NewFilter(tt.src)
			if err != nil {
				t.Fatalf("NewFilter(%q): %v", tt.src, err)
			}
			r := exprTestRecord(tt.fields)
			var out []*record.Record
			err = f.Process(r, func(o *record.Record) { out = append(out, o) })
			if !errors.Is(err, tt.wantErr) || (err != nil) != (tt.wantErr != nil) {
				t.Fatalf("Process error = %v, want %v", err, tt.wantErr)
			}
			if tt.keep {
				if len(out) != 1 || out[0] != r {
					t.Errorf("emitted %v, want the input record", out)
				}
			} else if len(out) != 0 {
				t.Errorf("emitted %d records, want none", len(out))
			}
		})
	}
}

func TestFilterCompileError(t *testing.T) {
	_, err := NewFilter("temp_c > 8 && avgg(temp_c) > 1")
	var ee *expr.CompileError
	if !errors.As(err, &ee) || ee.Column != 15 || ee.Msg != "unknown func avgg" {
		t.Fatalf("NewFilter error = %v, want *expr.CompileError at column 15", err)
	}
	if _, err := NewFilter("temp_c + 1 +"); !errors.As(err, &ee) {
		t.Fatalf("syntax error = %v, want *expr.CompileError", err)
	}
}

func TestFilterStateless(t *testing.T) {
	f, err := NewFilter("true")
	if err != nil {
		t.Fatal(err)
	}
	f.Advance(time.Now(), func(*record.Record) { t.Error("Advance emitted") })
	if b, err := f.MarshalState(); b != nil || err != nil {
		t.Errorf("MarshalState = %v, %v; want nil, nil", b, err)
	}
	if err := f.UnmarshalState(nil); err != nil {
		t.Errorf("UnmarshalState(nil) = %v", err)
	}
	if err := f.UnmarshalState([]byte{1}); !errors.Is(err, record.ErrState) {
		t.Errorf("UnmarshalState(garbage) = %v, want ErrState", err)
	}
}

// BenchmarkFilter measures the per-record cost of a typical filter.
func BenchmarkFilter(b *testing.B) {
	f, err := NewFilter("temp_c > 8")
	if err != nil {
		b.Fatal(err)
	}
	r := exprTestRecord(map[string]any{"temp_c": 21.5})
	n := 0
	emit := func(*record.Record) { n++ }
	b.ReportAllocs()
	for b.Loop() {
		if err := f.Process(r, emit); err != nil {
			b.Fatal(err)
		}
	}
	if n == 0 {
		b.Fatal("nothing kept")
	}
}
