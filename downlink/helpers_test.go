package downlink

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"go.uber.org/goleak"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// Whoever starts a goroutine stops it: after all tests no client, paho or
// test goroutine may be left.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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

// sink is a CommandSink and ConfigSink recording what it took.
type sink struct {
	mu      sync.Mutex
	cmds    []*Command
	configs [][]byte
	calls   int
	fail    int           // fail this many next calls
	block   chan struct{} // non-nil: each call waits for it (or ctx)
	blocked chan struct{} // signalled when a call starts waiting on block
	after   func(*Command) error
}

func newSink() *sink { return &sink{blocked: make(chan struct{}, 16)} }

func (s *sink) AcceptCommand(ctx context.Context, c *Command) error {
	s.mu.Lock()
	s.calls++
	block := s.block
	if s.fail > 0 {
		s.fail--
		s.mu.Unlock()
		return fmt.Errorf("test sink: failing on purpose")
	}
	s.mu.Unlock()
	if block != nil {
		s.blocked <- struct{}{}
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.after != nil {
		if err := s.after(c); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.cmds = append(s.cmds, c)
	s.mu.Unlock()
	return nil
}

func (s *sink) OfferConfig(ctx context.Context, payload []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.fail > 0 {
		s.fail--
		return fmt.Errorf("test sink: failing on purpose")
	}
	s.configs = append(s.configs, payload)
	return nil
}

func (s *sink) commands() []*Command {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Command(nil), s.cmds...)
}

func (s *sink) payloads() []string {
	var out []string
	for _, c := range s.commands() {
		out = append(out, string(c.Payload))
	}
	return out
}

func (s *sink) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// memQueue is an in-memory Queue holding one or more streams; offsets
// start at 1.
type memQueue struct {
	mu      sync.Mutex
	evs     map[string][]event.Event
	acked   map[string]uint64
	changed chan struct{}
}

func newMemQueue() *memQueue {
	return &memQueue{evs: map[string][]event.Event{}, acked: map[string]uint64{}, changed: make(chan struct{})}
}

func (q *memQueue) append(stream string, evs ...event.Event) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.evs[stream] = append(q.evs[stream], evs...)
	close(q.changed)
	q.changed = make(chan struct{})
}

func (q *memQueue) Read(stream string, from uint64, max int, fn func(uint64, *event.Event) error) (uint64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	evs := q.evs[stream]
	off := max64(from, 1)
	next := from
	for n := 0; n < max && off <= uint64(len(evs)); n++ {
		ev := evs[off-1]
		if err := fn(off, &ev); err != nil {
			return next, err
		}
		off++
		next = off
	}
	return next, nil
}

func max64(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

func (q *memQueue) Ack(stream, consumer string, through uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if consumer != Consumer {
		return fmt.Errorf("memQueue: ack as %q, want %q", consumer, Consumer)
	}
	if through > uint64(len(q.evs[stream])) {
		return fmt.Errorf("memQueue: ack %s through %d beyond the end", stream, through)
	}
	if through <= q.acked[stream] {
		return fmt.Errorf("memQueue: ack %s through %d, already acked through %d (out of order)", stream, through, q.acked[stream])
	}
	q.acked[stream] = through
	return nil
}

func (q *memQueue) Acked(stream, consumer string) uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if consumer != Consumer {
		return 0
	}
	return q.acked[stream]
}

func (q *memQueue) Changed() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.changed
}

func (q *memQueue) ackedThrough(stream string) uint64 { return q.Acked(stream, Consumer) }

// replyEvent is a reply event as the gateway stores it.
func replyEvent(topic string, corr []byte, payload string) event.Event {
	ev := event.Event{Stream: DefaultReplyStream, Topic: "ferry/reply/1", Time: time.Now(),
		Payload: []byte(payload), Attrs: map[string]string{}}
	if topic != "" {
		ev.Attrs[AttrResponseTopic] = topic
	}
	if corr != nil {
		ev.Attrs[AttrCorrelationData] = b64(corr)
	}
	return ev
}

// testConfig is a fast-reconnecting config for tests.
func testConfig(t testing.TB, clientID string, urls ...string) Config {
	cfg := Config{
		ClientID:       clientID,
		ConnectTimeout: 3 * time.Second,
		BackoffMin:     10 * time.Millisecond,
		BackoffMax:     100 * time.Millisecond,
		SessionExpiry:  time.Hour,
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

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// startClient runs a Client until the returned stop (also a cleanup).
func startClient(t testing.TB, cfg Config) (*Client, func()) {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
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
	return c, stop
}

// waitSubscribed waits until the broker logged the n-th SUBSCRIBE of
// clientID to filter (Mosquitto logs "<client> <qos> <filter>").
func waitSubscribed(t testing.TB, b *mqtttest.Broker, clientID, filter string, n int) {
	t.Helper()
	if b.Kind != "mosquitto" {
		t.Fatalf("these tests need Mosquitto as the cloud")
	}
	waitFor(t, 15*time.Second, fmt.Sprintf("%s to subscribe to %s (%d)", clientID, filter, n), func() bool {
		k := 0
		for _, line := range strings.Split(b.Logs(), "\n") {
			f := strings.Fields(line)
			if len(f) == 4 && f[1] == clientID && f[3] == filter {
				k++
			}
		}
		return k >= n
	})
}

// cloud is a test client of the cloud broker speaking MQTT 5.
type cloud struct {
	t    testing.TB
	pc   *paho.Client
	mu   sync.Mutex
	msgs []*paho.Publish
}

var cloudN atomic.Int64

// dialCloud connects a clean-session MQTT 5 client to addr and subscribes
// to filters at QoS 1.
func dialCloud(t testing.TB, addr string, filters ...string) *cloud {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &cloud{t: t}
	c.pc = paho.NewClient(paho.ClientConfig{
		Conn: packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.mu.Lock()
			c.msgs = append(c.msgs, pr.Packet)
			c.mu.Unlock()
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.pc.Connect(ctx, &paho.Connect{ClientID: fmt.Sprintf("test-cloud-%d", cloudN.Add(1)), CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatalf("cloud connect: %v", err)
	}
	t.Cleanup(func() { _ = c.pc.Disconnect(&paho.Disconnect{}); <-c.pc.Done() })
	if len(filters) > 0 {
		var subs []paho.SubscribeOptions
		for _, f := range filters {
			subs = append(subs, paho.SubscribeOptions{Topic: f, QoS: 1})
		}
		if _, err := c.pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
			t.Fatalf("cloud subscribe: %v", err)
		}
	}
	return c
}

func (c *cloud) publish(topic string, payload []byte, qos byte, retain bool, props *paho.PublishProperties) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.pc.Publish(ctx, &paho.Publish{Topic: topic, Payload: payload, QoS: qos, Retain: retain, Properties: props}); err != nil {
		c.t.Fatalf("cloud publish to %s: %v", topic, err)
	}
}

func (c *cloud) messages() []*paho.Publish {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*paho.Publish(nil), c.msgs...)
}

// lockedBuf collects a subprocess's output.
type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
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

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
