package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

const progressEvery = 5 * time.Second

// syncLog serialises log lines from concurrent goroutines.
type syncLog struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *syncLog) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "bench: "+format+"\n", args...)
}

// Run executes one benchmark and reports on it, writing progress lines to
// log (which may be nil). All publishers connect before publishing starts;
// Duration runs from the first publish to the last acknowledgement. If any
// publisher cannot connect, Run fails without a report. If ctx ends or
// cfg.Timeout passes while publishing, Run returns the partial report
// together with an error; a timeout during the settle wait or the hold
// (Config.Hold) only cuts it short. Publishers disconnect after the hold.
func Run(ctx context.Context, cfg Config, log io.Writer) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = io.Discard
	}
	lg := &syncLog{w: log}
	run, err := newRunID()
	if err != nil {
		return nil, err
	}
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}

	var (
		chk *checker
		sub *subscriber
	)
	if cfg.Subscribe != "" {
		chk = newChecker(run, cfg.Publishers, cfg.Messages, cfg.Unwrap, cfg.Now)
		sub, err = startSubscriber(ctx, &cfg, run, chk, lg.logf)
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		defer sub.close()
		lg.logf("run %s: subscribed to %q at %s", run, cfg.SubTopic, cfg.Subscribe)
	}

	pubs := make([]*publisher, cfg.Publishers)
	for i := range pubs {
		pubs[i] = newPublisher(&cfg, i, run, lg.logf)
	}
	lg.logf("run %s: connecting %d publishers to %s", run, len(pubs), cfg.Broker)
	if err := connectAll(ctx, pubs); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}

	lg.logf("publishing %d x %d messages, QoS %d, %d bytes, inflight %d", cfg.Publishers, cfg.Messages, cfg.QoS, cfg.PayloadSize, cfg.Inflight)
	start := cfg.Now()
	var wg sync.WaitGroup
	for _, p := range pubs {
		wg.Go(func() { p.publish(ctx) })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	total := int64(cfg.Publishers) * int64(cfg.Messages)
	tick := time.NewTicker(progressEvery)
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-tick.C:
			var acked int64
			for _, p := range pubs {
				acked += p.ackedN.Load()
			}
			lg.logf("%d/%d acknowledged", acked, total)
		}
	}
	tick.Stop()
	runErr := ctx.Err()

	end := start
	for _, p := range pubs {
		if p.lastAck.After(end) {
			end = p.lastAck
		}
	}
	var published int64
	for _, p := range pubs {
		published += p.published.Load()
	}
	lg.logf("publishing finished in %v", end.Sub(start).Round(time.Millisecond))

	if sub != nil {
		settle(ctx, chk, published, cfg.Settle, lg)
	}
	held := hold(ctx, pubs, cfg.Hold, lg)
	rep := buildReport(&cfg, run, pubs, chk, sub, end.Sub(start))
	if rep.Hold = held; held > 0 {
		for _, p := range pubs {
			if p.open() {
				rep.HeldOpen++
			}
		}
	}
	disconnectAll(pubs)
	if runErr != nil {
		return rep, fmt.Errorf("bench: run %s stopped after %d of %d publishes: %w", run, published, total, runErr)
	}
	return rep, nil
}

// connectAll connects every publisher concurrently; on any failure it
// disconnects the ones that made it and reports how many failed.
func connectAll(ctx context.Context, pubs []*publisher) error {
	errs := make([]error, len(pubs))
	var wg sync.WaitGroup
	for i, p := range pubs {
		wg.Go(func() { errs[i] = p.dial(ctx) })
	}
	wg.Wait()
	var first error
	failed := 0
	for _, err := range errs {
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	if failed == 0 {
		return nil
	}
	for _, p := range pubs {
		if p.client != nil {
			p.client.Disconnect(0)
		}
	}
	return fmt.Errorf("%w: %d of %d failed, first: %w", errNotAllConnected, failed, len(pubs), first)
}

// hold keeps the publishers' connections open and idle for d, or until ctx
// ends, and returns how long it held. paho keeps sending PINGREQs meanwhile.
func hold(ctx context.Context, pubs []*publisher, d time.Duration, lg *syncLog) time.Duration {
	if d <= 0 {
		return 0
	}
	open := 0
	for _, p := range pubs {
		if p.open() {
			open++
		}
	}
	lg.logf("holding %d of %d connections open for %v", open, len(pubs), d)
	start := time.Now()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		lg.logf("hold cut short after %v: %v", time.Since(start).Round(time.Millisecond), ctx.Err())
	}
	return time.Since(start)
}

// settle waits up to d for messages still in transit, returning early once
// every published message has arrived or ctx ends.
func settle(ctx context.Context, chk *checker, published int64, d time.Duration, lg *syncLog) {
	if chk.distinct() >= published || d <= 0 {
		return
	}
	lg.logf("waiting up to %v for %d messages still in transit", d, published-chk.distinct())
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case <-deadline.C:
			return
		case <-ctx.Done():
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				lg.logf("settle wait cancelled: %v", ctx.Err())
			}
			return
		case <-poll.C:
			if chk.distinct() >= published {
				return
			}
		}
	}
}
