package uplink

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// leakCheck verifies, after every other cleanup of the test, that no
// goroutine was left behind. Call it first in a test.
func leakCheck(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// memQueue is an in-memory Queue for tests. Offsets start at 1.
type memQueue struct {
	mu       sync.Mutex
	streams  map[string]*memStream
	names    []string
	changed  chan struct{}
	ackCalls int
	retain   bool   // acked events stay readable (buffer.streams[].retain)
	trimmed  uint64 // with retain: offsets below it are gone
}

type memStream struct {
	evs   []event.Event // evs[i] has offset i+1
	acked uint64        // highest acked offset, 0: none
}

func newMemQueue() *memQueue {
	return &memQueue{streams: map[string]*memStream{}, changed: make(chan struct{})}
}

// append adds events to stream and signals Changed.
func (q *memQueue) append(stream string, evs ...event.Event) {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.streams[stream]
	if s == nil {
		s = &memStream{}
		q.streams[stream] = s
		q.names = append(q.names, stream)
	}
	s.evs = append(s.evs, evs...)
	close(q.changed)
	q.changed = make(chan struct{})
}

func (q *memQueue) Streams() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]string(nil), q.names...)
}

func (q *memQueue) Read(stream string, from uint64, max int, fn func(uint64, *event.Event) error) (uint64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.streams[stream]
	if s == nil {
		return from, nil
	}
	off := from
	if off <= s.acked && !q.retain {
		off = s.acked + 1
	}
	if q.retain && off < q.trimmed {
		off = q.trimmed
	}
	if off < 1 {
		off = 1
	}
	next := from
	for n := 0; n < max && off <= uint64(len(s.evs)); n++ {
		ev := s.evs[off-1] // a copy; Payload shared but never mutated
		if err := fn(off, &ev); err != nil {
			return next, err
		}
		off++
		next = off
	}
	return next, nil
}

func (q *memQueue) Ack(stream, consumer string, through uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.ackCalls++
	if consumer != Consumer {
		return fmt.Errorf("memQueue: ack %s as %q, want %q", stream, consumer, Consumer)
	}
	s := q.streams[stream]
	if s == nil || through > uint64(len(s.evs)) {
		return fmt.Errorf("memQueue: ack %s through %d beyond the end", stream, through)
	}
	s.acked = max(s.acked, through)
	return nil
}

func (q *memQueue) Acked(stream, consumer string) uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if s := q.streams[stream]; s != nil && consumer == Consumer {
		return s.acked
	}
	return 0
}

func (q *memQueue) Changed() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.changed
}

func (q *memQueue) acked(stream string) uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if s := q.streams[stream]; s != nil {
		return s.acked
	}
	return 0
}

func (q *memQueue) acks() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.ackCalls
}

// mkEvents returns n events of stream numbered from first; the payload is
// {"seq":i}.
func mkEvents(t testing.TB, stream string, first, n int) []event.Event {
	t.Helper()
	evs := make([]event.Event, n)
	now := time.Now()
	for i := range evs {
		id, err := event.NewID(now, nil)
		if err != nil {
			t.Fatal(err)
		}
		evs[i] = event.Event{
			ID: id, Stream: stream, Source: "sensor-1", Topic: "plant/temp", Time: now,
			ContentType: "application/json", Payload: fmt.Appendf(nil, `{"seq":%d}`, first+i),
		}
	}
	return evs
}

// seqOf extracts the seq number of an event made by mkEvents.
func seqOf(t testing.TB, ev *event.Event) int {
	t.Helper()
	var seq int
	if _, err := fmt.Sscanf(string(ev.Payload), `{"seq":%d}`, &seq); err != nil {
		t.Fatalf("payload %q: %v", ev.Payload, err)
	}
	return seq
}

// received is one message seen by the test subscriber.
type received struct {
	topic   string
	payload []byte
}

// subscriber records every message published on a broker, in order.
type subscriber struct {
	t    testing.TB
	c    mqtt.Client
	mu   sync.Mutex
	msgs []received
}

var subscriberN int

func subscribe(t testing.TB, url string) *subscriber {
	t.Helper()
	s := &subscriber{t: t}
	subscriberN++
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("test-sub-%d", subscriberN)).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	s.c = mqtt.NewClient(opts)
	if tok := s.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	tok := s.c.Subscribe("#", 1, func(_ mqtt.Client, m mqtt.Message) {
		s.mu.Lock()
		s.msgs = append(s.msgs, received{m.Topic(), append([]byte(nil), m.Payload()...)})
		s.mu.Unlock()
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(s.close)
	return s
}

func (s *subscriber) close() { s.c.Disconnect(100) }

func (s *subscriber) messages() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.msgs...)
}

// events decodes every message received so far.
func (s *subscriber) events() []event.Event {
	var evs []event.Event
	for _, m := range s.messages() {
		got, err := DecodeMessage(m.payload)
		if err != nil {
			s.t.Errorf("subscriber: undecodable message on %s: %v", m.topic, err)
			continue
		}
		evs = append(evs, got...)
	}
	return evs
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testConfig is a fast-reconnecting config for tests.
func testConfig(t testing.TB, urls ...string) Config {
	cfg := Config{
		GatewayID:      "gw-test",
		QoS:            1,
		ConnectTimeout: 2 * time.Second,
		BackoffMin:     10 * time.Millisecond,
		BackoffMax:     100 * time.Millisecond,
		Rand:           func() float64 { return 0.5 },
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	for _, u := range urls {
		cfg.Endpoints = append(cfg.Endpoints, Endpoint{URL: u})
	}
	return cfg
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// startForwarder runs a Forwarder until the returned stop (also a cleanup).
func startForwarder(t testing.TB, q Queue, cfg Config) (*Forwarder, func()) {
	t.Helper()
	f, err := New(q, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return f, stop
}

// startRefusingMosquitto starts a Mosquitto that answers every CONNECT
// with CONNACK "not authorised" (no anonymous access and no users), and
// returns its host:port.
func startRefusingMosquitto(t testing.TB) string {
	t.Helper()
	bin := mqtttest.RequireMosquitto(t)
	addr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	if err := os.WriteFile(conf, []byte("listener "+port+" 127.0.0.1\nallow_anonymous false\npersistence false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitFor(t, 10*time.Second, "the refusing mosquitto to listen", func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr
}
