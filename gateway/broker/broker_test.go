package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// start runs a broker on a free port, ingesting into l.
func start(t testing.TB, l broker.EventSink, mod func(*broker.Config)) *broker.Broker {
	t.Helper()
	cfg := broker.Config{
		Listen:         "127.0.0.1:0",
		AllowAnonymous: true,
		MaxPacketSize:  4096,
		SessionPath:    t.TempDir() + "/sessions.db",
		Routes: []broker.Route{
			{Topics: []string{"sensors/#"}, Stream: "telemetry", ContentType: "application/json"},
			{Topics: []string{"alarms/+"}, Stream: "alarms"},
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	b, err := broker.New(cfg, l)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("broker run: %v", err)
		}
	})
	// The listeners are bound by New, so their addresses are known now
	// and connections made before Serve wait in the accept queue.
	return b
}

func connect(t *testing.T, addr, id string) paho.Client {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

func events(t *testing.T, l *buffertest.Log, stream string) []event.Event {
	t.Helper()
	var out []event.Event
	if _, err := l.Read(stream, 0, 1<<20, func(_ uint64, e *event.Event) error {
		out = append(out, *e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestIngest(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, nil)
	c := connect(t, b.Addr(), "sensor-7")

	// A local subscriber still gets messages live.
	got := make(chan string, 10)
	sub := connect(t, b.Addr(), "local")
	sub.Subscribe("sensors/#", 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }).Wait()

	for i, topic := range []string{"sensors/a/temp", "alarms/door", "other/x", "sensors/b"} {
		tok := c.Publish(topic, 1, false, fmt.Sprintf(`{"i":%d}`, i))
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", topic, tok.Error())
		}
	}
	// PUBACK came back, so the events must already be in the file.
	tel := events(t, l, "telemetry")
	if len(tel) != 2 || tel[0].Topic != "sensors/a/temp" || tel[1].Topic != "sensors/b" {
		t.Fatalf("telemetry: %+v", tel)
	}
	e := tel[0]
	if e.Source != "sensor-7" || string(e.Payload) != `{"i":0}` || e.ContentType != "application/json" ||
		e.ID.IsZero() || e.Time.IsZero() || e.Stream != "telemetry" {
		t.Fatalf("event fields: %+v", e)
	}
	if tel[1].ID == e.ID {
		t.Fatal("two events share an ID")
	}
	if al := events(t, l, "alarms"); len(al) != 1 || al[0].ContentType != "" {
		t.Fatalf("alarms: %+v", al)
	}
	if st := b.Stats(); st.Ingested != 3 || st.Ignored != 1 {
		t.Fatalf("stats %+v", st)
	}
	for i := 0; i < 2; i++ {
		select {
		case <-got:
		case <-time.After(5 * time.Second):
			t.Fatal("local subscriber did not receive")
		}
	}
}

// TestRefusedNotAcknowledged fills a reject-policy stream and checks that
// the publish that does not fit is not acknowledged as stored: MQTT 5 gets
// PUBACK reason 0x97 (checked with Debian's mosquitto_pub, a client nobody
// here wrote), MQTT 3.1.1 gets no PUBACK at all.
func TestRefusedNotAcknowledged(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{Streams: []buffer.StreamConfig{{Name: "telemetry", MaxEvents: 1, Overflow: buffer.Reject}}})
	b := start(t, l, nil)
	c := connect(t, b.Addr(), "v3")
	if tok := c.Publish("sensors/1", 1, false, "first"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("first publish: %v", tok.Error())
	}
	if tok := c.Publish("sensors/1", 1, false, "second"); tok.WaitTimeout(700 * time.Millisecond) {
		t.Fatalf("MQTT 3.1.1 publish into a full stream was acknowledged (err %v)", tok.Error())
	}

	pub := mqtttest.RequireClient(t, "mosquitto_pub") // fails under CI if missing
	host, port, _ := net.SplitHostPort(b.Addr())
	out, err := exec.Command(pub, "-V", "5", "-d", "-h", host, "-p", port, "-q", "1", "-t", "sensors/2", "-m", "third").CombinedOutput()
	if !bytes.Contains(out, []byte("PUBACK")) {
		t.Fatalf("mosquitto_pub: no PUBACK seen (%v):\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("rc:151")) && !bytes.Contains(out, []byte("RC:151")) && !bytes.Contains(out, []byte("(151)")) {
		t.Fatalf("MQTT 5 PUBACK without reason 151 (quota exceeded):\n%s", out)
	}
	if n := len(events(t, l, "telemetry")); n != 1 {
		t.Fatalf("%d events stored, want 1", n)
	}
	if st := b.Stats(); st.Refused != 2 {
		t.Fatalf("refused %d, want 2", st.Refused)
	}
}

// TestBadInput throws garbage at the listener, a non-UTF-8 topic and an
// oversize packet; each offender is dropped, nothing panics, and a normal
// client is served throughout.
func TestBadInput(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, nil)

	raw := func(p []byte) {
		conn, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, _ = conn.Write(p)
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 64)
		for {
			if _, err := conn.Read(buf); err != nil {
				return // the broker closed it (or timed out)
			}
		}
	}
	connectPkt := []byte{0x10, 0x0e, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 2, 'r', 'w'}
	tests := map[string][]byte{
		"garbage":           bytes.Repeat([]byte{0xff, 0x00, 0x13, 0x37}, 256),
		"http request":      []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"huge length":       {0x10, 0xff, 0xff, 0xff, 0x7f},
		"non-utf8 topic":    append(append([]byte{}, connectPkt...), 0x30, 0x07, 0x00, 0x03, 's', 0xff, 0xfe, 'h', 'i'),
		"oversize publish":  append(append([]byte{}, connectPkt...), append([]byte{0x30, 0x88, 0x40, 0x00, 0x03, 's', '/', 'x'}, make([]byte, 8197)...)...),
		"publish w/o conn.": {0x30, 0x05, 0x00, 0x01, 's', 'h', 'i'},
	}
	for name, p := range tests {
		t.Run(name, func(t *testing.T) { raw(p) })
	}
	c := connect(t, b.Addr(), "good")
	if tok := c.Publish("sensors/ok", 1, false, []byte{0xff, 0xfe, 0x00}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("good client after bad input: %v", tok.Error())
	}
	ev := events(t, l, "telemetry")
	if len(ev) != 1 || !bytes.Equal(ev[0].Payload, []byte{0xff, 0xfe, 0x00}) {
		t.Fatalf("stored: %+v (a non-UTF-8 payload must be kept byte for byte)", ev)
	}
}

// TestPersistentSession checks the broker's own session state survives a
// restart: a QoS 1 subscriber with a persistent session gets what arrived
// while it was away, even across the broker restarting.
func TestPersistentSession(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	sessions := t.TempDir() + "/sessions.db"
	port := mqtttest.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	mod := func(c *broker.Config) { c.Listen = addr; c.SessionPath = sessions }

	ctx, cancel := context.WithCancel(context.Background())
	b, err := broker.New(func() broker.Config {
		c := broker.Config{AllowAnonymous: true, Routes: []broker.Route{{Topics: []string{"sensors/#"}, Stream: "t"}}}
		mod(&c)
		return c
	}(), l)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	waitListen(t, addr)

	subOpts := func() *paho.ClientOptions {
		return paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("durable-sub").
			SetCleanSession(false).SetAutoReconnect(false)
	}
	sub := paho.NewClient(subOpts())
	if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	sub.Subscribe("sensors/#", 1, nil).Wait()
	sub.Disconnect(50)

	pub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("p").SetAutoReconnect(false))
	if tok := pub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	for i := 0; i < 3; i++ {
		pub.Publish("sensors/x", 1, false, fmt.Sprint(i)).Wait()
	}
	pub.Disconnect(50)

	cancel() // restart the broker in between
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	b2 := start(t, l, mod)
	_ = b2

	got := make(chan string, 10)
	opts := subOpts().SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) })
	sub = paho.NewClient(opts)
	if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(50)
	// mochi resends a session's queued messages sorted by their creation
	// second only (Inflight.GetAll), so the order within one second is not
	// kept: check that every message arrives, once.
	seen := map[string]int{}
	for i := 0; i < 3; i++ {
		select {
		case m := <-got:
			seen[m]++
		case <-time.After(5 * time.Second):
			t.Fatalf("persistent subscriber got %d of 3 queued messages after restart", i)
		}
	}
	if len(seen) != 3 || seen["0"] != 1 || seen["1"] != 1 || seen["2"] != 1 {
		t.Fatalf("after restart got %v, want 0, 1 and 2 once each", seen)
	}
}

func waitListen(t *testing.T, addr string) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s not listening", addr)
}

// TestWebsocketAndRetained publishes a retained reading over the websocket
// listener and checks it is ingested and that a later subscriber (over TCP)
// gets the retained message, also after a broker restart.
func TestWebsocketAndRetained(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	sessions := t.TempDir() + "/sessions.db"
	wsAddr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	mod := func(c *broker.Config) { c.Listen = tcpAddr; c.Websocket = wsAddr; c.SessionPath = sessions }

	ctx, cancel := context.WithCancel(context.Background())
	cfg := broker.Config{AllowAnonymous: true, Routes: []broker.Route{{Topics: []string{"sensors/#"}, Stream: "t"}}}
	mod(&cfg)
	b, err := broker.New(cfg, l)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	waitListen(t, wsAddr)

	ws := paho.NewClient(paho.NewClientOptions().AddBroker("ws://" + wsAddr).SetClientID("ws-sensor").SetAutoReconnect(false))
	if tok := ws.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("websocket connect: %v", tok.Error())
	}
	if tok := ws.Publish("sensors/door", 1, true, "open"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("websocket publish: %v", tok.Error())
	}
	ws.Disconnect(50)
	if ev := events(t, l, "t"); len(ev) != 1 || ev[0].Source != "ws-sensor" {
		t.Fatalf("ingested over websocket: %+v", ev)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	start(t, l, mod) // restarted: the retained message comes from the session store
	got := make(chan string, 1)
	c := connect(t, tcpAddr, "late-subscriber")
	c.Subscribe("sensors/#", 1, func(_ paho.Client, m paho.Message) {
		if m.Retained() {
			got <- string(m.Payload())
		}
	})
	select {
	case m := <-got:
		if m != "open" {
			t.Fatalf("retained %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no retained message after restart")
	}
}
