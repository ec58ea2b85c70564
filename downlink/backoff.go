package downlink

import (
	"errors"
	"time"
)

// The reconnect schedule is the uplink's (see uplink/backoff.go and
// "Reconnecting" in the package doc), repeated here because the package
// imports nothing of the uplink.

// backoff yields capped exponential delays with full jitter: attempt n
// waits a uniformly random duration in [0, min(max, min·2ⁿ)).
type backoff struct {
	min, max time.Duration
	rand     func() float64
	attempt  int
}

// next returns the delay before the next attempt and counts the attempt.
func (b *backoff) next() time.Duration {
	ceiling := b.ceiling(b.attempt)
	b.attempt++
	return time.Duration(unit(b.rand) * float64(ceiling))
}

// ceiling is the jitter cap of attempt n.
func (b *backoff) ceiling(n int) time.Duration {
	d := b.min
	for i := 0; i < n && d < b.max; i++ {
		if d > b.max/2 {
			return b.max
		}
		d *= 2
	}
	return min(d, b.max)
}

// reset starts the schedule over, after a connection stayed up.
func (b *backoff) reset() { b.attempt = 0 }

// unit draws from rand, in [0, 1).
func unit(rand func() float64) float64 {
	r := rand()
	if r < 0 || r >= 1 {
		r = 0.5 // a broken source must not yield a negative or over-cap delay
	}
	return r
}

// reconnect decides the pause before each connection attempt.
type reconnect struct {
	bo          backoff
	probe       time.Duration
	stableAfter time.Duration
}

func newReconnect(cfg Config) *reconnect {
	return &reconnect{
		bo:          backoff{min: cfg.BackoffMin, max: cfg.BackoffMax, rand: cfg.Rand},
		probe:       cfg.ProbeInterval,
		stableAfter: cfg.StableAfter,
	}
}

// afterConnectFailure returns the pause after a round of attempts over
// every endpoint failed with err: a backoff step when any endpoint
// refused, else a probe interval.
func (r *reconnect) afterConnectFailure(err error) time.Duration {
	if errors.Is(err, ErrRefused) {
		return r.bo.next()
	}
	return r.jitter(r.probe / 2)
}

// afterSession returns the pause after a connection that was up for up
// ended. A session ended by a failing sink backs off like a refusal
// (refused true), however long it was up: the sink will likely fail again.
func (r *reconnect) afterSession(up time.Duration, refused bool) time.Duration {
	if up < r.stableAfter || refused {
		return r.bo.next()
	}
	r.bo.reset()
	return r.jitter(0)
}

// jitter returns a uniformly random pause in [lo, probe).
func (r *reconnect) jitter(lo time.Duration) time.Duration {
	return lo + time.Duration(unit(r.bo.rand)*float64(r.probe-lo))
}
