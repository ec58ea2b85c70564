package detect

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/rules/expr"
	"github.com/ferrygw/ferry/gateway/rules/internal/statecbor"
	"github.com/ferrygw/ferry/gateway/rules/record"
)

func detectF64(v float64) *float64 { return &v }

// detectStep is one input of a detector test: a record, or (when adv is
// set) an Advance to that time.
type detectStep struct {
	src    string
	at     time.Duration // after exprTestTime
	fields map[string]any
	adv    bool
}

func detectRec(src string, at time.Duration, fields map[string]any) detectStep {
	return detectStep{src: src, at: at, fields: fields}
}

func detectAdv(at time.Duration) detectStep { return detectStep{at: at, adv: true} }

func (s detectStep) record(i int) *record.Record {
	return &record.Record{
		Key:    fmt.Sprintf("e%d", i),
		Time:   exprTestTime.Add(s.at),
		Source: s.src,
		Topic:  "sensors/" + s.src,
		Fields: s.fields,
	}
}

// detectRun feeds steps to st and returns what it emitted, with the errors
// of records that failed (by step index).
func detectRun(t *testing.T, st *Detector, steps []detectStep, from int) ([]*record.Record, map[int]error) {
	t.Helper()
	var out []*record.Record
	errs := map[int]error{}
	emit := func(r *record.Record) { out = append(out, r) }
	for i, s := range steps {
		if s.adv {
			st.Advance(exprTestTime.Add(s.at), emit)
			continue
		}
		if err := st.Process(s.record(from+i), emit); err != nil {
			errs[from+i] = err
		}
	}
	return out, errs
}

// detectSummary renders alerts compactly: "raise:dev1:9".
func detectSummary(out []*record.Record) []string {
	var s []string
	for _, r := range out {
		g, _ := r.Fields["group"].(map[string]any)
		var parts []string
		for _, k := range []string{"source", "room", "topic"} {
			if v, ok := g[k]; ok {
				parts = append(parts, fmt.Sprint(v))
			}
		}
		s = append(s, fmt.Sprintf("%s:%s:%v", r.Fields["state"], strings.Join(parts, ","), r.Fields["value"]))
	}
	return s
}

func detectTemp(v any) map[string]any { return map[string]any{"temp_c": v} }

func TestDetectThreshold(t *testing.T) {
	seq := func(src string, vals ...float64) []detectStep {
		var s []detectStep
		for i, v := range vals {
			s = append(s, detectRec(src, time.Duration(i)*time.Second, detectTemp(v)))
		}
		return s
	}
	tests := []struct {
		name  string
		cfg   Config
		steps []detectStep
		want  []string
	}{
		{
			name:  "hysteresis: no flapping between the thresholds",
			cfg:   Config{RaiseAbove: detectF64(8), ClearBelow: detectF64(5)},
			steps: seq("dev1", 5, 9, 8.5, 9.5, 6, 4, 3, 9),
			want:  []string{"raise:dev1:9", "clear:dev1:4", "raise:dev1:9"},
		},
		{
			name:  "emits only on change",
			cfg:   Config{RaiseAbove: detectF64(8), ClearBelow: detectF64(5)},
			steps: seq("dev1", 9, 10, 11, 12, 13, 12, 11, 10, 9, 1, 1, 1, 1),
			want:  []string{"raise:dev1:9", "clear:dev1:1"},
		},
		{
			name:  "no hysteresis: clear below the raise threshold; equal changes nothing",
			cfg:   Config{RaiseAbove: detectF64(8)},
			steps: seq("dev1", 8, 8.1, 8, 7.9, 8),
			want:  []string{"raise:dev1:8.1", "clear:dev1:7.9"},
		},
		{
			name:  "low alarm",
			cfg:   Config{RaiseBelow: detectF64(2), ClearAbove: detectF64(4)},
			steps: seq("dev1", 5, 1.5, 3, 1, 4.5, 3),
			want:  []string{"raise:dev1:1.5", "clear:dev1:4.5"},
		},
		{
			name: "band: raises on either side, clears only inside",
			cfg: Config{RaiseAbove: detectF64(30), ClearBelow: detectF64(28),
				RaiseBelow: detectF64(5), ClearAbove: detectF64(7)},
			steps: seq("dev1", 20, 31, 2, 29, 20, 4, 6, 8),
			want:  []string{"raise:dev1:31", "clear:dev1:20", "raise:dev1:4", "clear:dev1:8"},
		},
		{
			name: "groups are independent",
			cfg:  Config{RaiseAbove: detectF64(8), ClearBelow: detectF64(5)},
			steps: []detectStep{
				detectRec("a", 0, detectTemp(9.0)), detectRec("b", 0, detectTemp(1.0)),
				detectRec("b", time.Second, detectTemp(9.0)), detectRec("a", time.Second, detectTemp(6.0)),
				detectRec("a", 2*time.Second, detectTemp(4.0)), detectRec("b", 2*time.Second, detectTemp(9.0)),
			},
			want: []string{"raise:a:9", "raise:b:9", "clear:a:4"},
		},
		{
			name: "out of order is taken in arrival order",
			cfg:  Config{RaiseAbove: detectF64(8), ClearBelow: detectF64(5)},
			steps: []detectStep{
				detectRec("a", 5*time.Second, detectTemp(9.0)), detectRec("a", time.Second, detectTemp(4.0)),
			},
			want: []string{"raise:a:9", "clear:a:4"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Name, cfg.Kind, cfg.Field = "hot", Threshold, "temp_c"
			d, err := New(cfg)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			out, errs := detectRun(t, d, tt.steps, 0)
			if len(errs) > 0 {
				t.Fatalf("errors: %v", errs)
			}
			if got := detectSummary(out); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("alerts = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDetectAlertRecord(t *testing.T) {
	d, err := New(Config{Name: "hot", Kind: Threshold, Field: "temp_c", RaiseAbove: detectF64(8)})
	if err != nil {
		t.Fatal(err)
	}
	in := &record.Record{Key: "ev-7", Time: exprTestTime, Source: "dev/1", Topic: "t/x", Fields: detectTemp(9.0)}
	var out []*record.Record
	if err := d.Process(in, func(r *record.Record) { out = append(out, r) }); err != nil {
		t.Fatal(err)
	}
	want := &record.Record{
		Key:    "hot/dev%2F1/raise/ev-7",
		Time:   exprTestTime,
		Source: "dev/1",
		Topic:  "t/x",
		Fields: map[string]any{"alert": "hot", "state": "raise", "value": 9.0, "group": map[string]any{"source": "dev/1"}},
	}
	if len(out) != 1 || !reflect.DeepEqual(out[0], want) {
		t.Fatalf("alert = %+v, want %+v", out, want)
	}
}

func TestDetectConsecutive(t *testing.T) {
	b := func(src string, i int, v float64) detectStep {
		return detectRec(src, time.Duration(i)*time.Second, map[string]any{"temp_c": v, "door": "open"})
	}
	tests := []struct {
		name  string
		cfg   Config
		steps []detectStep
		want  []string
	}{
		{
			name:  "three in a row",
			cfg:   Config{Condition: "temp_c > 8", Count: 3, Field: "temp_c"},
			steps: []detectStep{b("a", 0, 9), b("a", 1, 9), b("a", 2, 1), b("a", 3, 9), b("a", 4, 10), b("a", 5, 11), b("a", 6, 12), b("a", 7, 1), b("a", 8, 1)},
			want:  []string{"raise:a:11", "clear:a:1"},
		},
		{
			name:  "count 1 and no field",
			cfg:   Config{Condition: `door == "open" && temp_c > 8`, Count: 1},
			steps: []detectStep{b("a", 0, 9), b("a", 1, 9), b("a", 2, 1)},
			want:  []string{"raise:a:<nil>", "clear:a:<nil>"},
		},
		{
			name:  "runs are per group",
			cfg:   Config{Condition: "temp_c > 8", Count: 2, Field: "temp_c"},
			steps: []detectStep{b("a", 0, 9), b("b", 0, 9), b("a", 1, 1), b("b", 1, 9), b("a", 2, 9)},
			want:  []string{"raise:b:9"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Name, cfg.Kind = "warm", Consecutive
			d, err := New(cfg)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			out, errs := detectRun(t, d, tt.steps, 0)
			if len(errs) > 0 {
				t.Fatalf("errors: %v", errs)
			}
			if got := detectSummary(out); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("alerts = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDetectAbsence(t *testing.T) {
	d, err := New(Config{Name: "dead", Kind: Absence, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s := time.Second
	steps := []detectStep{
		detectRec("dev1", 0, nil),
		detectRec("dev2", 5*s, nil),
		detectAdv(10 * s), // dev1 silent exactly Timeout: not yet
		detectAdv(11 * s), // dev1 dead
		detectAdv(16 * s), // dev2 dead; dev1 not raised again
		detectAdv(30 * s),
		detectRec("dev1", 31*s, nil), // dev1 back
		detectAdv(35 * s),
		detectRec("dev1", 29*s, nil), // late, older than last seen: no effect
		detectAdv(41 * s),            // dev1 silent exactly Timeout since 31s: not yet
		detectAdv(42 * s),            // dev1 dead again
		detectAdv(44 * s),            // both raised: nothing
		detectRec("dev2", 50*s, nil), // dev2 back
	}
	out, errs := detectRun(t, d, steps, 0)
	if len(errs) > 0 {
		t.Fatalf("errors: %v", errs)
	}
	type alert struct {
		key, lastSeen, source string
		at                    time.Duration
	}
	var got []alert
	for _, r := range out {
		if r.Fields["value"] != nil || r.Fields["alert"] != "dead" {
			t.Errorf("alert fields %v", r.Fields)
		}
		got = append(got, alert{r.Key, r.Fields["last_seen"].(string), r.Source, r.Time.Sub(exprTestTime)})
	}
	ts := func(d time.Duration) string { return exprTestTime.Add(d).Format(time.RFC3339Nano) }
	want := []alert{
		{"dead/dev1/raise/" + ts(10*s), ts(0), "dev1", 10 * s},
		{"dead/dev2/raise/" + ts(15*s), ts(5 * s), "dev2", 15 * s},
		{"dead/dev1/clear/e6", ts(0), "dev1", 31 * s},
		{"dead/dev1/raise/" + ts(41*s), ts(31 * s), "dev1", 41 * s},
		{"dead/dev2/clear/e12", ts(5 * s), "dev2", 50 * s},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("alerts =\n%v\nwant\n%v", got, want)
	}
}

func TestDetectRate(t *testing.T) {
	s := time.Second
	tests := []struct {
		name    string
		per     time.Duration
		max     float64
		steps   []detectStep
		want    []string
		errSeen []int
	}{
		{
			name: "raise and clear per second",
			max:  1,
			steps: []detectStep{
				detectRec("a", 0, detectTemp(10.0)), detectRec("a", 1*s, detectTemp(10.5)), detectRec("a", 2*s, detectTemp(13.0)),
				detectRec("a", 3*s, detectTemp(14.5)), detectRec("a", 4*s, detectTemp(14.75)), detectRec("a", 6*s, detectTemp(10.75)),
			},
			want: []string{"raise:a:2.5", "clear:a:0.25", "raise:a:2"},
		},
		{
			name: "per minute",
			per:  time.Minute,
			max:  6,
			steps: []detectStep{
				detectRec("a", 0, detectTemp(10.0)), detectRec("a", 10*s, detectTemp(11.5)), detectRec("a", 20*s, detectTemp(11.625)),
			},
			want: []string{"raise:a:9", "clear:a:0.75"},
		},
		{
			name: "out of order is an error and ignored; an exact repeat is ignored",
			max:  1,
			steps: []detectStep{
				detectRec("a", 10*s, detectTemp(10.0)), detectRec("a", 5*s, detectTemp(50.0)), detectRec("a", 10*s, detectTemp(10.0)),
				detectRec("a", 10*s, detectTemp(11.0)), detectRec("a", 11*s, detectTemp(10.5)),
			},
			want:    nil,
			errSeen: []int{1, 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := New(Config{Name: "jump", Kind: Rate, Field: "temp_c", MaxRate: tt.max, Per: tt.per})
			if err != nil {
				t.Fatal(err)
			}
			out, errs := detectRun(t, d, tt.steps, 0)
			var seen []int
			for i, err := range errs {
				if !errors.Is(err, record.ErrField) {
					t.Errorf("step %d: %v, want ErrField", i, err)
				}
				seen = append(seen, i)
			}
			sort.Ints(seen)
			if !reflect.DeepEqual(seen, tt.errSeen) {
				t.Errorf("errors at steps %v, want %v (%v)", seen, tt.errSeen, errs)
			}
			if got := detectSummary(out); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("alerts = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDetectGroupBy(t *testing.T) {
	room := func(r string, v float64) map[string]any { return map[string]any{"room": r, "temp_c": v} }
	tests := []struct {
		name    string
		groupBy []string
		steps   []detectStep
		keys    []string
	}{
		{
			name:    "by payload field",
			groupBy: []string{"room"},
			steps: []detectStep{
				detectRec("a", 0, room("kitchen", 9)), detectRec("b", 0, room("kitchen", 9)), detectRec("b", 0, room("hall", 9)),
			},
			keys: []string{"hot/kitchen/raise/e0", "hot/hall/raise/e2"},
		},
		{
			name:    "by two names, escaped",
			groupBy: []string{"source", "room"},
			steps: []detectStep{
				detectRec("a", 0, room("x,y", 9)), detectRec("a", 0, room("x", 9)), detectRec("a/b", 0, room("x", 9)),
			},
			keys: []string{"hot/a,x%2Cy/raise/e0", "hot/a,x/raise/e1", "hot/a%2Fb,x/raise/e2"},
		},
		{
			name:    "one group for all",
			groupBy: []string{},
			steps:   []detectStep{detectRec("a", 0, room("k", 9)), detectRec("b", 0, room("h", 9))},
			keys:    []string{"hot/*/raise/e0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := New(Config{Name: "hot", Kind: Threshold, Field: "temp_c", RaiseAbove: detectF64(8), GroupBy: tt.groupBy})
			if err != nil {
				t.Fatal(err)
			}
			out, errs := detectRun(t, d, tt.steps, 0)
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			var keys []string
			for _, r := range out {
				keys = append(keys, r.Key)
				g := r.Fields["group"].(map[string]any)
				if len(g) != len(tt.groupBy) {
					t.Errorf("group %v does not match group_by %v", g, tt.groupBy)
				}
			}
			if !reflect.DeepEqual(keys, tt.keys) {
				t.Errorf("keys = %v, want %v", keys, tt.keys)
			}
		})
	}
}

func TestDetectRecordErrors(t *testing.T) {
	threshold := Config{Name: "hot", Kind: Threshold, Field: "temp_c", RaiseAbove: detectF64(8)}
	byRoom := threshold
	byRoom.GroupBy = []string{"room"}
	cond := Config{Name: "c", Kind: Consecutive, Condition: "temp_c > 8", Count: 1}
	condField := cond
	condField.Field = "hum"
	tests := []struct {
		name   string
		cfg    Config
		fields map[string]any
		want   error
	}{
		{"missing field", threshold, map[string]any{"hum": 1.0}, record.ErrField},
		{"string field", threshold, detectTemp("9"), record.ErrField},
		{"bool field", threshold, detectTemp(true), record.ErrField},
		{"null field", threshold, detectTemp(nil), record.ErrField},
		{"object field", threshold, detectTemp(map[string]any{}), record.ErrField},
		{"nil fields", threshold, nil, record.ErrField},
		{"missing group_by field", byRoom, detectTemp(9.0), record.ErrField},
		{"object group_by field", byRoom, map[string]any{"temp_c": 9.0, "room": []any{}}, record.ErrField},
		{"condition fails", cond, detectTemp("warm"), expr.ErrEval},
		{"condition division by zero", Config{Name: "c", Kind: Consecutive, Condition: "temp_c / 0 > 1", Count: 1}, detectTemp(1.0), expr.ErrEval},
		{"consecutive field missing", condField, detectTemp(9.0), record.ErrField},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			before, _ := d.MarshalState()
			var out []*record.Record
			err = d.Process(exprTestRecord(tt.fields), func(r *record.Record) { out = append(out, r) })
			if !errors.Is(err, tt.want) {
				t.Errorf("Process = %v, want %v", err, tt.want)
			}
			after, _ := d.MarshalState()
			if len(out) != 0 || !bytes.Equal(before, after) {
				t.Errorf("a failed record changed the detector: %d outputs", len(out))
			}
		})
	}
	t.Run("too many groups", func(t *testing.T) {
		cfg := threshold
		cfg.MaxGroups = 2
		d, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		steps := []detectStep{detectRec("a", 0, detectTemp(1.0)), detectRec("b", 0, detectTemp(1.0)), detectRec("c", 0, detectTemp(9.0)), detectRec("a", 0, detectTemp(9.0))}
		out, errs := detectRun(t, d, steps, 0)
		if len(errs) != 1 || !errors.Is(errs[2], record.ErrField) || !strings.Contains(errs[2].Error(), "too many groups") {
			t.Errorf("errors = %v, want too many groups at step 2", errs)
		}
		if got := detectSummary(out); !reflect.DeepEqual(got, []string{"raise:a:9"}) {
			t.Errorf("alerts = %v", got)
		}
	})
	t.Run("nil record", func(t *testing.T) {
		d, _ := New(threshold)
		if err := d.Process(nil, func(*record.Record) {}); !errors.Is(err, record.ErrField) {
			t.Errorf("Process(nil) = %v", err)
		}
	})
}

func TestNewDetectErrors(t *testing.T) {
	f := detectF64
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no name", Config{Kind: Absence, Timeout: time.Second}, "name"},
		{"unknown kind", Config{Name: "x", Kind: "spike"}, "unknown kind"},
		{"threshold without field", Config{Name: "x", Kind: Threshold, RaiseAbove: f(1)}, "field"},
		{"threshold without thresholds", Config{Name: "x", Kind: Threshold, Field: "v"}, "raise_above"},
		{"clear above raise", Config{Name: "x", Kind: Threshold, Field: "v", RaiseAbove: f(5), ClearBelow: f(6)}, "clear_below"},
		{"clear below raise (low)", Config{Name: "x", Kind: Threshold, Field: "v", RaiseBelow: f(5), ClearAbove: f(4)}, "clear_above"},
		{"clear without raise", Config{Name: "x", Kind: Threshold, Field: "v", RaiseBelow: f(5), ClearBelow: f(4)}, "clear_below without"},
		{"empty band", Config{Name: "x", Kind: Threshold, Field: "v", RaiseAbove: f(10), ClearBelow: f(5), RaiseBelow: f(2), ClearAbove: f(6)}, "must be below"},
		{"threshold with count", Config{Name: "x", Kind: Threshold, Field: "v", RaiseAbove: f(1), Count: 2}, "count"},
		{"consecutive without count", Config{Name: "x", Kind: Consecutive, Condition: "true"}, "count"},
		{"consecutive without condition", Config{Name: "x", Kind: Consecutive, Count: 2}, "condition"},
		{"consecutive bad condition", Config{Name: "x", Kind: Consecutive, Count: 2, Condition: "avgg(v) > 1"}, "condition: column 1: unknown func avgg"},
		{"consecutive non-bool condition", Config{Name: "x", Kind: Consecutive, Count: 2, Condition: "'a'"}, "expected bool"},
		{"absence without timeout", Config{Name: "x", Kind: Absence}, "timeout"},
		{"absence with field", Config{Name: "x", Kind: Absence, Timeout: time.Second, Field: "v"}, "field"},
		{"rate without max", Config{Name: "x", Kind: Rate, Field: "v"}, "max_rate"},
		{"rate with thresholds", Config{Name: "x", Kind: Rate, Field: "v", MaxRate: 1, RaiseAbove: f(1)}, "raise_above"},
		{"negative per", Config{Name: "x", Kind: Rate, Field: "v", MaxRate: 1, Per: -time.Second}, "per"},
		{"duplicate group_by", Config{Name: "x", Kind: Absence, Timeout: time.Second, GroupBy: []string{"a", "a"}}, "twice"},
		{"negative max_groups", Config{Name: "x", Kind: Absence, Timeout: time.Second, MaxGroups: -1}, "max_groups"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := New(tt.cfg)
			if err == nil {
				t.Fatalf("New = %v, want error", d)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
	var ee *expr.CompileError
	if _, err := New(tests[11].cfg); !errors.As(err, &ee) {
		t.Errorf("condition error %v is not an *expr.CompileError", err)
	}
}

// detectRoundTripCases are detector configs with inputs that exercise
// their state; used by the state round-trip tests.
func detectRoundTripCases() []struct {
	name  string
	cfg   Config
	steps []detectStep
} {
	s := time.Second
	var thr, cons, rate, abs []detectStep
	vals := []float64{5, 9, 8.5, 9.5, 6, 4, 3, 9, 2, 12, 1, 0.5}
	for i, v := range vals {
		for _, src := range []string{"a", "b", "c"} {
			at := time.Duration(i)*s + time.Duration(len(src))*time.Millisecond
			v := v
			if src == "b" {
				v = 10 - v
			}
			f := map[string]any{"temp_c": v, "room": src + "-room", "n": float64(i % 3)}
			thr = append(thr, detectRec(src, at, f))
			cons = append(cons, detectRec(src, at, f))
			rate = append(rate, detectRec(src, at, f))
			// b and c go silent for a while (b twice): raises and clears.
			quiet := i == 3 || i == 4 || src == "b" && (i == 8 || i == 9)
			if src == "a" || !quiet {
				abs = append(abs, detectRec(src, at, f))
			}
		}
		abs = append(abs, detectAdv(time.Duration(i)*s))
	}
	abs = append(abs, detectAdv(30*s))
	return []struct {
		name  string
		cfg   Config
		steps []detectStep
	}{
		{"threshold", Config{Name: "hot", Kind: Threshold, Field: "temp_c", RaiseAbove: detectF64(8), ClearBelow: detectF64(5), GroupBy: []string{"source", "n"}}, thr},
		{"consecutive", Config{Name: "warm", Kind: Consecutive, Condition: "temp_c > 4", Count: 2, Field: "temp_c", GroupBy: []string{"room"}}, cons},
		{"rate", Config{Name: "jump", Kind: Rate, Field: "temp_c", MaxRate: 3}, rate},
		{"absence", Config{Name: "dead", Kind: Absence, Timeout: 1500 * time.Millisecond}, abs},
	}
}

// TestDetectStateRoundTrip checks that saving and restoring state at any
// point mid-stream gives exactly the outputs of an uninterrupted run.
func TestDetectStateRoundTrip(t *testing.T) {
	for _, tc := range detectRoundTripCases() {
		t.Run(tc.name, func(t *testing.T) {
			whole, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			want, wantErrs := detectRun(t, whole, tc.steps, 0)
			if len(want) < 3 {
				t.Fatalf("only %d alerts: the case does not exercise state", len(want))
			}
			finalState, err := whole.MarshalState()
			if err != nil {
				t.Fatal(err)
			}
			for cut := 0; cut <= len(tc.steps); cut++ {
				first, _ := New(tc.cfg)
				got, errs := detectRun(t, first, tc.steps[:cut], 0)
				b, err := first.MarshalState()
				if err != nil {
					t.Fatalf("cut %d: MarshalState: %v", cut, err)
				}
				second, _ := New(tc.cfg)
				if err := second.UnmarshalState(b); err != nil {
					t.Fatalf("cut %d: UnmarshalState: %v", cut, err)
				}
				if b2, _ := second.MarshalState(); !bytes.Equal(b, b2) {
					t.Fatalf("cut %d: state changed across a round trip", cut)
				}
				rest, errs2 := detectRun(t, second, tc.steps[cut:], cut)
				got = append(got, rest...)
				for k, v := range errs2 {
					errs[k] = v
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("cut %d: outputs differ from an uninterrupted run:\n%v\nwant\n%v", cut, detectSummary(got), detectSummary(want))
				}
				if len(errs) != len(wantErrs) {
					t.Fatalf("cut %d: errors %v, want %v", cut, errs, wantErrs)
				}
				if b3, _ := second.MarshalState(); !bytes.Equal(b3, finalState) {
					t.Fatalf("cut %d: final state differs", cut)
				}
			}
		})
	}
}

func TestDetectStateGarbage(t *testing.T) {
	cfg := Config{Name: "hot", Kind: Threshold, Field: "temp_c", RaiseAbove: detectF64(8)}
	d, _ := New(cfg)
	detectRun(t, d, []detectStep{detectRec("a", 0, detectTemp(9.0)), detectRec("b", 0, detectTemp(1.0))}, 0)
	good, err := d.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	enc := func(v any) []byte {
		b, err := statecbor.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	group := func(key string, vals ...any) groupWire { return groupWire{Key: key, Vals: vals} }
	tests := []struct {
		name string
		b    []byte
	}{
		{"not cbor", []byte("hello, world")},
		{"truncated", good[:len(good)/2]},
		{"trailing bytes", append(append([]byte{}, good...), 0)},
		{"wrong shape", enc([]int{1, 2, 3})},
		{"unknown field", enc(map[string]any{"v": 1, "kind": "threshold", "groups": nil, "x": 1})},
		{"wrong version", enc(stateWire{Version: 9, Kind: Threshold})},
		{"wrong kind", enc(stateWire{Version: 1, Kind: Rate})},
		{"key mismatch", enc(stateWire{Version: 1, Kind: Threshold, Groups: []groupWire{group("a", "b")}})},
		{"duplicate group", enc(stateWire{Version: 1, Kind: Threshold, Groups: []groupWire{group("a", "a"), group("a", "a")}})},
		{"wrong value count", enc(stateWire{Version: 1, Kind: Threshold, Groups: []groupWire{group("a,b", "a", "b")}})},
		{"number for source", enc(stateWire{Version: 1, Kind: Threshold, Groups: []groupWire{group("1", 1.0)}})},
		{"object value", enc(stateWire{Version: 1, Kind: Threshold, Groups: []groupWire{group("", map[string]any{})}})},
		{"bad nanoseconds", enc(stateWire{Version: 1, Kind: Threshold, Groups: []groupWire{{Key: "a", Vals: []any{"a"}, T: statecbor.Time{Nsec: 2e9}}}})},
		{"negative run", enc(stateWire{Version: 1, Kind: Threshold, Groups: []groupWire{{Key: "a", Vals: []any{"a"}, N: -1}}})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d2, _ := New(cfg)
			if err := d2.UnmarshalState(good); err != nil {
				t.Fatal(err)
			}
			if err := d2.UnmarshalState(tt.b); !errors.Is(err, record.ErrState) {
				t.Fatalf("UnmarshalState = %v, want ErrState", err)
			}
			if b, _ := d2.MarshalState(); !bytes.Equal(b, good) {
				t.Errorf("a failed UnmarshalState changed the state")
			}
		})
	}
	t.Run("every truncation and byte flip", func(t *testing.T) {
		for i := 0; i < len(good); i++ {
			d2, _ := New(cfg)
			_ = d2.UnmarshalState(good[:i]) // must not panic
			for _, x := range []byte{0x01, 0x20, 0x80, 0xff} {
				b := append([]byte{}, good...)
				b[i] ^= x
				if err := d2.UnmarshalState(b); err != nil && !errors.Is(err, record.ErrState) {
					t.Fatalf("flip %d^%x: %v, want ErrState", i, x, err)
				}
				d2.Process(exprTestRecord(detectTemp(9.0)), func(*record.Record) {})
				d2.Advance(exprTestTime, func(*record.Record) {})
			}
		}
	})
	t.Run("empty state resets", func(t *testing.T) {
		d2, _ := New(cfg)
		_ = d2.UnmarshalState(good)
		if err := d2.UnmarshalState(nil); err != nil {
			t.Fatal(err)
		}
		empty, _ := New(cfg)
		b1, _ := d2.MarshalState()
		b2, _ := empty.MarshalState()
		if !bytes.Equal(b1, b2) {
			t.Error("UnmarshalState(nil) did not reset")
		}
	})
}
