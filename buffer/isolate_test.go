package buffer_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
)

// TestFailingUpdateIsolated puts concurrent appends, an Update that
// succeeds and an Update whose function fails (by error, by panic) into
// one group commit: the appends and the good Update are stored, the
// failing Update gets its error and leaves nothing behind, and the commit
// loop goes on.
func TestFailingUpdateIsolated(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name string
		fail func() error
		want error
	}{
		{"error", func() error { return boom }, boom},
		{"panic", func() error { panic("pipeline bug") }, buffer.ErrUpdatePanic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := buffertest.MustOpen(t, buffer.Options{})
			ctx := context.Background()

			// Hold the commit loop inside a transaction until the whole
			// group is queued, so that it commits together.
			holding, release := make(chan struct{}), make(chan struct{})
			held := make(chan error, 1)
			go func() {
				held <- l.Update(ctx, func(*buffer.Tx) error { close(holding); <-release; return nil })
			}()
			<-holding

			const appends = 20
			var wg sync.WaitGroup
			appendErrs := make(chan error, appends)
			for i := 0; i < appends; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					appendErrs <- l.Append(ctx, ev("sensors", i, 20))
				}()
			}
			failed, good := make(chan error, 1), make(chan error, 1)
			go func() {
				failed <- l.Update(ctx, func(tx *buffer.Tx) error {
					if err := tx.Append(ev("out", 1, 10)); err != nil {
						return err
					}
					if err := tx.PutState("bad", []byte("bad")); err != nil {
						return err
					}
					return tt.fail()
				})
			}()
			go func() {
				good <- l.Update(ctx, func(tx *buffer.Tx) error {
					if err := tx.Append(ev("out", 2, 10)); err != nil {
						return err
					}
					return tx.PutState("good", []byte("good"))
				})
			}()
			waitFor(t, func() bool { return l.Queued() == appends+2 })
			close(release)
			if err := <-held; err != nil {
				t.Fatalf("holding update: %v", err)
			}

			wg.Wait()
			close(appendErrs)
			for err := range appendErrs {
				if err != nil {
					t.Errorf("append sharing a commit with a failing update: %v", err)
				}
			}
			if err := <-failed; !errors.Is(err, tt.want) {
				t.Fatalf("failing update returned %v, want %v", err, tt.want)
			}
			if err := <-good; err != nil {
				t.Fatalf("good update: %v", err)
			}
			if n := statsOf(l, "sensors").Events; n != appends {
				t.Fatalf("%d appended events stored, want %d", n, appends)
			}
			_, out := readAll(t, l, "out", 0)
			if fmt.Sprint(out) != fmt.Sprint([]string{string(ev("out", 2, 10).Payload)}) {
				t.Fatalf("out holds %q, want only the good update's event", out)
			}
			for name, want := range map[string]string{"good": "good", "bad": ""} {
				if got, err := l.State(name); err != nil || string(got) != want {
					t.Fatalf("state %q = %q, %v; want %q", name, got, err, want)
				}
			}
			// The commit loop survived: appends still commit.
			mustAppend(t, l, ev("sensors", 99, 20))
		})
	}
}
