package broker_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/mochi-mqtt/server/v2/packets"
)

// heapPeak samples the heap in use until stop is called, which returns the
// peak growth over the level when it started (after a GC).
func heapPeak() (stop func() uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > base && ms.HeapInuse-base > peak.Load() {
				peak.Store(ms.HeapInuse - base)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		return peak.Load()
	}
}

// bigConnectHeader is the start of a CONNECT declaring 262,143 remaining
// bytes (the attack), plus n bytes of it.
func bigConnectHeader(n int) []byte {
	return append([]byte{0x10, 0xff, 0xff, 0x0f}, bytes.Repeat([]byte{0}, n)...)
}

// rawConnect sends CONNECT with the given parameters and returns the
// client and its CONNACK.
func rawConnect(t *testing.T, addr string, ver byte, cp packets.ConnectParams, props packets.Properties) (*rawClient, packets.Packet) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), ver: ver}
	cp.ProtocolName = []byte("MQTT")
	if ver == 3 {
		cp.ProtocolName = []byte("MQIsdp")
	}
	cp.Keepalive = 30
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, Connect: cp, Properties: props})
	ack, err := c.read(5 * time.Second)
	if err != nil || ack.FixedHeader.Type != packets.Connack {
		t.Fatalf("%s: no CONNACK: %v %+v", cp.ClientIdentifier, err, ack.FixedHeader)
	}
	return c, ack
}

// TestConnectDeclaredLength checks that the broker does not allocate a
// packet's declared length before its bytes arrive: 60 connections each
// declaring a 262,143-byte CONNECT and sending 1 KB of it made it hold
// 60 × 256 KiB = 15 MB; now a few KB each.
func TestConnectDeclaredLength(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, func(c *broker.Config) {
		c.MaxPacketSize = 300 << 10
		c.Budget.MaxConnectSize = 300 << 10 // so that the declared length is read, not refused
		c.Budget.MaxConnecting = 100
	})
	const conns = 60
	stop := heapPeak()
	for range conns {
		conn, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write(bigConnectHeader(1000)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "all connections accepted", func() bool { return b.Stats().Budget.Connecting == conns })
	time.Sleep(300 * time.Millisecond) // long enough to read 60 headers; shows no allocation follows
	if peak := stop(); peak > 6<<20 {
		t.Fatalf("heap grew by %d KiB holding %d partial CONNECTs, want < 6 MiB (declared lengths allocated?)", peak>>10, conns)
	}
}

// TestConnectBudget checks the limits before CONNECT: its size, the number
// of connections that have not completed it, and its deadline; each
// refusal closes the connection and is counted, and clients that do
// connect are not affected.
func TestConnectBudget(t *testing.T) {
	for _, tc := range []struct {
		name   string
		budget broker.Budget
		run    func(t *testing.T, b *broker.Broker)
	}{{
		name:   "CONNECT larger than max_connect_size",
		budget: broker.Budget{MaxConnectSize: 1024},
		run: func(t *testing.T, b *broker.Broker) {
			conn := dialConn(t, b.Addr())
			if _, err := conn.Write(bigConnectHeader(100)); err != nil {
				t.Fatal(err)
			}
			expectClosed(t, conn)
			waitFor(t, "connect_too_large counted", func() bool { return b.Stats().Budget.ConnectTooLarge == 1 })
			// A normal CONNECT (about 30 bytes) is within it.
			dialRaw(t, b.Addr(), 5, "small", 30)
		},
	}, {
		name:   "more connections before CONNECT than max_connecting",
		budget: broker.Budget{MaxConnecting: 4},
		run: func(t *testing.T, b *broker.Broker) {
			// Connected clients do not count.
			for i := range 4 {
				dialRaw(t, b.Addr(), 4, fmt.Sprint("ok-", i), 30)
			}
			var silent []net.Conn
			for range 4 {
				silent = append(silent, dialConn(t, b.Addr()))
			}
			waitFor(t, "4 connecting", func() bool { return b.Stats().Budget.Connecting == 4 })
			expectClosed(t, dialConn(t, b.Addr()))
			if got := b.Stats().Budget.ConnectRefused; got != 1 {
				t.Fatalf("connect_refused = %d, want 1", got)
			}
			for _, c := range silent {
				c.Close()
			}
			waitFor(t, "slots given back", func() bool { return b.Stats().Budget.Connecting == 0 })
			dialRaw(t, b.Addr(), 5, "after", 30)
		},
	}, {
		name:   "no CONNECT within connect_timeout",
		budget: broker.Budget{ConnectTimeout: 300 * time.Millisecond},
		run: func(t *testing.T, b *broker.Broker) {
			conn := dialConn(t, b.Addr())
			if _, err := conn.Write([]byte{0x10, 20, 0}); err != nil { // a CONNECT that never finishes
				t.Fatal(err)
			}
			expectClosed(t, conn)
			waitFor(t, "connect_timeouts counted", func() bool { return b.Stats().Budget.ConnectTimeouts == 1 })
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			l := buffertest.MustOpen(t, buffer.Options{})
			b := start(t, l, func(c *broker.Config) { c.Budget = tc.budget })
			tc.run(t, b)
			stillServes(t, b, l, "sensors/after")
		})
	}
}

// TestPreConnectFlood is the attack, scaled: 300 connections at
// once, each sending 64 KB of a CONNECT declaring 262,143 bytes, against
// the default budget (with the gateway's default 256 KiB packet size).
// Before: every one was read into a 256 KiB buffer (75 MB here, 564 MB for
// the 2,000); now each is refused, at accept or at its header.
func TestPreConnectFlood(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, func(c *broker.Config) { c.MaxPacketSize = 256 << 10 })
	const conns = 300
	attack := bigConnectHeader(64 << 10) // one buffer for all: the test's own memory is not the broker's
	stop := heapPeak()
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", b.Addr())
			if err != nil {
				return // the accept queue is full: refused as well
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			_, _ = conn.Write(attack)
			_, _ = conn.Read(make([]byte, 1))
		}()
	}
	wg.Wait()
	if peak := stop(); peak > 16<<20 {
		t.Fatalf("heap grew by %d MiB under the flood, want < 16", peak>>20)
	}
	// Every one is refused: at accept (max_connecting) or at its header
	// (max_connect_size).
	waitFor(t, "every connection refused", func() bool {
		st := b.Stats().Budget
		return st.ConnectRefused+st.ConnectTooLarge == conns && st.Connecting == 0
	})
	stillServes(t, b, l, "sensors/after-flood")
}

// waitServing waits until b serves its listeners, which is after it loaded
// its session store.
func waitServing(t *testing.T, b *broker.Broker) {
	t.Helper()
	waitFor(t, "broker serving", func() bool { return atomic.LoadInt64(&b.Server().Info.Time) != 0 })
}

func dialConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// expectClosed waits for the broker to close conn.
func expectClosed(t *testing.T, conn net.Conn) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := conn.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("connection not closed by the broker: %v", err)
	}
}

// TestRetainedBudget checks the retained-message limits: beyond them a new
// retained message is refused with 0x97 (MQTT 5, QoS 1) or delivered but
// not retained (MQTT 3.1.1); replacing and clearing are not refused; and
// the store is loaded within the budget after a restart.
func TestRetainedBudget(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	sessions := t.TempDir() + "/sessions.db"
	addr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	mod := func(max int) func(*broker.Config) {
		return func(c *broker.Config) {
			c.Listen, c.SessionPath = addr, sessions
			c.Budget = broker.Budget{MaxRetained: max, MaxRetainedBytes: 4096}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := run(t, ctx, l, mod(3))

	c, _ := dialRaw(t, addr, 5, "v5", 30)
	ret := func(topic string, id uint16, payload string) byte {
		pk := publish(topic, 1, id, []byte(payload))
		pk.FixedHeader.Retain = true
		c.send(pk)
		ack, err := c.read(5 * time.Second)
		if err != nil || ack.FixedHeader.Type != packets.Puback {
			t.Fatalf("%s: no PUBACK: %v", topic, err)
		}
		return ack.ReasonCode
	}
	for i, tc := range []struct {
		topic, payload string
		want           byte
	}{
		{"sensors/r1", "a", 0}, {"sensors/r2", "b", 0}, {"sensors/r3", "c", 0},
		{"sensors/r4", "d", 0x97},                       // a fourth topic
		{"sensors/r1", "a2", 0},                         // replacing
		{"sensors/r2", strings.Repeat("x", 5000), 0x97}, // over the bytes
		{"sensors/r3", "", 0}, {"sensors/r4", "d", 0},   // clearing makes room
	} {
		if got := ret(tc.topic, uint16(i+1), tc.payload); got != tc.want {
			t.Fatalf("retained %d (%s): reason code %#x, want %#x", i, tc.topic, got, tc.want)
		}
	}
	// MQTT 3.1.1: acknowledged, delivered, not retained.
	p := connect(t, addr, "v311")
	if tok := p.Publish("sensors/r5", 1, true, "e"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("3.1.1 retained publish: %v", tok.Error())
	}
	st := b.Stats().Budget
	if st.Retained != 3 || st.RetainedRefused != 3 {
		t.Fatalf("budget: %d retained, %d refused; want 3 and 3", st.Retained, st.RetainedRefused)
	}
	if got := retainedOf(t, addr, "sensors/#"); strings.Join(got, ",") != "sensors/r1,sensors/r2,sensors/r4" {
		t.Fatalf("retained topics %v", got)
	}

	// Restart with room for two: two are loaded, one is left out.
	cancel()
	waitRun(t)
	b = start(t, l, mod(2))
	waitServing(t, b)
	st = b.Stats().Budget
	if st.Retained != 2 || st.StoreDropped != 1 {
		t.Fatalf("after restart: %d retained, %d left out; want 2 and 1", st.Retained, st.StoreDropped)
	}
	if got := retainedOf(t, addr, "sensors/#"); len(got) != 2 {
		t.Fatalf("after restart retained topics %v, want 2", got)
	}
}

// retainedOf subscribes to filter with a new client and returns the
// topics of the retained messages it gets.
func retainedOf(t *testing.T, addr, filter string) []string {
	t.Helper()
	var mu sync.Mutex
	var got []string
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprint("reader-", time.Now().UnixNano())).
		SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(50)
	c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		if m.Retained() {
			mu.Lock()
			got = append(got, m.Topic())
			mu.Unlock()
		}
	}).Wait()
	time.Sleep(300 * time.Millisecond) // retained messages follow the SUBACK at once; shows no more come
	mu.Lock()
	defer mu.Unlock()
	sortStrings(got)
	return got
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

var runs sync.Map // *testing.T → chan error

// run starts a broker that stops when ctx ends; waitRun waits for that.
func run(t *testing.T, ctx context.Context, l broker.EventSink, mod func(*broker.Config)) *broker.Broker {
	t.Helper()
	cfg := broker.Config{AllowAnonymous: true, MaxPacketSize: 8192,
		Routes: []broker.Route{{Topics: []string{"sensors/#"}, Stream: "telemetry"}}}
	mod(&cfg)
	b, err := broker.New(cfg, l)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	runs.Store(t, done)
	waitListen(t, cfg.Listen)
	return b
}

func waitRun(t *testing.T) {
	t.Helper()
	ch, _ := runs.LoadAndDelete(t)
	if err := <-ch.(chan error); err != nil {
		t.Fatal(err)
	}
}

// TestRetainedFlood is the attack, scaled: 5,000 retained topics
// of 1 KiB (QoS 0, no acknowledgement to wait for) against the default
// budget: 1,000 are kept and the heap stays bounded.
func TestRetainedFlood(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, func(c *broker.Config) { c.MaxPacketSize = 4096; c.SessionPath = "" })
	stop := heapPeak()
	c, _ := dialRaw(t, b.Addr(), 4, "flooder", 30)
	payload := bytes.Repeat([]byte("r"), 1024)
	for i := range 5000 {
		pk := publish(fmt.Sprint("sensors/flood/", i), 0, 0, payload) // ingested: deferred to their commits
		pk.FixedHeader.Retain = true
		c.send(pk)
	}
	if _, err := c.conn.Write([]byte{0xc0, 0}); err != nil { // PINGREQ: answered after the publishes
		t.Fatal(err)
	}
	if pk, err := c.read(hangDeadline); err != nil || pk.FixedHeader.Type != packets.Pingresp {
		t.Fatalf("ping: %v", err)
	}
	peak := stop()
	st := b.Stats().Budget
	if st.Retained != broker.DefaultMaxRetained || st.RetainedBytes > broker.DefaultMaxRetainedBytes || st.RetainedRefused == 0 {
		t.Fatalf("budget after the flood: %+v", st)
	}
	if peak > 24<<20 {
		t.Fatalf("heap grew by %d MiB, want < 24", peak>>20)
	}
}

// TestSubscriptionBudget checks the subscription limits, per client and in
// all: a filter beyond them gets 0x97 (MQTT 5) or 0x80 (3.1.1) in the
// SUBACK, the others are granted, and renewing one is never refused.
func TestSubscriptionBudget(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, func(c *broker.Config) {
		c.Budget = broker.Budget{MaxClientSubscriptions: 3, MaxSubscriptions: 5}
	})
	sub := func(c *rawClient, id uint16, filters ...string) []byte {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: id}
		for _, f := range filters {
			pk.Filters = append(pk.Filters, packets.Subscription{Filter: f, Qos: 1})
		}
		c.send(pk)
		ack, err := c.read(5 * time.Second)
		if err != nil || ack.FixedHeader.Type != packets.Suback {
			t.Fatalf("no SUBACK: %v", err)
		}
		return ack.ReasonCodes
	}
	a, _ := dialRaw(t, b.Addr(), 5, "a", 30)
	if got := sub(a, 1, "a/1", "a/2", "a/3", "a/4"); !bytes.Equal(got, []byte{1, 1, 1, 0x97}) {
		t.Fatalf("per client: SUBACK %x, want 01 01 01 97", got)
	}
	if got := sub(a, 2, "a/1"); !bytes.Equal(got, []byte{1}) {
		t.Fatalf("renewal: SUBACK %x, want 01", got)
	}
	c, _ := dialRaw(t, b.Addr(), 4, "c", 30)
	if got := sub(c, 1, "c/1", "c/2", "c/3"); !bytes.Equal(got, []byte{1, 1, 0x80}) {
		t.Fatalf("in all, MQTT 3.1.1: SUBACK %x, want 01 01 80", got)
	}
	st := b.Stats().Budget
	if st.Subscriptions != 5 || st.SubscriptionsRefused != 2 {
		t.Fatalf("budget: %d subscriptions, %d refused; want 5 and 2", st.Subscriptions, st.SubscriptionsRefused)
	}
}

// TestSessionBudget checks the session limits: the offline sessions kept,
// their expiry, and their queued bytes, per session and in all, with drops
// counted and audited; and a restart loads the store within the budget.
func TestSessionBudget(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	sessions := t.TempDir() + "/sessions.db"
	addr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	a := startAudit(t)
	bud := broker.Budget{MaxOfflineSessions: 2, MaxSessionQueueBytes: 1000, MaxQueueBytes: 1500, MaxSessionExpiry: time.Hour}
	mod := func(c *broker.Config) { c.Listen, c.SessionPath, c.Audit, c.Budget = addr, sessions, a, bud }
	ctx, cancel := context.WithCancel(context.Background())
	b := run(t, ctx, l, mod)

	away := func(id string) {
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
			SetCleanSession(false).SetAutoReconnect(false))
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("%s: %v", id, tok.Error())
		}
		if tok := c.Subscribe("sensors/q/#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		c.Disconnect(50)
	}
	away("s1")
	away("s2")
	waitFor(t, "2 offline sessions", func() bool { return b.Stats().Budget.OfflineSessions == 2 })

	t.Run("new persistent session refused", func(t *testing.T) {
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("s3").
			SetCleanSession(false).SetAutoReconnect(false).SetProtocolVersion(4)) // no retry as 3.1
		tok := c.Connect()
		tok.WaitTimeout(5 * time.Second)
		if rc := tok.(*paho.ConnectToken).ReturnCode(); rc != 0x03 {
			t.Fatalf("MQTT 3.1.1: CONNACK %#x, want 0x03", rc)
		}
		_, ack := rawConnect(t, addr, 5, packets.ConnectParams{ClientIdentifier: "s4"},
			packets.Properties{SessionExpiryInterval: 60, SessionExpiryIntervalFlag: true})
		if ack.ReasonCode != packets.ErrQuotaExceeded.Code {
			t.Fatalf("MQTT 5: CONNACK %#x, want 0x97", ack.ReasonCode)
		}
		// A clean session is not refused.
		connect(t, addr, "clean")
		if got := b.Stats().Budget.SessionsRefused; got != 2 {
			t.Fatalf("sessions_refused = %d, want 2", got)
		}
	})

	t.Run("expiry capped", func(t *testing.T) {
		c, ack := rawConnect(t, addr, 5, packets.ConnectParams{ClientIdentifier: "s1"},
			packets.Properties{SessionExpiryInterval: 0xffffffff, SessionExpiryIntervalFlag: true})
		if ack.ReasonCode != 0 || ack.Properties.SessionExpiryInterval != 3600 {
			t.Fatalf("CONNACK %#x, session expiry %d; want 0 and 3600", ack.ReasonCode, ack.Properties.SessionExpiryInterval)
		}
		c.conn.Close()
		waitFor(t, "s1 offline again", func() bool { return b.Stats().Budget.OfflineSessions == 2 })
	})

	t.Run("queued bytes", func(t *testing.T) {
		p := connect(t, addr, "pub")
		for i := range 8 {
			if tok := p.Publish("sensors/q/x", 1, false, strings.Repeat(fmt.Sprint(i), 300)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
		}
		// 1,500 bytes in all: one session keeps 3 messages (900 bytes),
		// the other 2; the other 11 deliveries are dropped.
		waitFor(t, "drops counted", func() bool { return b.Stats().Budget.QueueDropped == 11 })
		if got := b.Stats().Budget.QueuedBytes; got != 1500 {
			t.Fatalf("queued_bytes = %d, want 1500", got)
		}
		// Each message goes to s1 and s2 in either order: the one first
		// at the third message fills its 900 bytes and then drops for its
		// own limit, the other for the total.
		a.await(t, map[string]any{"event": "queue_drop", "reason": "session_bytes"},
			map[string]any{"event": "queue_drop", "reason": "total_bytes"})
	})

	// Restart with room for one session: one is loaded, with its queue.
	cancel()
	waitRun(t)
	bud.MaxOfflineSessions = 1
	b = start(t, l, mod)
	waitServing(t, b)
	st := b.Stats().Budget
	if st.OfflineSessions != 1 || st.StoreDropped == 0 || st.QueuedBytes > 1000 {
		t.Fatalf("after restart: %+v", st)
	}
}

// TestSessionFlood is the attack, scaled: 100 persistent sessions
// go offline subscribed to everything, then 32 QoS 1 messages of 8 KiB
// arrive for each (25 MB of queues before; the 1,000 sessions made
// 1.43 GB, and as much again after a restart). With the default budget the
// queues hold at most max_queue_bytes, the rest is dropped and counted, and
// a restart loads no more than that.
func TestSessionFlood(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	sessions := t.TempDir() + "/sessions.db"
	addr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	mod := func(c *broker.Config) { c.Listen, c.SessionPath, c.MaxPacketSize = addr, sessions, 16<<10 }
	ctx, cancel := context.WithCancel(context.Background())
	b := run(t, ctx, l, mod)
	const n = 100
	for i := range n {
		c, _ := rawConnect(t, addr, 5, packets.ConnectParams{ClientIdentifier: fmt.Sprint("s-", i)},
			packets.Properties{SessionExpiryInterval: 3600, SessionExpiryIntervalFlag: true})
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
			Filters: packets.Subscriptions{{Filter: "sensors/#", Qos: 1}}})
		if ack, err := c.read(5 * time.Second); err != nil || ack.FixedHeader.Type != packets.Suback {
			t.Fatalf("session %d: no SUBACK: %v", i, err)
		}
		c.conn.Close()
	}
	waitFor(t, "sessions offline", func() bool { return b.Stats().Budget.OfflineSessions == n })

	stop := heapPeak()
	p, _ := dialRaw(t, addr, 5, "publisher", 30)
	payload := bytes.Repeat([]byte("q"), 8<<10)
	for i := range 32 {
		p.send(publish("sensors/flood", 1, uint16(i+1), payload))
		if ack, err := p.read(hangDeadline); err != nil || ack.FixedHeader.Type != packets.Puback {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	peak := stop()
	st := b.Stats().Budget
	if st.QueuedBytes > broker.DefaultMaxQueueBytes || st.QueueDropped == 0 {
		t.Fatalf("budget after the flood: %+v", st)
	}
	if peak > 32<<20 {
		t.Fatalf("heap grew by %d MiB, want < 32", peak>>20)
	}

	cancel()
	waitRun(t)
	stop = heapPeak()
	b = start(t, l, mod)
	waitServing(t, b)
	peak = stop()
	st = b.Stats().Budget
	if st.OfflineSessions != n || st.Subscriptions != n || st.QueuedBytes > broker.DefaultMaxQueueBytes {
		t.Fatalf("after restart: %+v", st)
	}
	if peak > 32<<20 {
		t.Fatalf("restart: heap grew by %d MiB, want < 32", peak>>20)
	}
}

// TestConnectingReleasedOnTLSAndWebsocket checks that a client connected
// over TLS or websocket stops counting against max_connecting once it is
// in (the broker sees those connections wrapped): with room for 2, 3
// clients on each listener connect one after the other and stay.
func TestConnectingReleasedOnTLSAndWebsocket(t *testing.T) {
	f := newTLSFiles(t)
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, func(c *broker.Config) {
		c.TLS = f.tlsConfig()
		c.Websocket = "127.0.0.1:0"
		c.Budget.MaxConnecting = 2
	})
	pool := x509.NewCertPool()
	pool.AddCert(f.ca.cert)
	for i := range 3 {
		conn, err := tls.Dial("tcp", b.TLSAddr(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), ver: 5}
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
			Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: fmt.Sprint("tls-", i)}})
		if ack, err := c.read(5 * time.Second); err != nil || ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
			t.Fatalf("tls client %d: %v %+v", i, err, ack)
		}
		waitFor(t, "tls client no longer connecting", func() bool { return b.Stats().Budget.Connecting == 0 })
	}
	for i := range 3 {
		c := paho.NewClient(paho.NewClientOptions().AddBroker("ws://" + b.WebsocketAddr()).
			SetClientID(fmt.Sprint("ws-", i)).SetAutoReconnect(false))
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("ws client %d: %v", i, tok.Error())
		}
		defer c.Disconnect(50)
		waitFor(t, "ws client no longer connecting", func() bool { return b.Stats().Budget.Connecting == 0 })
	}
	if st := b.Stats().Budget; st.ConnectRefused != 0 {
		t.Fatalf("budget: %+v", st)
	}
}
