package window

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/rules/record"
)

// winSummary renders outputs compactly for comparison: key, time, source
// and count.
func winSummary(out []*record.Record) []string {
	var s []string
	for _, r := range out {
		s = append(s, fmt.Sprintf("%s @%s src=%q n=%v", r.Key, r.Time.Sub(winT0), r.Source, r.Fields["count"]))
	}
	return s
}

func winKey(name, group string, start time.Duration) string {
	return name + "/" + group + "/" + strconv.FormatInt(winT0.Add(start).UnixNano(), 10)
}

func TestWindowTumblingAndHopping(t *testing.T) {
	s := time.Second
	tests := []struct {
		name   string
		cfg    Config
		at     []time.Duration // record times, device "d"
		flush  time.Duration
		want   []string
		starts []time.Duration // window_start of each output
	}{
		{
			name:  "tumbling",
			cfg:   Config{Name: "w", Size: 10 * s, EventTime: true, GroupBy: []string{"source"}},
			at:    []time.Duration{1 * s, 9 * s, 10 * s, 25 * s},
			flush: time.Minute,
			want: []string{
				"w/d/" + strconv.FormatInt(winT0.UnixNano(), 10) + " @10s src=\"d\" n=2",
				"w/d/" + strconv.FormatInt(winT0.Add(10*s).UnixNano(), 10) + " @20s src=\"d\" n=1",
				"w/d/" + strconv.FormatInt(winT0.Add(20*s).UnixNano(), 10) + " @30s src=\"d\" n=1",
			},
		},
		{
			// [-5,5): 2. [0,10): 2 7. [5,15): 7 12. [10,20): 12.
			name:  "hopping",
			cfg:   Config{Name: "h", Size: 10 * s, Hop: 5 * s, EventTime: true, GroupBy: []string{"source"}},
			at:    []time.Duration{2 * s, 7 * s, 12 * s},
			flush: time.Minute,
			want: []string{
				"h/d/" + strconv.FormatInt(winT0.Add(-5*s).UnixNano(), 10) + " @5s src=\"d\" n=1",
				"h/d/" + strconv.FormatInt(winT0.UnixNano(), 10) + " @10s src=\"d\" n=2",
				"h/d/" + strconv.FormatInt(winT0.Add(5*s).UnixNano(), 10) + " @15s src=\"d\" n=2",
				"h/d/" + strconv.FormatInt(winT0.Add(10*s).UnixNano(), 10) + " @20s src=\"d\" n=1",
			},
		},
		{
			name:  "hop equal to size is tumbling",
			cfg:   Config{Name: "t", Size: 10 * s, Hop: 10 * s, EventTime: true},
			at:    []time.Duration{3 * s, 4 * s},
			flush: time.Minute,
			want:  []string{"t//" + strconv.FormatInt(winT0.UnixNano(), 10) + " @10s src=\"\" n=2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := winMust(t, tt.cfg)
			var out []*record.Record
			for _, at := range tt.at {
				if err := w.Process(winRec("d", at, map[string]any{}), winCollect(&out)); err != nil {
					t.Fatal(err)
				}
			}
			w.Advance(winT0.Add(tt.flush), winCollect(&out))
			if got := winSummary(out); !slices.Equal(got, tt.want) {
				t.Fatalf("outputs\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			for _, r := range out {
				start, _ := time.Parse(time.RFC3339Nano, r.Fields["window_start"].(string))
				end, _ := time.Parse(time.RFC3339Nano, r.Fields["window_end"].(string))
				if !end.Equal(r.Time) || end.Sub(start) != tt.cfg.Size || !strings.HasSuffix(r.Key, "/"+strconv.FormatInt(start.UnixNano(), 10)) {
					t.Errorf("%s: window %v..%v, time %v", r.Key, start, end, r.Time)
				}
			}
		})
	}
}

func TestWindowEventTimeLateness(t *testing.T) {
	s := time.Second
	// One-minute windows with 10 s of allowed lateness.
	tests := []struct {
		name    string
		at      []time.Duration
		late    int // index of a record that must be rejected as late, or -1
		outputs int // after processing, before any Advance
		count0  float64
	}{
		{"on time", []time.Duration{30 * s, 50 * s}, -1, 0, 2},
		// 1:05 does not close [0,1:00) (it closes at 1:10): 0:50 joins it.
		{"late but allowed", []time.Duration{30 * s, 65 * s, 50 * s}, -1, 0, 2},
		// 1:15 closes [0,1:00) and emits it; 0:55 is then too late.
		{"too late", []time.Duration{30 * s, 75 * s, 55 * s}, 2, 1, 1},
		// Exactly at end+lateness closes the window.
		{"at the boundary", []time.Duration{30 * s, 70 * s, 59 * s}, 2, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := winMust(t, Config{Name: "l", Size: time.Minute, EventTime: true, AllowedLateness: 10 * s, GroupBy: []string{"source"}})
			var out []*record.Record
			for i, at := range tt.at {
				err := w.Process(winRec("d", at, map[string]any{}), winCollect(&out))
				if i == tt.late {
					if !errors.Is(err, record.ErrField) || !errors.Is(err, ErrLate) || !strings.Contains(err.Error(), "late") {
						t.Fatalf("record %d: error %v, want ErrField and ErrLate", i, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
			}
			if len(out) != tt.outputs {
				t.Fatalf("%d outputs before Advance, want %d: %v", len(out), tt.outputs, winSummary(out))
			}
			w.Advance(winT0.Add(time.Hour), winCollect(&out))
			if out[0].Fields["count"] != tt.count0 || out[0].Key != winKey("l", "d", 0) {
				t.Fatalf("first window %v", winSummary(out))
			}
		})
	}
}

func TestWindowAdvanceClosesIdleGroupsEventTime(t *testing.T) {
	w := winMust(t, Config{Name: "a", Size: time.Minute, EventTime: true, AllowedLateness: 5 * time.Second, GroupBy: []string{"source"}})
	var out []*record.Record
	if err := w.Process(winRec("quiet", 10*time.Second, map[string]any{}), winCollect(&out)); err != nil {
		t.Fatal(err)
	}
	w.Advance(winT0.Add(64*time.Second), winCollect(&out))
	if len(out) != 0 {
		t.Fatalf("closed before end+lateness: %v", winSummary(out))
	}
	w.Advance(winT0.Add(65*time.Second), winCollect(&out))
	if len(out) != 1 {
		t.Fatalf("not closed at end+lateness: %v", winSummary(out))
	}
	// The Advance moved the watermark: a record for the closed window is late.
	if err := w.Process(winRec("quiet", 59*time.Second, map[string]any{}), nil); !errors.Is(err, ErrLate) {
		t.Fatalf("record for a window closed by Advance: %v, want ErrLate", err)
	}
	// Advance backwards is a no-op.
	w.Advance(winT0, winCollect(&out))
	if err := w.Process(winRec("quiet", 70*time.Second, map[string]any{}), nil); err != nil {
		t.Fatal(err)
	}
}

func TestWindowHoppingPartlyLate(t *testing.T) {
	// 10 s windows every 5 s, no lateness.
	s := time.Second
	w := winMust(t, Config{Name: "p", Size: 10 * s, Hop: 5 * s, EventTime: true})
	var out []*record.Record
	// 1 s goes to [-5,5) and [0,10); 11 s moves the watermark past both
	// ends, closing them, and goes to [5,15) and [10,20).
	for _, at := range []time.Duration{1 * s, 11 * s} {
		if err := w.Process(winRec("d", at, map[string]any{}), winCollect(&out)); err != nil {
			t.Fatal(err)
		}
	}
	// 7 s belongs to [0,10) (closed at watermark 11) and [5,15) (open):
	// it goes to [5,15) only.
	if err := w.Process(winRec("d", 7*s, map[string]any{}), winCollect(&out)); err != nil {
		t.Fatal(err)
	}
	w.Advance(winT0.Add(time.Minute), winCollect(&out))
	want := []string{
		winKey("p", "", -5*s) + " @5s src=\"\" n=1",
		winKey("p", "", 0) + " @10s src=\"\" n=1",
		winKey("p", "", 5*s) + " @15s src=\"\" n=2",
		winKey("p", "", 10*s) + " @20s src=\"\" n=1",
	}
	if got := winSummary(out); !slices.Equal(got, want) {
		t.Fatalf("outputs\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestWindowProcessingTime(t *testing.T) {
	w := winMust(t, Config{Name: "pt", Size: time.Minute, GroupBy: []string{"source"}, Aggregates: []Aggregate{{Func: "last", Field: "v"}}})
	var out []*record.Record
	// Before any Advance a record goes by its own time.
	if err := w.Process(winRec("d", -30*time.Second, map[string]any{"v": "early"}), winCollect(&out)); err != nil {
		t.Fatal(err)
	}
	w.Advance(winT0, winCollect(&out))
	if len(out) != 1 || out[0].Key != winKey("pt", "d", -time.Minute) {
		t.Fatalf("pre-Advance record: %v", winSummary(out))
	}
	out = nil
	// Record times are ignored now: both go to [0,1m), the window of the
	// last Advance, even the one stamped a day ago.
	for _, at := range []time.Duration{-24 * time.Hour, 5 * time.Hour} {
		if err := w.Process(winRec("d", at, map[string]any{"v": at.String()}), winCollect(&out)); err != nil {
			t.Fatal(err)
		}
	}
	w.Advance(winT0.Add(59*time.Second), winCollect(&out))
	if len(out) != 0 {
		t.Fatalf("closed early: %v", winSummary(out))
	}
	if err := w.Process(winRec("e", 0, map[string]any{"v": "e"}), winCollect(&out)); err != nil {
		t.Fatal(err)
	}
	w.Advance(winT0.Add(time.Minute), winCollect(&out))
	want := []string{
		winKey("pt", "d", 0) + " @1m0s src=\"d\" n=2",
		winKey("pt", "e", 0) + " @1m0s src=\"e\" n=1",
	}
	if got := winSummary(out); !slices.Equal(got, want) {
		t.Fatalf("outputs\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// last is by record time, not arrival.
	if out[0].Fields["last_v"] != "5h0m0s" {
		t.Fatalf("last = %v", out[0].Fields["last_v"])
	}
	// Far-apart record times are no clock jump in processing time.
	if err := w.Process(winRec("d", 1000*time.Hour, map[string]any{"v": 1.0}), nil); err != nil {
		t.Fatal(err)
	}
}

func TestWindowGroupBy(t *testing.T) {
	tests := []struct {
		name    string
		groupBy []string
		recs    []*record.Record
		want    []string         // keys, in emission order
		fields  []map[string]any // group-by fields of each output
		srcs    []string
		topics  []string
	}{
		{
			name:    "one key: source",
			groupBy: []string{"source"},
			recs:    []*record.Record{winRec("b", 1, nil), winRec("a", 2, nil), winRec("b", 3, nil)},
			want:    []string{winKey("g", "a", 0), winKey("g", "b", 0)},
			fields:  []map[string]any{{"source": "a"}, {"source": "b"}},
			srcs:    []string{"a", "b"},
			topics:  []string{"", ""},
		},
		{
			name:    "one key: a numeric field",
			groupBy: []string{"floor"},
			recs: []*record.Record{
				winRec("a", 1, map[string]any{"floor": 2.0}), winRec("b", 2, map[string]any{"floor": 1e6}),
				winRec("c", 3, map[string]any{"floor": 2.0}),
			},
			want:   []string{winKey("g", "1e+06", 0), winKey("g", "2", 0)},
			fields: []map[string]any{{"floor": 1e6}, {"floor": 2.0}},
			srcs:   []string{"", ""},
			topics: []string{"", ""},
		},
		{
			name:    "two keys: source and a field",
			groupBy: []string{"source", "room"},
			recs: []*record.Record{
				winRec("a", 1, map[string]any{"room": "k"}), winRec("a", 2, map[string]any{"room": "l"}),
				winRec("a", 3, map[string]any{"room": "k"}), winRec("b", 4, map[string]any{"room": true}),
			},
			want:   []string{winKey("g", "a/k", 0), winKey("g", "a/l", 0), winKey("g", "b/true", 0)},
			fields: []map[string]any{{"source": "a", "room": "k"}, {"source": "a", "room": "l"}, {"source": "b", "room": true}},
			srcs:   []string{"a", "a", "b"},
			topics: []string{"", "", ""},
		},
		{
			// "a/b" then "c" and "a" then "b/c" must be two groups.
			name:    "escaping keeps keys unambiguous",
			groupBy: []string{"source", "room"},
			recs: []*record.Record{
				winRec("a/b", 1, map[string]any{"room": "c"}), winRec("a", 2, map[string]any{"room": "b/c"}),
				winRec("50%", 3, map[string]any{"room": nil}),
			},
			want:   []string{winKey("g", "50%25/<nil>", 0), winKey("g", "a%2Fb/c", 0), winKey("g", "a/b%2Fc", 0)},
			fields: []map[string]any{{"source": "50%", "room": nil}, {"source": "a/b", "room": "c"}, {"source": "a", "room": "b/c"}},
			srcs:   []string{"50%", "a/b", "a"},
			topics: []string{"", "", ""},
		},
		{
			name:    "topic",
			groupBy: []string{"topic"},
			recs:    []*record.Record{winRec("x", 1, nil), winRec("y", 2, nil)},
			want:    []string{winKey("g", "t%2Fx", 0), winKey("g", "t%2Fy", 0)},
			fields:  []map[string]any{{"topic": "t/x"}, {"topic": "t/y"}},
			srcs:    []string{"", ""},
			topics:  []string{"t/x", "t/y"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := winMust(t, Config{Name: "g", Size: time.Minute, EventTime: true, GroupBy: tt.groupBy})
			var out []*record.Record
			for _, r := range tt.recs {
				if err := w.Process(r, winCollect(&out)); err != nil {
					t.Fatal(err)
				}
			}
			w.Advance(winT0.Add(time.Minute), winCollect(&out))
			if len(out) != len(tt.want) {
				t.Fatalf("outputs %v, want keys %v", winSummary(out), tt.want)
			}
			for i, r := range out {
				if r.Key != tt.want[i] || r.Source != tt.srcs[i] || r.Topic != tt.topics[i] {
					t.Errorf("output %d: key %q source %q topic %q; want %q %q %q", i, r.Key, r.Source, r.Topic, tt.want[i], tt.srcs[i], tt.topics[i])
				}
				for k, v := range tt.fields[i] {
					if got, ok := r.Fields[k]; !ok || got != v {
						t.Errorf("output %d: %s = %v, want %v", i, k, got, v)
					}
				}
			}
		})
	}
}

func TestWindowMaxGroups(t *testing.T) {
	w := winMust(t, Config{Name: "m", Size: time.Minute, EventTime: true, GroupBy: []string{"source"}, MaxGroups: 3})
	var out []*record.Record
	for _, d := range []string{"a", "b", "c"} {
		if err := w.Process(winRec(d, time.Second, map[string]any{}), winCollect(&out)); err != nil {
			t.Fatal(err)
		}
	}
	err := w.Process(winRec("d", 2*time.Second, map[string]any{}), winCollect(&out))
	if !errors.Is(err, record.ErrField) || !errors.Is(err, ErrTooManyGroups) || !strings.Contains(err.Error(), "too many groups") {
		t.Fatalf("4th group: %v, want ErrField and ErrTooManyGroups", err)
	}
	// Existing groups still take records.
	if err := w.Process(winRec("a", 3*time.Second, map[string]any{}), winCollect(&out)); err != nil {
		t.Fatal(err)
	}
	if st := w.Stats(); st.OpenGroups != 3 {
		t.Fatalf("stats %+v", st)
	}
	// A new group whose record closes the full window (the watermark
	// passes its end) fits: the closing frees the groups first.
	if err := w.Process(winRec("d", 61*time.Second, map[string]any{}), winCollect(&out)); err != nil {
		t.Fatalf("record closing the full window: %v", err)
	}
	if len(out) != 3 || w.Stats().OpenGroups != 1 {
		t.Fatalf("outputs %v, stats %+v", winSummary(out), w.Stats())
	}
	// Hopping: a group counts once per window.
	h := winMust(t, Config{Name: "m", Size: time.Minute, Hop: 30 * time.Second, EventTime: true, GroupBy: []string{"source"}, MaxGroups: 3})
	if err := h.Process(winRec("a", time.Second, nil), nil); err != nil {
		t.Fatal(err)
	}
	if err := h.Process(winRec("b", time.Second, nil), nil); !errors.Is(err, ErrTooManyGroups) {
		t.Fatalf("hopping: %v, want ErrTooManyGroups (2+2 > 3)", err)
	}
	// Default bound.
	d := winMust(t, Config{Name: "m", Size: time.Minute, EventTime: true, GroupBy: []string{"source"}})
	for i := range DefaultMaxGroups + 1 {
		err := d.Process(winRec(strconv.Itoa(i), time.Second, nil), nil)
		if (i < DefaultMaxGroups) != (err == nil) {
			t.Fatalf("group %d: %v", i, err)
		}
	}
}

func TestWindowClockJump(t *testing.T) {
	w := winMust(t, Config{Name: "j", Size: time.Minute, EventTime: true, GroupBy: []string{"source"}})
	var out []*record.Record
	if err := w.Process(winRec("a", time.Second, map[string]any{}), winCollect(&out)); err != nil {
		t.Fatal(err)
	}
	err := w.Process(winRec("broken", time.Second+MaxClockJump+time.Nanosecond, map[string]any{}), winCollect(&out))
	if !errors.Is(err, record.ErrField) || !errors.Is(err, ErrClockJump) || !strings.Contains(err.Error(), "clock jump") {
		t.Fatalf("far-future record: %v, want ErrField and ErrClockJump", err)
	}
	if len(out) != 0 {
		t.Fatalf("far-future record closed windows: %v", winSummary(out))
	}
	// The watermark did not move: an on-time record still counts.
	if err := w.Process(winRec("a", 2*time.Second, map[string]any{}), winCollect(&out)); err != nil {
		t.Fatal(err)
	}
	// Exactly MaxClockJump ahead is accepted.
	if err := w.Process(winRec("b", time.Second+MaxClockJump, map[string]any{}), winCollect(&out)); err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].Fields["count"] != 2.0 {
		t.Fatalf("outputs %v", winSummary(out))
	}
	// Times the window cannot represent are field errors.
	for _, tm := range []time.Time{{}, time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)} {
		r := winRec("a", 0, nil)
		r.Time = tm
		if err := w.Process(r, nil); !errors.Is(err, record.ErrField) {
			t.Fatalf("time %v: %v", tm, err)
		}
	}
}

// winStream is a reproducible stream of records from n devices with event
// times going mostly forward, some out of order.
func winStream(seed uint64, n, devices int) []*record.Record {
	rng := rand.New(rand.NewPCG(seed, 7))
	recs := make([]*record.Record, n)
	at := time.Duration(0)
	for i := range recs {
		at += time.Duration(rng.IntN(400)) * time.Millisecond
		jitter := time.Duration(rng.IntN(3000)) * time.Millisecond // up to 3 s out of order
		if rng.IntN(50) == 0 {
			jitter = 20 * time.Second // a straggler, mostly too late
		}
		dev := "dev" + strconv.Itoa(rng.IntN(devices))
		v := math.Exp(4*rng.NormFloat64()) * float64(1-2*rng.IntN(2)) // wide range, both signs: collapses sketches
		if rng.IntN(10) == 0 {
			v = 0 // the sketches' zero bucket
		}
		fields := map[string]any{"v": v, "room": float64(rng.IntN(3)), "state": []any{float64(i), "s"}}
		recs[i] = &record.Record{Key: strconv.Itoa(i), Time: winT0.Add(at - jitter), Source: dev, Topic: "t/" + dev, Fields: fields}
	}
	return recs
}

func winFullConfig() Config {
	return Config{
		Name: "full", Size: 10 * time.Second, Hop: 5 * time.Second, EventTime: true, AllowedLateness: time.Second,
		GroupBy: []string{"source", "room"},
		Aggregates: []Aggregate{
			{Func: "count"}, {Func: "sum", Field: "v"}, {Func: "avg", Field: "v"}, {Func: "min", Field: "v"},
			{Func: "max", Field: "v"}, {Func: "stddev", Field: "v"}, {Func: "first", Field: "state"},
			{Func: "last", Field: "state"}, {Func: "p50", Field: "v"}, {Func: "p95", Field: "v"}, {Func: "p99", Field: "v"},
		},
	}
}

// winRun processes recs through w, advancing every 50 records as a runner
// would, and returns the outputs and the number of records rejected.
func winRun(t testing.TB, w *Window, recs []*record.Record, out *[]*record.Record) (rejected int) {
	for i, r := range recs {
		if err := w.Process(r, winCollect(out)); err != nil {
			if !errors.Is(err, ErrLate) {
				t.Fatalf("record %d: %v", i, err)
			}
			rejected++
		}
		if i%50 == 49 {
			w.Advance(r.Time.Add(-5*time.Second), winCollect(out))
		}
	}
	return rejected
}

func TestWindowExactlyOneEmitAndOrder(t *testing.T) {
	recs := winStream(1, 20_000, 20)
	w := winMust(t, winFullConfig())
	var out []*record.Record
	rejected := winRun(t, w, recs, &out)
	w.Advance(winT0.Add(1000*time.Hour), winCollect(&out))
	if st := w.Stats(); st.OpenGroups != 0 || st.OpenWindows != 0 {
		t.Fatalf("state left after the final Advance: %+v", st)
	}
	seen := map[string]bool{}
	total := 0.0
	for i, r := range out {
		if seen[r.Key] {
			t.Fatalf("window %s emitted twice", r.Key)
		}
		seen[r.Key] = true
		total += r.Fields["count"].(float64)
		if i > 0 {
			p := out[i-1]
			if r.Time.Before(p.Time) || r.Time.Equal(p.Time) && r.Key <= p.Key {
				t.Fatalf("order: %s @%v after %s @%v", r.Key, r.Time, p.Key, p.Time)
			}
		}
	}
	// Every accepted record counts in its two windows, bar the few that
	// arrived when the older one had closed: count exactly.
	if total < float64(2*(len(recs)-rejected))-float64(len(recs))/10 || total > float64(2*(len(recs)-rejected)) {
		t.Fatalf("counts add to %v for %d accepted records", total, len(recs)-rejected)
	}
	if rejected == 0 || rejected > len(recs)/10 {
		t.Fatalf("%d late records: the stream should have a few", rejected)
	}
	// The same input from the same (empty) state gives the same output.
	w2 := winMust(t, winFullConfig())
	var out2 []*record.Record
	winRun(t, w2, recs, &out2)
	w2.Advance(winT0.Add(1000*time.Hour), winCollect(&out2))
	if !reflect.DeepEqual(out, out2) {
		t.Fatal("two runs over the same input differ")
	}
}

func TestWindowStateRoundTrip(t *testing.T) {
	recs := winStream(2, 12_000, 15)
	tests := []struct {
		name string
		cfg  Config
	}{
		{"event time hopping, every aggregate", winFullConfig()},
		{"processing time tumbling", Config{Name: "pt", Size: 3 * time.Second, GroupBy: []string{"topic"},
			Aggregates: []Aggregate{{Func: "p90", Field: "v"}, {Func: "stddev", Field: "v"}, {Func: "first", Field: "state"}}}},
		{"no group_by", Config{Name: "ng", Size: time.Minute, EventTime: true, AllowedLateness: 3 * time.Second,
			Aggregates: []Aggregate{{Func: "p99", Field: "v"}, {Func: "avg", Field: "v"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, cut := range []int{1, 5_000, 7_777} {
				// Uninterrupted.
				w := winMust(t, tt.cfg)
				var want []*record.Record
				winRun(t, w, recs, &want)
				w.Advance(winT0.Add(1000*time.Hour), winCollect(&want))

				// Stopped at cut, restored into a new window.
				w1 := winMust(t, tt.cfg)
				var got []*record.Record
				winRun(t, w1, recs[:cut], &got)
				st, err := w1.MarshalState()
				if err != nil {
					t.Fatal(err)
				}
				again, _ := w1.MarshalState()
				if !bytes.Equal(st, again) {
					t.Fatal("MarshalState is not deterministic")
				}
				w2 := winMust(t, tt.cfg)
				if err := w2.UnmarshalState(st); err != nil {
					t.Fatalf("UnmarshalState: %v", err)
				}
				if re, _ := w2.MarshalState(); !bytes.Equal(st, re) {
					t.Fatal("restored state marshals differently")
				}
				if w1.Stats() != w2.Stats() {
					t.Fatalf("stats %+v, restored %+v", w1.Stats(), w2.Stats())
				}
				// winRun advances every 50 records counted from the slice
				// start: keep the cadence by cutting on a multiple of 50
				// or advancing as the uninterrupted run did.
				for i, r := range recs[cut:] {
					if err := w2.Process(r, winCollect(&got)); err != nil && !errors.Is(err, ErrLate) {
						t.Fatal(err)
					}
					if (cut+i)%50 == 49 {
						w2.Advance(r.Time.Add(-5*time.Second), winCollect(&got))
					}
				}
				w2.Advance(winT0.Add(1000*time.Hour), winCollect(&got))
				if len(got) != len(want) {
					t.Fatalf("cut %d: %d outputs, uninterrupted %d", cut, len(got), len(want))
				}
				for i := range want {
					// Bit for bit, percentiles included: DeepEqual on float64
					// is ==, and NaN never occurs here.
					if !reflect.DeepEqual(got[i], want[i]) {
						t.Fatalf("cut %d: output %d differs:\n got  %s %v\n want %s %v", cut, i, got[i].Key, got[i].Fields, want[i].Key, want[i].Fields)
					}
				}
			}
		})
	}
}

func TestWindowUnmarshalStateGarbage(t *testing.T) {
	cfg := winFullConfig()
	w := winMust(t, cfg)
	var out []*record.Record
	winRun(t, w, winStream(3, 500, 5), &out)
	valid, err := w.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	other := cfg
	other.GroupBy = []string{"source"}
	wo := winMust(t, other)
	winRun(t, wo, winStream(3, 100, 5), &out)
	otherState, _ := wo.MarshalState()

	corrupt := func(f func(s *savedState)) []byte {
		var st savedState
		if err := stateDec.Unmarshal(valid, &st); err != nil {
			t.Fatal(err)
		}
		f(&st)
		b, err := stateEnc.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"random bytes", []byte("\x9f\xff\x00garbage\x01\x02")},
		{"truncated", valid[:len(valid)/2]},
		{"trailing bytes", append(slices.Clone(valid), 0)},
		{"CBOR of another shape", []byte{0xa1, 0x61, 0x61, 0x01}},
		{"another configuration", otherState},
		{"version", corrupt(func(s *savedState) { s.Version = 9 })},
		{"clock out of range", corrupt(func(s *savedState) { s.Clock = math.MaxInt64 })},
		{"window start off the hop grid", corrupt(func(s *savedState) { s.Windows[0].Start++ })},
		{"windows out of order", corrupt(func(s *savedState) { s.Windows[0], s.Windows[1] = s.Windows[1], s.Windows[0] })},
		{"groups out of order", corrupt(func(s *savedState) {
			g := s.Windows[0].Groups
			g = append(g, g[0])
			s.Windows[0].Groups = g
		})},
		{"key not matching values", corrupt(func(s *savedState) { s.Windows[0].Groups[0].Key = "zzz" })},
		{"count zero", corrupt(func(s *savedState) { s.Windows[0].Groups[0].Count = 0 })},
		{"count not matching the sketch", corrupt(func(s *savedState) { s.Windows[0].Groups[0].Count++ })},
		{"missing accumulator", corrupt(func(s *savedState) { s.Windows[0].Groups[0].Nums = nil })},
		{"sketch bytes garbage", corrupt(func(s *savedState) { s.Windows[0].Groups[0].Sketches[0] = []byte{0xff, 0xff, 0xff} })},
		{"sketch huge index", corrupt(func(s *savedState) {
			// Positive store (type 0b01), bins of count 1 by index deltas
			// (subflag 2): one bin at index 2^62.
			s.Windows[0].Groups[0].Sketches[0] = []byte{0x09, 0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80}
		})},
		{"value of a foreign type", corrupt(func(s *savedState) { s.Windows[0].Groups[0].Anys[0].First = []byte{1} })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w2 := winMust(t, cfg)
			if err := w2.UnmarshalState(valid); err != nil {
				t.Fatal(err)
			}
			before := w2.Stats()
			err := w2.UnmarshalState(tt.b)
			if !errors.Is(err, record.ErrState) {
				t.Fatalf("UnmarshalState: %v, want ErrState", err)
			}
			if after, _ := w2.MarshalState(); w2.Stats() != before || !bytes.Equal(after, valid) {
				t.Fatal("a failed UnmarshalState changed the window")
			}
		})
	}
	t.Run("empty resets", func(t *testing.T) {
		w2 := winMust(t, cfg)
		if err := w2.UnmarshalState(valid); err != nil {
			t.Fatal(err)
		}
		if err := w2.UnmarshalState(nil); err != nil || w2.Stats() != (Stats{}) {
			t.Fatalf("UnmarshalState(nil): %v, %+v", err, w2.Stats())
		}
	})
}

func FuzzWindowUnmarshalState(f *testing.F) {
	cfg := winFullConfig()
	w := winMust(f, cfg)
	var out []*record.Record
	winRun(f, w, winStream(4, 300, 3), &out)
	valid, _ := w.MarshalState()
	f.Add(valid)
	f.Add(valid[:len(valid)/3])
	f.Add([]byte{})
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		w := winMust(t, cfg)
		if err := w.UnmarshalState(b); err != nil {
			if !errors.Is(err, record.ErrState) {
				t.Fatalf("error %v does not match ErrState", err)
			}
			return
		}
		// Whatever loaded must be usable.
		w.Stats()
		if _, err := w.MarshalState(); err != nil {
			t.Fatal(err)
		}
		var out []*record.Record
		w.Advance(winT0.Add(1000*time.Hour), winCollect(&out))
	})
}

func TestWindowMemoryBound(t *testing.T) {
	tests := []struct {
		name string
		gen  func(r *rand.Rand) float64
		max  int64
	}{
		// Eight decades: more than 512 bins' worth, so the store collapses.
		{"positive, wide", func(r *rand.Rand) float64 { return math.Pow(10, 8*r.Float64()-3) }, 8 << 10},
		// The worst case: both signs' stores at their 512 bins.
		{"both signs, wide", func(r *rand.Rand) float64 { return math.Pow(10, 8*r.Float64()-3) * float64(1-2*r.IntN(2)) }, 12 << 10},
		// A sensor's readings in one window: a few bins.
		{"temperature", func(r *rand.Rand) float64 { return 21 + r.NormFloat64() }, 2 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := winMust(t, Config{Name: "mem", Size: time.Hour, EventTime: true, GroupBy: []string{"source"},
				Aggregates: []Aggregate{{Func: "p95", Field: "v"}, {Func: "avg", Field: "v"}}})
			rng := rand.New(rand.NewPCG(5, 5))
			fields := make([]map[string]any, 1024)
			for i := range fields {
				fields[i] = map[string]any{"v": tt.gen(rng)}
			}
			for i := range 1_000_000 {
				r := &record.Record{Time: winT0.Add(time.Duration(i) * time.Microsecond), Source: "dev", Fields: fields[i%len(fields)]}
				if err := w.Process(r, nil); err != nil {
					t.Fatal(err)
				}
			}
			st := w.Stats()
			if st.OpenGroups != 1 {
				t.Fatalf("stats %+v", st)
			}
			t.Logf("one group, p95 over 1,000,000 values: ApproxBytes %d", st.ApproxBytes)
			if st.ApproxBytes > tt.max {
				t.Fatalf("%d bytes for one group after 1,000,000 values, want at most %d", st.ApproxBytes, tt.max)
			}
		})
	}
}

// TestWindowApproxBytesMatchesHeap checks the estimate against the heap
// the groups really take.
func TestWindowApproxBytesMatchesHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates")
	}
	for _, name := range []string{"avg min max", "with p95", "both signs p95"} {
		t.Run(name, func(t *testing.T) {
			aggs := []Aggregate{{Func: "avg", Field: "v"}, {Func: "min", Field: "v"}, {Func: "max", Field: "v"}}
			if name != "avg min max" {
				aggs = append(aggs, Aggregate{Func: "p95", Field: "v"})
			}
			const groups, perGroup = 2000, 500
			rng := rand.New(rand.NewPCG(6, 6))
			// A prime number of field sets, so every group gets both parities.
			fields := make([]map[string]any, 4093)
			for i := range fields {
				v := math.Exp(3 * rng.NormFloat64())
				if name == "both signs p95" && i%2 == 1 {
					v = -v
				}
				fields[i] = map[string]any{"v": v}
			}
			srcs := make([]string, groups)
			for i := range srcs {
				srcs[i] = fmt.Sprintf("device-%06d", i)
			}
			var m0, m1 runtime.MemStats
			runtime.GC()
			runtime.GC()
			runtime.ReadMemStats(&m0)
			w := winMust(t, Config{Name: "m", Size: time.Hour, EventTime: true, GroupBy: []string{"source"}, Aggregates: aggs})
			for i := range groups * perGroup {
				r := &record.Record{Time: winT0.Add(time.Duration(i) * time.Millisecond), Source: srcs[i%groups], Fields: fields[i%len(fields)]}
				if err := w.Process(r, nil); err != nil {
					t.Fatal(err)
				}
			}
			runtime.GC()
			runtime.ReadMemStats(&m1)
			heap := int64(m1.HeapAlloc) - int64(m0.HeapAlloc)
			st := w.Stats()
			// The inputs must stay live to the second reading, or their
			// collection hides the window's growth.
			runtime.KeepAlive(fields)
			runtime.KeepAlive(srcs)
			ratio := float64(st.ApproxBytes) / float64(heap)
			t.Logf("%d groups: heap %d B (%d/group), ApproxBytes %d (%d/group), ratio %.2f",
				groups, heap, heap/groups, st.ApproxBytes, st.ApproxBytes/groups, ratio)
			if ratio < 0.6 || ratio > 1.6 {
				t.Fatalf("ApproxBytes %d is far from the heap growth %d", st.ApproxBytes, heap)
			}
		})
	}
}

func TestWindowAllocsForExistingGroups(t *testing.T) {
	for _, gb := range [][]string{{"source"}, {"source", "room"}, {"topic"}} {
		t.Run(strings.Join(gb, ","), func(t *testing.T) {
			w := winMust(t, Config{Name: "a", Size: time.Hour, EventTime: true, GroupBy: gb,
				Aggregates: []Aggregate{{Func: "avg", Field: "v"}, {Func: "p95", Field: "v"}, {Func: "last", Field: "v"}}})
			r := &record.Record{Time: winT0, Source: "dev", Topic: "a/b", Fields: map[string]any{"v": 1.5, "room": 2.0}}
			if err := w.Process(r, nil); err != nil {
				t.Fatal(err)
			}
			i := 0
			allocs := testing.AllocsPerRun(1000, func() {
				i++
				r.Time = winT0.Add(time.Duration(i) * time.Millisecond)
				if err := w.Process(r, nil); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Fatalf("%v allocations per record for an existing group", allocs)
			}
		})
	}
}
