package rules_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/rules"
	"github.com/ferrygw/ferry/gateway/rules/payload"
	"github.com/ferrygw/ferry/gateway/rules/record"
)

// The runner's log message for a failed read or commit, and a string
// every input payload holds, which must never reach the log.
const (
	failMsg    = "pipeline failed: starting over from its last commit"
	resumedMsg = "pipeline going on after failures"
	marker     = "payload-must-not-be-logged"
)

// seqStage numbers the records it sees, so its outputs show whether a
// retry started from the committed state: state from a failed attempt
// skips numbers, a lost state starts them over.
type seqStage struct{ n int }

func (s *seqStage) Process(r *record.Record, emit record.Emit) error {
	s.n++
	o := r.Clone()
	o.Fields["seq"] = float64(s.n)
	emit(o)
	return nil
}

func (s *seqStage) Advance(time.Time, record.Emit) {}

func (s *seqStage) MarshalState() ([]byte, error) {
	if s.n == 0 {
		return nil, nil
	}
	return strconv.AppendInt(nil, int64(s.n), 10), nil
}

func (s *seqStage) UnmarshalState(b []byte) error {
	if len(b) == 0 {
		s.n = 0
		return nil
	}
	n, err := strconv.Atoi(string(b))
	s.n = n
	return err
}

func seqPipeline() *rules.Pipeline {
	return &rules.Pipeline{
		Name:        "seq",
		Input:       "in",
		Format:      payload.FormatJSON,
		EventTime:   true,
		Stages:      []rules.Stage{&seqStage{}},
		Outputs:     []rules.Output{{Stream: "out"}},
		DeadLetter:  "dead",
		Fingerprint: "seq-v1",
	}
}

// writeInputs appends n events to stream "in" in one transaction; each
// payload carries its index i and pad bytes of the marker.
func writeInputs(t *testing.T, l *buffertest.Log, n, pad int) {
	t.Helper()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	padding := strings.Repeat(marker, pad/len(marker)+1)[:max(pad, len(marker))]
	err := l.Update(context.Background(), func(tx *buffer.Tx) error {
		for i := range n {
			ev := &event.Event{
				ID:          event.ID{byte(i >> 8), byte(i), 0xfe},
				Stream:      "in",
				Source:      "dev-1",
				Topic:       "sensors/dev-1/temp",
				Time:        t0.Add(time.Duration(i) * time.Second),
				ContentType: "application/json",
				Payload:     []byte(fmt.Sprintf(`{"i":%d,"pad":%q}`, i, padding)),
			}
			if err := tx.Append(ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("write inputs: %v", err)
	}
}

// logSink collects a runner's log lines.
type logSink struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *logSink) count(msg string) int { return strings.Count(s.String(), msg) }

// running is a Runner started by startRunner.
type running struct {
	*rules.Runner
	done chan error
	logs *logSink
}

// startRunner runs p on l with quick retries and commits, until the end
// of the test, when Run must return nil promptly.
func startRunner(t *testing.T, p *rules.Pipeline, l rules.Store, batch int) *running {
	t.Helper()
	logs := &logSink{}
	r := &running{
		Runner: rules.NewRunner(p, l, rules.RunnerConfig{
			BatchSize:      batch,
			CommitInterval: time.Nanosecond,
			Tick:           5 * time.Millisecond,
			RetryMin:       time.Millisecond,
			RetryMax:       8 * time.Millisecond,
			Rand:           func() float64 { return 0.5 },
			Logger:         slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		}),
		done: make(chan error, 1),
		logs: logs,
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { r.done <- r.Run(ctx) }()
	t.Cleanup(func() { // before the log's Close: registered after it
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run returned %v after its context ended, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
	return r
}

// waitFor waits until cond holds, failing the test at the deadline or as
// soon as Run returns: only the end of its context may end it.
func (r *running) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case err := <-r.done:
			r.done <- nil // reported here, not again by the cleanup
			t.Fatalf("waiting for %s: Run returned %v while its context was live\nlog:\n%s", what, err, r.logs)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; stats %+v\nlog:\n%s", what, r.Stats(), r.logs)
		}
	}
}

func streamStats(l *buffertest.Log, name string) buffer.StreamStats {
	for _, s := range l.Stats() {
		if s.Name == name {
			return s
		}
	}
	return buffer.StreamStats{Name: name}
}

// readAll returns the events of stream from offset from on, and the offset
// after the last.
func readAll(t *testing.T, l *buffertest.Log, stream string, from uint64) ([]event.Event, uint64) {
	t.Helper()
	var evs []event.Event
	next, err := l.Read(stream, from, 1<<20, func(_ uint64, ev *event.Event) error {
		evs = append(evs, *ev) // Unmarshal copies what it keeps
		evs[len(evs)-1].Payload = bytes.Clone(ev.Payload)
		return nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", stream, err)
	}
	return evs, next
}

// checkOutputs checks that outs are the outputs of inputs 0..n-1, each
// exactly once, in order, numbered 1..n by the stage.
func checkOutputs(t *testing.T, outs []event.Event, n int) {
	t.Helper()
	got := make([]string, len(outs))
	ids := map[event.ID]bool{}
	for k, ev := range outs {
		var f struct{ I, Seq int }
		if err := json.Unmarshal(ev.Payload, &f); err != nil {
			t.Fatalf("output %d: %v", k, err)
		}
		got[k] = fmt.Sprintf("%d/%d", f.I, f.Seq)
		if ids[ev.ID] {
			t.Errorf("output %d: ID %s twice", k, ev.ID)
		}
		ids[ev.ID] = true
	}
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("%d/%d", i, i+1)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("outputs (input/seq):\n got %v\nwant %v", got, want)
	}
}

// checkLogs checks that the failures were logged, with the buffer's
// reason, that the runner said it got on again, and that no payload
// reached the log.
func (r *running) checkLogs(t *testing.T, reason string) {
	t.Helper()
	logs := r.logs.String()
	if !strings.Contains(logs, reason) {
		t.Errorf("log does not name the reason %q:\n%s", reason, logs)
	}
	if !strings.Contains(logs, resumedMsg) {
		t.Errorf("log does not say the pipeline got on again:\n%s", logs)
	}
	if strings.Contains(logs, marker) {
		t.Errorf("a payload reached the log:\n%s", logs)
	}
}

// TestRunnerOutputRefused: an output stream that refuses events
// (overflow: reject, at its bound) fails the runner's whole commit. Run
// must not return, and must not consume input whose outputs were not
// stored; once the stream has room again (drained by its consumer, or its
// bound raised) every output is there exactly once, in order, numbered
// from the committed stage state.
func TestRunnerOutputRefused(t *testing.T) {
	const n = 10
	for _, how := range []string{"drain", "configure"} {
		t.Run(how, func(t *testing.T) {
			l := buffertest.MustOpen(t, buffer.Options{Durability: buffer.DurabilityNone,
				Streams: []buffer.StreamConfig{{Name: "out", MaxEvents: 3, Overflow: buffer.Reject}}})
			writeInputs(t, l, n, 0)
			// Batches of 2: the first commits, the second has room for
			// one of its two outputs only.
			r := startRunner(t, seqPipeline(), l, 2)

			r.waitFor(t, "the runner to fail on the full stream", func() bool {
				return r.logs.count(failMsg) >= 3 || r.Stats().Position == n
			})
			if st, out := r.Stats(), streamStats(l, "out"); st.Position != 2 || out.Next != 3 || st.In != 2 || st.Out != 2 {
				t.Fatalf("while out is full: runner %+v, out %+v; want input consumed through 2 and exactly its 2 outputs stored (refused outputs must not be dropped)", st, out)
			}

			var outs []event.Event
			switch how {
			case "drain":
				from := uint64(1)
				r.waitFor(t, "every output through a draining consumer", func() bool {
					evs, next := readAll(t, l, "out", from)
					outs = append(outs, evs...)
					from = next
					// Acked on every poll, not once: Ack bounds its offset
					// by the committed stream state, which a Read can run
					// ahead of for a moment.
					if err := l.Ack("out", buffer.DefaultConsumer, from-1); err != nil {
						t.Fatal(err)
					}
					return len(outs) >= n
				})
			case "configure":
				l.Configure([]buffer.StreamConfig{{Name: "out", MaxEvents: 100, Overflow: buffer.Reject}})
				r.waitFor(t, "every input processed", func() bool { return r.Stats().Position == n })
				outs, _ = readAll(t, l, "out", 1)
			}
			checkOutputs(t, outs, n)
			r.waitFor(t, "the last commit", func() bool { return r.Stats().Position == n })
			if st := r.Stats(); st.In != n || st.Out != n || st.DeadLetters != 0 {
				t.Errorf("stats %+v, want %d in and out: retried work counted once", st, n)
			}
			if d := streamStats(l, "out").Drops; len(d) != 0 {
				t.Errorf("out counts drops %v: nothing was dropped", d)
			}
			r.checkLogs(t, buffer.ErrFull.Error())
		})
	}
}

// TestRunnerDiskFull: the disk runs full (a real tmpfs, free space
// misreported so the watermark does not step in and the bbolt commit
// itself fails with ENOSPC). The runner must not return (the gateway
// would stop, and restart into the same full disk); once space is freed,
// every output is there exactly once, in order.
func TestRunnerDiskFull(t *testing.T) {
	dir := buffertest.MustMountTmpfs(t, 8<<20)
	l := buffertest.MustOpenPath(t, filepath.Join(dir, "buffer.db"), buffer.Options{
		MinFreeDisk: 1 << 20, SweepInterval: 10 * time.Millisecond,
		FreeDisk: func(string) (uint64, error) { return 1 << 30, nil }})
	const n = 40
	writeInputs(t, l, n, 4000) // outputs of 4 KB each: new pages
	ballast := filepath.Join(dir, "ballast")
	f, err := os.Create(ballast)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); errors.Is(err, syscall.ENOSPC) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	f.Close()

	r := startRunner(t, seqPipeline(), l, 8)
	r.waitFor(t, "the runner to fail on the full disk", func() bool {
		return r.logs.count(failMsg) >= 3 || r.Stats().Position == n
	})
	if st := r.Stats(); st.Position == n {
		t.Fatalf("every input processed on a full disk: %+v", st)
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "every input processed", func() bool { return r.Stats().Position == n })
	outs, _ := readAll(t, l, "out", 1)
	checkOutputs(t, outs, n)
	if st := r.Stats(); st.In != n || st.Out != n {
		t.Errorf("stats %+v, want %d in and out", st, n)
	}
	// With free space misreported, ErrDiskFull can only come from a commit
	// that ran out of space (the buffer then refuses appends until its
	// next disk check).
	r.checkLogs(t, buffer.ErrDiskFull.Error())
}

// flakyLog is a real log whose reads and commits fail while failing is
// set: every third read after passing one event on (so the runner has
// processed part of a batch), every second commit after the runner's
// function wrote its outputs, state and position to the transaction.
type flakyLog struct {
	*buffertest.Log
	failing        atomic.Bool
	reads, updates atomic.Int64
}

var errInjected = errors.New("injected I/O error")

func (f *flakyLog) Read(stream string, from uint64, max int, fn func(off uint64, ev *event.Event) error) (uint64, error) {
	if !f.failing.Load() || f.reads.Add(1)%3 != 0 {
		return f.Log.Read(stream, from, max, fn)
	}
	passed := 0
	return f.Log.Read(stream, from, max, func(off uint64, ev *event.Event) error {
		if passed == 1 {
			return fmt.Errorf("read: %w", errInjected)
		}
		passed++
		return fn(off, ev)
	})
}

func (f *flakyLog) Update(ctx context.Context, fn func(*buffer.Tx) error) error {
	return f.update(ctx, fn, f.Log.Update)
}

func (f *flakyLog) UpdateDeferred(ctx context.Context, fn func(*buffer.Tx) error) error {
	return f.update(ctx, fn, f.Log.UpdateDeferred)
}

func (f *flakyLog) update(ctx context.Context, fn func(*buffer.Tx) error, update func(context.Context, func(*buffer.Tx) error) error) error {
	if !f.failing.Load() || f.updates.Add(1)%2 != 0 {
		return update(ctx, fn)
	}
	return update(ctx, func(tx *buffer.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return fmt.Errorf("commit: %w", errInjected) // what fn wrote is discarded
	})
}

// TestRunnerReadAndCommitErrors: reads that fail halfway through a batch
// and commits that fail after the runner wrote them end neither Run nor
// exactly-once: each retry starts from the last committed position and
// stage state, and the counters count each input once.
func TestRunnerReadAndCommitErrors(t *testing.T) {
	l := &flakyLog{Log: buffertest.MustOpen(t, buffer.Options{Durability: buffer.DurabilityNone})}
	const n = 30
	writeInputs(t, l.Log, n, 0)
	l.failing.Store(true)
	r := startRunner(t, seqPipeline(), l, 4)
	r.waitFor(t, "failed reads and commits", func() bool {
		return r.logs.count(failMsg) >= 8 && strings.Contains(r.logs.String(), "read: "+errInjected.Error()) &&
			strings.Contains(r.logs.String(), "commit: "+errInjected.Error())
	})
	l.failing.Store(false)
	r.waitFor(t, "every input processed", func() bool { return r.Stats().Position == n })
	outs, _ := readAll(t, l.Log, "out", 1)
	checkOutputs(t, outs, n)
	if st := r.Stats(); st.In != n || st.Out != n || st.DeadLetters != 0 {
		t.Errorf("stats %+v, want %d in and out: retried work counted once", st, n)
	}
	r.checkLogs(t, errInjected.Error())
}
