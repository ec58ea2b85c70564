package uplink

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferrygw/ferry/internal/mqtttest"
)

// TestFailoverAfterLostConnection: when the cloud drops the connection
// (here: another client takes the forwarder's client ID over on endpoint
// A, as a cluster node going away looks from the board), the next attempt
// goes to the next endpoint, not back to the one just lost; and a
// connection lost soon after it was accepted fails over at once, without a
// backoff step, while endpoints of the round remain. The backoff here is
// 30–60 s (Rand near 1): taking a step would miss the deadline.
func TestFailoverAfterLostConnection(t *testing.T) {
	for _, tt := range []struct {
		name        string
		stableAfter time.Duration
	}{
		{"lost before stable_after", time.Minute},
		{"lost after stable_after", 50 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			leakCheck(t)
			a, b := mqtttest.Start(t), mqtttest.Start(t)
			subB := subscribe(t, b.URL())
			q := newMemQueue()
			cfg := testConfig(t, a.URL(), b.URL())
			cfg.BackoffMin, cfg.BackoffMax = 30*time.Second, time.Minute
			cfg.ProbeInterval = 400 * time.Millisecond
			cfg.StableAfter = tt.stableAfter
			cfg.Rand = func() float64 { return 0.99 }
			f, stop := startForwarder(t, q, cfg)
			waitFor(t, 10*time.Second, "connected to A", func() bool {
				st := f.Status()
				return st.Connected && st.Endpoint == a.URL()
			})
			if tt.stableAfter < time.Second {
				time.Sleep(2 * tt.stableAfter) // make the connection stable
			}

			// Take the client ID over on A: A drops the forwarder.
			kicker := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(a.URL()).SetClientID("ferry-gw-test").
				SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
			if tok := kicker.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("kicker: %v", tok.Error())
			}
			defer kicker.Disconnect(50)
			lost := time.Now()
			waitFor(t, 5*time.Second, "connected to B", func() bool {
				st := f.Status()
				return st.Connected && st.Endpoint == b.URL()
			})
			if d := time.Since(lost); d > 3*time.Second {
				t.Errorf("failover took %v", d)
			}
			q.append("s", mkEvents(t, "s", 1, 10)...)
			waitFor(t, 10*time.Second, "events at B", func() bool { return len(subB.messages()) == 10 })
			if !kicker.IsConnectionOpen() {
				t.Error("the forwarder went back to A and took the client ID back")
			}
			stop()
			if st := f.Status(); st.Reconnects != 1 {
				t.Errorf("reconnects %d, want 1", st.Reconnects)
			}
		})
	}
}

func TestRound(t *testing.T) {
	r := newRound(4, 3) // starts at 4 mod 3
	var got []int
	for r.left > 0 {
		got = append(got, r.take(3))
	}
	if want := []int{1, 2, 0}; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("round order %v, want %v", got, want)
	}
	if r.first != 1 {
		t.Fatalf("first %d", r.first)
	}
}

// stallProxy is a TCP proxy to a broker that, while stalling, lets the
// CONNECT and CONNACK through and then holds everything the client sends
// (never forwarding it) and closes the connection stallFor after the
// first held bytes: a node of a clustered cloud that accepts connections
// but cannot store messages while its cluster recovers (NATS JetStream
// holds such a QoS 1 PUBLISH for its API timeout, 4 s, then closes the
// connection). Until listen is called nothing listens on its address.
type stallProxy struct {
	addr, target string
	stallFor     time.Duration
	stalling     atomic.Bool
	done         chan struct{}
	wg           sync.WaitGroup
	mu           sync.Mutex
	ln           net.Listener
	conns        map[net.Conn]bool
}

func newStallProxy(t *testing.T, target string, stallFor time.Duration) *stallProxy {
	t.Helper()
	p := &stallProxy{addr: fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t)), target: target, stallFor: stallFor,
		done: make(chan struct{}), conns: map[net.Conn]bool{}}
	t.Cleanup(p.close)
	return p
}

func (p *stallProxy) url() string { return "tcp://" + p.addr }

func (p *stallProxy) listen(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[s] = true, true
			p.mu.Unlock()
			p.wg.Add(2)
			go p.up(c, s)
			go func() {
				defer p.wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, s)
			}()
		}
	}()
}

// up forwards the client's bytes; the first read is the CONNECT.
func (p *stallProxy) up(c, s net.Conn) {
	defer p.wg.Done()
	defer s.Close()
	buf := make([]byte, 32<<10)
	for first := true; ; first = false {
		n, err := c.Read(buf)
		if n > 0 {
			if !first && p.stalling.Load() {
				tm := time.AfterFunc(p.stallFor, func() { c.Close(); s.Close() })
				defer tm.Stop()
				_, _ = io.Copy(io.Discard, c)
				return
			}
			if _, werr := s.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *stallProxy) close() {
	select {
	case <-p.done:
		return
	default:
	}
	close(p.done)
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// logBuffer collects a forwarder's log lines for a test to wait on.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
	t  *testing.T
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if testing.Verbose() {
		l.t.Log(strings.TrimSpace(string(p)))
	}
	return l.b.Write(p)
}

func (l *logBuffer) has(subs ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range subs {
		if strings.Contains(l.b.String(), s) {
			return true
		}
	}
	return false
}

// TestClusterStallIsNotPoison: a node that accepts connections but holds
// every publish and then closes the connection (a cluster node that cannot
// store while its cluster recovers) must not get a message dead-lettered
// when another node, recovered, acknowledges the next message: the
// message is sent alone only on a connection that has just acknowledged a
// copy of a message the cloud took before. Without that, the solo failure
// on the stalling node and the probe acknowledged by the recovered node
// made an ordinary event "poison" (seen in internal/fleet's TestFleetNATS
// after a whole-cluster restart).
func TestClusterStallIsNotPoison(t *testing.T) {
	leakCheck(t)
	b := mqtttest.Start(t)
	sub := subscribe(t, b.URL())
	stalling := newStallProxy(t, b.Addr, 300*time.Millisecond)
	stalling.listen(t)
	recovered := newStallProxy(t, b.Addr, 0) // nothing listens until it recovers
	q := newMemQueue()
	sink := &memDeadLetters{}
	logs := &logBuffer{t: t}
	cfg := testConfig(t, stalling.url(), recovered.url())
	cfg.PoisonAttempts = 2 // the most eager: one drop, then sent alone
	cfg.DeadLetters = sink
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	f, stop := startForwarder(t, q, cfg)

	q.append("s", mkEvents(t, "s", 1, 10)...)
	waitFor(t, 10*time.Second, "the first events acked", func() bool { return q.acked("s") == 10 })
	stalling.stalling.Store(true)
	q.append("s", mkEvents(t, "s", 11, 10)...)
	// The moment the suspect failed alone on the stalling node (before
	// the fix), or its copy did (after): now the other node recovers.
	waitFor(t, 30*time.Second, "a solo or copy failure on the stalling node", func() bool {
		return logs.has("sent_alone=true", "cloud did not acknowledge a message it took before")
	})
	recovered.listen(t)
	waitFor(t, 30*time.Second, "everything acked", func() bool { return q.acked("s") == 20 })
	waitFor(t, 10*time.Second, "everything received", func() bool { return len(seqs(t, sub.events(), "s")) == 20 })
	stop()
	if dead, _ := sink.stored(); len(dead) != 0 || f.Status().Dropped[poisonReason] != 0 {
		t.Fatalf("a stalling cluster node was taken for poison: %d dead letters, dropped %v", len(dead), f.Status().Dropped)
	}
	if got, want := seqs(t, sub.events(), "s"), seqRange(1, 20); !equalInts(got, want) {
		t.Errorf("at the cloud: %v, want %v", got, want)
	}
	if st := f.Status(); st.RefusedAll == 0 {
		t.Errorf("refused all %d: the copy the stalling node held should count", st.RefusedAll)
	}
}
