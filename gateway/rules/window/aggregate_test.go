package window

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/rules/record"
)

func TestParseAggregate(t *testing.T) {
	tests := []struct {
		in        string
		fn, field string
		err       string // substring of the error; "" for none
	}{
		{in: "avg(temp_c)", fn: "avg", field: "temp_c"},
		{in: "  AVG( temp_c ) ", fn: "avg", field: "temp_c"},
		{in: "count()", fn: "count"},
		{in: "count(*)", fn: "count"},
		{in: "sum(a.b)", fn: "sum", field: "a.b"},
		{in: "stddev(x)", fn: "stddev", field: "x"},
		{in: "first(state)", fn: "first", field: "state"},
		{in: "last(state)", fn: "last", field: "state"},
		{in: "p95(latency_ms)", fn: "p95", field: "latency_ms"},
		{in: "p1(x)", fn: "p1", field: "x"},
		{in: "p99(x)", fn: "p99", field: "x"},
		{in: "median(x)", err: `"median"`},
		{in: "p0(x)", err: `"p0"`},
		{in: "p100(x)", err: `"p100"`},
		{in: "p05(x)", err: `"p05"`},
		{in: "p(x)", err: `"p"`},
		{in: "avg()", err: "needs a field"},
		{in: "avg(*)", err: "needs a field"},
		{in: "count(x)", err: "count takes no field"},
		{in: "avg", err: "want func(field)"},
		{in: "avg(x", err: "want func(field)"},
		{in: "(x)", err: "want func(field)"},
		{in: "avg((x))", err: "want func(field)"},
		{in: "", err: "want func(field)"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			fn, field, err := ParseAggregate(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseAggregate(%q) = %q, %q, %v; want error containing %s", tt.in, fn, field, err, tt.err)
				}
				return
			}
			if err != nil || fn != tt.fn || field != tt.field {
				t.Fatalf("ParseAggregate(%q) = %q, %q, %v; want %q, %q", tt.in, fn, field, err, tt.fn, tt.field)
			}
		})
	}
}

func TestNewWindowValidation(t *testing.T) {
	ok := Config{Name: "w", Size: time.Minute, Aggregates: []Aggregate{{Func: "avg", Field: "x"}}}
	tests := []struct {
		name string
		mod  func(*Config)
		err  string
	}{
		{"valid", func(*Config) {}, ""},
		{"unknown func named", func(c *Config) { c.Aggregates = []Aggregate{{Output: "m", Func: "median", Field: "x"}} }, `"median"`},
		{"no name", func(c *Config) { c.Name = "" }, "name is required"},
		{"zero size", func(c *Config) { c.Size = 0 }, "size"},
		{"hop not a divisor", func(c *Config) { c.Hop = 7 * time.Second }, "hop"},
		{"hop over size", func(c *Config) { c.Hop = 2 * time.Minute }, "hop"},
		{"negative hop", func(c *Config) { c.Hop = -time.Second }, "hop"},
		{"too many windows per record", func(c *Config) { c.Hop = time.Millisecond }, "windows per record"},
		{"lateness without event time", func(c *Config) { c.AllowedLateness = time.Second }, "event time"},
		{"negative lateness", func(c *Config) { c.EventTime = true; c.AllowedLateness = -1 }, "lateness"},
		{"negative max groups", func(c *Config) { c.MaxGroups = -1 }, "max groups"},
		{"field missing", func(c *Config) { c.Aggregates = []Aggregate{{Func: "sum"}} }, "needs a field"},
		{"count with field", func(c *Config) { c.Aggregates = []Aggregate{{Func: "count", Field: "x"}} }, "count takes no field"},
		{"duplicate output", func(c *Config) {
			c.Aggregates = []Aggregate{{Output: "a", Func: "avg", Field: "x"}, {Output: "a", Func: "max", Field: "x"}}
		}, `"a"`},
		{"output is a group_by field", func(c *Config) {
			c.GroupBy = []string{"room"}
			c.Aggregates = []Aggregate{{Output: "room", Func: "max", Field: "x"}}
		}, `"room"`},
		{"output reserved", func(c *Config) { c.Aggregates = []Aggregate{{Output: "window_end", Func: "max", Field: "x"}} }, "reserved"},
		{"count output for non-count", func(c *Config) { c.Aggregates = []Aggregate{{Output: "count", Func: "max", Field: "x"}} }, "reserved"},
		{"count() may be named count", func(c *Config) { c.Aggregates = []Aggregate{{Output: "count", Func: "count"}} }, ""},
		{"duplicate group_by", func(c *Config) { c.GroupBy = []string{"source", "source"} }, "duplicate"},
		{"empty group_by", func(c *Config) { c.GroupBy = []string{""} }, "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			cfg.Aggregates = slices.Clone(ok.Aggregates)
			tt.mod(&cfg)
			_, err := New(cfg)
			if tt.err == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("New error = %v; want one containing %s", err, tt.err)
			}
		})
	}
}

// winT0 is a minute boundary all the window tests start from.
var winT0 = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)

func winRec(src string, at time.Duration, fields map[string]any) *record.Record {
	return &record.Record{Key: src + "/" + at.String(), Time: winT0.Add(at), Source: src, Topic: "t/" + src, Fields: fields}
}

// winCollect returns an Emit appending to *out.
func winCollect(out *[]*record.Record) record.Emit {
	return func(r *record.Record) { *out = append(*out, r) }
}

func winMust(t testing.TB, cfg Config) *Window {
	t.Helper()
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestAggregatesHandComputed(t *testing.T) {
	w := winMust(t, Config{
		Name: "agg", Size: time.Minute, EventTime: true,
		Aggregates: []Aggregate{
			{Func: "count"}, {Func: "sum", Field: "x"}, {Func: "avg", Field: "x"},
			{Func: "min", Field: "x"}, {Func: "max", Field: "x"}, {Func: "stddev", Field: "x"},
			{Func: "first", Field: "s"}, {Func: "last", Field: "s"},
			{Output: "median", Func: "p50", Field: "x"}, {Func: "p99", Field: "x"},
		},
	})
	// Arrival order differs from time order; "b" and "b2" tie for the
	// earliest time (the earlier arrival is first), "h" and "h2" for the
	// latest (the later arrival is last).
	in := []struct {
		at time.Duration
		x  float64
		s  any
	}{
		{10 * time.Second, 3, "c"},
		{5 * time.Second, 1, "b"},
		{20 * time.Second, 4, "d"},
		{5 * time.Second, 1, "b2"},
		{30 * time.Second, 5, map[string]any{"k": []any{1.0, "v"}}},
		{50 * time.Second, 9, "h"},
		{40 * time.Second, 2, nil},
		{50 * time.Second, 6, "h2"},
	}
	var out []*record.Record
	for _, r := range in {
		if err := w.Process(winRec("dev", r.at, map[string]any{"x": r.x, "s": r.s}), winCollect(&out)); err != nil {
			t.Fatal(err)
		}
	}
	w.Advance(winT0.Add(time.Minute), winCollect(&out))
	if len(out) != 1 {
		t.Fatalf("got %d outputs, want 1", len(out))
	}
	// x = 3 1 4 1 5 9 2 6: sum 31, mean 3.875, squared deviations sum to
	// 52.875, population variance 52.875/8.
	want := map[string]any{
		"count": 8.0, "sum_x": 31.0, "avg_x": 3.875, "min_x": 1.0, "max_x": 9.0,
		"stddev_x": math.Sqrt(52.875 / 8), "first_s": "b", "last_s": "h2",
		"window_start": "2025-03-01T10:00:00Z", "window_end": "2025-03-01T10:01:00Z",
	}
	got := out[0].Fields
	for k, v := range want {
		if g, ok := got[k]; !ok || !winEqual(g, v) {
			t.Errorf("%s = %v, want %v", k, g, v)
		}
	}
	// Sorted: 1 1 2 3 4 5 6 9. p50 is rank 0.5*7 = 3.5 -> the 4th value
	// (3); p99 is rank 6.93 -> the 7th (6); both within 1%.
	for k, exact := range map[string]float64{"median": 3, "p99_x": 6} {
		g, _ := got[k].(float64)
		if math.Abs(g-exact) > 0.01*exact {
			t.Errorf("%s = %v, want %v within 1%%", k, g, exact)
		}
	}
	if len(got) != len(want)+2 {
		t.Errorf("fields %v: want exactly %d", got, len(want)+2)
	}
	if out[0].Key != "agg//"+strconv.FormatInt(winT0.UnixNano(), 10) || !out[0].Time.Equal(winT0.Add(time.Minute)) || out[0].Source != "" {
		t.Errorf("record %q %v %q", out[0].Key, out[0].Time, out[0].Source)
	}
}

func winEqual(a, b any) bool {
	if fa, ok := a.(float64); ok {
		fb, ok := b.(float64)
		return ok && (fa == fb || math.Abs(fa-fb) <= 1e-12*math.Abs(fb))
	}
	switch a.(type) {
	case map[string]any, []any:
		return false // not compared here
	}
	return a == b
}

// TestPercentilesAccuracy checks every percentile the sketch reports
// against the exact value of the same rank over 10,000 values.
func TestPercentilesAccuracy(t *testing.T) {
	dists := []struct {
		name string
		gen  func(r *rand.Rand) float64
	}{
		{"uniform 1..1000", func(r *rand.Rand) float64 { return 1 + 999*r.Float64() }},
		{"lognormal", func(r *rand.Rand) float64 { return math.Exp(3 + 1.5*r.NormFloat64()) }},
		{"negative", func(r *rand.Rand) float64 { return -1 - 99*r.Float64() }},
		// Temperatures in tenths of a degree: both signs and exact zeros.
		{"mixed sign", func(r *rand.Rand) float64 { return math.Round(-200+600*r.Float64()) / 10 }},
	}
	qs := []int{1, 5, 25, 50, 75, 90, 95, 99}
	for _, d := range dists {
		t.Run(d.name, func(t *testing.T) {
			var aggs []Aggregate
			for _, q := range qs {
				aggs = append(aggs, Aggregate{Output: "q" + strconv.Itoa(q), Func: "p" + strconv.Itoa(q), Field: "v"})
			}
			w := winMust(t, Config{Name: "p", Size: time.Hour, EventTime: true, Aggregates: aggs})
			rng := rand.New(rand.NewPCG(1, 2))
			vals := make([]float64, 10_000)
			for i := range vals {
				vals[i] = d.gen(rng)
				if err := w.Process(winRec("d", time.Duration(i)*time.Millisecond, map[string]any{"v": vals[i]}), nil); err != nil {
					t.Fatal(err)
				}
			}
			var out []*record.Record
			w.Advance(winT0.Add(time.Hour), winCollect(&out))
			slices.Sort(vals)
			for _, q := range qs {
				// The exact percentile lies between the values at the ranks
				// either side of q*(n-1) (the sketch takes the lower rank of
				// |v|, so for negative values the upper one).
				rank := float64(q) / 100 * float64(len(vals)-1)
				lo, hi := vals[int(math.Floor(rank))], vals[int(math.Ceil(rank))]
				got := out[0].Fields["q"+strconv.Itoa(q)].(float64)
				if got < lo-0.01*math.Abs(lo) || got > hi+0.01*math.Abs(hi) {
					t.Errorf("p%d = %v, exact %v..%v: more than 1%% off", q, got, lo, hi)
				}
			}
		})
	}
}

func TestFieldErrorsAllOrNothing(t *testing.T) {
	cfg := Config{
		Name: "f", Size: time.Minute, EventTime: true, GroupBy: []string{"room"},
		Aggregates: []Aggregate{{Func: "avg", Field: "temp"}, {Func: "max", Field: "hum"}, {Func: "p95", Field: "temp"}, {Func: "last", Field: "state"}},
	}
	good := func() map[string]any { return map[string]any{"room": "a", "temp": 20.0, "hum": 50.0, "state": "on"} }
	tests := []struct {
		name   string
		mutate func(map[string]any)
		want   string
	}{
		{"numeric field missing", func(f map[string]any) { delete(f, "hum") }, `"hum" missing`},
		{"numeric field a string", func(f map[string]any) { f["temp"] = "20.5" }, "not a number"},
		{"numeric field a bool", func(f map[string]any) { f["hum"] = true }, "not a number"},
		{"numeric field nil", func(f map[string]any) { f["hum"] = nil }, "not a number"},
		{"NaN", func(f map[string]any) { f["temp"] = math.NaN() }, "finite"},
		{"infinity", func(f map[string]any) { f["hum"] = math.Inf(-1) }, "finite"},
		{"first/last field missing", func(f map[string]any) { delete(f, "state") }, `"state" missing`},
		{"group_by field missing", func(f map[string]any) { delete(f, "room") }, `group_by field "room" missing`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := winMust(t, cfg)
			var out []*record.Record
			if err := w.Process(winRec("d", time.Second, good()), winCollect(&out)); err != nil {
				t.Fatal(err)
			}
			bad := good()
			bad["temp"], bad["hum"] = 1000.0, 1000.0 // would show in avg, max and p95
			tt.mutate(bad)
			// A later time that would also have closed nothing: the record
			// must leave no trace at all.
			err := w.Process(winRec("d", 2*time.Second, bad), winCollect(&out))
			if !errors.Is(err, record.ErrField) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v: want ErrField containing %s", err, tt.want)
			}
			if st := w.Stats(); st.OpenGroups != 1 || st.OpenWindows != 1 {
				t.Fatalf("stats %+v after a rejected record", st)
			}
			w.Advance(winT0.Add(time.Minute), winCollect(&out))
			if len(out) != 1 {
				t.Fatalf("%d outputs", len(out))
			}
			f := out[0].Fields
			if f["count"] != 1.0 || f["avg_temp"] != 20.0 || f["max_hum"] != 50.0 || f["last_state"] != "on" {
				t.Fatalf("rejected record contributed: %v", f)
			}
			if p := f["p95_temp"].(float64); math.Abs(p-20) > 0.2 {
				t.Fatalf("rejected record reached the sketch: p95 %v", p)
			}
		})
	}
}

func TestNumericTypesAndNonFiniteResults(t *testing.T) {
	w := winMust(t, Config{Name: "n", Size: time.Minute, Aggregates: []Aggregate{{Func: "sum", Field: "x"}, {Func: "avg", Field: "x"}}})
	var out []*record.Record
	w.Advance(winT0, nil)
	for _, v := range []any{int(1), int64(2), float32(0.5), uint32(3)} {
		if err := w.Process(winRec("d", 0, map[string]any{"x": v}), nil); err != nil {
			t.Fatalf("%T: %v", v, err)
		}
	}
	w.Advance(winT0.Add(time.Minute), winCollect(&out))
	if out[0].Fields["sum_x"] != 6.5 {
		t.Fatalf("sum %v", out[0].Fields["sum_x"])
	}
	// A sum that overflows float64 is nil, which JSON can carry.
	for range 2 {
		if err := w.Process(winRec("d", 0, map[string]any{"x": math.MaxFloat64}), nil); err != nil {
			t.Fatal(err)
		}
	}
	out = nil
	w.Advance(winT0.Add(2*time.Minute), winCollect(&out))
	if v, ok := out[0].Fields["sum_x"]; !ok || v != nil {
		t.Fatalf("overflowed sum = %v, want nil", v)
	}
}

// FuzzDecodeSketch feeds the sketch decoder arbitrary bytes: it must
// return a sketch or an error, never panic, and a sketch it returns must
// hold the count asked for and answer quantiles.
func FuzzDecodeSketch(f *testing.F) {
	for _, vals := range [][]float64{{1}, {0, -1, 2.5}, {1e-300, 1e300, -7}} {
		s := newSketch()
		for _, v := range vals {
			_ = s.Add(v)
		}
		f.Add(encodeSketch(s), int64(len(vals)))
	}
	wide := newSketch()
	for i := range 5000 {
		_ = wide.Add(math.Pow(1.01, float64(i%2000)) * float64(1-2*(i%2)))
	}
	f.Add(encodeSketch(wide), int64(5000))
	f.Fuzz(func(t *testing.T, b []byte, count int64) {
		s, err := decodeSketch(b, count)
		if err != nil {
			return
		}
		if s.GetCount() != float64(count) {
			t.Fatalf("count %v, want %d", s.GetCount(), count)
		}
		if count > 0 {
			if _, err := s.GetValueAtQuantile(0.95); err != nil {
				t.Fatal(err)
			}
		}
		_ = s.Add(1)
		_ = sketchBytes(s)
	})
}
