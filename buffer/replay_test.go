package buffer_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
)

// TestReplayedThrough: Rewind keeps where the consumer was (its pending
// acknowledgements included) so the events read again up to there are
// known as replays, also after a restart; a second rewind keeps the
// larger mark; the mark goes once the consumer's position reaches it,
// and with the consumer when the stream no longer requires it.
func TestReplayedThrough(t *testing.T) {
	const up = buffer.DefaultConsumer
	path := filepath.Join(t.TempDir(), "b.db")
	opts := buffer.Options{Streams: []buffer.StreamConfig{
		{Name: "s", Retain: time.Hour, Consumers: []string{up, "pipeline:p"}},
	}}
	l := buffertest.MustOpenPath(t, path, opts)
	for i := 1; i <= 20; i++ {
		mustAppend(t, l, ev("s", i, 10))
	}
	ack := func(consumer string, through uint64) {
		t.Helper()
		if err := l.Ack("s", consumer, through); err != nil {
			t.Fatal(err)
		}
	}
	want := func(what string, through uint64) {
		t.Helper()
		if got := l.ReplayedThrough("s", up); got != through {
			t.Fatalf("%s: ReplayedThrough = %d, want %d", what, got, through)
		}
	}
	want("never rewound", 0)
	ack(up, 8)
	commit(t, l)
	ack(up, 10) // pending when the rewind comes
	if err := l.Rewind("s", up, 3); err != nil {
		t.Fatal(err)
	}
	want("after Rewind to 3 from 10 (pending)", 10)
	if got := l.Acked("s", up); got != 2 {
		t.Fatalf("Acked after the rewind = %d, want 2", got)
	}
	if got := l.ReplayedThrough("s", "pipeline:p"); got != 0 {
		t.Fatalf("the other consumer's mark = %d, want 0", got)
	}

	l.Close()
	l = buffertest.MustOpenPath(t, path, opts)
	want("after a restart", 10)

	ack(up, 6)
	commit(t, l)
	if err := l.Rewind("s", up, 5); err != nil {
		t.Fatal(err)
	}
	want("a second rewind, from below the mark", 10)
	ack(up, 9)
	commit(t, l)
	want("position below the mark", 10)
	ack(up, 10)
	commit(t, l)
	want("position reached the mark", 0)
	l.Close()
	l = buffertest.MustOpenPath(t, path, opts)
	want("cleared, after a restart", 0)

	// A forward "rewind" replays nothing.
	if err := l.Rewind("s", up, 15); err != nil {
		t.Fatal(err)
	}
	want("rewound forward", 0)

	// The mark goes with a consumer the stream no longer requires.
	if err := l.Rewind("s", "pipeline:p", 1); err != nil {
		t.Fatal(err)
	}
	ack("pipeline:p", 12)
	commit(t, l)
	if err := l.Rewind("s", "pipeline:p", 2); err != nil {
		t.Fatal(err)
	}
	if got := l.ReplayedThrough("s", "pipeline:p"); got != 12 {
		t.Fatalf("pipeline's mark = %d, want 12", got)
	}
	l.Configure([]buffer.StreamConfig{{Name: "s", Retain: time.Hour}})
	if got := l.ReplayedThrough("s", "pipeline:p"); got != 0 {
		t.Fatalf("mark of a consumer no longer required = %d, want 0", got)
	}
	if err := l.Update(context.Background(), func(tx *buffer.Tx) error { return tx.Ack("s", up, 15) }); err != nil {
		t.Fatal(err)
	}
	l.Close() // the consistency check compares the file's marks with the log's
}
