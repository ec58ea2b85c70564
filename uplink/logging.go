package uplink

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// logEvery is how often one kind of repeated log line may be emitted.
const logEvery = 10 * time.Second

// limitedLogger emits each distinct message at most once per logEvery and
// reports how many were suppressed in between, so a flapping link or a
// stream of oversize events cannot flood the log.
type limitedLogger struct {
	l   *slog.Logger
	now func() time.Time

	mu   sync.Mutex
	seen map[string]*logState
}

type logState struct {
	last       time.Time
	suppressed int
}

func (ll *limitedLogger) log(level slog.Level, msg string, args ...any) {
	if !ll.l.Enabled(context.Background(), level) {
		return
	}
	now := ll.now()
	ll.mu.Lock()
	st := ll.seen[msg]
	if st == nil {
		if len(ll.seen) > 256 { // bound memory: messages are constants, this never triggers in practice
			clear(ll.seen)
		}
		st = &logState{}
		ll.seen[msg] = st
	} else if now.Sub(st.last) < logEvery {
		st.suppressed++
		ll.mu.Unlock()
		return
	}
	n := st.suppressed
	st.last, st.suppressed = now, 0
	ll.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	ll.l.Log(context.Background(), level, msg, args...)
}
