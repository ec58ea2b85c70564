package rules

import (
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ferrygw/ferry/event"
)

// TestDeadLetterBounded: a dead letter keeps at most DeadLetterPayload
// bytes of the payload, with the original size and a truncated flag, and
// a reason of at most MaxReason bytes, cut on a character boundary.
func TestDeadLetterBounded(t *testing.T) {
	long := strings.Repeat("é", MaxReason) // 2 bytes each: the cut falls inside one
	for _, tc := range []struct {
		name      string
		keep      int
		payload   int
		reason    string
		wantBytes int
		truncated bool
	}{
		{"small payload kept whole", 4096, 100, "decode: bad", 100, false},
		{"large payload cut", 4096, 250_000, "decode: bad", 4096, true},
		{"none kept", 0, 10, "x", 0, true},
		{"empty payload", 0, 0, "x", 0, false},
		{"long reason", 4096, 10, long, 10, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Runner{p: &Pipeline{Name: "p", DeadLetter: "dead", DeadLetterPayload: tc.keep}}
			ev := &event.Event{Stream: "in", Time: time.Unix(1, 0),
				Payload: []byte(strings.Repeat("a", tc.payload))}
			r.deadLetter(ev, tc.reason)
			if len(r.pending) != 1 {
				t.Fatalf("%d pending, want 1", len(r.pending))
			}
			d := r.pending[0]
			if len(d.Payload) != tc.wantBytes || (d.Attrs["truncated"] == "true") != tc.truncated {
				t.Fatalf("%d payload bytes, truncated %q; want %d, %v", len(d.Payload), d.Attrs["truncated"], tc.wantBytes, tc.truncated)
			}
			// The original size is kept when it differs from the payload's.
			if got, want := d.Attrs["original_size"], strconv.Itoa(tc.payload); tc.truncated && got != want || !tc.truncated && got != "" {
				t.Fatalf("original_size %q, want %q when truncated (%v)", got, want, tc.truncated)
			}
			if reason := d.Attrs["reason"]; len(reason) > MaxReason || !utf8.ValidString(reason) || !strings.HasPrefix(tc.reason, strings.TrimSuffix(reason, "…")) {
				t.Fatalf("reason of %d bytes (valid UTF-8 %v), want at most %d, a prefix of the original", len(reason), utf8.ValidString(reason), MaxReason)
			}
			if len(ev.Payload) > 0 && len(d.Payload) > 0 && &d.Payload[0] == &ev.Payload[0] {
				t.Fatal("the dead letter shares the input's payload (Read reuses it)")
			}
		})
	}
}
