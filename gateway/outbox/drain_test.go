package outbox

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/event"
)

// msgSignal is a slog.Handler that signals once a line with msg is logged.
type msgSignal struct {
	msg  string
	seen chan struct{}
}

func (h *msgSignal) Enabled(context.Context, slog.Level) bool { return true }
func (h *msgSignal) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *msgSignal) WithGroup(string) slog.Handler            { return h }
func (h *msgSignal) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		select {
		case h.seen <- struct{}{}:
		default:
		}
	}
	return nil
}

// TestDrainOutlivesReadErrors: a deliverer whose outbox cannot be read
// (here: a buffer file already closed) logs it and keeps retrying; only
// the end of its context ends it.
func TestDrainOutlivesReadErrors(t *testing.T) {
	buf, err := buffer.Open(filepath.Join(t.TempDir(), "buffer.db"), buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stopBuf := context.WithCancel(context.Background())
	bufDone := make(chan error, 1)
	go func() { bufDone <- buf.Run(ctx) }()
	if err := buf.Append(context.Background(), &event.Event{Stream: "_mqtt", Topic: "t", Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	stopBuf()
	if err := <-bufDone; err != nil {
		t.Fatal(err)
	}
	if err := buf.Close(); err != nil {
		t.Fatal(err)
	}

	h := &msgSignal{msg: "outbox read failed: retrying", seen: make(chan struct{}, 1)}
	dctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Drain(dctx, buf, "_mqtt", slog.New(h), func(context.Context, *event.Event) error {
			t.Error("delivered an event from a closed buffer")
			return nil
		})
	}()
	select {
	case <-h.seen:
	case err := <-done:
		t.Fatalf("drain ended on a read error: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no read failure logged")
	}
	select {
	case err := <-done:
		t.Fatalf("drain ended on a read error: %v", err)
	default:
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("drain after its context ended: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("drain did not end with its context")
	}
}
