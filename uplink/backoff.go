package uplink

import (
	"errors"
	"time"

	"github.com/ferrygw/ferry/internal/reconnect"
)

// schedule is the forwarder's reconnect schedule (see "Reconnecting" in
// the package doc and package reconnect).
type schedule struct {
	*reconnect.Schedule
	probe time.Duration
	rand  func() float64
}

func newReconnect(cfg Config) schedule {
	return schedule{reconnect.New(reconnect.Config{BackoffMin: cfg.BackoffMin, BackoffMax: cfg.BackoffMax,
		ProbeInterval: cfg.ProbeInterval, StableAfter: cfg.StableAfter, Rand: cfg.Rand}), cfg.ProbeInterval, cfg.Rand}
}

// afterConnectFailure returns the pause after a round of connection
// attempts over every endpoint failed with err.
func (s schedule) afterConnectFailure(err error) time.Duration {
	return s.AfterConnectFailure(errors.Is(err, ErrRefused))
}

// afterSession returns the pause after a connection that was up for up
// was lost.
func (s schedule) afterSession(up time.Duration) time.Duration { return s.AfterSession(up, false) }

// failover returns the pause before trying the next endpoint after a
// connection was lost soon after it was accepted, while endpoints of the
// round remain: random in [0, ProbeInterval/4), enough to spread a fleet
// failing over from one dead node, short enough to be quick.
func (s schedule) failover() time.Duration {
	r := s.rand()
	if r < 0 || r >= 1 {
		r = 0.5
	}
	return time.Duration(r * float64(s.probe/4))
}
