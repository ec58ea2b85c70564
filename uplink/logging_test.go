package uplink

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/internal/logging"
)

// TestLinesLimitedByTheLogger: the forwarder writes every line to its
// logger and limits none itself (a second limiter counted its suppressed
// lines apart from the logger's); the gateway's logger passes
// logging.DefaultBurst lines of the kind a minute. Here no endpoint is
// reachable, probed every few milliseconds.
func TestLinesLimitedByTheLogger(t *testing.T) {
	leakCheck(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	const msg = "no endpoint reachable; probing"
	var out lockedLog // poison_test.go
	logged := &countHandler{msg: msg, n: new(counter), next: logging.NewLimiter(slog.NewTextHandler(&out, nil), logging.Limits{})}
	cfg := testConfig(t, "tcp://"+dead)
	cfg.BackoffMin, cfg.BackoffMax, cfg.ProbeInterval = 2*time.Millisecond, 5*time.Millisecond, 5*time.Millisecond
	cfg.Logger = slog.New(logged).With("component", "uplink")
	_, stop := startForwarder(t, newMemQueue(), cfg)
	const attempts = 3 * logging.DefaultBurst
	waitFor(t, 20*time.Second, "failed attempts logged", func() bool { return logged.count() >= attempts })
	stop()

	written := 0
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, `msg="`+msg+`"`) {
			written++
			if !strings.Contains(line, "component=uplink") || strings.Contains(line, "suppressed") {
				t.Errorf("line %q: want component=uplink and no count of its own", line)
			}
		}
	}
	if written != logging.DefaultBurst {
		t.Errorf("%d of %d lines %q written, want %d (the logger's burst):\n%s",
			written, logged.count(), msg, logging.DefaultBurst, out.String())
	}
}

// countHandler counts the records with message msg that reach it, then
// hands every record to next.
type countHandler struct {
	msg  string
	next slog.Handler
	n    *counter
}

type counter struct {
	mu sync.Mutex
	n  int
}

func (h *countHandler) count() int {
	h.n.mu.Lock()
	defer h.n.mu.Unlock()
	return h.n.n
}

func (h *countHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *countHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.mu.Lock()
		h.n.n++
		h.n.mu.Unlock()
	}
	return h.next.Handle(ctx, r)
}

func (h *countHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &countHandler{msg: h.msg, next: h.next.WithAttrs(as), n: h.n}
}

func (h *countHandler) WithGroup(name string) slog.Handler {
	return &countHandler{msg: h.msg, next: h.next.WithGroup(name), n: h.n}
}
