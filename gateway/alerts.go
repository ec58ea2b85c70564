package gateway

import (
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/opsapi"
)

// alertsKept alerts are kept, each payload cut to alertPayloadMax bytes.
const (
	alertsKept      = 10
	alertPayloadMax = 200
)

// alertRing keeps the newest pipeline outputs in memory for the status
// page: display only (the outputs themselves are in the buffer), bounded,
// safe for concurrent use.
type alertRing struct {
	mu    sync.Mutex
	items [alertsKept]opsapi.Alert
	next  int // slot of the next alert
	n     int // alerts held, at most alertsKept
}

// committed returns a rules.RunnerConfig.Committed for pipeline that keeps
// its outputs, leaving out dead letters (listed separately).
func (a *alertRing) committed(pipeline, deadLetters string) func([]event.Event) {
	return func(evs []event.Event) {
		a.mu.Lock()
		defer a.mu.Unlock()
		for i := range evs {
			e := &evs[i]
			if e.Stream == deadLetters {
				continue
			}
			p := e.Payload
			if len(p) > alertPayloadMax {
				p = p[:alertPayloadMax]
			}
			a.items[a.next] = opsapi.Alert{Time: e.Time, Pipeline: pipeline, Stream: e.Stream, Source: e.Source, Topic: e.Topic,
				Payload: strings.ToValidUTF8(string(p), string(utf8.RuneError))}
			a.next = (a.next + 1) % alertsKept
			a.n = min(a.n+1, alertsKept)
		}
	}
}

// list returns the alerts held, newest first.
func (a *alertRing) list() []opsapi.Alert {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]opsapi.Alert, 0, a.n)
	for i := 1; i <= a.n; i++ {
		out = append(out, a.items[(a.next-i+alertsKept)%alertsKept])
	}
	return out
}
