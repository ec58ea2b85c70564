package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/internal/mqtttest"
)

// lockedBuf is a log sink safe for Run's concurrent writers.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func checkOrdered(t *testing.T, name string, l Latency) {
	t.Helper()
	if l.P50 <= 0 || l.P50 > l.P90 || l.P90 > l.P99 || l.P99 > l.Max {
		t.Errorf("%s percentiles not ordered: %+v", name, l)
	}
}

func TestRunPublishOnly(t *testing.T) {
	b := mqtttest.Start(t)
	for _, inflight := range []int{1, 8} {
		cfg := Config{Broker: b.URL(), Publishers: 4, Messages: 250, QoS: 1, PayloadSize: 64, Inflight: inflight, Timeout: 20 * time.Second}
		var log lockedBuf
		r, err := Run(context.Background(), cfg, &log)
		if err != nil {
			t.Fatalf("inflight %d: %v\n%s", inflight, err, log.String())
		}
		want := int64(cfg.Publishers * cfg.Messages)
		if r.Published != want || r.Acked != want || r.Errors != 0 || r.Unacked != 0 {
			t.Errorf("inflight %d: published %d acked %d errors %d unacked %d; want %d acked", inflight, r.Published, r.Acked, r.Errors, r.Unacked, want)
		}
		if r.AckLatency.Count != want {
			t.Errorf("inflight %d: %d latency samples, want %d", inflight, r.AckLatency.Count, want)
		}
		checkOrdered(t, "puback", r.AckLatency)
		if r.Duration <= 0 || r.MsgsPerSec <= 0 || r.E2E || len(r.PerPublisher) != cfg.Publishers {
			t.Errorf("inflight %d: report %+v", inflight, r)
		}
	}

	cfg := Config{Broker: b.URL(), Publishers: 3, Messages: 200, QoS: 0, Timeout: 20 * time.Second}
	r, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatalf("qos 0: %v", err)
	}
	if r.Acked != 600 || r.AckLatency != (Latency{}) {
		t.Errorf("qos 0: acked %d (want 600), ack latency %+v (want none)", r.Acked, r.AckLatency)
	}
}

func TestRunEndToEnd(t *testing.T) {
	b := mqtttest.Start(t)
	cfg := Config{
		Broker: b.URL(), Publishers: 5, Messages: 300, QoS: 1, PayloadSize: 100, Inflight: 4,
		Subscribe: b.URL(), SubTopic: "#", Settle: 5 * time.Second, Timeout: 20 * time.Second,
	}
	var log lockedBuf
	r, err := Run(context.Background(), cfg, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	want := int64(cfg.Publishers * cfg.Messages)
	if r.Acked != want || r.Received != want || r.Lost != 0 || r.Duplicated != 0 || r.OutOfOrder != 0 || r.UnackedReceived != 0 {
		t.Errorf("acked %d received %d lost %d dup %d ooo %d unacked-received %d; want %d each received, no anomalies",
			r.Acked, r.Received, r.Lost, r.Duplicated, r.OutOfOrder, r.UnackedReceived, want)
	}
	for _, s := range r.PerPublisher {
		if s.Received != int64(cfg.Messages) {
			t.Errorf("publisher %d received %d, want %d", s.Publisher, s.Received, cfg.Messages)
		}
	}
	if r.E2ELatency.Count != want {
		t.Errorf("%d e2e latency samples, want %d", r.E2ELatency.Count, want)
	}
	checkOrdered(t, "e2e", r.E2ELatency)
	checkOrdered(t, "puback", r.AckLatency)

	var text bytes.Buffer
	r.WriteText(&text)
	for _, s := range []string{"received", "lost 0", "p99", "all 5 publishers clean"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("text report lacks %q:\n%s", s, text.String())
		}
	}
	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("json report does not parse: %v", err)
	}
	if back.Received != r.Received || back.E2ELatency != r.E2ELatency || len(back.PerPublisher) != 5 {
		t.Errorf("json round trip lost data: %+v", back)
	}
	t.Logf("report:\n%s", text.String())
}

func TestRunSurvivesBrokerRestart(t *testing.T) {
	b := mqtttest.Start(t)
	if b.Kind != "mosquitto" {
		t.Skip("needs the restartable Mosquitto broker")
	}
	log := &restartingLog{}
	log.onPublish = func() {
		go func() {
			time.Sleep(100 * time.Millisecond)
			b.Stop()
			time.Sleep(300 * time.Millisecond)
			b.StartAgain()
		}()
	}
	// Enough messages that publishing outlasts the 100 ms before the
	// outage on any machine (~0.5 s at Mosquitto's best here), few enough
	// to finish under ARMv6 emulation on a loaded machine; the timeout is
	// only a deadline.
	cfg := Config{Broker: b.URL(), Publishers: 2, Messages: 5000, QoS: 1, PayloadSize: 40, Inflight: 4, Timeout: 3 * time.Minute}
	r, err := Run(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	want := int64(cfg.Publishers * cfg.Messages)
	if r.Published != want {
		t.Errorf("published %d, want %d: publishers must carry on after reconnecting", r.Published, want)
	}
	if r.Reconnects < 1 || r.Errors < 1 {
		t.Errorf("reconnects %d errors %d; the outage went unnoticed (publishing ended in %v)", r.Reconnects, r.Errors, r.Duration)
	}
	if r.Acked+r.Unacked != r.Published || r.Acked < want/2 {
		t.Errorf("acked %d unacked %d of %d", r.Acked, r.Unacked, r.Published)
	}
	t.Logf("acked %d errors %d reconnects %d; first error %q", r.Acked, r.Errors, r.Reconnects, r.FirstError)
}

// restartingLog calls onPublish once, when Run announces publishing.
type restartingLog struct {
	lockedBuf
	once      sync.Once
	onPublish func()
}

func (l *restartingLog) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("bench: publishing ")) {
		l.once.Do(l.onPublish)
	}
	return l.lockedBuf.Write(p)
}

func TestRunConnectFailure(t *testing.T) {
	port := mqtttest.FreePort(t)
	cfg := Config{Broker: "tcp://127.0.0.1:" + strconv.Itoa(port), Publishers: 3, Messages: 1, Timeout: 5 * time.Second}
	r, err := Run(context.Background(), cfg, nil)
	if err == nil || r != nil || !errors.Is(err, errNotAllConnected) || !strings.Contains(err.Error(), "3 of 3") {
		t.Fatalf("Run = %v, %v; want a connect error for all 3 publishers", r, err)
	}
	cfg.Subscribe = cfg.Broker
	if _, err := Run(context.Background(), cfg, nil); err == nil || !strings.Contains(err.Error(), "subscriber") {
		t.Fatalf("err = %v, want a subscriber connect error", err)
	}
	if _, err := Run(context.Background(), Config{Publishers: 1, Messages: 1, PayloadSize: 8}, nil); err == nil {
		t.Fatal("invalid config accepted")
	}
}

func TestRunCancelled(t *testing.T) {
	b := mqtttest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	cfg := Config{Broker: b.URL(), Publishers: 2, Messages: 1_000_000, QoS: 1, Inflight: 2}
	r, err := Run(ctx, cfg, nil)
	if !errors.Is(err, context.DeadlineExceeded) || r == nil {
		t.Fatalf("Run = %v, %v; want a partial report and DeadlineExceeded", r, err)
	}
	if r.Published == 0 || r.Published >= 2_000_000 || r.Acked+r.Unacked != r.Published {
		t.Errorf("partial report: published %d acked %d unacked %d", r.Published, r.Acked, r.Unacked)
	}
}
