package outbox

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/uplink"
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

// TestOutboxPositionInherited: outbox deliverers acknowledge under their
// own name (Consumer), and an outbox position stored under the name every
// earlier version used (FormerConsumer, the uplink's) is inherited, as the
// gateway configures outbox streams: a gateway upgraded with undelivered
// events in an outbox goes on after what it had delivered (nothing twice,
// nothing skipped), deletes what it delivers now, and the former position
// is gone from the file after a restart.
func TestOutboxPositionInherited(t *testing.T) {
	if FormerConsumer != "uplink" || uplink.Consumer != "uplink" || Consumer == uplink.Consumer {
		t.Fatalf("names: outbox %q, former %q, uplink %q", Consumer, FormerConsumer, uplink.Consumer)
	}
	path := filepath.Join(t.TempDir(), "buffer.db")
	old := buffertest.MustOpenPath(t, path, buffer.Options{})
	for i := range 5 {
		if err := old.Append(context.Background(), &event.Event{Stream: "_mqtt", Topic: "t", Payload: []byte{byte('1' + i)}}); err != nil {
			t.Fatal(err)
		}
	}
	// What the deliverer of an earlier version stored: Log.Ack then took
	// no consumer and always recorded "uplink".
	if err := old.Ack("_mqtt", "uplink", 3); err != nil {
		t.Fatal(err)
	}
	old.Close()
	opts := buffer.Options{Streams: []buffer.StreamConfig{{Name: "_mqtt", Consumers: []string{Consumer},
		Inherit: map[string]string{Consumer: FormerConsumer}}}}
	buf := buffertest.MustOpenPath(t, path, opts)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 5)
	done := make(chan error, 1)
	go func() {
		done <- Drain(ctx, buf, "_mqtt", slog.New(slog.DiscardHandler), func(_ context.Context, ev *event.Event) error {
			got <- string(ev.Payload)
			return nil
		})
	}()
	for _, want := range []string{"4", "5"} {
		select {
		case p := <-got:
			if p != want {
				t.Fatalf("delivered %q, want %q (events 1 to 3 were delivered before)", p, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("event %s not delivered", want)
		}
	}
	first := func(l *buffertest.Log) uint64 {
		for _, s := range l.Stats() {
			if s.Name == "_mqtt" {
				return s.First
			}
		}
		return 0
	}
	deadline := time.Now().Add(30 * time.Second)
	for first(buf) != 6 {
		if time.Now().After(deadline) {
			t.Fatalf("delivered outbox events not deleted: first offset %d, want 6", first(buf))
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		t.Fatalf("delivered %q again", p)
	default:
	}
	buf.Close()
	again := buffertest.MustOpenPath(t, path, opts)
	if p, f := again.Position("_mqtt", Consumer), again.Position("_mqtt", FormerConsumer); p != 5 || f != 0 {
		t.Fatalf("after a restart: position %d under %q (want 5), %d under %q (want none)", p, Consumer, f, FormerConsumer)
	}
}
