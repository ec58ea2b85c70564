package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// crashPipelines is the pipeline config of the crash test: per-device
// one-second windows with percentiles, and a freezer alarm with hysteresis.
const crashPipelines = `
pipelines:
  - name: agg
    input: {format: json}
    stages:
      - filter: "temp_c > -100"
      - map:
          set: [{field: temp_f, expr: "temp_c * 9 / 5 + 32"}]
      - window:
          size: 1s
          group_by: [source]
          aggregates: ["avg_temp = avg(temp_c)", "max_f = max(temp_f)", "p95_temp = p95(temp_c)", "count()"]
    outputs: [{stream: aggregates}]
  - name: alarm
    input: {format: json}
    stages:
      - detect: {kind: threshold, field: temp_c, raise_above: 8, clear_below: 5}
    outputs: [{stream: alerts}]
`

// writeInput fills a fresh buffer at path with n readings from 100 devices,
// 2 ms apart in event time, deterministic.
func writeInput(t *testing.T, path string, n int) {
	t.Helper()
	l, err := buffer.Open(path, buffer.Options{Durability: buffer.DurabilityNone, MaxBatch: 8192})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	rng := rand.New(rand.NewPCG(7, 7))
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	walk := make([]float64, 100)
	for start := 0; start < n; start += 1000 {
		err := l.Update(ctx, func(tx *buffer.Tx) error {
			for i := start; i < min(start+1000, n); i++ {
				d := i % 100
				walk[d] += rng.NormFloat64()
				temp := 4 + 3*math.Sin(float64(i)/5000+float64(d)) + walk[d]/10
				ev := &event.Event{
					ID:          event.ID{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i), 1},
					Stream:      "telemetry",
					Source:      fmt.Sprintf("dev-%02d", d),
					Topic:       fmt.Sprintf("sensors/dev-%02d/temp", d),
					Time:        t0.Add(time.Duration(i) * 2 * time.Millisecond),
					ContentType: "application/json",
					Payload:     []byte(fmt.Sprintf(`{"temp_c":%.3f,"seq":%d}`, temp, i)),
				}
				switch {
				case i%1000 == 999:
					ev.Payload = []byte(`{"temp_c": "warm"}`) // a rule fails: dead letter
				case i%4999 == 4998:
					ev.Payload = []byte(`{not json`) // does not decode: dead letter
				}
				if err := tx.Append(ev); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	<-done
	_ = l.Close()
}

// outputs returns every event of the given streams in a buffer file, as
// comparable strings.
func outputs(t *testing.T, path string, streams ...string) map[string][]string {
	t.Helper()
	l, err := buffer.Open(path, buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	out := map[string][]string{}
	for _, s := range streams {
		_, err := l.Read(s, 0, 1<<30, func(off uint64, e *event.Event) error {
			b, _ := json.Marshal(map[string]any{"id": e.ID.String(), "time": e.Time.UnixNano(), "source": e.Source,
				"payload": string(e.Payload), "reason": e.Attrs["reason"]})
			out[s] = append(out[s], string(b))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// pipelineConfig writes a ferry config for dataDir with the crash
// pipelines, no uplink (results stay in the buffer to be compared).
func pipelineConfig(t *testing.T, dataDir string) string {
	t.Helper()
	cfg := fmt.Sprintf(`gateway_id: gw1
data_dir: %s
log: {level: warn}
broker:
  listen: 127.0.0.1:%d
  allow_anonymous: true
ingest:
  routes: [{topics: ["sensors/#"], stream: telemetry}]
status: {listen: "", log_interval: 0s}
%s`, dataDir, mqtttest.FreePort(t), crashPipelines)
	path := filepath.Join(dataDir, "..", filepath.Base(dataDir)+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runUntilProcessed runs ferry on cfgPath until every pipeline has read
// the whole input (checked by reopening the buffer after a clean stop),
// SIGKILLing it at random moments first when kills > 0. It returns how
// many kills landed while work remained.
func runUntilProcessed(t *testing.T, bin, cfgPath, bufPath string, n uint64, kills int, rng *rand.Rand) int {
	t.Helper()
	landed := 0
	// The work takes what the machine gives it (a loaded CI machine, qemu):
	// the clean rounds after the kills grow longer, and only a deadline
	// ends the test.
	deadline := time.Now().Add(5 * time.Minute)
	for round := 0; ; round++ {
		cmd := startFerry(t, bin, cfgPath, bufPath+".log")
		if round < kills {
			time.Sleep(time.Duration(150+rng.IntN(500)) * time.Millisecond)
			_ = cmd.Process.Signal(syscall.SIGKILL)
		} else {
			time.Sleep(min(time.Duration(round-kills+1)*1500*time.Millisecond, 10*time.Second))
			_ = cmd.Process.Signal(syscall.SIGTERM)
		}
		_ = cmd.Wait()
		l, err := buffer.Open(bufPath, buffer.Options{})
		if err != nil {
			t.Fatal(err)
		}
		done := l.Position("telemetry", "pipeline:agg") >= n && l.Position("telemetry", "pipeline:alarm") >= n
		_ = l.Close()
		if done {
			return landed
		}
		if round < kills {
			landed++
		}
		if time.Now().After(deadline) {
			t.Fatalf("pipelines did not finish the input in 5 min (%d rounds)", round+1)
		}
	}
}

// TestPipelineCrashExactlyOnce processes 100,000 events through windows and
// a detector in a real ferry process that is SIGKILLed at random moments
// and restarted, and checks its outputs equal those of an uninterrupted
// run, event for event.
func TestPipelineCrashExactlyOnce(t *testing.T) {
	bin := buildFerry(t)
	const n = 100_000
	dir := t.TempDir()
	input := filepath.Join(dir, "input.db")
	writeInput(t, input, n)

	refDir := filepath.Join(dir, "ref")
	copyFile(t, input, filepath.Join(refDir, "buffer.db"))
	crashDir := filepath.Join(dir, "crash")
	copyFile(t, input, filepath.Join(crashDir, "buffer.db"))

	rng := rand.New(rand.NewPCG(3, 4))
	runUntilProcessed(t, bin, pipelineConfig(t, refDir), filepath.Join(refDir, "buffer.db"), n, 0, rng)
	landed := runUntilProcessed(t, bin, pipelineConfig(t, crashDir), filepath.Join(crashDir, "buffer.db"), n, 6, rng)

	streams := []string{"aggregates", "alerts", "deadletter"}
	want := outputs(t, filepath.Join(refDir, "buffer.db"), streams...)
	got := outputs(t, filepath.Join(crashDir, "buffer.db"), streams...)
	// Two pipelines share the dead-letter stream; their commits interleave
	// differently from run to run, so compare those as a set.
	sort.Strings(want["deadletter"])
	sort.Strings(got["deadletter"])
	if len(want["aggregates"]) < 1000 || len(want["alerts"]) == 0 || len(want["deadletter"]) == 0 {
		t.Fatalf("reference run produced too little to compare: %d aggregates, %d alerts, %d dead letters",
			len(want["aggregates"]), len(want["alerts"]), len(want["deadletter"]))
	}
	for _, s := range streams {
		if len(got[s]) != len(want[s]) {
			t.Fatalf("%s: %d events after %d SIGKILLs, %d uninterrupted", s, len(got[s]), landed, len(want[s]))
		}
		for i := range want[s] {
			if got[s][i] != want[s][i] {
				t.Fatalf("%s event %d differs after SIGKILLs:\n got  %s\n want %s", s, i, got[s][i], want[s][i])
			}
		}
	}
	if landed < 2 {
		t.Fatalf("only %d SIGKILLs landed while the pipelines had work left: the test did not exercise crashes", landed)
	}
	t.Logf("%d kills while processing; outputs identical: %d aggregates, %d alerts, %d dead letters",
		landed, len(want["aggregates"]), len(want["alerts"]), len(want["deadletter"]))
}
