package bench

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/ferrygw/ferry/internal/mqtttest"
)

// startMochi runs an in-process broker whose connected clients the test can
// count, which a Mosquitto subprocess does not offer promptly.
func startMochi(t *testing.T) (*mqtt.Server, string) {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(mqtttest.FreePort(t))
	s := mqtt.New(&mqtt.Options{InlineClient: false})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: addr})); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve() }()
	t.Cleanup(func() { _ = s.Close() })
	return s, "tcp://" + addr
}

// connected counts the broker's clients that are still connected.
func connected(s *mqtt.Server) int {
	n := 0
	for _, cl := range s.Clients.GetAll() {
		if !cl.Closed() && !cl.Net.Inline {
			n++
		}
	}
	return n
}

// holdLog calls onHold once, when Run announces the hold.
type holdLog struct {
	lockedBuf
	once   sync.Once
	onHold func()
}

func (l *holdLog) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("bench: holding ")) {
		l.once.Do(l.onHold)
	}
	return l.lockedBuf.Write(p)
}

func TestRunHold(t *testing.T) {
	srv, url := startMochi(t)
	for _, m := range []int{0, 20} {
		const n, hold = 6, 400 * time.Millisecond
		var during []int
		sampled := make(chan struct{})
		log := &holdLog{}
		log.onHold = func() {
			go func() {
				defer close(sampled)
				for range 3 {
					during = append(during, connected(srv))
					time.Sleep(hold / 4)
				}
			}()
		}
		cfg := Config{Broker: url, Publishers: n, Messages: m, QoS: 1, Inflight: 2, Hold: hold, Timeout: 20 * time.Second}
		start := time.Now()
		r, err := Run(context.Background(), cfg, log)
		took := time.Since(start)
		if err != nil {
			t.Fatalf("m=%d: %v\n%s", m, err, log.String())
		}
		select {
		case <-sampled:
		case <-time.After(5 * time.Second):
			t.Fatalf("m=%d: hold never announced:\n%s", m, log.String())
		}
		if took < hold {
			t.Errorf("m=%d: Run returned after %v, before the %v hold", m, took, hold)
		}
		for i, c := range during {
			if c != n {
				t.Errorf("m=%d: %d of %d clients connected at sample %d of the hold", m, c, n, i)
			}
		}
		if r.Hold < hold || r.HeldOpen != n {
			t.Errorf("m=%d: report hold %v held open %d; want >= %v and %d", m, r.Hold, r.HeldOpen, hold, n)
		}
		if want := int64(n * m); r.Published != want || r.Acked != want {
			t.Errorf("m=%d: published %d acked %d, want %d", m, r.Published, r.Acked, want)
		}
		var text bytes.Buffer
		r.WriteText(&text)
		if !strings.Contains(text.String(), "connections still open") {
			t.Errorf("m=%d: text report lacks the hold line:\n%s", m, text.String())
		}
		deadline := time.Now().Add(5 * time.Second)
		for connected(srv) != 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if c := connected(srv); c != 0 {
			t.Errorf("m=%d: %d clients still connected after Run", m, c)
		}
	}
}

func TestRunHoldCutShort(t *testing.T) {
	_, url := startMochi(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cfg := Config{Broker: url, Publishers: 2, Messages: 0, Hold: time.Hour}
	start := time.Now()
	r, err := Run(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("a hold cut short is not an error: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second || r.Hold <= 0 || r.Hold >= time.Hour {
		t.Errorf("Run took %v, report hold %v; want the context to end the hold", took, r.Hold)
	}
}
