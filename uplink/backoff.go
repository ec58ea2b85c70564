package uplink

import (
	"errors"
	"time"

	"github.com/ferrygw/ferry/internal/reconnect"
)

// schedule is the forwarder's reconnect schedule (see "Reconnecting" in
// the package doc and package reconnect).
type schedule struct{ *reconnect.Schedule }

func newReconnect(cfg Config) schedule {
	return schedule{reconnect.New(reconnect.Config{BackoffMin: cfg.BackoffMin, BackoffMax: cfg.BackoffMax,
		ProbeInterval: cfg.ProbeInterval, StableAfter: cfg.StableAfter, Rand: cfg.Rand})}
}

// afterConnectFailure returns the pause after a round of connection
// attempts over every endpoint failed with err.
func (s schedule) afterConnectFailure(err error) time.Duration {
	return s.AfterConnectFailure(errors.Is(err, ErrRefused))
}

// afterSession returns the pause after a connection that was up for up
// was lost.
func (s schedule) afterSession(up time.Duration) time.Duration { return s.AfterSession(up, false) }
