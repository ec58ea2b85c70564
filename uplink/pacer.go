package uplink

import (
	"time"

	"golang.org/x/time/rate"
)

// pacer applies the message and byte rate caps. It is used only by the
// publishing goroutine.
type pacer struct {
	msgs  *rate.Limiter // nil: no cap
	bytes *rate.Limiter // nil: no cap
}

// newPacer builds the caps. The message cap allows no burst (publishes are
// spaced 1/mps apart); the byte cap's burst is the largest message, which
// must always be sendable.
func newPacer(mps, bps float64, maxMessage int) *pacer {
	p := &pacer{}
	if mps > 0 {
		p.msgs = rate.NewLimiter(rate.Limit(mps), 1)
	}
	if bps > 0 {
		p.bytes = rate.NewLimiter(rate.Limit(bps), max(maxMessage, 1))
	}
	return p
}

// reserve books one message of n bytes at now and returns how long the
// caller must wait before publishing it.
func (p *pacer) reserve(now time.Time, n int) time.Duration {
	var d time.Duration
	if p.msgs != nil {
		d = max(d, p.msgs.ReserveN(now, 1).DelayFrom(now))
	}
	if p.bytes != nil {
		n = min(n, p.bytes.Burst())
		d = max(d, p.bytes.ReserveN(now, n).DelayFrom(now))
	}
	return d
}
