package drivers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Driver states reported by Stats.
const (
	// StateOK: the last read (or the running Watch) succeeded.
	StateOK = "ok"
	// StateFailing: the last attempt failed; the driver is retried with
	// backoff.
	StateFailing = "failing"
	// StateHung: a Read outlived its timeout and has not returned yet; no
	// new Read is started until it does.
	StateHung = "hung"
)

// Errors the Scheduler reports in DriverStatus.Err; check with errors.Is.
var (
	// ErrReadTimeout: a Read did not return within the read timeout.
	ErrReadTimeout = errors.New("drivers: read timed out")
	// ErrHung: a read was due but the previous Read, already timed out,
	// is still running, so the Scheduler skipped it rather than pile up
	// calls on a stuck bus.
	ErrHung = errors.New("drivers: previous read still hung")
	// ErrDriverPanic: the driver panicked; the Scheduler recovered it
	// into this error so that one driver's bug does not stop the gateway.
	ErrDriverPanic = errors.New("drivers: driver panicked")
	// ErrWatchEnded: a Watch returned nil before its context ended, which
	// breaks the Watcher contract; it is restarted like a failure.
	ErrWatchEnded = errors.New("drivers: watch ended before shutdown")
	// ErrNotDriver: an Item holds no driver (the zero Item).
	ErrNotDriver = errors.New("drivers: neither a Poller nor a Watcher")
)

// Scheduler defaults, applied by NewScheduler to zero fields.
const (
	schedDefaultJitter     = 0.1
	schedMaxJitter         = 0.5 // beyond this two reads could swap order
	schedDefaultTimeout    = 5 * time.Second
	schedDefaultBackoffMin = time.Second
	schedDefaultBackoffMax = 5 * time.Minute
	schedDefaultGrace      = 500 * time.Millisecond
	schedDefaultInterval   = 10 * time.Second
)

// Item is one driver for the Scheduler to run: a Poller or a Watcher with
// its Spec. New, Retrying, PollItem and WatchItem make them.
type Item struct {
	Spec Spec
	// Exactly one is set, except in the zero Item.
	poller  Poller
	watcher Watcher
}

// PollItem is the Item of a Poller.
func PollItem(spec Spec, p Poller) Item { return Item{Spec: spec, poller: p} }

// WatchItem is the Item of a Watcher.
func WatchItem(spec Spec, w Watcher) Item { return Item{Spec: spec, watcher: w} }

// Poller returns the item's driver if it is a Poller, else nil.
func (it Item) Poller() Poller { return it.poller }

// Watcher returns the item's driver if it is a Watcher, else nil.
func (it Item) Watcher() Watcher { return it.watcher }

// Actuator returns the item's driver if it is an Actuator, else nil.
func (it Item) Actuator() Actuator {
	a, _ := it.watcher.(Actuator)
	return a
}

// driver returns the item's driver, nil for the zero Item.
func (it Item) driver() Driver {
	if it.watcher != nil {
		return it.watcher
	}
	if it.poller != nil {
		return it.poller
	}
	return nil
}

// SchedulerConfig configures a Scheduler. Zero fields take the defaults
// given with each.
//
// Time: the Scheduler reads the clock only through Now and waits only
// through After, so tests can substitute a fake clock; both must describe
// the same clock. The package's own tests instead run the real defaults
// inside a testing/synctest bubble, where time is virtual.
type SchedulerConfig struct {
	// Emit receives each driver's samples: a Poller's stamped by Now when
	// its Read returned, a Watcher's likewise unless its driver set Time. It is called from
	// the drivers' goroutines, so concurrently for different drivers, and
	// never after Run returns. ctx is Run's: it ends when the scheduler
	// stops, so a callback that waits (an append to the buffer) stops
	// waiting then. The one exception is an Actuator's shutdown report
	// (the safe state its Watch sets as ctx ends): Emit gets it after ctx
	// ended, with a context of its own that ends Grace later. Nil drops
	// samples.
	Emit func(ctx context.Context, spec Spec, s Sample)
	// Status receives a DriverStatus on each failure and once on each
	// recovery, with the same concurrency as Emit. Nil drops them.
	Status func(context.Context, DriverStatus)
	// Jitter spreads a Poller's reads uniformly over ±Jitter×Interval
	// around its schedule, so sensors sharing a bus do not all fire at
	// once. Default 0.1; negative disables; capped at 0.5.
	Jitter float64
	// Timeout bounds one Read. Default min(Interval, 5s).
	Timeout time.Duration
	// BackoffMin and BackoffMax bound the retry delay after failures: the
	// cap doubles from BackoffMin per consecutive failure up to
	// BackoffMax, and the delay is uniform in [0, cap) ("full jitter").
	// Defaults 1s and 5m.
	BackoffMin, BackoffMax time.Duration
	// Grace is how long Run waits, after its context ends, for a driver
	// call still in flight to return before abandoning it. Default 500ms.
	Grace time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// After waits on the clock, like time.After. Default time.After
	// (whose timers are collected once unreferenced, so the Scheduler
	// need not stop them).
	After func(d time.Duration) <-chan time.Time
	// Rand returns uniform values in [0,1) for jitter and backoff. The
	// Scheduler serialises its calls, so it need not be safe for
	// concurrent use. Default math/rand/v2's Float64.
	Rand func() float64
	// Logger logs failures, recoveries and abandoned calls. Default
	// slog.Default().
	Logger *slog.Logger
}

// DriverStatus reports a driver failing or recovering, for the gateway's
// status stream and counters.
type DriverStatus struct {
	Name string
	Kind string
	// Err is why the attempt failed (nil on recovery). Timeouts wrap
	// ErrReadTimeout, skipped reads ErrHung, panics ErrDriverPanic.
	Err error
	// Consecutive counts failures in a row: on a failure including this
	// one, on recovery the run that just ended.
	Consecutive int
	// Retry is the delay before the next attempt (0 on recovery).
	Retry time.Duration
	// Recovered is set, once, on the first success after failures.
	Recovered bool
}

// DriverStats is a snapshot of one driver's counters.
type DriverStats struct {
	Name        string    `json:"name"`
	Kind        string    `json:"kind"`
	State       string    `json:"state"`       // StateOK, StateFailing or StateHung
	Reads       uint64    `json:"reads"`       // samples emitted
	Errors      uint64    `json:"errors"`      // failed attempts, all causes
	Consecutive int       `json:"consecutive"` // failures since the last success
	LastError   string    `json:"last_error,omitempty"`
	LastOK      time.Time `json:"last_ok"` // zero until the first sample
	// Commands counts an Actuator's commands; nil for the sensors.
	Commands *CommandStats `json:"commands,omitempty"`
}

// Scheduler runs drivers: each in its own goroutine, so one that hangs,
// fails or panics delays no other.
type Scheduler struct {
	cfg   SchedulerConfig
	items []Item

	randMu sync.Mutex // serialises cfg.Rand, which need not be concurrency-safe

	mu    sync.Mutex // guards stats
	stats []DriverStats

	started atomic.Bool
}

// NewScheduler returns a Scheduler for items, with cfg's zero fields set
// to their defaults. Nothing runs until Run.
func NewScheduler(items []Item, cfg SchedulerConfig) *Scheduler {
	switch {
	case cfg.Jitter == 0:
		cfg.Jitter = schedDefaultJitter
	case cfg.Jitter < 0:
		cfg.Jitter = 0
	case cfg.Jitter > schedMaxJitter:
		cfg.Jitter = schedMaxJitter
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = schedDefaultBackoffMin
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = schedDefaultBackoffMax
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = cfg.BackoffMin
	}
	if cfg.Grace <= 0 {
		cfg.Grace = schedDefaultGrace
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Scheduler{cfg: cfg, items: append([]Item(nil), items...)}
	s.stats = make([]DriverStats, len(s.items))
	for i, it := range s.items {
		s.stats[i] = DriverStats{Name: it.Spec.Name, Kind: it.Spec.Kind, State: StateOK}
	}
	return s
}

// Run runs every driver until ctx ends, halts each (Driver.Halt) once its
// last call has returned, then returns nil once every goroutine it started
// has ended, with one exception: a driver call that ignores its context.
// A Read or Watch should return promptly when its ctx ends; one still
// running Grace after ctx ended, or a Read that already outlived its
// timeout, is abandoned so that a stuck bus cannot stall shutdown, and
// that driver is not halted (Halt would race the call). Its goroutine ends
// as soon as the call returns and touches nothing of the Scheduler's then.
// Run may be called once.
func (s *Scheduler) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("drivers: Scheduler.Run called twice")
	}
	var wg sync.WaitGroup
	for i := range s.items {
		w := &schedWorker{s: s, idx: i, spec: s.items[i].Spec}
		w.log = s.cfg.Logger.With("driver", w.spec.Name, "kind", w.spec.Kind)
		wg.Go(func() { w.run(ctx, s.items[i]) })
	}
	<-ctx.Done()
	wg.Wait()
	return nil
}

// Stats returns a snapshot of every driver's counters, in the order of the
// items given to NewScheduler. It is safe to call at any time.
func (s *Scheduler) Stats() []DriverStats {
	s.mu.Lock()
	out := append([]DriverStats(nil), s.stats...)
	s.mu.Unlock()
	for i, it := range s.items {
		if c, ok := it.watcher.(commandCounter); ok {
			cs := c.commandStats()
			out[i].Commands = &cs
		}
	}
	return out
}

func (s *Scheduler) update(i int, f func(*DriverStats)) {
	s.mu.Lock()
	f(&s.stats[i])
	s.mu.Unlock()
}

func (s *Scheduler) rand() float64 {
	s.randMu.Lock()
	v := s.cfg.Rand()
	s.randMu.Unlock()
	// A faulty source must not yield negative or runaway delays.
	if !(v >= 0) || v >= 1 {
		return 0
	}
	return v
}

// backoff is the delay before the attempt after n consecutive failures:
// uniform in [0, min(BackoffMax, BackoffMin×2^(n-1))).
func (s *Scheduler) backoff(n int) time.Duration {
	limit := s.cfg.BackoffMin
	for i := 1; i < n && limit < s.cfg.BackoffMax; i++ {
		limit *= 2
	}
	limit = min(limit, s.cfg.BackoffMax)
	return time.Duration(float64(limit) * s.rand())
}

// schedWorker is the state of one driver's goroutine; only that goroutine
// touches it.
type schedWorker struct {
	s           *Scheduler
	idx         int
	spec        Spec
	log         *slog.Logger
	consecutive int
}

// schedCall is one Read or Watch running in its own goroutine. res is
// buffered so that the goroutine can always deliver and end, even after
// the worker has given up on it.
type schedCall struct {
	res    chan schedResult
	cancel context.CancelFunc
	start  time.Time
}

type schedResult struct {
	readings []Reading
	err      error
}

// schedPanic carries a recovered panic and its stack, which the worker logs.
type schedPanic struct {
	val   any
	stack []byte
}

func (p *schedPanic) Error() string { return fmt.Sprintf("%v: %v", ErrDriverPanic, p.val) }
func (p *schedPanic) Unwrap() error { return ErrDriverPanic }

// start runs f in a goroutine of its own under a context the worker can
// cancel. It is the only way to bound a call that ignores its context:
// the worker waits on res with a timer and, if the call hangs, carries on
// without it.
func (w *schedWorker) start(ctx context.Context, f func(context.Context) ([]Reading, error)) *schedCall {
	cctx, cancel := context.WithCancel(ctx)
	c := &schedCall{res: make(chan schedResult, 1), cancel: cancel, start: w.s.cfg.Now()}
	go func() {
		var r schedResult
		defer func() {
			if v := recover(); v != nil {
				r = schedResult{err: &schedPanic{val: v, stack: debug.Stack()}}
			}
			c.res <- r
		}()
		r.readings, r.err = f(cctx)
	}()
	return c
}

func (w *schedWorker) run(ctx context.Context, it Item) {
	var clean bool
	switch {
	case it.watcher != nil:
		clean = w.watch(ctx, it.watcher)
	case it.poller != nil:
		clean = w.poll(ctx, it.poller)
	default:
		// Nothing can be retried; report once and keep the slot visible.
		w.fail(ctx, ErrNotDriver, StateFailing, false)
		return
	}
	if clean {
		w.halt(it.driver())
	}
}

// halt calls d.Halt after the driver's last call has returned, bounded by
// Grace like a call at shutdown; a failure or panic is logged only, the
// gateway is stopping or replacing the driver either way.
func (w *schedWorker) halt(d Driver) {
	call := w.start(context.Background(), func(context.Context) ([]Reading, error) { return nil, d.Halt() })
	select {
	case r := <-call.res:
		if r.err != nil {
			w.log.Warn("driver halt failed", "err", r.err)
		}
	case <-w.s.cfg.After(w.s.cfg.Grace):
		w.log.Warn("driver halt did not return; abandoning it", "grace", w.s.cfg.Grace)
	}
	call.cancel()
}

// fail records a failed attempt and reports it; it returns the delay
// before the next attempt.
func (w *schedWorker) fail(ctx context.Context, err error, state string, retry bool) time.Duration {
	w.consecutive++
	var delay time.Duration
	if retry {
		delay = w.s.backoff(w.consecutive)
	}
	w.s.update(w.idx, func(st *DriverStats) {
		st.Errors++
		st.Consecutive = w.consecutive
		st.LastError = err.Error()
		st.State = state
	})
	if p := (*schedPanic)(nil); errors.As(err, &p) {
		w.log.Error("driver panicked", "panic", fmt.Sprint(p.val), "stack", string(p.stack))
	}
	w.log.Warn("driver failed", "err", err, "consecutive", w.consecutive, "retry", delay)
	if f := w.s.cfg.Status; f != nil {
		f(ctx, DriverStatus{Name: w.spec.Name, Kind: w.spec.Kind, Err: err,
			Consecutive: w.consecutive, Retry: delay})
	}
	return delay
}

// recovered ends a run of failures; a no-op if there was none.
func (w *schedWorker) recovered(ctx context.Context) {
	if w.consecutive == 0 {
		return
	}
	n := w.consecutive
	w.consecutive = 0
	w.s.update(w.idx, func(st *DriverStats) {
		st.Consecutive = 0
		st.State = StateOK
	})
	w.log.Info("driver recovered", "failures", n)
	if f := w.s.cfg.Status; f != nil {
		f(ctx, DriverStatus{Name: w.spec.Name, Kind: w.spec.Kind, Consecutive: n, Recovered: true})
	}
}

// emit stamps and hands on one sample and counts it.
func (w *schedWorker) emit(ctx context.Context, smp Sample) {
	if smp.Time.IsZero() {
		smp.Time = w.s.cfg.Now()
	}
	w.s.update(w.idx, func(st *DriverStats) {
		st.Reads++
		st.LastOK = smp.Time
	})
	if f := w.s.cfg.Emit; f != nil {
		f(ctx, w.spec, smp)
	}
}

// sleep waits d on the clock. Meanwhile it notices a hung call returning
// (which frees the driver for the next attempt). It reports false if ctx
// ended first.
func (w *schedWorker) sleep(ctx context.Context, d time.Duration, hung **schedCall) bool {
	if ctx.Err() != nil {
		return false
	}
	if d <= 0 {
		return true
	}
	timer := w.s.cfg.After(d)
	for {
		var late chan schedResult
		if *hung != nil {
			late = (*hung).res
		}
		select {
		case <-timer:
			return true
		case r := <-late:
			w.lateReturn(*hung, r)
			*hung = nil
		case <-ctx.Done():
			return false
		}
	}
}

// lateReturn handles a hung Read that finally returned. Its result is
// dropped: the value's time of measurement is unknown, and the next
// scheduled read decides whether the driver has recovered.
func (w *schedWorker) lateReturn(c *schedCall, r schedResult) {
	w.log.Info("hung read returned", "after", w.s.cfg.Now().Sub(c.start), "err", r.err)
	w.s.update(w.idx, func(st *DriverStats) {
		if st.State == StateHung {
			st.State = StateFailing
		}
	})
}

// drain gives a call in flight at shutdown Grace to return, then abandons
// it; samples a Watch emits meanwhile are dropped (Emit is not called once
// ctx has ended), except an Actuator's, which go to last. It reports
// whether the call returned.
func (w *schedWorker) drain(c *schedCall, samples chan Sample, last func(Sample)) bool {
	c.cancel()
	grace := w.s.cfg.After(w.s.cfg.Grace)
	for {
		select {
		case <-c.res:
			return true
		case smp := <-samples:
			if last != nil {
				last(smp)
			}
		case <-grace:
			w.log.Warn("driver ignored shutdown; abandoning its call", "grace", w.s.cfg.Grace)
			return false
		}
	}
}

// poll reads p on its interval until ctx ends.
//
// Schedule: the first read starts at once. Reads then start on a grid
// anchored at the first successful read, Interval apart, each offset by
// its own jitter, so neither jitter nor read time accumulates as drift; a
// read that overruns skips the slots it missed. After a failure the next
// attempt waits the backoff instead, and the first success re-anchors the
// grid. It reports whether no Read is left running (none was abandoned).
func (w *schedWorker) poll(ctx context.Context, p Poller) bool {
	interval := w.spec.Interval
	if interval <= 0 {
		w.log.Warn("no polling interval; using the default", "interval", schedDefaultInterval)
		interval = schedDefaultInterval
	}
	timeout := w.s.cfg.Timeout
	if timeout <= 0 {
		timeout = min(interval, schedDefaultTimeout)
	}
	var (
		hung    *schedCall // a Read past its timeout, not yet returned
		nominal time.Time  // grid slot of the read just done
		anchor  = true     // the next success starts a new grid
		delay   time.Duration
	)
	for {
		if !w.sleep(ctx, delay, &hung) {
			if hung != nil {
				w.log.Warn("abandoning hung read at shutdown", "since", w.s.cfg.Now().Sub(hung.start))
			}
			return hung == nil
		}
		if hung != nil {
			select {
			case r := <-hung.res:
				w.lateReturn(hung, r)
				hung = nil
			default:
				// At most one call per driver: never stack a second
				// Read on a bus the first one is stuck on.
				delay = w.fail(ctx, fmt.Errorf("%w: running for %v", ErrHung, w.s.cfg.Now().Sub(hung.start)), StateHung, true)
				anchor = true
				continue
			}
		}
		call := w.start(ctx, p.Read)
		deadline := w.s.cfg.After(timeout)
		select {
		case r := <-call.res:
			call.cancel()
			if ctx.Err() != nil {
				return true // no Emit or Status once ctx has ended; an error now is most likely the cancellation
			}
			if r.err != nil {
				delay = w.fail(ctx, r.err, StateFailing, true)
				anchor = true
				continue
			}
			if anchor {
				nominal, anchor = call.start, false
			}
			w.recovered(ctx)
			w.s.update(w.idx, func(st *DriverStats) { st.State = StateOK })
			if len(r.readings) > 0 {
				w.emit(ctx, Sample{Time: w.s.cfg.Now(), Readings: r.readings})
			}
			nominal, delay = w.next(nominal, interval)
		case <-deadline:
			call.cancel() // a Read honouring ctx returns now; one that does not stays hung
			hung = call
			delay = w.fail(ctx, fmt.Errorf("%w after %v", ErrReadTimeout, timeout), StateHung, true)
			anchor = true
		case <-ctx.Done():
			return w.drain(call, nil, nil)
		}
	}
}

// next returns the grid slot after nominal that is still ahead, and the
// delay from now to that slot plus its jitter.
func (w *schedWorker) next(nominal time.Time, interval time.Duration) (time.Time, time.Duration) {
	now := w.s.cfg.Now()
	nominal = nominal.Add(interval)
	if !nominal.After(now) {
		nominal = nominal.Add((now.Sub(nominal)/interval + 1) * interval)
	}
	var jitter time.Duration
	if j := w.s.cfg.Jitter; j > 0 {
		jitter = time.Duration(math.Round((2*w.s.rand() - 1) * j * float64(interval)))
	}
	return nominal, max(0, nominal.Add(jitter).Sub(now))
}

// watch runs d.Watch until ctx ends, restarting it with backoff when it
// fails. A restarted Watch counts as recovered once it has run BackoffMin
// without failing (not on its first sample: a watcher that emits and
// then fails at once would otherwise reset its backoff and spin). It
// reports whether no Watch is left running (none was abandoned).
func (w *schedWorker) watch(ctx context.Context, d Watcher) bool {
	var none *schedCall
	// An Actuator's samples after ctx ended (the safe state it set on the
	// way out) are stored with a context of their own, bounded by Grace.
	var last func(Sample)
	if _, ok := d.(Actuator); ok {
		last = func(smp Sample) {
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.s.cfg.Grace)
			defer cancel()
			w.emit(lctx, smp)
		}
	}
	for {
		samples := make(chan Sample)
		// gone is closed once nobody receives on samples any more.
		gone := make(chan struct{})
		emit := func(smp Sample) {
			if last == nil {
				// After ctx ends nobody may be receiving; drop rather
				// than block a Watch that is still shutting down.
				select {
				case samples <- smp:
				case <-ctx.Done():
				}
				return
			}
			select {
			case samples <- smp:
			case <-gone:
			}
		}
		call := w.start(ctx, func(ctx context.Context) ([]Reading, error) {
			return nil, d.Watch(ctx, emit)
		})
		var stable <-chan time.Time
		if w.consecutive > 0 {
			stable = w.s.cfg.After(w.s.cfg.BackoffMin)
		}
		var err error
	running:
		for {
			select {
			case smp := <-samples:
				switch {
				case ctx.Err() == nil:
					w.emit(ctx, smp)
				case last != nil:
					last(smp)
				}
			case <-stable:
				stable = nil
				w.recovered(ctx)
			case r := <-call.res:
				err = r.err
				break running
			case <-ctx.Done():
				returned := w.drain(call, samples, last)
				close(gone)
				return returned
			}
		}
		close(gone)
		call.cancel()
		if ctx.Err() != nil {
			return true // Watch returned because ctx ended, as it should
		}
		if err == nil {
			err = ErrWatchEnded
		}
		if !w.sleep(ctx, w.fail(ctx, err, StateFailing, true), &none) {
			return true
		}
	}
}
