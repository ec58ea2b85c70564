package buffer_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/event"
)

func TestUpdateAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	opts := buffer.Options{Streams: []buffer.StreamConfig{
		{Name: "raw", Consumers: []string{buffer.DefaultConsumer, "p1"}},
		{Name: "small", MaxEvents: 1, Overflow: buffer.Reject},
	}}
	l := buffertest.MustOpenPath(t, path, opts)
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		mustAppend(t, l, ev("raw", i, 10))
	}
	// The uplink alone may not delete what the pipeline has not processed.
	if err := l.Ack("raw", buffer.DefaultConsumer, 10); err != nil {
		t.Fatal(err)
	}
	var refused error
	err := l.Update(ctx, func(tx *buffer.Tx) error {
		if err := tx.Append(ev("out", 1, 5)); err != nil {
			return err
		}
		if err := tx.Append(ev("small", 1, 5)); err != nil {
			return err
		}
		refused = tx.Append(ev("small", 2, 5)) // over the bound: refused, not fatal
		if err := tx.PutState("p1", []byte("state-1")); err != nil {
			return err
		}
		return tx.Ack("raw", "p1", 6)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(refused, buffer.ErrFull) {
		t.Fatalf("append over bound in a tx: %v", refused)
	}
	if st := statsOf(l, "raw"); st.Events != 4 || st.First != 7 {
		t.Fatalf("raw after uplink ack 10 and p1 consume 6: %+v", st)
	}
	// A failing update leaves nothing behind.
	boom := errors.New("boom")
	err = l.Update(ctx, func(tx *buffer.Tx) error {
		_ = tx.Append(ev("out", 2, 5))
		_ = tx.PutState("p1", []byte("state-2"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("update error %v", err)
	}
	l.Close()

	l = buffertest.MustOpenPath(t, path, opts)
	if st := statsOf(l, "out"); st.Events != 1 {
		t.Fatalf("out after reopen: %+v", st)
	}
	if s, err := l.State("p1"); err != nil || string(s) != "state-1" {
		t.Fatalf("state %q %v", s, err)
	}
	if p := l.Position("raw", "p1"); p != 6 {
		t.Fatalf("position %d", p)
	}
	if p := l.Position("raw", buffer.DefaultConsumer); p != 10 {
		t.Fatalf("uplink position %d", p)
	}
	// Once p1 catches up, everything goes.
	if err := l.Update(ctx, func(tx *buffer.Tx) error { return tx.Ack("raw", "p1", 10) }); err != nil {
		t.Fatal(err)
	}
	if st := statsOf(l, "raw"); st.Events != 0 {
		t.Fatalf("raw after both consumed: %+v", st)
	}
	_ = event.Event{}
}
