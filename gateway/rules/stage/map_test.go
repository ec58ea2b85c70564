package stage

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/rules/expr"
	"github.com/ferrygw/ferry/gateway/rules/record"
)

func TestMap(t *testing.T) {
	tests := []struct {
		name string
		cfg  MapConfig
		in   map[string]any
		want map[string]any
	}{
		{
			name: "set",
			cfg:  MapConfig{Set: []Assignment{{"hot", "temp_c > 25"}, {"where", "source + ':' + topic"}}},
			in:   map[string]any{"temp_c": 30.0},
			want: map[string]any{"temp_c": 30.0, "hot": true, "where": "dev1:sensors/dev1"},
		},
		{
			name: "units",
			cfg:  MapConfig{Set: []Assignment{{"temp_f", "temp_c * 9 / 5 + 32"}, {"kpa", "pressure_hpa / 10"}}},
			in:   map[string]any{"temp_c": 100.0, "pressure_hpa": 1013.0},
			want: map[string]any{"temp_c": 100.0, "pressure_hpa": 1013.0, "temp_f": 212.0, "kpa": 101.3},
		},
		{
			name: "later set sees earlier",
			cfg:  MapConfig{Set: []Assignment{{"a", "x + 1"}, {"b", "a * 2"}, {"a", "b + a"}}},
			in:   map[string]any{"x": 1.0},
			want: map[string]any{"x": 1.0, "a": 6.0, "b": 4.0},
		},
		{
			name: "set nil",
			cfg:  MapConfig{Set: []Assignment{{"gone", "missing"}}},
			in:   map[string]any{},
			want: map[string]any{"gone": nil},
		},
		{
			name: "rename",
			cfg:  MapConfig{Rename: map[string]string{"t": "temp_c", "absent": "x"}},
			in:   map[string]any{"t": 1.0},
			want: map[string]any{"temp_c": 1.0},
		},
		{
			name: "rename is simultaneous",
			cfg:  MapConfig{Rename: map[string]string{"a": "b", "b": "a", "c": "d"}},
			in:   map[string]any{"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0},
			want: map[string]any{"a": 2.0, "b": 1.0, "d": 3.0},
		},
		{
			name: "drop",
			cfg:  MapConfig{Drop: []string{"raw", "absent"}},
			in:   map[string]any{"raw": "xx", "v": 1.0},
			want: map[string]any{"v": 1.0},
		},
		{
			name: "order: set, then rename, then drop",
			cfg: MapConfig{
				Set:    []Assignment{{"temp_f", "t * 9 / 5 + 32"}, {"raw", "'computed'"}},
				Rename: map[string]string{"temp_f": "temperature", "t": "temp_c"},
				Drop:   []string{"temp_c", "raw"},
			},
			in:   map[string]any{"t": 0.0, "raw": "bytes"},
			want: map[string]any{"temperature": 32.0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMap(tt.cfg)
			if err != nil {
				t.Fatalf("NewMap: %v", err)
			}
			in := exprTestRecord(tt.in)
			before := make(map[string]any, len(tt.in))
			for k, v := range tt.in {
				before[k] = v
			}
			var out []*record.Record
			if err := m.Process(in, func(o *record.Record) { out = append(out, o) }); err != nil {
				t.Fatalf("Process: %v", err)
			}
			if len(out) != 1 {
				t.Fatalf("emitted %d records, want 1", len(out))
			}
			if !reflect.DeepEqual(out[0].Fields, tt.want) {
				t.Errorf("fields = %#v, want %#v", out[0].Fields, tt.want)
			}
			if o := out[0]; o.Key != in.Key || !o.Time.Equal(in.Time) || o.Source != in.Source || o.Topic != in.Topic {
				t.Errorf("identity changed: %+v", o)
			}
			if !reflect.DeepEqual(in.Fields, before) {
				t.Errorf("input changed: %v, was %v", in.Fields, before)
			}
		})
	}
}

func TestMapErrors(t *testing.T) {
	t.Run("compile error has position", func(t *testing.T) {
		_, err := NewMap(MapConfig{Set: []Assignment{{"a", "1"}, {"b", "roundd(x)"}}})
		var ee *expr.CompileError
		if !errors.As(err, &ee) || ee.Column != 1 {
			t.Fatalf("error = %v, want an *expr.CompileError", err)
		}
		if !strings.HasPrefix(err.Error(), "set[1].expr: column 1: unknown func roundd") {
			t.Errorf("error = %q", err)
		}
	})
	for _, cfg := range []MapConfig{
		{},
		{Set: []Assignment{{"", "1"}}},
		{Set: []Assignment{{"a", ""}}},
		{Rename: map[string]string{"a": "c", "b": "c"}},
		{Rename: map[string]string{"a": ""}},
		{Drop: []string{""}},
	} {
		if _, err := NewMap(cfg); err == nil {
			t.Errorf("NewMap(%+v) succeeded", cfg)
		}
	}
	t.Run("runtime", func(t *testing.T) {
		for _, tc := range []struct {
			name, expr string
			fields     map[string]any
		}{
			{"missing field", "temp_c * 2", map[string]any{}},
			{"wrong type", "temp_c * 2", map[string]any{"temp_c": "warm"}},
			{"division by zero", "temp_c / d", map[string]any{"temp_c": 1.0, "d": 0.0}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				m, err := NewMap(MapConfig{Name: "conv", Set: []Assignment{{"x", tc.expr}}})
				if err != nil {
					t.Fatal(err)
				}
				var out []*record.Record
				err = m.Process(exprTestRecord(tc.fields), func(o *record.Record) { out = append(out, o) })
				if !errors.Is(err, expr.ErrEval) || len(out) != 0 {
					t.Errorf("Process = %v with %d outputs, want expr.ErrEval and none", err, len(out))
				}
				if err != nil && !strings.Contains(err.Error(), "map conv: set x:") {
					t.Errorf("error %q does not name the stage and field", err)
				}
			})
		}
	})
}

func TestMapStateless(t *testing.T) {
	m, err := NewMap(MapConfig{Drop: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	m.Advance(time.Now(), func(*record.Record) { t.Error("Advance emitted") })
	if b, err := m.MarshalState(); b != nil || err != nil {
		t.Errorf("MarshalState = %v, %v", b, err)
	}
	if err := m.UnmarshalState([]byte("junk")); !errors.Is(err, record.ErrState) {
		t.Errorf("UnmarshalState(junk) = %v, want ErrState", err)
	}
}

// BenchmarkMap measures a unit conversion with a rename and a drop: one
// Clone per record is the floor.
func BenchmarkMap(b *testing.B) {
	m, err := NewMap(MapConfig{
		Set:    []Assignment{{"temp_f", "temp_c * 9 / 5 + 32"}},
		Rename: map[string]string{"hum": "humidity"},
		Drop:   []string{"raw"},
	})
	if err != nil {
		b.Fatal(err)
	}
	r := exprTestRecord(map[string]any{"temp_c": 21.5, "hum": 40.0, "raw": "x"})
	emit := func(*record.Record) {}
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Process(r, emit); err != nil {
			b.Fatal(err)
		}
	}
}
