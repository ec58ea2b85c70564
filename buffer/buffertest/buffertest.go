// Package buffertest opens real buffer.Logs for tests: in a temporary
// directory, with the commit loop running, and checked for consistency
// (bbolt's page check plus each stream's metadata against its events) when
// the test ends, in the manner of bbolt's MustCreateDB.
package buffertest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/internal/keyring"
)

// Log is a running buffer.Log owned by a test.
type Log struct {
	*buffer.Log
	t      testing.TB
	cancel context.CancelFunc
	done   chan error
	closed bool
}

// MustOpen opens a Log at a fresh path under t.TempDir and runs it.
func MustOpen(t testing.TB, opts buffer.Options) *Log {
	t.Helper()
	return MustOpenPath(t, filepath.Join(t.TempDir(), "buffer.db"), opts)
}

// AckInterval is the Options.AckInterval of a Log opened here when the
// test sets none: acks are still deferred (the production path), but a
// test waiting for a delivered backlog to be deleted waits milliseconds,
// not buffer.DefaultAckInterval.
const AckInterval = 20 * time.Millisecond

// MustOpenPath opens (or reopens) the Log at path and runs it until Close
// or the end of the test.
func MustOpenPath(t testing.TB, path string, opts buffer.Options) *Log {
	t.Helper()
	if opts.AckInterval == 0 {
		opts.AckInterval = AckInterval
	}
	l, err := buffer.Open(path, opts)
	if err != nil {
		t.Fatalf("buffertest: open %s: %v", path, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tl := &Log{Log: l, t: t, cancel: cancel, done: make(chan error, 1)}
	go func() { tl.done <- l.Run(ctx) }()
	t.Cleanup(tl.Close)
	return tl
}

// MustKeys creates a key file with one fresh key under t.TempDir and
// loads it, for buffer.Options.Keys.
func MustKeys(t testing.TB) *keyring.Ring {
	t.Helper()
	path := filepath.Join(t.TempDir(), "buffer.key")
	if _, err := keyring.Generate(path, nil); err != nil {
		t.Fatalf("buffertest: %v", err)
	}
	r, err := keyring.Load(path)
	if err != nil {
		t.Fatalf("buffertest: %v", err)
	}
	return r
}

// Close stops the commit loop, checks the file's consistency and closes
// it. It is safe to call more than once.
func (l *Log) Close() {
	l.t.Helper()
	if l.closed {
		return
	}
	l.closed = true
	l.cancel()
	if err := <-l.done; err != nil {
		l.t.Errorf("buffertest: Run: %v", err)
	}
	if err := l.Check(); err != nil {
		l.t.Errorf("buffertest: consistency check of %s: %v", l.Path(), err)
	}
	if err := l.Log.Close(); err != nil {
		l.t.Errorf("buffertest: close: %v", err)
	}
}

// noMount skips a test that needs a tmpfs mount it cannot get, or fails
// it loudly under CI (CI set and not "false").
func noMount(t testing.TB, reason string) {
	t.Helper()
	if ci := os.Getenv("CI"); ci != "" && ci != "false" {
		t.Fatalf("%s; CI=%s requires it: run the tests as root", reason, ci)
	}
	t.Skip(reason)
}
