package downlink

import (
	"errors"
	"time"

	"github.com/ferrygw/ferry/internal/reconnect"
)

// schedule is the client's reconnect schedule, the uplink's (package
// reconnect).
type schedule struct{ *reconnect.Schedule }

func newReconnect(cfg Config) schedule {
	return schedule{reconnect.New(reconnect.Config{BackoffMin: cfg.BackoffMin, BackoffMax: cfg.BackoffMax,
		ProbeInterval: cfg.ProbeInterval, StableAfter: cfg.StableAfter, Rand: cfg.Rand})}
}

// afterConnectFailure returns the pause after a round of attempts over
// every endpoint failed with err.
func (s schedule) afterConnectFailure(err error) time.Duration {
	return s.AfterConnectFailure(errors.Is(err, ErrRefused))
}

// afterSession returns the pause after a session that was up for up
// ended. A session ended by a failing sink backs off like a refusal
// (refused true), however long it was up: the sink will likely fail again.
func (s schedule) afterSession(up time.Duration, refused bool) time.Duration {
	return s.AfterSession(up, refused)
}
