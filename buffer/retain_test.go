package buffer_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/event"
)

// TestRetainAndRewind keeps acknowledged events for Retain, rewinds the
// uplink's position onto them, and lets a sweep delete them once they are
// older than Retain.
func TestRetainAndRewind(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l := buffertest.MustOpen(t, buffer.Options{Now: clock, SweepInterval: 5 * time.Millisecond,
		Streams: []buffer.StreamConfig{{Name: "kept", Retain: time.Hour}, {Name: "gone"}}})
	ctx := context.Background()
	for _, s := range []string{"kept", "gone"} {
		for i := 1; i <= 5; i++ {
			if err := l.Append(ctx, &event.Event{Stream: s, Time: clock(), Payload: []byte{byte(i)}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.Ack(s, buffer.DefaultConsumer, 5); err != nil {
			t.Fatal(err)
		}
	}
	if got := l.Acked("kept", buffer.DefaultConsumer); got != 5 {
		t.Fatalf("Acked before the commit = %d, want 5 (pending acks count)", got)
	}
	commit := func() {
		t.Helper()
		if err := l.Update(ctx, func(*buffer.Tx) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	commit()
	events := func(name string) int64 {
		for _, s := range l.Stats() {
			if s.Name == name {
				return s.Events
			}
		}
		return -1
	}
	if k, g := events("kept"), events("gone"); k != 5 || g != 0 {
		t.Fatalf("after the ack: kept %d events (want 5, retained), gone %d (want 0)", k, g)
	}

	if err := l.Rewind("kept", buffer.DefaultConsumer, 3); err != nil {
		t.Fatalf("Rewind: %v", err)
	}
	if got := l.Acked("kept", buffer.DefaultConsumer); got != 2 {
		t.Fatalf("Acked after rewinding to 3 = %d, want 2", got)
	}
	var offs []uint64
	if _, err := l.Read("kept", l.Acked("kept", buffer.DefaultConsumer)+1, 10, func(off uint64, _ *event.Event) error {
		offs = append(offs, off)
		return nil
	}); err != nil || len(offs) != 3 || offs[0] != 3 {
		t.Fatalf("read after the rewind: %v, %v; want offsets 3..5", offs, err)
	}
	for _, tc := range []struct {
		stream string
		to     uint64
	}{{"kept", 0}, {"kept", 7}, {"gone", 2}, {"nosuch", 1}} {
		if err := l.Rewind(tc.stream, buffer.DefaultConsumer, tc.to); !errors.Is(err, buffer.ErrOffsetGone) {
			t.Errorf("Rewind(%s, %d) = %v, want ErrOffsetGone", tc.stream, tc.to, err)
		}
	}

	// Acked again, then older than Retain: the sweep deletes them.
	if err := l.Ack("kept", buffer.DefaultConsumer, 5); err != nil {
		t.Fatal(err)
	}
	commit()
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for events("kept") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("retained events not swept after Retain: %d left", events("kept"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := l.Rewind("kept", buffer.DefaultConsumer, 3); !errors.Is(err, buffer.ErrOffsetGone) {
		t.Fatalf("Rewind onto swept events = %v, want ErrOffsetGone", err)
	}
}
