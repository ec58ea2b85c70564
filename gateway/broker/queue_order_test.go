package broker_test

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The tests in this file check a persistent session's offline queue
// (mochi patch 10, third_party/mochi-mqtt/PATCHES.md): everything
// published while the subscriber is away arrives when it is back, in
// publish order [MQTT-4.6.0-6], also across a broker restart, up to
// broker.max_queued messages, and what is dropped beyond is counted. Each
// scenario runs against ferry's embedded broker and, as the reference,
// against Debian's Mosquitto.

// queueTarget is a broker the scenarios run against.
type queueTarget struct {
	addr    string
	restart func() // stop, and start again on the same session store
	ferry   *broker.Broker
}

// ferryTarget runs the embedded broker on a fixed port (it keeps it
// across restarts) with a session store in a temporary directory.
func ferryTarget(t *testing.T, mod func(*broker.Config)) *queueTarget {
	t.Helper()
	l := buffertest.MustOpen(t, buffer.Options{})
	cfg := broker.Config{
		Listen:         fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t)),
		AllowAnonymous: true,
		SessionPath:    t.TempDir() + "/sessions.db",
	}
	if mod != nil {
		mod(&cfg)
	}
	q := &queueTarget{addr: cfg.Listen}
	var stop func()
	q.ferry, stop = runBroker(t, l, cfg)
	waitListen(t, cfg.Listen)
	q.restart = func() {
		stop()
		q.ferry, stop = runBroker(t, l, cfg)
		waitListen(t, cfg.Listen)
	}
	return q
}

// mosquittoTarget runs Debian's Mosquitto with persistence, the
// reference.
func mosquittoTarget(t *testing.T) *queueTarget {
	t.Helper()
	mqtttest.RequireMosquitto(t)
	m := mqtttest.StartWith(t, mqtttest.Options{Persistent: true})
	return &queueTarget{addr: m.Addr, restart: func() { m.Stop(); m.StartAgain() }}
}

var queueTargets = []struct {
	name  string
	start func(*testing.T) *queueTarget
}{
	{"ferry", func(t *testing.T) *queueTarget { return ferryTarget(t, nil) }},
	{"mosquitto", mosquittoTarget},
}

// numbered returns n payloads that sort in publish order.
func numbered(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("m%03d", i)
	}
	return out
}

// mosq runs a Debian mosquitto client against addr with args and stdin;
// it returns its standard output and fails the test if it does not exit
// with status 0.
func mosq(t *testing.T, addr, name, stdin string, args ...string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(mqtttest.RequireClient(t, name), append([]string{"-h", host, "-p", port, "-V", "311"}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\nstdout:\n%s\nstderr:\n%s", name, args, err, out.String(), errOut.String())
	}
	return out.String()
}

// queueOffline makes a persistent session for id subscribed to topic at
// QoS 1 (mosquitto_sub -c, which exits once subscribed: the session stays
// offline) and publishes msgs to it, at QoS 1, one per line on one
// connection: mosquitto_pub exits once every PUBACK is in, by which time
// each message is queued for the session.
func queueOffline(t *testing.T, addr, id, topic string, msgs []string) {
	t.Helper()
	mosq(t, addr, "mosquitto_sub", "", "-c", "-i", id, "-q", "1", "-t", topic, "-E")
	mosq(t, addr, "mosquitto_pub", strings.Join(msgs, "\n")+"\n", "-i", id+"-pub", "-q", "1", "-t", topic, "-l")
}

// receiveQueued resumes id's session with mosquitto_sub and returns the
// first n messages it prints (it fails after 20 s without them all).
func receiveQueued(t *testing.T, addr, id, topic string, n int) []string {
	t.Helper()
	out := mosq(t, addr, "mosquitto_sub", "", "-c", "-i", id, "-q", "1", "-t", topic, "-C", fmt.Sprint(n), "-W", "20")
	return strings.Fields(out)
}

func sameList(got, want []string) bool {
	return strings.Join(got, " ") == strings.Join(want, " ")
}

// TestOfflineQueueOrder is the report: a persistent session
// offline while 50 QoS 1 messages are published got 32 of them, in random
// order (mochi capped the queue at max_inflight and sorted it by a 16-bit
// creation second with an unstable sort); with 3, some runs gave m2 m3 m1.
func TestOfflineQueueOrder(t *testing.T) {
	for _, tg := range queueTargets {
		for _, n := range []int{3, 50} {
			t.Run(fmt.Sprintf("%s/%d", tg.name, n), func(t *testing.T) {
				q := tg.start(t)
				want := numbered(n)
				id, topic := fmt.Sprintf("durable-%d", n), fmt.Sprintf("queue/%d", n)
				queueOffline(t, q.addr, id, topic, want)
				if got := receiveQueued(t, q.addr, id, topic, n); !sameList(got, want) {
					t.Fatalf("resumed session got %d messages:\n%v\nwant, in publish order:\n%v", len(got), got, want)
				}
			})
		}
	}
}

// TestOfflineQueueRestart stops the broker while 50 messages are queued
// for an offline session and starts it again on the same session store
// (ferry: sessions.db): the subscriber gets all 50, in order.
func TestOfflineQueueRestart(t *testing.T) {
	for _, tg := range queueTargets {
		t.Run(tg.name, func(t *testing.T) {
			q := tg.start(t)
			want := numbered(50)
			queueOffline(t, q.addr, "durable-restart", "queue/restart", want)
			q.restart()
			if got := receiveQueued(t, q.addr, "durable-restart", "queue/restart", len(want)); !sameList(got, want) {
				t.Fatalf("after a restart the resumed session got %d messages:\n%v\nwant, in publish order:\n%v", len(got), got, want)
			}
		})
	}
}

// TestOfflineQueuePaho resumes the session with the Go paho client
// (CleanSession false), which acknowledges each message: every message
// arrives exactly once, in order, and nothing more comes after (upstream
// mochi sent a message waiting for quota twice).
func TestOfflineQueuePaho(t *testing.T) {
	for _, tg := range queueTargets {
		t.Run(tg.name, func(t *testing.T) {
			q := tg.start(t)
			want := numbered(50)
			queueOffline(t, q.addr, "durable-paho", "queue/paho", want)
			var mu sync.Mutex
			var got []string
			arrived := make(chan struct{}, len(want)*2)
			opts := paho.NewClientOptions().AddBroker("tcp://" + q.addr).SetClientID("durable-paho").
				SetCleanSession(false).SetAutoReconnect(false).SetOrderMatters(true).
				SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
					mu.Lock()
					got = append(got, string(m.Payload()))
					mu.Unlock()
					arrived <- struct{}{}
				})
			c := paho.NewClient(opts)
			if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("connect: %v", tok.Error())
			}
			defer c.Disconnect(50)
			deadline := time.After(hangDeadline)
			for range want {
				select {
				case <-arrived:
				case <-deadline:
					mu.Lock()
					defer mu.Unlock()
					t.Fatalf("got %d of %d queued messages: %v", len(got), len(want), got)
				}
			}
			time.Sleep(300 * time.Millisecond) // showing that no duplicate follows
			mu.Lock()
			defer mu.Unlock()
			if !sameList(got, want) {
				t.Fatalf("resumed session got %d messages:\n%v\nwant, once each in publish order:\n%v", len(got), got, want)
			}
		})
	}
}

// TestOfflineQueueReceiveMaximum resumes the session as an MQTT 5 client
// with Receive Maximum 5: the broker sends 5, then one more per PUBACK,
// all 50 once, in order. Upstream mochi sent all 50 at once, then the
// ones that had waited for quota a second time, and took those out of
// flight as it sent them (lost if the connection dropped).
func TestOfflineQueueReceiveMaximum(t *testing.T) {
	for _, tg := range queueTargets {
		t.Run(tg.name, func(t *testing.T) {
			q := tg.start(t)
			want := numbered(50)
			const id, topic = "durable-v5", "queue/v5"
			connect := func() *rawClient {
				c, ack := rawConnect(t, q.addr, 5, packets.ConnectParams{ClientIdentifier: id},
					packets.Properties{SessionExpiryInterval: 3600, SessionExpiryIntervalFlag: true, ReceiveMaximum: 5})
				if ack.ReasonCode != 0 {
					t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
				}
				return c
			}
			c := connect()
			c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
				Filters: packets.Subscriptions{{Filter: topic, Qos: 1}}})
			if pk, err := c.read(5 * time.Second); err != nil || pk.FixedHeader.Type != packets.Suback {
				t.Fatalf("no SUBACK: %v %+v", err, pk.FixedHeader)
			}
			c.conn.Close()
			mosq(t, q.addr, "mosquitto_pub", strings.Join(want, "\n")+"\n", "-q", "1", "-t", topic, "-l")

			c = connect()
			var got []string
			var unacked []uint16
			read := func(quiet time.Duration) bool {
				pk, err := c.read(quiet)
				if err != nil {
					return false
				}
				if pk.FixedHeader.Type != packets.Publish {
					t.Fatalf("got packet type %d, want PUBLISH", pk.FixedHeader.Type)
				}
				got = append(got, string(pk.Payload))
				unacked = append(unacked, pk.PacketID)
				return true
			}
			for read(500 * time.Millisecond) {
			}
			if len(unacked) != 5 {
				t.Fatalf("before any PUBACK the broker sent %d messages, want 5 (the Receive Maximum): %v", len(unacked), got)
			}
			for len(unacked) > 0 {
				c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: unacked[0]})
				unacked = unacked[1:]
				if len(got) < len(want) && !read(hangDeadline) {
					t.Fatalf("no message after a PUBACK; got %d: %v", len(got), got)
				}
				if len(unacked) > 5 {
					t.Fatalf("%d messages unacknowledged, above the Receive Maximum 5", len(unacked))
				}
			}
			for read(300 * time.Millisecond) { // showing that no duplicate follows
			}
			if !sameList(got, want) {
				t.Fatalf("resumed session got %d messages:\n%v\nwant, once each in publish order:\n%v", len(got), got, want)
			}
		})
	}
}

// TestOfflineQueueLimit: broker.max_queued, not max_inflight, bounds an
// offline session's queue; the messages beyond it are dropped for that
// session, counted by reason (status, metrics) and audited, and the
// session gets the oldest, in order.
func TestOfflineQueueLimit(t *testing.T) {
	cases := []struct {
		name      string
		inflight  int
		queued    int
		published int
		dropped   uint64
	}{
		{"max_inflight does not cap the queue", 4, 0, 50, 0},
		{"max_queued does", 32, 10, 15, 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := startAudit(t)
			q := ferryTarget(t, func(c *broker.Config) {
				c.MaxInflight = tc.inflight
				c.Budget.MaxSessionQueue = tc.queued
				c.Audit = a
			})
			all := numbered(tc.published)
			queueOffline(t, q.addr, "durable-limit", "queue/limit", all)
			kept := all[:uint64(len(all))-tc.dropped]
			if got := receiveQueued(t, q.addr, "durable-limit", "queue/limit", len(kept)); !sameList(got, kept) {
				t.Fatalf("resumed session got %d messages:\n%v\nwant:\n%v", len(got), got, kept)
			}
			bu := q.ferry.Stats().Budget
			if bu.QueueFullCount != tc.dropped || bu.QueueDropped != tc.dropped || bu.QueueFullBytes != 0 || bu.QueueFullTotal != 0 {
				t.Errorf("queue drops counted %+v; want %d, all for the count", bu, tc.dropped)
			}
			if tc.dropped > 0 {
				a.await(t, map[string]any{"event": "queue_drop", "reason": "session_count", "client_id": "durable-limit", "topic": "queue/limit"})
			}
		})
	}
}

// TestMaxQueuedConfig: the limit is checked where the broker is built.
func TestMaxQueuedConfig(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	for _, n := range []int{-1, 65536} {
		_, err := broker.New(broker.Config{Listen: "127.0.0.1:0", AllowAnonymous: true, Budget: broker.Budget{MaxSessionQueue: n}}, l)
		if err == nil || !strings.Contains(err.Error(), "max queued") {
			t.Errorf("MaxSessionQueue %d: error %v, want one naming max queued", n, err)
		}
	}
}

// TestOfflineQueueResubscribe: a client resuming its session subscribes
// again (mosquitto_sub -c does, at once) with packet ID 1 while the
// broker's queued messages to it, numbered from 1, await their PUBACKs.
// Client and server number their packets independently, so the SUBSCRIBE
// is granted; upstream mochi answered 0x80 for every filter, and
// mosquitto_sub quit ("All subscription requests were denied") once it
// had printed the backlog.
func TestOfflineQueueResubscribe(t *testing.T) {
	for _, tg := range queueTargets {
		t.Run(tg.name, func(t *testing.T) {
			q := tg.start(t)
			want := numbered(5)
			const id, topic = "durable-resub", "queue/resub"
			queueOffline(t, q.addr, id, topic, want)
			c, ack := rawConnect(t, q.addr, 4, packets.ConnectParams{ClientIdentifier: id}, packets.Properties{})
			if !ack.SessionPresent {
				t.Fatal("CONNACK: no session present")
			}
			c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
				Filters: packets.Subscriptions{{Filter: topic, Qos: 1}}})
			var got []string
			for {
				pk, err := c.read(hangDeadline)
				if err != nil {
					t.Fatalf("no SUBACK (after %v): %v", got, err)
				}
				if pk.FixedHeader.Type == packets.Publish {
					got = append(got, string(pk.Payload))
					continue
				}
				if pk.FixedHeader.Type != packets.Suback || pk.PacketID != 1 {
					t.Fatalf("got packet type %d ID %d, want SUBACK 1", pk.FixedHeader.Type, pk.PacketID)
				}
				if len(pk.ReasonCodes) != 1 || pk.ReasonCodes[0] != 1 {
					t.Fatalf("SUBACK codes %x, want 01 (granted QoS 1)", pk.ReasonCodes)
				}
				break
			}
			if !sameList(got, want[:len(got)]) {
				t.Fatalf("before the SUBACK got %v, want a prefix of %v", got, want)
			}
		})
	}
}
