package bench

import (
	"math"
	"math/bits"
	"time"
)

// Log-linear histogram: values below 64 ns have exact buckets; above, each
// power of two is split into 64 buckets, so a bucket is at most 1/64 (~1.6%)
// of its value wide. Values are clamped to maxHistValue (~18 minutes).
const (
	subBits      = 6
	subCount     = 1 << subBits
	maxShift     = 34
	nBuckets     = subCount + (maxShift+1)*subCount
	maxHistValue = int64(1)<<(maxShift+subBits+1) - 1
)

// histogram records durations in nanoseconds. It is not safe for concurrent
// use; each goroutine keeps its own and they are merged at the end.
type histogram struct {
	counts [nBuckets]uint64
	n      uint64
	min    int64
	max    int64
}

func bucketOf(v int64) int {
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - subBits - 1
	return subCount + shift*subCount + int(v>>uint(shift)) - subCount
}

// bucketValue returns a representative value of bucket i: its midpoint.
func bucketValue(i int) int64 {
	if i < subCount {
		return int64(i)
	}
	shift := (i - subCount) / subCount
	low := int64(subCount+(i-subCount)%subCount) << uint(shift)
	return low + (int64(1)<<uint(shift))/2
}

func (h *histogram) add(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0 // clock skew between sender and receiver
	}
	if v > maxHistValue {
		v = maxHistValue
	}
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.counts[bucketOf(v)]++
	h.n++
}

func (h *histogram) merge(o *histogram) {
	if o.n == 0 {
		return
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the q-quantile (0 < q <= 1) within bucket resolution,
// clamped to the observed minimum and maximum.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			v := max(min(bucketValue(i), h.max), h.min)
			return time.Duration(v)
		}
	}
	return time.Duration(h.max)
}

// Latency summarises a latency distribution. Percentiles are exact to the
// histogram's resolution (about 1.6%); Max is exact.
type Latency struct {
	Count int64         `json:"count"`
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_ns"`
}

func (h *histogram) latency() Latency {
	return Latency{
		Count: int64(h.n),
		P50:   h.quantile(0.50),
		P90:   h.quantile(0.90),
		P99:   h.quantile(0.99),
		Max:   time.Duration(h.max),
	}
}
