package buffer_test

import (
	"context"
	"testing"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
)

// TestAckedDuringCommit: while the commit that carries an ack runs, Acked
// still reports it. A reload starts the new uplink from Acked; reading 0
// there made it resend what the cloud had already confirmed.
func TestAckedDuringCommit(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	ctx := context.Background()
	if err := l.Append(ctx, ev("s", 1, 10)); err != nil {
		t.Fatal(err)
	}

	// Hold the loop so the ack and the probe share the next commit.
	holding, release := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- l.Update(ctx, func(*buffer.Tx) error { close(holding); <-release; return nil })
	}()
	<-holding
	if err := l.Ack("s", buffer.DefaultConsumer, 1); err != nil {
		t.Fatal(err)
	}
	inCommit, done := make(chan uint64, 1), make(chan error, 1)
	go func() {
		done <- l.Update(ctx, func(*buffer.Tx) error {
			// Called from inside the commit that took the ack: neither
			// pending nor installed yet.
			inCommit <- l.Acked("s", buffer.DefaultConsumer)
			return nil
		})
	}()
	waitFor(t, func() bool { return l.Queued() == 1 })
	close(release)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if got := <-inCommit; got != 1 {
		t.Errorf("Acked during the commit carrying Ack(1) = %d, want 1", got)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := l.Acked("s", buffer.DefaultConsumer); got != 1 {
		t.Errorf("Acked after the commit = %d, want 1", got)
	}
}

// TestAckOfJustCommittedEvent: a reader sees an event as soon as its
// transaction commits, a moment before the log's own bookkeeping does; an
// uplink that forwards it and gets the cloud's PUBACK in that moment must
// not have its Ack cut back to the previous event (which would resend it
// after a restart). Modelled deterministically: the Ack comes while the
// transaction appending the event is still open.
func TestAckOfJustCommittedEvent(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	ctx := context.Background()
	if err := l.Append(ctx, ev("s", 1, 10)); err != nil {
		t.Fatal(err)
	}
	inTx, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- l.Update(ctx, func(tx *buffer.Tx) error {
			if err := tx.Append(ev("s", 2, 10)); err != nil {
				return err
			}
			close(inTx)
			<-release
			return nil
		})
	}()
	<-inTx
	if err := l.Ack("s", buffer.DefaultConsumer, 2); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		for _, st := range l.Stats() {
			if st.Name == "s" {
				return st.Events == 0
			}
		}
		return false
	})
	if got := l.Acked("s", buffer.DefaultConsumer); got != 2 {
		t.Errorf("Acked = %d, want 2", got)
	}
}
