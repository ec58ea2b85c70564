package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/gateway/rules"
)

var update = flag.Bool("update", false, "rewrite the golden files of TestGoldenPipelines")

// goldenEvent is one line of testdata/golden/input.jsonl and want.jsonl.
type goldenEvent struct {
	Stream      string            `json:"stream"`
	Time        float64           `json:"time"` // Unix seconds
	Source      string            `json:"source"`
	Topic       string            `json:"topic"`
	ContentType string            `json:"content_type,omitempty"`
	Payload     string            `json:"payload"`
	ID          string            `json:"id,omitempty"`
	Attrs       map[string]string `json:"attrs,omitempty"`
}

// TestGoldenPipelines runs the shipped example pipelines
// (firmware-config/pipelines.yaml) over a fixed event file and compares
// every output event with the checked-in expected file. go test -update
// rewrites the expected file after a deliberate change.
func TestGoldenPipelines(t *testing.T) {
	cfg, err := config.Load("../firmware-config/pipelines.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pipelines, err := buildPipelines(cfg)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := bufferOptions(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := buffertest.MustOpen(t, opts)
	ctx := context.Background()

	in := readGolden(t, "testdata/golden/input.jsonl")
	last := map[string]uint64{}
	err = l.Update(ctx, func(tx *buffer.Tx) error {
		for i, g := range in {
			ev := &event.Event{ID: rules.DerivedID("golden-input/"+string(rune(i)), goldenTime(g.Time)), Stream: g.Stream,
				Source: g.Source, Topic: g.Topic, Time: goldenTime(g.Time), ContentType: g.ContentType, Payload: []byte(g.Payload)}
			if err := tx.Append(ev); err != nil {
				return err
			}
			last[g.Stream]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Processing-time pipelines get a clock that follows the input they
	// have processed, as if events were processed the moment they arrived,
	// and jumps six minutes past the last once the input is done.
	times := map[string][]time.Time{}
	for _, g := range in {
		times[g.Stream] = append(times[g.Stream], goldenTime(g.Time))
	}
	for _, p := range pipelines {
		var r *rules.Runner
		clock := func() time.Time {
			ts := times[p.Input]
			pos := r.Stats().Position
			if pos >= uint64(len(ts)) {
				return ts[len(ts)-1].Add(6 * time.Minute)
			}
			return ts[pos]
		}
		r = rules.NewRunner(p, l, rules.RunnerConfig{Now: clock, BatchSize: 7, Tick: 5 * time.Millisecond, CommitInterval: time.Nanosecond})
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(rctx) }()
		deadline := time.Now().Add(10 * time.Second)
		for r.Stats().Position < last[p.Input] && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond) // idle ticks: the final advance
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("pipeline %s: %v", p.Name, err)
		}
		if pos := r.Stats().Position; pos < last[p.Input] {
			t.Fatalf("pipeline %s stopped at %d of %d", p.Name, pos, last[p.Input])
		}
	}

	var got []string
	for _, s := range []string{"minute_avg", "alerts", "senml_out", "_mqtt", "deadletter"} {
		_, err := l.Read(s, 0, 1<<20, func(_ uint64, e *event.Event) error {
			b, _ := json.Marshal(goldenEvent{Stream: s, Time: float64(e.Time.UnixNano()) / 1e9, Source: e.Source, Topic: e.Topic,
				ContentType: e.ContentType, Payload: string(e.Payload), ID: e.ID.String(), Attrs: e.Attrs})
			got = append(got, string(b))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	wantPath := "testdata/golden/want.jsonl"
	if *update {
		if err := os.WriteFile(wantPath, []byte(strings.Join(got, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wantBytes, err := os.ReadFile(wantPath)
	if err != nil {
		t.Fatalf("%v (run go test -run TestGoldenPipelines -update ./gateway/ once)", err)
	}
	want := strings.Split(strings.TrimSpace(string(wantBytes)), "\n")
	if len(got) != len(want) {
		t.Fatalf("%d output events, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if got[i] != want[i] && !sameJSON(t, got[i], want[i]) {
			t.Fatalf("output %d:\n got  %s\n want %s", i, got[i], want[i])
		}
	}
}

// sameJSON compares two output lines as JSON, their payloads too, with
// numbers equal to 1e-12 relative: sketch percentiles go through math.Exp
// and math.Log, which amd64 computes in assembly and ARM in Go (arm64 also
// fuses multiply-adds), so the last bit may differ between architectures.
func sameJSON(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	return jsonClose(x, y)
}

func jsonClose(x, y any) bool {
	switch x := x.(type) {
	case map[string]any:
		y, ok := y.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if !jsonClose(v, y[k]) {
				return false
			}
		}
		return true
	case []any:
		y, ok := y.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !jsonClose(x[i], y[i]) {
				return false
			}
		}
		return true
	case float64:
		y, ok := y.(float64)
		return ok && math.Abs(x-y) <= 1e-12*math.Max(math.Abs(x), math.Abs(y))
	case string:
		y, ok := y.(string)
		if !ok {
			return false
		}
		if x == y {
			return true
		}
		// A payload holding JSON is compared as JSON.
		var xv, yv any
		return json.Unmarshal([]byte(x), &xv) == nil && json.Unmarshal([]byte(y), &yv) == nil && jsonClose(xv, yv)
	}
	return x == y
}

func goldenTime(sec float64) time.Time {
	return time.Unix(0, int64(sec*1e9)).UTC()
}

func readGolden(t *testing.T, path string) []goldenEvent {
	t.Helper()
	f, err := os.Open(filepath.Clean(path))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []goldenEvent
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var g goldenEvent
		if err := json.Unmarshal(sc.Bytes(), &g); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, g)
	}
	return out
}
