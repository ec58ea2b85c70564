package rules

import (
	"testing"
	"time"
)

// TestRunnerBackoff: the wait after failures in a row doubles from
// RetryMin up to RetryMax, and Rand spreads it over its second half.
func TestRunnerBackoff(t *testing.T) {
	for _, tc := range []struct {
		rand float64
		want []time.Duration // after 1, 2, ... failures, in µs
	}{
		{0, []time.Duration{5000, 10000, 20000, 40000, 40000, 40000}},
		{0.5, []time.Duration{7500, 15000, 30000, 60000, 60000, 60000}},
		{1, []time.Duration{10000, 20000, 40000, 80000, 80000, 80000}},
	} {
		r := NewRunner(&Pipeline{Name: "p"}, nil, RunnerConfig{
			RetryMin: 10 * time.Millisecond, RetryMax: 80 * time.Millisecond,
			Rand: func() float64 { return tc.rand },
		})
		for i, want := range tc.want {
			if got := r.backoff(i + 1); got != want*time.Microsecond {
				t.Errorf("rand %v, %d failures: wait %v, want %v", tc.rand, i+1, got, want*time.Microsecond)
			}
		}
		if got := r.backoff(1000); got > 80*time.Millisecond {
			t.Errorf("rand %v, 1000 failures: wait %v, above RetryMax", tc.rand, got)
		}
	}
	r := NewRunner(&Pipeline{Name: "p"}, nil, RunnerConfig{})
	if r.cfg.RetryMin != 100*time.Millisecond || r.cfg.RetryMax != 30*time.Second || r.cfg.Rand == nil {
		t.Errorf("defaults: RetryMin %v, RetryMax %v", r.cfg.RetryMin, r.cfg.RetryMax)
	}
	for i := 1; i < 100; i++ {
		if d := r.backoff(i); d < 50*time.Millisecond || d > 30*time.Second {
			t.Fatalf("default wait after %d failures: %v", i, d)
		}
	}
}
