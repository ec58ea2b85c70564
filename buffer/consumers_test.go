package buffer_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
)

// commit waits for one group commit, which applies the pending acks.
func commit(t testing.TB, l *buffertest.Log) {
	t.Helper()
	if err := l.Update(context.Background(), func(*buffer.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

// TestRemovedConsumerKeepsUplinkEvents removes the last pipeline of a
// forwarded stream, by reload (Configure) and by restart (Open with the
// new config), after the pipeline got ahead of the uplink: the stream is
// then configured without consumers, as the gateway builds it, and the
// uplink must still get every event it had not acknowledged, through the
// retain sweep, the uplink's next ack and a late commit of the stopping
// pipeline. The pipeline's stale position must be forgotten, also in the
// file.
func TestRemovedConsumerKeepsUplinkEvents(t *testing.T) {
	const pipeline = "pipeline:p"
	both := []buffer.StreamConfig{{Name: "raw", Retain: time.Hour, Consumers: []string{buffer.DefaultConsumer, pipeline}}}
	uplinkOnly := []buffer.StreamConfig{{Name: "raw", Retain: time.Hour}} // forwarded, no pipeline reads it
	for _, how := range []string{"reload", "restart"} {
		t.Run(how, func(t *testing.T) {
			var mu sync.Mutex
			now := time.Unix(1_700_000_000, 0)
			clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			opts := func(streams []buffer.StreamConfig) buffer.Options {
				return buffer.Options{Now: clock, SweepInterval: 5 * time.Millisecond, Streams: streams}
			}
			path := filepath.Join(t.TempDir(), "b.db")
			l := buffertest.MustOpenPath(t, path, opts(both))
			ctx := context.Background()
			for i := 1; i <= 10; i++ {
				mustAppend(t, l, ev("raw", i, 10))
			}
			if err := l.Ack("raw", buffer.DefaultConsumer, 3); err != nil {
				t.Fatal(err)
			}
			if err := l.Update(ctx, func(tx *buffer.Tx) error { return tx.Ack("raw", pipeline, 8) }); err != nil {
				t.Fatal(err)
			}

			switch how {
			case "reload":
				l.Configure(uplinkOnly)
				// The stopping pipeline commits once more, after the reload.
				if err := l.Update(ctx, func(tx *buffer.Tx) error { return tx.Ack("raw", pipeline, 9) }); err != nil {
					t.Fatal(err)
				}
			case "restart":
				l.Close()
				l = buffertest.MustOpenPath(t, path, opts(uplinkOnly))
			}
			if err := l.Ack("raw", buffer.DefaultConsumer, 4); err != nil {
				t.Fatal(err)
			}
			commit(t, l)
			mu.Lock()
			now = now.Add(2 * time.Hour) // the retain sweep may delete what was processed
			mu.Unlock()
			waitFor(t, func() bool { return statsOf(l, "raw").First > 4 })
			offs, _ := readAll(t, l, "raw", l.Acked("raw", buffer.DefaultConsumer)+1)
			if len(offs) != 6 || offs[0] != 5 || offs[5] != 10 {
				t.Fatalf("uplink reads %v after acking 4, want offsets 5..10", offs)
			}
			if p := l.Position("raw", pipeline); p != 0 {
				t.Fatalf("removed pipeline's position = %d, want forgotten", p)
			}
			if d := statsOf(l, "raw").Drops; len(d) != 0 {
				t.Fatalf("drops %v, want none", d)
			}

			// Forgotten in the file too: the next start does not see it.
			l.Close()
			l = buffertest.MustOpenPath(t, path, buffer.Options{})
			if p := l.Position("raw", pipeline); p != 0 {
				t.Fatalf("after another restart the pipeline's position = %d, want forgotten", p)
			}
			if p := l.Position("raw", buffer.DefaultConsumer); p != 4 {
				t.Fatalf("uplink position %d, want 4", p)
			}
		})
	}
}

// TestDeletionPastConsumerCounted deletes events that a consumer holding a
// position on the stream (but not required by it) has not processed: each
// such event is counted once as DropUnconsumed, visible in Stats and kept
// across a restart. Deletions every consumer has processed are not.
func TestDeletionPastConsumerCounted(t *testing.T) {
	type position struct {
		consumer string
		through  uint64
	}
	tests := []struct {
		name      string
		consumers []string // configured
		// positions in the order they are recorded; the last one deletes
		positions      []position
		wantFirst      uint64
		wantUnconsumed uint64
	}{
		{"uplink deletes past a pipeline", nil,
			[]position{{"pipeline:audit", 2}, {buffer.DefaultConsumer, 10}}, 11, 8},
		{"pipeline deletes past the uplink", []string{"pipeline:p"},
			[]position{{buffer.DefaultConsumer, 4}, {"pipeline:p", 7}}, 8, 3},
		{"every consumer required", []string{buffer.DefaultConsumer, "pipeline:p"},
			[]position{{buffer.DefaultConsumer, 4}, {"pipeline:p", 7}}, 5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "b.db")
			opts := buffer.Options{Streams: []buffer.StreamConfig{{Name: "s", Consumers: tt.consumers}}}
			l := buffertest.MustOpenPath(t, path, opts)
			for i := 1; i <= 10; i++ {
				mustAppend(t, l, ev("s", i, 10))
			}
			for _, p := range tt.positions {
				err := l.Update(context.Background(), func(tx *buffer.Tx) error { return tx.Ack("s", p.consumer, p.through) })
				if err != nil {
					t.Fatal(err)
				}
			}
			st := statsOf(l, "s")
			if st.First != tt.wantFirst || st.Drops[buffer.DropUnconsumed] != tt.wantUnconsumed {
				t.Fatalf("first %d, drops %v; want first %d and %d unconsumed", st.First, st.Drops, tt.wantFirst, tt.wantUnconsumed)
			}
			l.Close()
			l = buffertest.MustOpenPath(t, path, opts)
			if got := statsOf(l, "s").Drops[buffer.DropUnconsumed]; got != tt.wantUnconsumed {
				t.Fatalf("after restart %d unconsumed, want %d", got, tt.wantUnconsumed)
			}
		})
	}
}
