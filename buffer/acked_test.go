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
	if err := l.Ack("s", 1); err != nil {
		t.Fatal(err)
	}
	inCommit, done := make(chan uint64, 1), make(chan error, 1)
	go func() {
		done <- l.Update(ctx, func(*buffer.Tx) error {
			// Called from inside the commit that took the ack: neither
			// pending nor installed yet.
			inCommit <- l.Acked("s")
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
	if got := l.Acked("s"); got != 1 {
		t.Errorf("Acked after the commit = %d, want 1", got)
	}
}
