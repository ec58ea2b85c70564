package drivers

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

// simClock is a hand-moved clock for Env.Now.
type simClock struct{ t time.Time }

func (c *simClock) now() time.Time { return c.t }

// simStep is one read: first move the clock by advance, then read with
// Env.Rand returning rand (if the signal draws one).
type simStep struct {
	advance time.Duration
	rand    float64
	want    float64
	wantErr error
}

func simNew(t *testing.T, opts SimOptions, env Env) Poller {
	t.Helper()
	d, err := New(Spec{Name: "s", Kind: "sim", Options: &opts}, env)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	p := d.Poller()
	if p == nil {
		t.Fatalf("sim is %+v, want a Poller", d)
	}
	return p
}

func TestSimSignals(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	// [-1, 1]: a step is up to 5% of 2, so rand 0.75 moves +0.05.
	walkUp := make([]simStep, 0, 25)
	for k := 1; k <= 20; k++ {
		walkUp = append(walkUp, simStep{rand: 0.75, want: float64(k) * 0.05})
	}
	walkUp = append(walkUp,
		simStep{rand: 0.75, want: 0.95},           // 1.05 reflects off max
		simStep{rand: 0.25, want: 0.90},           // down
		simStep{rand: 0.5, want: 0.90},            // no move
		simStep{rand: 0, want: 0.80},              // the largest step down
		simStep{rand: 0.999, want: 0.80 + 0.0998}, // almost the largest up
	)
	tests := []struct {
		name  string
		opts  SimOptions
		steps []simStep
	}{
		{name: "sine", opts: SimOptions{Signal: "sine", Min: 0, Max: 10, Period: 4 * time.Second}, steps: []simStep{
			{want: 5}, {advance: time.Second, want: 10}, {advance: time.Second, want: 5},
			{advance: time.Second, want: 0}, {advance: time.Second, want: 5}, {advance: 500 * time.Millisecond, want: 5 + 5*math.Sqrt2/2},
		}},
		{name: "sine is the default, over 0..100 and 1m", steps: []simStep{
			{want: 50}, {advance: 15 * time.Second, want: 100}, {advance: 30 * time.Second, want: 0},
		}},
		{name: "sine keeps its phase after days", opts: SimOptions{Min: -1, Max: 1, Period: time.Hour}, steps: []simStep{
			{advance: 1000*time.Hour + 15*time.Minute, want: 1},
		}},
		{name: "steps", opts: SimOptions{Signal: "steps", Min: 1, Max: 3, Period: 10 * time.Second}, steps: []simStep{
			{want: 1}, {advance: 10*time.Second - 1, want: 1}, {advance: 1, want: 3},
			{advance: 9 * time.Second, want: 3}, {advance: time.Second, want: 1}, {advance: 15 * time.Second, want: 3},
		}},
		{name: "walk", opts: SimOptions{Signal: "walk", Min: 10, Max: 20}, steps: []simStep{
			{rand: 0.75, want: 15.25}, {rand: 0, want: 14.75}, {rand: 0.5, want: 14.75},
		}},
		{name: "walk reflects off the bounds", opts: SimOptions{Signal: "walk", Min: -1, Max: 1}, steps: walkUp},
		{name: "walk reflects off min", opts: SimOptions{Signal: "walk", Min: 0, Max: 1}, steps: []simStep{
			{rand: 0, want: 0.45}, {rand: 0, want: 0.4}, {rand: 0, want: 0.35}, {rand: 0, want: 0.3},
			{rand: 0, want: 0.25}, {rand: 0, want: 0.2}, {rand: 0, want: 0.15}, {rand: 0, want: 0.1},
			{rand: 0, want: 0.05}, {rand: 0, want: 0}, {rand: 0, want: 0.05},
		}},
		{name: "dropouts", opts: SimOptions{Signal: "dropouts", Min: 0, Max: 10, Period: 4 * time.Second}, steps: []simStep{
			{rand: 0.5, want: 5}, {advance: time.Second, rand: 0.1, wantErr: ErrBadReading},
			{advance: time.Second, rand: 0.19999, wantErr: ErrBadReading}, {advance: time.Second, rand: 0.2, want: 0},
			{advance: time.Second, rand: 0.9, want: 5}, {advance: time.Second, rand: 0, wantErr: ErrBadReading},
		}},
		{name: "constant", opts: SimOptions{Min: 7, Max: 7}, steps: []simStep{
			{want: 7}, {advance: 17 * time.Second, want: 7},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &simClock{t: time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)}
			var r float64
			draws := 0
			p := simNew(t, tt.opts, Env{Now: clk.now, Rand: func() float64 { draws++; return r }})
			for i, st := range tt.steps {
				clk.t = clk.t.Add(st.advance)
				r = st.rand
				rs, err := p.Read(context.Background())
				if st.wantErr != nil {
					if !errors.Is(err, st.wantErr) || rs != nil {
						t.Errorf("read %d = %v, %v; want error %v", i, rs, err, st.wantErr)
					}
					continue
				}
				if err != nil || len(rs) != 1 {
					t.Fatalf("read %d = %v, %v", i, rs, err)
				}
				if got := rs[0]; got.Name != "value" || got.Unit != "" || math.Abs(got.Value-st.want) > 1e-9 {
					t.Errorf("read %d = %+v, want value %v", i, got, st.want)
				}
			}
			// Only walk and dropouts draw, one number per read.
			wantDraws := 0
			if s := tt.opts.Signal; s == "walk" || s == "dropouts" {
				wantDraws = len(tt.steps)
			}
			if draws != wantDraws {
				t.Errorf("%d draws from Env.Rand, want %d", draws, wantDraws)
			}
		})
	}
}

func TestSimReading(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	tests := []struct {
		name string
		opts SimOptions
		want Reading
	}{
		{name: "defaults", opts: SimOptions{Min: 1, Max: 1}, want: Reading{Name: "value", Value: 1}},
		{name: "quantity and unit", opts: SimOptions{Quantity: "temperature", Unit: "Cel", Min: 21.5, Max: 21.5},
			want: Reading{Name: "temperature", Value: 21.5, Unit: "Cel"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := simNew(t, tt.opts, Env{})
			rs, err := p.Read(context.Background())
			if err != nil || len(rs) != 1 || rs[0] != tt.want {
				t.Errorf("Read = %v, %v; want %+v", rs, err, tt.want)
			}
		})
	}
	t.Run("honours ctx", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := simNew(t, SimOptions{}, Env{}).Read(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Read on a cancelled ctx = %v", err)
		}
	})
	t.Run("own generator is deterministic per name", func(t *testing.T) {
		walk := func(name string) []float64 {
			d, err := New(Spec{Name: name, Kind: "sim", Options: &SimOptions{Signal: "walk"}}, Env{})
			if err != nil {
				t.Fatal(err)
			}
			var out []float64
			for range 5 {
				rs, err := d.Poller().Read(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, rs[0].Value)
			}
			return out
		}
		a, b, c := walk("a"), walk("a"), walk("c")
		if !slices.Equal(a, b) {
			t.Errorf("same name walked %v then %v", a, b)
		}
		if slices.Equal(a, c) {
			t.Errorf("different names walked the same %v", a)
		}
	})
}

func TestSimOptions(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	tests := []struct {
		name string
		spec Spec
		want string // in the error, which wraps ErrOption
	}{
		// Other kinds' options ("mode", "pin") cannot be set in
		// SimOptions: the config rejects them as unknown keys
		// (gateway/config TestDriverOptionKeys); another kind's options
		// type is an ErrOption.
		{"bme280 options", Spec{Options: &BME280Options{Mode: "forced"}}, `options of type *drivers.BME280Options given to kind sim`},
		{"bus", Spec{Bus: "1"}, `option "bus" does not apply to sim`},
		{"address", Spec{Address: 0x76}, `option "address" does not apply to sim`},
		{"period for walk", Spec{Options: &SimOptions{Signal: "walk", Period: time.Second}}, `option "period" does not apply to sim signal "walk"`},
		{"unknown signal", Spec{Options: &SimOptions{Signal: "square"}}, `option "signal": unknown sim signal "square"`},
		{"min above max", Spec{Options: &SimOptions{Min: 5, Max: 1}}, `option "min" (5) is above "max" (1)`},
		{"negative period", Spec{Options: &SimOptions{Period: -time.Second}}, `option "period" must not be negative`},
		{"NaN", Spec{Options: &SimOptions{Max: math.NaN()}}, `option "max" must be a finite number`},
		{"infinite", Spec{Options: &SimOptions{Min: math.Inf(-1)}}, `option "min" must be a finite number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.Name, tt.spec.Kind = "s", "sim"
			d, err := New(tt.spec, Env{})
			if !errors.Is(err, ErrOption) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, %v; want ErrOption with %q", d, err, tt.want)
			}
		})
	}
	t.Run("registered", func(t *testing.T) {
		if !slices.Contains(KindNames(), "sim") {
			t.Errorf("KindNames() = %v, want sim among them", KindNames())
		}
	})
}

// The sim driver under the Scheduler: dropouts become failures and
// recoveries, the rest samples on the clock.
func TestSimScheduled(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	synctest.Test(t, func(t *testing.T) {
		draws := []float64{0.5, 0.1, 0.7}
		var mu sync.Mutex
		rnd := func() float64 { // the sim's draws, then 0.5 for the Scheduler
			mu.Lock()
			defer mu.Unlock()
			if len(draws) == 0 {
				return 0.5
			}
			v := draws[0]
			draws = draws[1:]
			return v
		}
		spec := Spec{Name: "demo", Kind: "sim", Interval: 10 * time.Second,
			Options: &SimOptions{Signal: "dropouts", Min: 0, Max: 10, Period: 40 * time.Second, Unit: "V"}}
		d, err := New(spec, Env{Now: time.Now, Rand: rnd})
		if err != nil {
			t.Fatal(err)
		}
		var (
			got      []Sample
			statuses []DriverStatus
		)
		s := NewScheduler([]Item{d}, SchedulerConfig{
			Jitter: -1,
			Rand:   func() float64 { return 0.5 },
			Emit: func(_ context.Context, _ Spec, smp Sample) {
				mu.Lock()
				got = append(got, smp)
				mu.Unlock()
			},
			Status: func(_ context.Context, st DriverStatus) {
				mu.Lock()
				statuses = append(statuses, st)
				mu.Unlock()
			},
			Logger: slog.New(slog.DiscardHandler),
		})
		t0 := time.Now()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		// Reads: 0s ok (5); 10s a dropout (retry 0.5s); 10.5s ok, recovered.
		time.Sleep(15 * time.Second)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if len(statuses) != 2 || !errors.Is(statuses[0].Err, ErrBadReading) || !statuses[1].Recovered {
			t.Errorf("statuses %+v, want a dropout and a recovery", statuses)
		}
		var at []time.Duration
		for _, smp := range got {
			at = append(at, smp.Time.Sub(t0))
		}
		if want := []time.Duration{0, 10500 * time.Millisecond}; !slices.Equal(at, want) {
			t.Errorf("samples at %v, want %v", at, want)
		}
		if len(got) > 0 && (got[0].Readings[0] != Reading{Name: "value", Value: 5, Unit: "V"}) {
			t.Errorf("first sample %+v", got[0])
		}
	})
}
