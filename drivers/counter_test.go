package drivers

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The counter tests reuse the pin rig of gpio_test.go (edges in
// lockstep, Env.Now a fake clock) and replace the driver's tick: a test
// says when a Sample is due and how much time has passed.

// counterStore is an in-memory Store.
type counterStore struct {
	mu      sync.Mutex
	m       map[string][]byte
	saves   int
	loadErr error
	saveErr error
}

func (s *counterStore) Load(key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loadErr != nil {
		return nil, s.loadErr
	}
	return s.m[key], nil
}

func (s *counterStore) Save(key string, val []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.saveErr != nil {
		return s.saveErr
	}
	if s.m == nil {
		s.m = map[string][]byte{}
	}
	s.m[key] = append([]byte(nil), val...)
	s.saves++
	return nil
}

func (s *counterStore) get(key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.m[key])
}

// startCounter builds a counter named "meter" on the rig's pin and
// starts its Watch with a tick the test drives.
func (r *gpioRig) startCounter(opts CounterOptions, interval time.Duration, store Store) *counter {
	r.t.Helper()
	opts.Pin = r.pin.N
	d, err := New(Spec{Name: "meter", Kind: "counter", Interval: interval, Options: &opts}, r.env(store))
	if err != nil {
		r.t.Fatal(err)
	}
	c := d.Watcher().(*counter)
	r.ticks = make(chan time.Time, 1)
	c.tick = func(d time.Duration) (<-chan time.Time, func()) {
		if d != interval {
			r.t.Errorf("tick every %v, want the interval %v", d, interval)
		}
		return r.ticks, func() {}
	}
	r.watch(c)
	return c
}

// tickAfter advances Env.Now by d, delivers a tick and returns the Sample
// Watch emits for it. The tick must find Watch idle.
func (r *gpioRig) tickAfter(d time.Duration) Sample {
	r.t.Helper()
	r.now.add(d)
	r.ticks <- r.now.Now()
	if w := r.pending; w != nil {
		r.pending = nil
		w.c <- time.Time{}
	}
	for {
		select {
		case s := <-r.events:
			return s
		case w := <-r.clock.waits:
			if w.d != gpioPoll {
				r.t.Fatalf("Watch waits %v when the tick is due, not idle", w.d)
			}
			w.c <- time.Time{}
		case <-r.exited:
			r.t.Fatalf("Watch returned: %v", r.err)
		case <-time.After(5 * time.Second):
			r.t.Fatal("no sample after the tick")
		}
	}
}

// counterCheck compares a sample's readings with want, values to 1e-9.
func counterCheck(t *testing.T, s Sample, now time.Time, want []Reading) {
	t.Helper()
	if !s.Time.Equal(now) {
		t.Errorf("sample time %v, want %v", s.Time, now)
	}
	ok := len(s.Readings) == len(want)
	for i := 0; ok && i < len(want); i++ {
		g, w := s.Readings[i], want[i]
		ok = g.Name == w.Name && g.Unit == w.Unit && math.Abs(g.Value-w.Value) <= 1e-9
	}
	if !ok {
		t.Errorf("readings %v, want %v", s.Readings, want)
	}
}

// counterPulses is n pulses on a pulled-up line: each falls, settles,
// rises and settles.
func counterPulses(n int) string {
	return strings.Repeat("L . H . ", n)
}

func TestCounterWatch(t *testing.T) {
	defer goleak.VerifyNone(t)
	type interval struct {
		script  string        // edges during the interval
		elapsed time.Duration // Env.Now time from the previous sample
		want    []Reading
	}
	count := func(n float64) Reading { return Reading{Name: "count", Value: n, Unit: "count"} }
	rate := func(v float64) Reading { return Reading{Name: "rate", Value: v, Unit: "/s"} }
	tests := []struct {
		name      string
		opts      CounterOptions
		intervals []interval
	}{
		{"falling edges: count and rate", CounterOptions{}, []interval{
			{counterPulses(3), 10 * time.Second, []Reading{count(3), rate(0.3)}},
			{"", 10 * time.Second, []Reading{count(3), rate(0)}},
			{counterPulses(5), 10 * time.Second, []Reading{count(8), rate(0.5)}},
		}},
		{"rate over the time that passed, not the nominal interval", CounterOptions{}, []interval{
			{counterPulses(3), 2 * time.Second, []Reading{count(3), rate(1.5)}},
			{counterPulses(1), 4 * time.Second, []Reading{count(4), rate(0.25)}},
		}},
		{"clock that did not move: rate over the interval", CounterOptions{}, []interval{
			{counterPulses(2), 0, []Reading{count(2), rate(0.2)}},
		}},
		{"pulses_per_unit adds total and flow", CounterOptions{PulsesPerUnit: 2, Unit: "l"}, []interval{
			{counterPulses(4), 2 * time.Second, []Reading{count(4), rate(2),
				{Name: "total", Value: 2, Unit: "l"}, {Name: "flow", Value: 1, Unit: "l/s"}}},
			{counterPulses(1), 10 * time.Second, []Reading{count(5), rate(0.1),
				{Name: "total", Value: 2.5, Unit: "l"}, {Name: "flow", Value: 0.05, Unit: "l/s"}}},
		}},
		{"450 pulses per litre", CounterOptions{PulsesPerUnit: 450, Unit: "l"}, []interval{
			{counterPulses(9), 10 * time.Second, []Reading{count(9), rate(0.9),
				{Name: "total", Value: 0.02, Unit: "l"}, {Name: "flow", Value: 0.002, Unit: "l/s"}}},
		}},
		{"rising edges", CounterOptions{Edge: "rising"}, []interval{
			{counterPulses(3) + "L .", 10 * time.Second, []Reading{count(3), rate(0.3)}},
		}},
		{"both edges count twice per pulse", CounterOptions{Edge: "both"}, []interval{
			{counterPulses(3), 10 * time.Second, []Reading{count(6), rate(0.6)}},
		}},
		{"pull down, rising edges", CounterOptions{Pull: "down", Edge: "rising"}, []interval{
			{"H . L . H . L .", 10 * time.Second, []Reading{count(2), rate(0.2)}},
		}},
		{"a bouncing contact counts once per pulse", CounterOptions{}, []interval{
			{"L H L . H L H . L H L H L . H .", 10 * time.Second, []Reading{count(2), rate(0.2)}},
		}},
		{"a glitch shorter than debounce is no pulse", CounterOptions{}, []interval{
			{"L H . L H L H .", 10 * time.Second, []Reading{count(0), rate(0)}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newGPIORig(t)
			r.startCounter(tt.opts, 10*time.Second, &counterStore{})
			for i, iv := range tt.intervals {
				r.run(iv.script)
				s := r.tickAfter(iv.elapsed)
				t.Logf("interval %d: %v", i, s.Readings)
				counterCheck(t, s, r.now.Now(), iv.want)
			}
			if err := r.stop(); err != nil {
				t.Errorf("Watch returned %v, want nil", err)
			}
		})
	}
}

func TestCounterPersistence(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("a restart continues the total", func(t *testing.T) {
		store := &counterStore{}
		r := newGPIORig(t)
		r.startCounter(CounterOptions{}, 10*time.Second, store)
		r.run(counterPulses(3))
		counterCheck(t, r.tickAfter(10*time.Second), r.now.Now(),
			[]Reading{{"count", 3, "count"}, {"rate", 0.3, "/s"}})
		if got := store.get("counter/meter"); got != "3" {
			t.Errorf("stored %q after the sample, want \"3\"", got)
		}
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}

		r = newGPIORig(t) // the gateway restarts: a new driver, the same store
		r.startCounter(CounterOptions{}, 10*time.Second, store)
		r.run(counterPulses(2))
		counterCheck(t, r.tickAfter(10*time.Second), r.now.Now(),
			[]Reading{{"count", 5, "count"}, {"rate", 0.2, "/s"}})
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
		if got := store.get("counter/meter"); got != "5" {
			t.Errorf("stored %q, want \"5\"", got)
		}
	})
	t.Run("built before its predecessor's last save", func(t *testing.T) {
		// A config reload builds the new counter, then stops the old one,
		// which saves its total: the new one must start from that.
		store := &counterStore{m: map[string][]byte{"counter/meter": []byte("41")}}
		r := newGPIORig(t)
		d, err := New(Spec{Name: "meter", Kind: "counter", Interval: 10 * time.Second, Options: &CounterOptions{Pin: r.pin.N}}, r.env(store))
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Save("counter/meter", []byte("50")); err != nil {
			t.Fatal(err)
		}
		c := d.Watcher().(*counter)
		r.ticks = make(chan time.Time, 1)
		c.tick = func(time.Duration) (<-chan time.Time, func()) { return r.ticks, func() {} }
		r.watch(c)
		counterCheck(t, r.tickAfter(10*time.Second), r.now.Now(),
			[]Reading{{"count", 50, "count"}, {"rate", 0, "/s"}})
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("saved when Watch ends, unsaved when unchanged", func(t *testing.T) {
		store := &counterStore{m: map[string][]byte{"counter/meter": []byte("41")}}
		r := newGPIORig(t)
		r.startCounter(CounterOptions{}, 10*time.Second, store)
		counterCheck(t, r.tickAfter(10*time.Second), r.now.Now(),
			[]Reading{{"count", 41, "count"}, {"rate", 0, "/s"}})
		if store.saves != 0 {
			t.Errorf("%d saves of an unchanged total", store.saves)
		}
		r.run(counterPulses(1))
		r.idle()
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
		if got := store.get("counter/meter"); got != "42" || store.saves != 1 {
			t.Errorf("stored %q in %d saves at the end, want \"42\" in 1", got, store.saves)
		}
	})
	t.Run("a failed save ends Watch, the count survives", func(t *testing.T) {
		store := &counterStore{}
		r := newGPIORig(t)
		c := r.startCounter(CounterOptions{}, 10*time.Second, store)
		r.run(counterPulses(2))
		r.idle()
		store.mu.Lock()
		store.saveErr = errors.New("disk full")
		store.mu.Unlock()
		r.now.add(10 * time.Second)
		r.ticks <- r.now.Now()
		r.pending.c <- time.Time{}
		r.pending = nil
		select {
		case <-r.exited:
		case <-time.After(5 * time.Second):
			t.Fatal("Watch did not end")
		}
		if r.err == nil || !strings.Contains(r.err.Error(), "disk full") || !strings.Contains(r.err.Error(), "counter/meter") {
			t.Errorf("Watch returned %v, want the save error naming the key", r.err)
		}
		if s := drainSamples(r.events); len(s) != 0 {
			t.Errorf("emitted %v with an unsaved total", s)
		}
		r.stop()
		if c.total != 2 {
			t.Errorf("total %d after the failure, want 2", c.total)
		}

		store.saveErr = nil // the Scheduler restarts the same driver
		r2 := newGPIORig(t)
		c.line.pin = r2.pin
		r2.ticks = make(chan time.Time, 1)
		c.tick = func(time.Duration) (<-chan time.Time, func()) { return r2.ticks, func() {} }
		r2.watch(c)
		r2.run(counterPulses(1))
		counterCheck(t, r2.tickAfter(10*time.Second), r2.now.Now(),
			[]Reading{{"count", 3, "count"}, {"rate", 0.1, "/s"}})
		if err := r2.stop(); err != nil {
			t.Fatal(err)
		}
		if got := store.get("counter/meter"); got != "3" {
			t.Errorf("stored %q, want \"3\"", got)
		}
	})
}

func TestCounterStoreErrors(t *testing.T) {
	tests := []struct {
		name   string
		store  Store
		wantIn []string // substrings of the error
	}{
		{"corrupt text", &counterStore{m: map[string][]byte{"counter/meter": []byte("12x")}}, []string{`"counter/meter"`, `"12x"`, "corrupt"}},
		{"corrupt empty", &counterStore{m: map[string][]byte{"counter/meter": {}}}, []string{`"counter/meter"`, "corrupt"}},
		{"corrupt negative", &counterStore{m: map[string][]byte{"counter/meter": []byte("-1")}}, []string{`"counter/meter"`, "corrupt"}},
		{"corrupt fraction", &counterStore{m: map[string][]byte{"counter/meter": []byte("1.5")}}, []string{`"counter/meter"`, "corrupt"}},
		{"load error", &counterStore{loadErr: errors.New("bolt: database not open")}, []string{`"counter/meter"`, "database not open"}},
		{"no store", nil, []string{"Store"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newGPIORig(t)
			_, err := New(Spec{Name: "meter", Kind: "counter", Options: &CounterOptions{Pin: "GPIO17"}}, r.env(tt.store))
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, s := range tt.wantIn {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %s", err, s)
				}
			}
			if errors.Is(err, ErrOption) {
				t.Errorf("error %q wraps ErrOption", err)
			}
		})
	}
}

func TestCounterOptions(t *testing.T) {
	tests := []struct {
		name    string
		spec    Spec
		wantKey string
	}{
		{"no pin", Spec{}, `"pin"`},
		{"unit without pulses_per_unit", Spec{Options: &CounterOptions{Pin: "GPIO17", Unit: "l"}}, `"unit"`},
		{"pulses_per_unit without unit", Spec{Options: &CounterOptions{Pin: "GPIO17", PulsesPerUnit: 450}}, `"unit"`},
		{"negative pulses_per_unit", Spec{Options: &CounterOptions{Pin: "GPIO17", PulsesPerUnit: -1, Unit: "l"}}, `"pulses_per_unit"`},
		{"NaN pulses_per_unit", Spec{Options: &CounterOptions{Pin: "GPIO17", PulsesPerUnit: math.NaN(), Unit: "l"}}, `"pulses_per_unit"`},
		{"infinite pulses_per_unit", Spec{Options: &CounterOptions{Pin: "GPIO17", PulsesPerUnit: math.Inf(1), Unit: "l"}}, `"pulses_per_unit"`},
		{"negative interval", Spec{Interval: -time.Second, Options: &CounterOptions{Pin: "GPIO17"}}, `"interval"`},
		{"bad edge", Spec{Options: &CounterOptions{Pin: "GPIO17", Edge: "down"}}, `"edge"`},
		{"bad pull", Spec{Options: &CounterOptions{Pin: "GPIO17", Pull: "strong"}}, `"pull"`},
		{"negative debounce", Spec{Options: &CounterOptions{Pin: "GPIO17", Debounce: -1}}, `"debounce"`},
		// Another kind's option ("gain") cannot be set in CounterOptions:
		// the config rejects it as an unknown key (gateway/config
		// TestDriverOptionKeys); another kind's options type is an
		// ErrOption.
		{"ads1115 options", Spec{Options: &ADS1115Options{Gain: 4.096}}, `*drivers.ADS1115Options`},
		{"bus", Spec{Bus: "1", Options: &CounterOptions{Pin: "GPIO17"}}, `"bus"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newGPIORig(t)
			tt.spec.Name, tt.spec.Kind = "meter", "counter"
			_, err := New(tt.spec, r.env(&counterStore{}))
			if !errors.Is(err, ErrOption) || !strings.Contains(err.Error(), tt.wantKey) {
				t.Errorf("New = %v, want ErrOption naming %s", err, tt.wantKey)
			}
		})
	}
	t.Run("defaults", func(t *testing.T) {
		r := newGPIORig(t)
		d, err := New(Spec{Name: "meter", Kind: "counter", Options: &CounterOptions{Pin: "GPIO17"}}, r.env(&counterStore{}))
		if err != nil {
			t.Fatal(err)
		}
		c := d.Watcher().(*counter)
		got := fmt.Sprintln(c.interval, c.line.debounce, c.line.pull, c.edge, c.key)
		if want := "1m0s 20ms PullUp FallingEdge counter/meter\n"; got != want {
			t.Errorf("defaults %q, want %q", got, want)
		}
	})
}
