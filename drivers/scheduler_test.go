package drivers

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

// Most tests here run inside a testing/synctest bubble: the Scheduler uses
// the real time.Now and time.After, but the bubble's clock is virtual and
// only advances when every goroutine is blocked, so timings are exact and
// nothing sleeps for real. TestSchedulerInjectedClock covers the Now and
// After hooks themselves.

// schedRec records what a Scheduler reports, and flags any report made
// after Run returned.
type schedRec struct {
	t        *testing.T
	mu       sync.Mutex
	samples  map[string][]Sample
	statuses []DriverStatus
	statusAt []time.Time
	closed   atomic.Bool
}

func newSchedRec(t *testing.T) *schedRec {
	return &schedRec{t: t, samples: map[string][]Sample{}}
}

// config fills in the recorder's callbacks and a silent logger.
func (r *schedRec) config(c SchedulerConfig) SchedulerConfig {
	c.Emit = func(_ context.Context, spec Spec, s Sample) {
		if r.closed.Load() {
			r.t.Errorf("Emit(%s) after Run returned", spec.Name)
		}
		r.mu.Lock()
		r.samples[spec.Name] = append(r.samples[spec.Name], s)
		r.mu.Unlock()
	}
	c.Status = func(_ context.Context, st DriverStatus) {
		if r.closed.Load() {
			r.t.Errorf("Status(%s) after Run returned", st.Name)
		}
		r.mu.Lock()
		r.statuses = append(r.statuses, st)
		r.statusAt = append(r.statusAt, time.Now())
		r.mu.Unlock()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// times returns the offsets from t0 of name's samples.
func (r *schedRec) times(name string, t0 time.Time) []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []time.Duration
	for _, s := range r.samples[name] {
		out = append(out, s.Time.Sub(t0))
	}
	return out
}

func (r *schedRec) status() []DriverStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]DriverStatus(nil), r.statuses...)
}

// schedRun starts s.Run and returns a stop function that cancels it,
// waits for Run and returns how long (on the clock) Run took to return.
func schedRun(t *testing.T, s *Scheduler, rec *schedRec) (stop func() time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return func() time.Duration {
		start := time.Now()
		cancel()
		err := <-done
		rec.closed.Store(true)
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		return time.Since(start)
	}
}

// schedPoller is a fake Poller; read gets the 1-based call number. It
// records how many calls overlap, which must never exceed one.
type schedPoller struct {
	read func(ctx context.Context, n int) ([]Reading, error)

	mu        sync.Mutex
	calls     int
	active    int
	maxActive int
	starts    []time.Time
	halts     atomic.Int32
}

// Halt counts; it must come after the last Read has returned.
func (p *schedPoller) Halt() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.active != 0 {
		panic("Halt during a Read")
	}
	p.halts.Add(1)
	return nil
}

func (p *schedPoller) halted() int32 { return p.halts.Load() }

func (p *schedPoller) Read(ctx context.Context) ([]Reading, error) {
	p.mu.Lock()
	p.calls++
	n := p.calls
	p.active++
	p.maxActive = max(p.maxActive, p.active)
	p.starts = append(p.starts, time.Now())
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.active--
		p.mu.Unlock()
	}()
	return p.read(ctx, n)
}

func (p *schedPoller) stats() (calls, maxActive int, starts []time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls, p.maxActive, append([]time.Time(nil), p.starts...)
}

// schedWatcher is a fake Watcher; watch gets the 1-based call number.
type schedWatcher struct {
	watch  func(ctx context.Context, emit func(Sample), n int) error
	calls  atomic.Int32
	active atomic.Int32
	halts  atomic.Int32
}

func (w *schedWatcher) Watch(ctx context.Context, emit func(Sample)) error {
	w.active.Add(1)
	defer w.active.Add(-1)
	return w.watch(ctx, emit, int(w.calls.Add(1)))
}

// Halt counts; it must come after the last Watch has returned.
func (w *schedWatcher) Halt() error {
	if w.active.Load() != 0 {
		panic("Halt during a Watch")
	}
	w.halts.Add(1)
	return nil
}

func (w *schedWatcher) halted() int32 { return w.halts.Load() }

var schedOne = []Reading{{Name: "value", Value: 1, Unit: "V"}}

// schedOK reads instantly.
func schedOK(context.Context, int) ([]Reading, error) { return schedOne, nil }

// schedSlow reads in d, or returns early when ctx ends (as drivers should).
func schedSlow(d time.Duration) func(context.Context, int) ([]Reading, error) {
	return func(ctx context.Context, _ int) ([]Reading, error) {
		select {
		case <-time.After(d):
			return schedOne, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// schedRand returns vals in turn, then the last one forever.
func schedRand(vals ...float64) func() float64 {
	var mu sync.Mutex
	i := 0
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		v := vals[min(i, len(vals)-1)]
		i++
		return v
	}
}

// schedNilMap hides its nil from static checks: the panic test needs a
// runtime error.
func schedNilMap() map[string]int { return nil }

// schedItem is the Item of a fake Poller or Watcher.
func schedItem(name string, interval time.Duration, d Driver) Item {
	spec := Spec{Name: name, Kind: "fake", Interval: interval}
	if w, ok := d.(Watcher); ok {
		return WatchItem(spec, w)
	}
	return PollItem(spec, d.(Poller))
}

func schedSecs(fs ...float64) []time.Duration {
	out := make([]time.Duration, len(fs))
	for i, f := range fs {
		out[i] = time.Duration(f * float64(time.Second))
	}
	return out
}

func TestSchedulerInterval(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	tests := []struct {
		name     string
		interval time.Duration
		timeout  time.Duration
		jitter   float64
		rand     float64
		read     func(context.Context, int) ([]Reading, error)
		runFor   time.Duration
		want     []time.Duration // sample times from the start
	}{
		{name: "no jitter", interval: 10 * time.Second, jitter: -1, read: schedOK,
			runFor: 35 * time.Second, want: schedSecs(0, 10, 20, 30)},
		{name: "late jitter does not accumulate", interval: 10 * time.Second, jitter: 0.1, rand: 0.75, read: schedOK,
			runFor: 35 * time.Second, want: schedSecs(0, 10.5, 20.5, 30.5)},
		{name: "early jitter does not accumulate", interval: 10 * time.Second, jitter: 0.1, rand: 0, read: schedOK,
			runFor: 35 * time.Second, want: schedSecs(0, 9, 19, 29)},
		{name: "default jitter", interval: 10 * time.Second, rand: 1 - 1.0/1024, read: schedOK,
			runFor: 25 * time.Second, want: []time.Duration{0, 11*time.Second - time.Second/512, 21*time.Second - time.Second/512}},
		{name: "start to start despite slow reads", interval: 10 * time.Second, jitter: -1, read: schedSlow(3 * time.Second),
			runFor: 35 * time.Second, want: schedSecs(3, 13, 23, 33)},
		{name: "overrun skips missed slots", interval: 10 * time.Second, timeout: 20 * time.Second, jitter: -1,
			read: schedSlow(15 * time.Second), runFor: 39 * time.Second, want: schedSecs(15, 35)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rec := newSchedRec(t)
				p := &schedPoller{read: tt.read}
				s := NewScheduler([]Item{schedItem("p", tt.interval, p)}, rec.config(SchedulerConfig{
					Jitter: tt.jitter, Timeout: tt.timeout, Rand: schedRand(tt.rand),
				}))
				t0 := time.Now()
				stop := schedRun(t, s, rec)
				time.Sleep(tt.runFor)
				if d := stop(); d != 0 {
					t.Errorf("Run took %v after cancel, want 0", d)
				}
				if got := rec.times("p", t0); !reflect.DeepEqual(got, tt.want) {
					t.Errorf("sample times %v, want %v", got, tt.want)
				}
				if len(rec.status()) != 0 {
					t.Errorf("statuses %v, want none", rec.status())
				}
			})
		})
	}
}

// Each driver keeps its own interval, and Stats is safe while running.
func TestSchedulerSeveralDrivers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	synctest.Test(t, func(t *testing.T) {
		rec := newSchedRec(t)
		s := NewScheduler([]Item{
			schedItem("a", 10*time.Second, &schedPoller{read: schedOK}),
			schedItem("b", 3*time.Second, &schedPoller{read: schedOK}),
		}, rec.config(SchedulerConfig{Jitter: -1}))
		t0 := time.Now()
		stop := schedRun(t, s, rec)
		statsDone := make(chan struct{})
		go func() { // concurrent readers of Stats, for the race detector
			defer close(statsDone)
			for range 50 {
				_ = s.Stats()
				time.Sleep(400 * time.Millisecond)
			}
		}()
		time.Sleep(20500 * time.Millisecond)
		<-statsDone
		stop()
		if got, want := rec.times("a", t0), schedSecs(0, 10, 20); !reflect.DeepEqual(got, want) {
			t.Errorf("a at %v, want %v", got, want)
		}
		if got, want := rec.times("b", t0), schedSecs(0, 3, 6, 9, 12, 15, 18); !reflect.DeepEqual(got, want) {
			t.Errorf("b at %v, want %v", got, want)
		}
		want := []DriverStats{
			{Name: "a", Kind: "fake", State: StateOK, Reads: 3, LastOK: t0.Add(20 * time.Second)},
			{Name: "b", Kind: "fake", State: StateOK, Reads: 7, LastOK: t0.Add(18 * time.Second)},
		}
		if got := s.Stats(); !reflect.DeepEqual(got, want) {
			t.Errorf("Stats = %+v, want %+v", got, want)
		}
	})
}

// A Read that hangs delays no other driver, never has a second call
// stacked on it, and is reported with backoff.
func TestSchedulerHungDriver(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	tests := []struct {
		name       string
		ignoresCtx bool
		wantErrs   []error
		wantRetry  []time.Duration
		wantCalls  int
		wantState  string
	}{
		{
			// Honours ctx: the timeout cancels it, so each attempt is a
			// fresh Read that times out.
			name:      "read honours ctx",
			wantErrs:  []error{ErrReadTimeout, ErrReadTimeout, ErrReadTimeout, ErrReadTimeout},
			wantRetry: schedSecs(0.5, 1, 2, 2),
			wantCalls: 5, // at 0, 1.5, 3.5, 6.5, 9.5
			wantState: StateFailing,
		},
		{
			// Ignores ctx: the one call stays hung, later attempts are
			// skipped.
			name:       "read ignores ctx",
			ignoresCtx: true,
			wantErrs:   []error{ErrReadTimeout, ErrHung, ErrHung, ErrHung, ErrHung, ErrHung},
			wantRetry:  schedSecs(0.5, 1, 2, 2, 2, 2),
			wantCalls:  1,
			wantState:  StateHung,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				release := make(chan struct{})
				var returned atomic.Bool
				hung := &schedPoller{read: func(ctx context.Context, _ int) ([]Reading, error) {
					defer returned.Store(true)
					if tt.ignoresCtx {
						<-release
						return nil, errors.New("released")
					}
					<-ctx.Done()
					return nil, ctx.Err()
				}}
				rec := newSchedRec(t)
				s := NewScheduler([]Item{
					schedItem("healthy", time.Second, &schedPoller{read: schedOK}),
					schedItem("hung", time.Second, hung), // timeout: min(1s, 5s)
				}, rec.config(SchedulerConfig{Jitter: -1, BackoffMax: 4 * time.Second, Rand: schedRand(0.5)}))
				t0 := time.Now()
				stop := schedRun(t, s, rec)
				time.Sleep(10250 * time.Millisecond)

				if got, want := rec.times("healthy", t0), schedSecs(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10); !reflect.DeepEqual(got, want) {
					t.Errorf("healthy sampled at %v, want %v", got, want)
				}
				sts := rec.status()
				if len(sts) != len(tt.wantErrs) {
					t.Fatalf("got %d statuses %+v, want %d", len(sts), sts, len(tt.wantErrs))
				}
				for i, st := range sts {
					if st.Name != "hung" || !errors.Is(st.Err, tt.wantErrs[i]) || st.Retry != tt.wantRetry[i] || st.Consecutive != i+1 {
						t.Errorf("status %d = %+v, want hung %v retry %v consecutive %d", i, st, tt.wantErrs[i], tt.wantRetry[i], i+1)
					}
				}
				calls, maxActive, _ := hung.stats()
				if calls != tt.wantCalls || maxActive != 1 {
					t.Errorf("hung driver: %d calls, %d at once; want %d, 1", calls, maxActive, tt.wantCalls)
				}
				st := s.Stats()[1]
				if st.State != tt.wantState || st.Errors != uint64(len(tt.wantErrs)) || st.Reads != 0 {
					t.Errorf("Stats = %+v, want state %s, %d errors", st, tt.wantState, len(tt.wantErrs))
				}
				// Shutdown does not wait for a Read already past its timeout.
				if d := stop(); d != 0 {
					t.Errorf("Run took %v after cancel, want 0", d)
				}
				if tt.ignoresCtx {
					if returned.Load() {
						t.Fatal("hung Read returned before release")
					}
					close(release) // the abandoned goroutine must now end (synctest.Test and goleak check)
					synctest.Wait()
					if !returned.Load() {
						t.Error("hung Read still blocked after release")
					}
				}
			})
		})
	}
}

// After a hung Read finally returns, the driver is read again and
// recovers.
func TestSchedulerHungRecovers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	synctest.Test(t, func(t *testing.T) {
		p := &schedPoller{read: func(ctx context.Context, n int) ([]Reading, error) {
			if n == 1 {
				time.Sleep(3 * time.Second) // ignores ctx, but does end
			}
			return schedOne, nil
		}}
		rec := newSchedRec(t)
		s := NewScheduler([]Item{schedItem("p", 10*time.Second, p)}, rec.config(SchedulerConfig{
			Jitter: -1, Timeout: time.Second, Rand: schedRand(0.5),
		}))
		t0 := time.Now()
		stop := schedRun(t, s, rec)
		time.Sleep(1250 * time.Millisecond)
		if st := s.Stats()[0]; st.State != StateHung {
			t.Errorf("state while hung = %q, want %q", st.State, StateHung)
		}
		time.Sleep(10 * time.Second)
		stop()
		// Timeout at 1s (retry 0.5s); still hung at 1.5s (retry 1s) and at
		// 2.5s (retry 2s); the call returns at 3s; read again at 4.5s.
		_, _, starts := p.stats()
		var got []time.Duration
		for _, s := range starts {
			got = append(got, s.Sub(t0))
		}
		if want := schedSecs(0, 4.5); !reflect.DeepEqual(got, want) {
			t.Errorf("reads at %v, want %v", got, want)
		}
		sts := rec.status()
		if len(sts) != 4 || !errors.Is(sts[0].Err, ErrReadTimeout) || !errors.Is(sts[1].Err, ErrHung) ||
			!errors.Is(sts[2].Err, ErrHung) || !sts[3].Recovered || sts[3].Consecutive != 3 || sts[3].Err != nil {
			t.Errorf("statuses %+v", sts)
		}
		if got, want := rec.times("p", t0), schedSecs(4.5); !reflect.DeepEqual(got, want) {
			t.Errorf("samples at %v, want %v (the hung call's late value is dropped)", got, want)
		}
		if st := s.Stats()[0]; st.State != StateOK || st.Consecutive != 0 || st.Errors != 3 {
			t.Errorf("Stats = %+v", st)
		}
	})
}

// A failing driver is retried after BackoffMin doubling to BackoffMax,
// with full jitter, and its recovery is reported once.
func TestSchedulerBackoff(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	tests := []struct {
		name     string
		min, max time.Duration
		rand     []float64
		want     []time.Duration
	}{
		{name: "half, capped", min: time.Second, max: 8 * time.Second, rand: []float64{0.5},
			want: schedSecs(0.5, 1, 2, 4, 4, 4)},
		{name: "defaults 1s to 5m", rand: []float64{0.5},
			want: schedSecs(0.5, 1, 2, 4, 8, 16, 32, 64, 128, 150, 150)},
		{name: "full jitter", min: time.Second, max: 4 * time.Second, rand: []float64{0.125, 0.875, 0.5, 0, 0.75},
			want: schedSecs(0.125, 1.75, 2, 0, 3)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fails := len(tt.want)
				p := &schedPoller{read: func(_ context.Context, n int) ([]Reading, error) {
					if n <= fails {
						return nil, io.ErrUnexpectedEOF
					}
					return schedOne, nil
				}}
				rec := newSchedRec(t)
				s := NewScheduler([]Item{schedItem("p", 10*time.Second, p)}, rec.config(SchedulerConfig{
					Jitter: -1, BackoffMin: tt.min, BackoffMax: tt.max, Rand: schedRand(tt.rand...),
				}))
				t0 := time.Now()
				stop := schedRun(t, s, rec)
				var total time.Duration
				for _, d := range tt.want {
					total += d
				}
				time.Sleep(total + 25*time.Second)
				stop()

				sts := rec.status()
				if len(sts) != fails+1 {
					t.Fatalf("%d statuses %+v, want %d failures and one recovery", len(sts), sts, fails)
				}
				var retries []time.Duration
				for i, st := range sts[:fails] {
					retries = append(retries, st.Retry)
					if !errors.Is(st.Err, io.ErrUnexpectedEOF) || st.Consecutive != i+1 || st.Recovered {
						t.Errorf("status %d = %+v", i, st)
					}
				}
				if !reflect.DeepEqual(retries, tt.want) {
					t.Errorf("retries %v, want %v", retries, tt.want)
				}
				if r := sts[fails]; !r.Recovered || r.Err != nil || r.Consecutive != fails || r.Name != "p" || r.Kind != "fake" {
					t.Errorf("recovery status %+v", r)
				}
				// Attempts happen exactly Retry apart; after recovery the
				// interval applies again, from the successful read.
				_, _, starts := p.stats()
				want := []time.Duration{0}
				for _, d := range tt.want {
					want = append(want, want[len(want)-1]+d)
				}
				want = append(want, total+10*time.Second, total+20*time.Second)
				var got []time.Duration
				for _, s := range starts {
					got = append(got, s.Sub(t0))
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("reads at %v, want %v", got, want)
				}
				if st := s.Stats()[0]; st.State != StateOK || st.Reads != 3 || st.Errors != uint64(fails) ||
					st.Consecutive != 0 || st.LastError != io.ErrUnexpectedEOF.Error() {
					t.Errorf("Stats = %+v", st)
				}
			})
		})
	}
}

// A panic in a driver becomes an error; the driver is retried.
func TestSchedulerPanic(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	tests := []struct {
		name    string
		panicOf func()
		want    string
	}{
		{name: "string", panicOf: func() { panic("boom") }, want: "boom"},
		{name: "error", panicOf: func() { panic(io.ErrClosedPipe) }, want: io.ErrClosedPipe.Error()},
		{name: "runtime error", panicOf: func() { schedNilMap()["x"] = 1 }, want: "assignment to entry in nil map"},
	}
	for _, tt := range tests {
		for _, kind := range []string{"poller", "watcher"} {
			t.Run(tt.name+"/"+kind, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					var d Driver = &schedPoller{read: func(_ context.Context, n int) ([]Reading, error) {
						if n <= 2 {
							tt.panicOf()
						}
						return schedOne, nil
					}}
					if kind == "watcher" {
						d = &schedWatcher{watch: func(ctx context.Context, emit func(Sample), n int) error {
							if n <= 2 {
								tt.panicOf()
							}
							<-ctx.Done()
							return nil
						}}
					}
					rec := newSchedRec(t)
					s := NewScheduler([]Item{schedItem("p", time.Minute, d)}, rec.config(SchedulerConfig{
						Jitter: -1, Rand: schedRand(0.5),
					}))
					stop := schedRun(t, s, rec)
					time.Sleep(5 * time.Second)
					stop()
					sts := rec.status()
					if len(sts) != 3 {
						t.Fatalf("statuses %+v, want 2 failures and a recovery", sts)
					}
					for _, st := range sts[:2] {
						if !errors.Is(st.Err, ErrDriverPanic) || !strings.Contains(st.Err.Error(), tt.want) {
							t.Errorf("status %+v, want ErrDriverPanic with %q", st, tt.want)
						}
					}
					if !sts[2].Recovered {
						t.Errorf("last status %+v, want recovery", sts[2])
					}
				})
			})
		}
	}
}

func TestSchedulerWatcher(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	stamped := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	type want struct {
		err         error // nil: a recovery
		consecutive int
		retry       time.Duration
		at          time.Duration
	}
	tests := []struct {
		name        string
		watch       func(ctx context.Context, emit func(Sample), n int) error
		wantSamples []time.Duration // from t0; -1: the driver's own stamp
		wantStatus  []want
	}{
		{
			name: "fails, restarts, recovers",
			watch: func(ctx context.Context, emit func(Sample), n int) error {
				if n == 1 {
					emit(Sample{Readings: schedOne}) // stamped by the Scheduler
					time.Sleep(2 * time.Second)
					emit(Sample{Time: stamped, Readings: schedOne}) // kept
					return io.ErrUnexpectedEOF
				}
				emit(Sample{Readings: schedOne})
				<-ctx.Done()
				return nil
			},
			wantSamples: []time.Duration{0, -1, 2500 * time.Millisecond},
			wantStatus: []want{
				{err: io.ErrUnexpectedEOF, consecutive: 1, retry: 500 * time.Millisecond, at: 2 * time.Second},
				{consecutive: 1, at: 3500 * time.Millisecond}, // ran BackoffMin after restarting at 2.5s
			},
		},
		{
			name: "returning early is a failure",
			watch: func(ctx context.Context, emit func(Sample), n int) error {
				if n == 1 {
					return nil
				}
				<-ctx.Done()
				return nil
			},
			wantStatus: []want{
				{err: ErrWatchEnded, consecutive: 1, retry: 500 * time.Millisecond},
				{consecutive: 1, at: 1500 * time.Millisecond},
			},
		},
		{
			// A watcher that emits and fails at once keeps backing off:
			// a sample alone is not a recovery.
			name: "flapping keeps backing off",
			watch: func(ctx context.Context, emit func(Sample), n int) error {
				emit(Sample{Readings: schedOne})
				if n <= 3 {
					return io.ErrUnexpectedEOF
				}
				<-ctx.Done()
				return nil
			},
			wantSamples: schedSecs(0, 0.5, 1.5, 3.5),
			wantStatus: []want{
				{err: io.ErrUnexpectedEOF, consecutive: 1, retry: 500 * time.Millisecond},
				{err: io.ErrUnexpectedEOF, consecutive: 2, retry: time.Second, at: 500 * time.Millisecond},
				{err: io.ErrUnexpectedEOF, consecutive: 3, retry: 2 * time.Second, at: 1500 * time.Millisecond},
				{consecutive: 3, at: 4500 * time.Millisecond},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rec := newSchedRec(t)
				w := &schedWatcher{watch: tt.watch}
				s := NewScheduler([]Item{WatchItem(Spec{Name: "w", Kind: "fake"}, w)}, rec.config(SchedulerConfig{
					Rand: schedRand(0.5),
				}))
				t0 := time.Now()
				stop := schedRun(t, s, rec)
				time.Sleep(10 * time.Second)
				stop()
				var got []time.Duration
				for _, smp := range rec.samples["w"] {
					if smp.Time.Equal(stamped) {
						got = append(got, -1)
					} else {
						got = append(got, smp.Time.Sub(t0))
					}
				}
				if !reflect.DeepEqual(got, tt.wantSamples) {
					t.Errorf("samples at %v, want %v", got, tt.wantSamples)
				}
				sts := rec.status()
				if len(sts) != len(tt.wantStatus) {
					t.Fatalf("statuses %+v, want %+v", sts, tt.wantStatus)
				}
				for i, st := range sts {
					w := tt.wantStatus[i]
					at := rec.statusAt[i].Sub(t0)
					if !errors.Is(st.Err, w.err) || (w.err == nil) != st.Recovered || (w.err == nil) != (st.Err == nil) ||
						st.Consecutive != w.consecutive || st.Retry != w.retry || at != w.at {
						t.Errorf("status %d = %+v at %v, want %+v", i, st, at, w)
					}
				}
			})
		})
	}
}

// Run returns promptly when ctx ends, and every goroutine it started ends,
// or, for a call that ignores ctx, ends as soon as that call returns. Each
// driver is halted once after its last call returned; an abandoned one is
// not halted.
func TestSchedulerShutdown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const grace = 300 * time.Millisecond
	tests := []struct {
		name     string
		watcher  bool
		ignores  bool // the call blocks on release, not ctx
		emitLate bool // a Watch emits after ctx ended
		timeout  time.Duration
		cancelAt time.Duration
		want     time.Duration // from cancel to Run returning
	}{
		{name: "read in flight honours ctx", cancelAt: time.Second, want: 0},
		{name: "read in flight ignores ctx", ignores: true, cancelAt: time.Second, want: grace},
		{name: "read already hung ignores ctx", ignores: true, timeout: time.Second, cancelAt: 1250 * time.Millisecond, want: 0},
		{name: "watch honours ctx", watcher: true, cancelAt: time.Second, want: 0},
		{name: "watch ignores ctx", watcher: true, ignores: true, cancelAt: time.Second, want: grace},
		{name: "watch emits while shutting down", watcher: true, ignores: true, emitLate: true, cancelAt: time.Second, want: grace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				release := make(chan struct{})
				var returned atomic.Bool
				block := func(ctx context.Context) {
					if tt.ignores {
						<-release
					} else {
						<-ctx.Done()
					}
					returned.Store(true)
				}
				var d Driver = &schedPoller{read: func(ctx context.Context, _ int) ([]Reading, error) {
					block(ctx)
					return nil, errors.New("stopped")
				}}
				if tt.watcher {
					d = &schedWatcher{watch: func(ctx context.Context, emit func(Sample), _ int) error {
						if tt.emitLate {
							<-ctx.Done()
							emit(Sample{Readings: schedOne}) // must not block nor reach Emit
						}
						block(ctx)
						return nil
					}}
				}
				rec := newSchedRec(t)
				healthy := &schedPoller{read: schedOK}
				s := NewScheduler([]Item{
					schedItem("blocked", 10*time.Second, d),
					schedItem("healthy", time.Second, healthy),
				}, rec.config(SchedulerConfig{Jitter: -1, Grace: grace, Timeout: tt.timeout, Rand: schedRand(0.5)}))
				stop := schedRun(t, s, rec)
				time.Sleep(tt.cancelAt)
				if got := stop(); got != tt.want {
					t.Errorf("Run returned %v after cancel, want %v", got, tt.want)
				}
				wantHalts := int32(1)
				if tt.ignores {
					wantHalts = 0
				}
				if got := d.(interface{ halted() int32 }).halted(); got != wantHalts {
					t.Errorf("blocked driver halted %d times, want %d", got, wantHalts)
				}
				if got := healthy.halted(); got != 1 {
					t.Errorf("healthy driver halted %d times, want 1", got)
				}
				if tt.ignores {
					if returned.Load() {
						t.Fatal("call returned before release")
					}
					close(release)
				}
				// Every goroutine of the bubble must end now, the abandoned
				// call's included, or synctest.Test reports a deadlock.
				synctest.Wait()
				if !returned.Load() {
					t.Error("driver call still running")
				}
				if n := len(rec.samples["blocked"]); n != 0 {
					t.Errorf("%d samples from the blocked driver", n)
				}
			})
		})
	}
}

func TestSchedulerMisuse(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	t.Run("not a driver", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			rec := newSchedRec(t)
			s := NewScheduler([]Item{{Spec: Spec{Name: "x", Kind: "fake"}}}, rec.config(SchedulerConfig{}))
			stop := schedRun(t, s, rec)
			time.Sleep(time.Second)
			stop()
			if sts := rec.status(); len(sts) != 1 || !errors.Is(sts[0].Err, ErrNotDriver) {
				t.Errorf("statuses %+v, want one ErrNotDriver", sts)
			}
			if st := s.Stats()[0]; st.State != StateFailing {
				t.Errorf("Stats = %+v", st)
			}
		})
	})
	t.Run("no items", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			rec := newSchedRec(t)
			s := NewScheduler(nil, rec.config(SchedulerConfig{}))
			stop := schedRun(t, s, rec)
			time.Sleep(time.Second)
			stop()
			if len(s.Stats()) != 0 {
				t.Error("stats for no drivers")
			}
		})
	})
	t.Run("run twice", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			rec := newSchedRec(t)
			s := NewScheduler(nil, rec.config(SchedulerConfig{}))
			stop := schedRun(t, s, rec)
			synctest.Wait() // the first Run is under way
			if err := s.Run(context.Background()); err == nil {
				t.Error("second Run = nil, want an error")
			}
			stop()
		})
	})
}

// The Now and After hooks: a hand-driven clock, outside any bubble.
func TestSchedulerInjectedClock(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	type req struct {
		d  time.Duration
		ch chan time.Time
	}
	var (
		mu   sync.Mutex
		now  = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		t0   = now
		reqs = make(chan req)
	)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	rec := newSchedRec(t)
	s := NewScheduler([]Item{schedItem("p", 10*time.Second, &schedPoller{read: schedOK})}, rec.config(SchedulerConfig{
		Now:  clock,
		Rand: schedRand(0.75), // jitter +0.5s
		After: func(d time.Duration) <-chan time.Time {
			ch := make(chan time.Time, 1)
			reqs <- req{d, ch} // unbuffered: the test sees each wait in order
			return ch
		},
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	// Each read asks for its 5s timeout (never fired here), then for the
	// wait until the next slot, which the test fires after moving the clock.
	var got []time.Duration
	for range 3 {
		got = append(got, (<-reqs).d)
		sleep := <-reqs
		got = append(got, sleep.d)
		mu.Lock()
		now = now.Add(sleep.d)
		mu.Unlock()
		sleep.ch <- clock()
	}
	cancel()
	for waiting := true; waiting; {
		select {
		case <-reqs: // a wait requested while shutting down
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v", err)
			}
			waiting = false
		}
	}
	if want := schedSecs(5, 10.5, 5, 10, 5, 10); !reflect.DeepEqual(got, want) {
		t.Errorf("waits %v, want %v", got, want)
	}
	if got, want := rec.times("p", t0), schedSecs(0, 10.5, 20.5); !reflect.DeepEqual(got[:3], want) {
		t.Errorf("samples at %v, want %v first", got, want)
	}
}
