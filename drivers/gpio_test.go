package drivers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
)

// The pin tests run a Watcher against a gpiotest.Pin whose clock is a
// gpioStepClock: every WaitForEdge hands its wait to the test, which
// either delivers an edge (through the pin's EdgesChan) or lets the wait
// time out. The Watcher's goroutine and the test thus move in lockstep,
// with no real time involved, and a test knows the Watcher has finished
// with an edge when it sees the Watcher's next wait.

// gpioStepClock is a clockwork.Clock whose After blocks until the test
// takes the wait (or the clock is done, when it times out at once).
type gpioStepClock struct {
	clockwork.Clock // the real clock, for the methods gpiotest does not use
	waits           chan gpioWait
	done            chan struct{}
}

// gpioWait is one WaitForEdge in progress: fire c to time it out.
type gpioWait struct {
	d time.Duration
	c chan time.Time
}

func (s *gpioStepClock) After(d time.Duration) <-chan time.Time {
	c := make(chan time.Time, 1)
	select {
	case s.waits <- gpioWait{d, c}:
	case <-s.done:
		c <- time.Time{}
	}
	return c
}

// gpioFakeNow is Env.Now for the pin tests.
type gpioFakeNow struct {
	mu sync.Mutex
	t  time.Time
}

func (f *gpioFakeNow) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *gpioFakeNow) add(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = f.t.Add(d)
}

// gpioRig runs one Watcher on one fake pin.
type gpioRig struct {
	t       *testing.T
	pin     *gpiotest.Pin
	clock   *gpioStepClock
	now     *gpioFakeNow
	events  chan Sample
	ticks   chan time.Time // the counter's tick, when it runs a counter
	pending *gpioWait      // a wait taken by idle and not yet answered
	cancel  context.CancelFunc
	exited  chan struct{}
	err     error // Watch's result, once exited is closed
}

func newGPIORig(t *testing.T) *gpioRig {
	clock := &gpioStepClock{Clock: clockwork.NewRealClock(), waits: make(chan gpioWait), done: make(chan struct{})}
	return &gpioRig{
		t:      t,
		pin:    &gpiotest.Pin{N: "GPIO17", Num: 17, Clock: clock, EdgesChan: make(chan gpio.Level)},
		clock:  clock,
		now:    &gpioFakeNow{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)},
		events: make(chan Sample, 100),
	}
}

func (r *gpioRig) env(store Store) Env {
	return Env{
		Pin: func(name string) (gpio.PinIn, error) {
			if name != r.pin.N {
				return nil, fmt.Errorf("no pin %q", name)
			}
			return r.pin, nil
		},
		Now:   r.now.Now,
		Store: store,
	}
}

// watch starts w.Watch in a goroutine.
func (r *gpioRig) watch(w Watcher) {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.exited = make(chan struct{})
	go func() {
		defer close(r.exited)
		r.err = w.Watch(ctx, func(s Sample) { r.events <- s })
	}()
}

// stop cancels Watch, times out its pending wait and returns its result.
func (r *gpioRig) stop() error {
	r.t.Helper()
	r.cancel()
	close(r.clock.done)
	if r.pending != nil {
		r.pending.c <- time.Time{}
		r.pending = nil
	}
	select {
	case <-r.exited:
		return r.err
	case <-time.After(5 * time.Second):
		r.t.Fatal("Watch did not return after cancel")
		return nil
	}
}

// wait returns the Watcher's next WaitForEdge.
func (r *gpioRig) wait() gpioWait {
	r.t.Helper()
	if w := r.pending; w != nil {
		r.pending = nil
		return *w
	}
	select {
	case w := <-r.clock.waits:
		return w
	case <-r.exited:
		r.t.Fatalf("Watch returned: %v", r.err)
	case <-time.After(5 * time.Second):
		r.t.Fatal("Watch is not waiting for an edge")
	}
	return gpioWait{}
}

// run plays a script of space-separated steps, each answering one
// WaitForEdge: "L" or "H" an edge to that level; "." a timeout; ".20ms"
// a timeout of a wait that must have been for 20ms.
func (r *gpioRig) run(script string) {
	r.t.Helper()
	for _, step := range strings.Fields(script) {
		w := r.wait()
		switch {
		case step == "L" || step == "H":
			r.pin.EdgesChan <- step == "H"
		case strings.HasPrefix(step, "."):
			if step != "." {
				want, err := time.ParseDuration(step[1:])
				if err != nil {
					r.t.Fatalf("bad step %q", step)
				}
				if w.d != want {
					r.t.Fatalf("step %q: the wait was for %v", step, w.d)
				}
			}
			w.c <- time.Time{}
		default:
			r.t.Fatalf("bad step %q", step)
		}
	}
}

// idle waits until the Watcher is idle again (waiting gpioPoll for an
// edge: it has dealt with every edge so far) and returns the samples it
// emitted meanwhile.
func (r *gpioRig) idle() []Sample {
	r.t.Helper()
	w := r.wait()
	if w.d != gpioPoll {
		r.t.Fatalf("Watch waits %v, not idle (%v)", w.d, gpioPoll)
	}
	r.pending = &w
	var out []Sample
	for {
		select {
		case s := <-r.events:
			out = append(out, s)
		default:
			return out
		}
	}
}

// gpioStates returns the "state" values of samples, checking their form.
func gpioStates(t *testing.T, samples []Sample, now time.Time) []float64 {
	t.Helper()
	var out []float64
	for _, s := range samples {
		if len(s.Readings) != 1 || s.Readings[0].Name != "state" || s.Readings[0].Unit != "" {
			t.Fatalf("sample %+v: want one unitless \"state\" reading", s)
		}
		if !s.Time.Equal(now) {
			t.Errorf("sample time %v, want Env.Now %v", s.Time, now)
		}
		out = append(out, s.Readings[0].Value)
	}
	return out
}

func TestGPIOWatch(t *testing.T) {
	defer goleak.VerifyNone(t)
	tests := []struct {
		name     string
		opts     GPIOOptions // Pin is set by the test
		script   string
		wantPull gpio.Pull
		want     []float64 // the initial state, then one per reported change
	}{
		{"press and release", GPIOOptions{}, "L . H .", gpio.PullUp, []float64{1, 0, 1}},
		{"idle timeouts emit nothing", GPIOOptions{}, ".100ms .100ms .100ms", gpio.PullUp, []float64{1}},
		{"default debounce is 20ms", GPIOOptions{}, "L .20ms", gpio.PullUp, []float64{1, 0}},
		{"glitch shorter than debounce", GPIOOptions{}, "L H .", gpio.PullUp, []float64{1}},
		{"bounce ending at the same level", GPIOOptions{}, "L H L H L H .", gpio.PullUp, []float64{1}},
		{"bounce ending at the new level", GPIOOptions{}, "L H L H L .", gpio.PullUp, []float64{1, 0}},
		{"bounces on press and on release", GPIOOptions{}, "L H L . H L H .", gpio.PullUp, []float64{1, 0, 1}},
		{"debounce longer than the poll waits in steps", GPIOOptions{Debounce: 150 * time.Millisecond},
			"L .100ms .50ms H .100ms .50ms", gpio.PullUp, []float64{1, 0, 1}},
		{"an edge restarts the quiet time", GPIOOptions{Debounce: 150 * time.Millisecond},
			"L .100ms H .100ms .50ms", gpio.PullUp, []float64{1}},
		{"rising only", GPIOOptions{Edge: "rising"}, "L . H . L . H .", gpio.PullUp, []float64{1, 1, 1}},
		{"rising only, bounce on release", GPIOOptions{Edge: "rising"}, "L H L . H .", gpio.PullUp, []float64{1, 1}},
		{"falling only", GPIOOptions{Edge: "falling"}, "L . H . L .", gpio.PullUp, []float64{1, 0, 0}},
		{"both explicit", GPIOOptions{Edge: "both"}, "L . H .", gpio.PullUp, []float64{1, 0, 1}},
		{"pull down", GPIOOptions{Pull: "down"}, "H . L .", gpio.PullDown, []float64{0, 1, 0}},
		{"pull none", GPIOOptions{Pull: "none"}, "H .", gpio.Float, []float64{0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newGPIORig(t)
			tt.opts.Pin = "GPIO17"
			d, err := New(Spec{Name: "door", Kind: "gpio", Options: &tt.opts}, r.env(nil))
			if err != nil {
				t.Fatal(err)
			}
			r.watch(d.Watcher())
			r.run(tt.script)
			got := gpioStates(t, r.idle(), r.now.Now())
			if err := r.stop(); err != nil {
				t.Errorf("Watch returned %v, want nil", err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("states %v, want %v", got, tt.want)
			}
			if p := r.pin.Pull(); p != tt.wantPull {
				t.Errorf("pull %v, want %v", p, tt.wantPull)
			}
		})
	}
}

func TestGPIOSampleTimeFromEnv(t *testing.T) {
	defer goleak.VerifyNone(t)
	r := newGPIORig(t)
	d, err := New(Spec{Name: "door", Kind: "gpio", Options: &GPIOOptions{Pin: "GPIO17"}}, r.env(nil))
	if err != nil {
		t.Fatal(err)
	}
	r.watch(d.Watcher())
	start := r.now.Now()
	gpioStates(t, r.idle(), start)
	r.now.add(time.Minute)
	r.run("L .")
	gpioStates(t, r.idle(), start.Add(time.Minute))
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
}

func TestGPIOCancel(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("while idle, real clock", func(t *testing.T) {
		pin := &gpiotest.Pin{N: "GPIO17", EdgesChan: make(chan gpio.Level)}
		env := Env{Pin: func(string) (gpio.PinIn, error) { return pin, nil }}
		d, err := New(Spec{Name: "door", Kind: "gpio", Options: &GPIOOptions{Pin: "GPIO17"}}, env)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		events := make(chan Sample, 10)
		done := make(chan error, 1)
		go func() { done <- d.Watcher().Watch(ctx, func(s Sample) { events <- s }) }()
		<-events // the initial state: Watch is running
		start := time.Now()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch returned %v, want nil", err)
			}
			if el := time.Since(start); el > 2*gpioPoll+time.Second/2 {
				t.Errorf("Watch took %v to return", el)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Watch did not return after cancel")
		}
	})
	t.Run("during a debounce wait", func(t *testing.T) {
		r := newGPIORig(t)
		d, err := New(Spec{Name: "door", Kind: "gpio", Options: &GPIOOptions{Pin: "GPIO17"}}, r.env(nil))
		if err != nil {
			t.Fatal(err)
		}
		r.watch(d.Watcher())
		r.run("L")
		w := r.wait() // Watch is in the debounce wait
		if w.d != gpioDefaultDebounce {
			t.Fatalf("wait %v, want the debounce %v", w.d, gpioDefaultDebounce)
		}
		r.cancel()
		r.pending = &w
		r.run("H") // a bounce: the debounce loop sees ctx ended
		select {
		case <-r.exited:
		case <-time.After(5 * time.Second):
			t.Fatal("Watch did not return after cancel")
		}
		if err := r.stop(); err != nil {
			t.Errorf("Watch returned %v, want nil", err)
		}
		if got := gpioStates(t, drainSamples(r.events), r.now.Now()); fmt.Sprint(got) != "[1]" {
			t.Errorf("states %v, want only the initial [1]", got)
		}
	})
}

func drainSamples(c chan Sample) []Sample {
	var out []Sample
	for {
		select {
		case s := <-c:
			out = append(out, s)
		default:
			return out
		}
	}
}

func TestGPIOInFails(t *testing.T) {
	defer goleak.VerifyNone(t)
	pin := &gpiotest.Pin{N: "GPIO17"} // no EdgesChan: In with edges fails
	env := Env{Pin: func(string) (gpio.PinIn, error) { return pin, nil }}
	d, err := New(Spec{Name: "door", Kind: "gpio", Options: &GPIOOptions{Pin: "GPIO17"}}, env)
	if err != nil {
		t.Fatal(err)
	}
	err = d.Watcher().Watch(context.Background(), func(Sample) { t.Error("emitted") })
	if err == nil || !strings.Contains(err.Error(), "GPIO17") {
		t.Errorf("Watch = %v, want the pin's In error", err)
	}
}

func TestGPIOOptions(t *testing.T) {
	tests := []struct {
		name    string
		spec    Spec
		wantKey string // the key the ErrOption names; "" for a non-option error
		wantMsg string
	}{
		{"no pin", Spec{}, `"pin"`, ""},
		{"bad pull", Spec{Options: &GPIOOptions{Pin: "GPIO17", Pull: "sideways"}}, `"pull"`, ""},
		{"bad edge", Spec{Options: &GPIOOptions{Pin: "GPIO17", Edge: "up"}}, `"edge"`, ""},
		{"negative debounce", Spec{Options: &GPIOOptions{Pin: "GPIO17", Debounce: -time.Millisecond}}, `"debounce"`, ""},
		// Another kind's option ("mode") cannot be set in GPIOOptions: the
		// config rejects it as an unknown key (gateway/config
		// TestDriverOptionKeys); another kind's options type is an
		// ErrOption.
		{"bme280 options", Spec{Options: &BME280Options{Mode: "forced"}}, `*drivers.BME280Options`, ""},
		{"counter options", Spec{Options: &CounterOptions{Pin: "GPIO17", PulsesPerUnit: 450}}, `*drivers.CounterOptions`, ""},
		{"bus", Spec{Bus: "1", Options: &GPIOOptions{Pin: "GPIO17"}}, `"bus"`, ""},
		{"address", Spec{Address: 0x40, Options: &GPIOOptions{Pin: "GPIO17"}}, `"address"`, ""},
		{"unknown pin", Spec{Options: &GPIOOptions{Pin: "GPIO99"}}, "", `no pin "GPIO99"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newGPIORig(t)
			tt.spec.Name, tt.spec.Kind = "door", "gpio"
			_, err := New(tt.spec, r.env(nil))
			if err == nil {
				t.Fatal("New succeeded")
			}
			if is := errors.Is(err, ErrOption); is != (tt.wantKey != "") {
				t.Errorf("errors.Is(%v, ErrOption) = %v", err, is)
			}
			if !strings.Contains(err.Error(), tt.wantKey+tt.wantMsg) {
				t.Errorf("error %q does not name %s", err, tt.wantKey+tt.wantMsg)
			}
		})
	}
}
