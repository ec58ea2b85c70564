package uplink

import "time"

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
	r := b.rand()
	if r < 0 || r >= 1 {
		r = 0.5 // a broken source must not yield a negative or over-cap delay
	}
	return time.Duration(r * float64(ceiling))
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
