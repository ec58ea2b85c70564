package verify

import (
	"math"
	"time"
)

// lagBounds are the upper bounds, in seconds, of the lag histogram: from
// 50 ms (a live link) to a day (a long outage drained), about three
// buckets per decade; longer lags land in +Inf.
var lagBounds = [...]float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400}

// lagHist is one sequence space's lag histogram: 64 bytes of counts and
// the largest lag.
type lagHist struct {
	n   [len(lagBounds) + 1]uint32
	max time.Duration
}

func lagBucket(d time.Duration) int {
	s := max(d.Seconds(), 0)
	for i, b := range lagBounds {
		if s <= b {
			return i
		}
	}
	return len(lagBounds)
}

func (h *lagHist) add(d time.Duration) {
	if i := lagBucket(d); h.n[i] < math.MaxUint32 {
		h.n[i]++
	}
	h.max = max(h.max, d)
}

// lagTotal is the fleet's lag histogram, for the metrics.
type lagTotal struct {
	n   [len(lagBounds) + 1]uint64
	sum float64
	max time.Duration
}

func (h *lagTotal) add(d time.Duration) {
	h.n[lagBucket(d)]++
	h.sum += max(d.Seconds(), 0)
	h.max = max(h.max, d)
}

// Lag summarises a lag histogram: P50 and P99 are the upper bounds of the
// buckets the quantiles fall in (so "at most"; -1: beyond the last bound,
// a day), Max the largest lag seen. Count is how many events it holds:
// the first copies of events with a timestamp, replays excluded.
type Lag struct {
	Count uint64        `json:"count"`
	P50   time.Duration `json:"p50_ns"`
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_ns"`
}

// lagOf summarises counts n (any unsigned integers) and max.
func lagOf[T uint32 | uint64](n []T, maxLag time.Duration) Lag {
	var total uint64
	for _, k := range n {
		total += uint64(k)
	}
	l := Lag{Count: total, Max: maxLag}
	if total == 0 {
		return l
	}
	q := func(f float64) time.Duration {
		want := uint64(math.Ceil(f * float64(total)))
		var cum uint64
		for i, k := range n {
			cum += uint64(k)
			if cum >= want {
				if i == len(lagBounds) {
					return -1
				}
				return time.Duration(lagBounds[i] * float64(time.Second))
			}
		}
		return -1
	}
	l.P50, l.P99 = q(0.5), q(0.99)
	return l
}
