package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// logWatch is a slog.Handler that keeps every record, so a test can wait
// for a line or check that one never came.
type logWatch struct {
	mu      sync.Mutex
	lines   []logLine
	changed chan struct{} // closed and replaced on every record
	attrs   []slog.Attr   // from WithAttrs
}

// logLine is one record: its level, message and attributes as text.
type logLine struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (l logLine) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q", l.level, l.msg)
	for k, v := range l.attrs {
		fmt.Fprintf(&b, " %s=%s", k, v)
	}
	return b.String()
}

func newLogWatch() *logWatch { return &logWatch{changed: make(chan struct{})} }

// logger returns a logger writing to w at every level.
func (w *logWatch) logger() *slog.Logger { return slog.New(w) }

func (w *logWatch) Enabled(context.Context, slog.Level) bool { return true }

func (w *logWatch) Handle(_ context.Context, r slog.Record) error {
	line := logLine{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	add := func(a slog.Attr) bool {
		line.attrs[a.Key] = a.Value.String()
		return true
	}
	w.mu.Lock()
	for _, a := range w.attrs {
		add(a)
	}
	r.Attrs(add)
	w.lines = append(w.lines, line)
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
	return nil
}

// WithAttrs shares the record list: the child's lines are the parent's.
func (w *logWatch) WithAttrs(as []slog.Attr) slog.Handler {
	return &logChild{w: w, attrs: as}
}

func (w *logWatch) WithGroup(string) slog.Handler { return w }

// logChild is a logWatch with attributes, writing to its parent.
type logChild struct {
	w     *logWatch
	attrs []slog.Attr
}

func (c *logChild) Enabled(context.Context, slog.Level) bool { return true }

func (c *logChild) Handle(ctx context.Context, r slog.Record) error {
	r2 := r.Clone()
	r2.AddAttrs(c.attrs...)
	return c.w.Handle(ctx, r2)
}

func (c *logChild) WithAttrs(as []slog.Attr) slog.Handler {
	return &logChild{w: c.w, attrs: append(append([]slog.Attr(nil), c.attrs...), as...)}
}

func (c *logChild) WithGroup(string) slog.Handler { return c }

// find returns the lines whose message contains msg.
func (w *logWatch) find(msg string) []logLine {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []logLine
	for _, l := range w.lines {
		if strings.Contains(l.msg, msg) {
			out = append(out, l)
		}
	}
	return out
}

// wait returns a channel closed once a line containing msg was logged.
func (w *logWatch) wait(ctx context.Context, msg string) <-chan struct{} {
	seen := make(chan struct{})
	go func() {
		for {
			w.mu.Lock()
			changed := w.changed
			w.mu.Unlock()
			if len(w.find(msg)) > 0 {
				close(seen)
				return
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return
			}
		}
	}()
	return seen
}

// waitLine waits up to d for a line containing msg.
func (w *logWatch) waitLine(t *testing.T, d time.Duration, msg string) logLine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	select {
	case <-w.wait(ctx, msg):
		return w.find(msg)[0]
	case <-ctx.Done():
		t.Fatalf("no log line %q within %s; logged:\n%s", msg, d, w)
		return logLine{}
	}
}

// String lists every line, for failure messages.
func (w *logWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	for _, l := range w.lines {
		b.WriteString(l.String())
		b.WriteByte('\n')
	}
	return b.String()
}
