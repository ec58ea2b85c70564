// Package reconnect paces a cloud client's connection attempts (the
// uplink's and the downlink's). Failures differ in what a retry costs the
// cloud, so:
//
//   - nothing answered (a refused or timed-out dial): the cloud is probed
//     again after a random pause in [ProbeInterval/2, ProbeInterval);
//   - an endpoint answered but refused, or a connection was lost less than
//     StableAfter after it was accepted (or ended by the client's own
//     failure): capped exponential backoff with full jitter, a random
//     pause below a cap doubling from BackoffMin to BackoffMax; probes in
//     between neither grow nor reset it;
//   - a connection that had been up for StableAfter was lost: the backoff
//     starts over and the first attempt comes after a random pause in
//     [0, ProbeInterval), so a fleet that lost the cloud at one instant
//     does not come back at one instant.
//
// Every pause is drawn from Config.Rand. A Schedule is used by one
// goroutine.
package reconnect

import "time"

// Config sets a Schedule's pauses (see the package doc).
type Config struct {
	BackoffMin, BackoffMax time.Duration
	ProbeInterval          time.Duration
	StableAfter            time.Duration
	Rand                   func() float64 // in [0, 1); out of range counts as 0.5
}

// Schedule decides the pause before each connection attempt.
type Schedule struct {
	bo          backoff
	probe       time.Duration
	stableAfter time.Duration
}

// New returns the schedule of c.
func New(c Config) *Schedule {
	return &Schedule{
		bo:          backoff{min: c.BackoffMin, max: c.BackoffMax, rand: c.Rand},
		probe:       c.ProbeInterval,
		stableAfter: c.StableAfter,
	}
}

// AfterConnectFailure returns the pause after a round of attempts over
// every endpoint failed: a backoff step when an endpoint refused, else a
// probe interval.
func (s *Schedule) AfterConnectFailure(refused bool) time.Duration {
	if refused {
		return s.bo.next()
	}
	return s.jitter(s.probe / 2)
}

// AfterSession returns the pause after a connection that was up for up
// ended; refused says the session ended by a failure that will likely
// come again (it backs off however long the connection was up).
func (s *Schedule) AfterSession(up time.Duration, refused bool) time.Duration {
	if up < s.stableAfter || refused {
		return s.bo.next()
	}
	s.bo.reset()
	return s.jitter(0)
}

// jitter returns a uniformly random pause in [lo, probe).
func (s *Schedule) jitter(lo time.Duration) time.Duration {
	return lo + time.Duration(unit(s.bo.rand)*float64(s.probe-lo))
}

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
