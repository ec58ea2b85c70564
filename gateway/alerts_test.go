package gateway

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ferrygw/ferry/event"
)

func TestAlertRing(t *testing.T) {
	var a alertRing
	add := a.committed("p", "deadletter")
	if got := a.list(); len(got) != 0 {
		t.Fatalf("empty ring lists %v", got)
	}
	var evs []event.Event
	for i := range 12 {
		evs = append(evs, event.Event{Stream: "alerts", Source: fmt.Sprint(i), Payload: []byte(strings.Repeat("x", 300))})
		evs = append(evs, event.Event{Stream: "deadletter", Source: "dead"})
	}
	add(evs[:5])
	add(evs[5:])
	got := a.list()
	if len(got) != alertsKept {
		t.Fatalf("%d alerts kept, want %d", len(got), alertsKept)
	}
	for i, al := range got {
		if want := fmt.Sprint(11 - i); al.Source != want || al.Pipeline != "p" || len(al.Payload) != alertPayloadMax {
			t.Errorf("alert %d = source %q pipeline %q payload %d bytes; want source %s, pipeline p, %d bytes",
				i, al.Source, al.Pipeline, len(al.Payload), want, alertPayloadMax)
		}
	}
}
