package reconnect

import (
	"testing"
	"time"
)

func TestBackoffSchedule(t *testing.T) {
	tests := []struct {
		name string
		rand float64
		want []time.Duration
	}{
		{"near 1: the cap", 0.999999, []time.Duration{100, 200, 400, 800, 1000, 1000, 1000}},
		{"half", 0.5, []time.Duration{50, 100, 200, 400, 500, 500, 500}},
		{"zero", 0, []time.Duration{0, 0, 0, 0, 0, 0, 0}},
		{"broken source", 7, []time.Duration{50, 100, 200, 400, 500, 500, 500}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := backoff{min: 100 * time.Millisecond, max: time.Second, rand: func() float64 { return tt.rand }}
			for i, w := range tt.want {
				w *= time.Millisecond
				got := b.next()
				if got < w-time.Millisecond || got > w {
					t.Fatalf("attempt %d: %v, want %v", i, got, w)
				}
			}
			b.reset()
			if got := b.next(); got > 100*time.Millisecond {
				t.Fatalf("after reset: %v", got)
			}
		})
	}
	huge := backoff{min: time.Second, max: 1 << 62, rand: func() float64 { return 0.999 }}
	for range 100 {
		if d := huge.next(); d < 0 {
			t.Fatalf("overflow: %v", d)
		}
	}
}
