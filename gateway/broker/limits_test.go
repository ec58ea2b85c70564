package broker_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/mochi-mqtt/server/v2/packets"
)

// rawClient speaks MQTT packet by packet over a plain connection, to do
// what well-behaved client libraries will not: stay silent, ignore acks,
// exceed limits.
type rawClient struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
	ver  byte
	// held are PUBLISHes read while waiting for an acknowledgement (pub,
	// sub): a client's own delivery may come before or after its PUBACK
	// (the broker queues it for subscribers first, then acknowledges; the
	// two are written by different goroutines). expectPublish and collect
	// read them first.
	held []packets.Packet
}

// next returns a held PUBLISH, else the next packet read.
func (c *rawClient) next(timeout time.Duration) (packets.Packet, error) {
	if len(c.held) > 0 {
		pk := c.held[0]
		c.held = c.held[1:]
		return pk, nil
	}
	return c.read(timeout)
}

// hold keeps pk for expectPublish and collect if it is a PUBLISH.
func (c *rawClient) hold(pk packets.Packet) {
	if pk.FixedHeader.Type == packets.Publish {
		c.held = append(c.held, pk)
	}
}

// dialRaw connects to addr and sends CONNECT with protocol version ver (4
// or 5) and keepalive; it returns the client and the CONNACK.
func dialRaw(t testing.TB, addr string, ver byte, id string, keepalive uint16) (*rawClient, packets.Packet) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), ver: ver}
	c.send(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: ver,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			Clean:            true,
			Keepalive:        keepalive,
			ClientIdentifier: id,
		},
	})
	ack, err := c.read(5 * time.Second)
	if err != nil {
		t.Fatalf("%s: no CONNACK: %v", id, err)
	}
	if ack.FixedHeader.Type != packets.Connack {
		t.Fatalf("%s: got packet type %d, want CONNACK", id, ack.FixedHeader.Type)
	}
	return c, ack
}

func (c *rawClient) send(pk packets.Packet) {
	c.t.Helper()
	pk.ProtocolVersion = c.ver
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	default:
		c.t.Fatalf("rawClient: cannot send packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.Write(buf.Bytes()); err != nil {
		c.t.Fatalf("rawClient: write: %v", err)
	}
}

// read returns the next packet, or an error when none arrives within
// timeout or the broker closed the connection (io.EOF).
func (c *rawClient) read(timeout time.Duration) (packets.Packet, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	var pk packets.Packet
	b, err := c.r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(b); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return pk, err
	}
	pk.ProtocolVersion = c.ver
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	}
	return pk, err
}

// closed waits up to timeout for the broker to close the connection,
// skipping any packets before that; it returns the DISCONNECT packet if
// one came, and false if the connection stayed open.
func (c *rawClient) closed(timeout time.Duration) (*packets.Packet, bool) {
	c.t.Helper()
	var disc *packets.Packet
	end := time.Now().Add(timeout)
	for {
		left := time.Until(end)
		if left <= 0 {
			return disc, false
		}
		pk, err := c.read(left)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return disc, false
			}
			return disc, true // EOF or reset: closed by the broker
		}
		if pk.FixedHeader.Type == packets.Disconnect {
			disc = &pk
		}
	}
}

func publish(topic string, qos byte, id uint16, payload []byte) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic,
		PacketID:    id,
		Payload:     payload,
	}
}

// stillServes checks that a well-behaved client can publish after another
// was cut off.
func stillServes(t *testing.T, b *broker.Broker, l *buffertest.Log, topic string) {
	t.Helper()
	before := len(events(t, l, "telemetry"))
	c := connect(t, b.Addr(), "bystander-"+strings.ReplaceAll(topic, "/", "-"))
	if tok := c.Publish(topic, 1, false, "fine"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("bystander publish: %v", tok.Error())
	}
	if n := len(events(t, l, "telemetry")); n != before+1 {
		t.Fatalf("%d events after the bystander's publish, want %d", n, before+1)
	}
}

func TestMaxPacketSize(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, func(c *broker.Config) { c.MaxPacketSize = 1024 })

	for _, ver := range []byte{4, 5} {
		t.Run(fmt.Sprintf("MQTT v%d", ver), func(t *testing.T) {
			c, ack := dialRaw(t, b.Addr(), ver, fmt.Sprintf("big-%d", ver), 30)
			if ver == 5 && (ack.Properties.MaximumPacketSize != 1024 || ack.Properties.TopicAliasMaximum != 16) {
				t.Fatalf("CONNACK Maximum Packet Size %d, Topic Alias Maximum %d, want 1024 and 16",
					ack.Properties.MaximumPacketSize, ack.Properties.TopicAliasMaximum)
			}
			c.send(publish("sensors/ok", 1, 1, make([]byte, 900)))
			if pk, err := c.read(5 * time.Second); err != nil || pk.FixedHeader.Type != packets.Puback {
				t.Fatalf("publish within the limit: %v %+v", err, pk.FixedHeader)
			}
			c.send(publish("sensors/big", 1, 2, make([]byte, 1100)))
			if _, closed := c.closed(5 * time.Second); !closed {
				t.Fatal("client sending a packet over MaxPacketSize stayed connected")
			}
			stillServes(t, b, l, fmt.Sprintf("sensors/after-big-%d", ver))
		})
	}
	if ev := events(t, l, "telemetry"); len(ev) != 4 { // 2 × (900 bytes + bystander)
		t.Fatalf("%d events, want 4 (the oversize ones not ingested)", len(ev))
	}
}

// TestTopicAliasMaximum checks a client cannot make the broker keep more
// than 16 topic aliases.
func TestTopicAliasMaximum(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, nil)
	c, _ := dialRaw(t, b.Addr(), 5, "aliases", 30)
	pk := publish("sensors/alias", 1, 1, []byte("x"))
	pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = 16, true
	c.send(pk)
	if ack, err := c.read(5 * time.Second); err != nil || ack.FixedHeader.Type != packets.Puback {
		t.Fatalf("alias 16: %v %+v", err, ack.FixedHeader)
	}
	pk = publish("sensors/alias", 1, 2, []byte("x"))
	pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = 17, true
	c.send(pk)
	disc, closed := c.closed(5 * time.Second)
	if !closed || disc == nil || disc.ReasonCode != packets.ErrTopicAliasInvalid.Code {
		t.Fatalf("alias 17: closed %v, DISCONNECT %+v, want reason 0x94", closed, disc)
	}
	stillServes(t, b, l, "sensors/after-alias")
}

func TestMaxClients(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, func(c *broker.Config) { c.MaxClients = 2 })
	first := connect(t, b.Addr(), "first")
	connect(t, b.Addr(), "second")

	for _, v := range []struct{ ver, want string }{{"5", "CONNACK (137)"}, {"311", "CONNACK (3)"}} {
		out, ok := client(t, b, "mosquitto_pub", "-V", v.ver, "-d", "-i", "third", "-q", "1", "-t", "sensors/x", "-m", "too many")
		if ok || !strings.Contains(out, v.want) {
			t.Fatalf("MQTT %s, client 3 of 2: exit 0 = %v, want refused with %s (server busy / unavailable):\n%s", v.ver, ok, v.want, out)
		}
	}
	first.Disconnect(50)
	// The slot is freed when mochi has finished with the first client.
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, ok := client(t, b, "mosquitto_pub", "-V", "5", "-i", "third", "-q", "1", "-t", "sensors/x", "-m", "room now")
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no room after a client left:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ev := events(t, l, "telemetry"); len(ev) != 1 || string(ev[0].Payload) != "room now" {
		t.Fatalf("ingested %+v", ev)
	}
}

func TestMaxKeepalive(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, func(c *broker.Config) { c.MaxKeepalive = 2 * time.Second })

	t.Run("server keep alive", func(t *testing.T) {
		tests := []struct {
			asked uint16
			told  uint16 // 0: not told (the client's own applies)
		}{{0, 2}, {3600, 2}, {3, 2}, {2, 0}, {1, 0}}
		for _, tt := range tests {
			_, ack := dialRaw(t, b.Addr(), 5, fmt.Sprintf("ka-%d", tt.asked), tt.asked)
			got := uint16(0)
			if ack.Properties.ServerKeepAliveFlag {
				got = ack.Properties.ServerKeepAlive
			}
			if got != tt.told {
				t.Errorf("keep-alive %d: CONNACK Server Keep Alive %d, want %d", tt.asked, got, tt.told)
			}
		}
	})

	// A silent client, asking for no keep-alive at all, is dropped after
	// 1.5 × 2 s; mochi's deadline is in whole seconds.
	for _, ver := range []byte{4, 5} {
		t.Run(fmt.Sprintf("silent MQTT v%d client", ver), func(t *testing.T) {
			t.Parallel()
			c, _ := dialRaw(t, b.Addr(), ver, fmt.Sprintf("silent-%d", ver), 0)
			began := time.Now()
			if _, closed := c.closed(10 * time.Second); !closed {
				t.Fatal("silent client not disconnected")
			}
			if d := time.Since(began); d < 2500*time.Millisecond || d > 6*time.Second {
				t.Fatalf("silent client disconnected after %v, want about 3s", d)
			}
		})
	}

	// One that pings in time stays.
	t.Run("pinging client stays", func(t *testing.T) {
		t.Parallel()
		c, _ := dialRaw(t, b.Addr(), 5, "pinger", 0)
		for i := 0; i < 4; i++ {
			time.Sleep(time.Second)
			if _, err := c.conn.Write([]byte{0xc0, 0}); err != nil { // PINGREQ
				t.Fatal(err)
			}
			if pk, err := c.read(2 * time.Second); err != nil || pk.FixedHeader.Type != packets.Pingresp {
				t.Fatalf("ping %d: %v %+v", i, err, pk.FixedHeader)
			}
		}
	})
}

// TestConnectTimeout checks a connection that never sends CONNECT is
// closed, on the TCP and the TLS listener.
func TestConnectTimeout(t *testing.T) {
	defer broker.SetConnectTimeout(500 * time.Millisecond)()
	f := newTLSFiles(t)
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, func(c *broker.Config) { c.TLS = f.tlsConfig() })
	for name, addr := range map[string]string{"tcp": b.Addr(), "tls (no handshake)": b.TLSAddr()} {
		t.Run(name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			began := time.Now()
			if _, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("silent connection: read %v, want it closed by the broker", err)
			}
			if d := time.Since(began); d > 3*time.Second {
				t.Fatalf("closed after %v", d)
			}
		})
	}
	stillServes(t, b, l, "sensors/after-silence")
}

// TestMaxInflight checks the Receive Maximum: a client with more QoS 2
// messages awaiting PUBREL than MaxInflight is disconnected (MQTT 5:
// DISCONNECT 0x93), one that completes its flows is not; and at most
// MaxInflight messages are in flight to a subscriber that does not
// acknowledge.
func TestMaxInflight(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, func(c *broker.Config) { c.MaxInflight = 4 })

	for _, ver := range []byte{4, 5} {
		t.Run(fmt.Sprintf("QoS 2 without PUBREL, MQTT v%d", ver), func(t *testing.T) {
			c, ack := dialRaw(t, b.Addr(), ver, fmt.Sprintf("greedy-%d", ver), 30)
			if ver == 5 && ack.Properties.ReceiveMaximum != 4 {
				t.Fatalf("CONNACK Receive Maximum %d, want 4", ack.Properties.ReceiveMaximum)
			}
			for id := uint16(1); id <= 4; id++ {
				c.send(publish("sensors/q2", 2, id, []byte("x")))
				if pk, err := c.read(5 * time.Second); err != nil || pk.FixedHeader.Type != packets.Pubrec {
					t.Fatalf("publish %d: %v %+v", id, err, pk.FixedHeader)
				}
			}
			c.send(publish("sensors/q2", 2, 5, []byte("one too many")))
			disc, closed := c.closed(5 * time.Second)
			if !closed {
				t.Fatal("client over the Receive Maximum stayed connected")
			}
			if ver == 5 && (disc == nil || disc.ReasonCode != packets.ErrReceiveMaximum.Code) {
				t.Fatalf("DISCONNECT %+v, want reason 0x93", disc)
			}
			stillServes(t, b, l, fmt.Sprintf("sensors/after-greedy-%d", ver))
		})
	}

	t.Run("QoS 2 completed flows", func(t *testing.T) {
		c, _ := dialRaw(t, b.Addr(), 5, "polite", 30)
		for id := uint16(1); id <= 10; id++ {
			c.send(publish("sensors/polite", 2, id, []byte("x")))
			if pk, err := c.read(5 * time.Second); err != nil || pk.FixedHeader.Type != packets.Pubrec {
				t.Fatalf("publish %d: %v %+v", id, err, pk.FixedHeader)
			}
			c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: id})
			if pk, err := c.read(5 * time.Second); err != nil || pk.FixedHeader.Type != packets.Pubcomp {
				t.Fatalf("pubrel %d: %v %+v", id, err, pk.FixedHeader)
			}
		}
	})

	t.Run("outbound to a subscriber not acknowledging", func(t *testing.T) {
		sub, _ := dialRaw(t, b.Addr(), 5, "slow-sub", 30)
		sub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
			Filters: packets.Subscriptions{{Filter: "out/#", Qos: 1}}})
		if pk, err := sub.read(5 * time.Second); err != nil || pk.FixedHeader.Type != packets.Suback {
			t.Fatalf("subscribe: %v %+v", err, pk.FixedHeader)
		}
		pub := connect(t, b.Addr(), "out-pub")
		for i := 0; i < 10; i++ {
			pub.Publish("out/x", 1, false, fmt.Sprint(i)).Wait()
		}
		var ids []uint16
		for {
			pk, err := sub.read(500 * time.Millisecond)
			if err != nil {
				break
			}
			if pk.FixedHeader.Type == packets.Publish {
				ids = append(ids, pk.PacketID)
			}
		}
		if len(ids) != 4 {
			t.Fatalf("subscriber got %d unacknowledged messages, want MaxInflight = 4", len(ids))
		}
		for _, id := range ids {
			sub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id})
		}
		// The broker handles a client's packets in order: the PINGRESP
		// means the PUBACKs have been processed. The 6 messages beyond
		// MaxInflight waited in the client's queue (mochi patch 10; they
		// used to be dropped): one goes out per PUBACK, in order.
		if _, err := sub.conn.Write([]byte{0xc0, 0}); err != nil {
			t.Fatal(err)
		}
		var queued []string
		for {
			pk, err := sub.read(5 * time.Second)
			if err != nil {
				t.Fatalf("ping after the acks: %v", err)
			}
			if pk.FixedHeader.Type == packets.Pingresp {
				break
			}
			queued = append(queued, string(pk.Payload))
			sub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		}
		for len(queued) < 6 {
			pk, err := sub.read(5 * time.Second)
			if err != nil || pk.FixedHeader.Type != packets.Publish {
				t.Fatalf("queued messages after the acks: %v, then %v %+v", queued, err, pk.FixedHeader)
			}
			queued = append(queued, string(pk.Payload))
			sub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		}
		if strings.Join(queued, " ") != "4 5 6 7 8 9" {
			t.Fatalf("queued messages after the acks: %v, want 4 to 9 in order", queued)
		}
		pub.Publish("out/x", 1, false, "after acks").Wait()
		pk, err := sub.read(5 * time.Second)
		if err != nil || string(pk.Payload) != "after acks" {
			t.Fatalf("after acknowledging: %v %q", err, pk.Payload)
		}
	})
}

func TestLimitConfigErrors(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	tests := map[string]struct {
		mod  func(*broker.Config)
		want string
	}{
		"inflight negative":   {func(c *broker.Config) { c.MaxInflight = -1 }, "max inflight"},
		"inflight too many":   {func(c *broker.Config) { c.MaxInflight = 70000 }, "max inflight"},
		"keepalive too short": {func(c *broker.Config) { c.MaxKeepalive = 500 * time.Millisecond }, "max keepalive"},
		"keepalive too long":  {func(c *broker.Config) { c.MaxKeepalive = 24 * time.Hour }, "max keepalive"},
		"clients negative":    {func(c *broker.Config) { c.MaxClients = -1 }, "max clients"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c := broker.Config{Listen: "127.0.0.1:0"}
			tt.mod(&c)
			b, err := broker.New(c, l)
			if err == nil {
				_ = b.Server().Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want %q", err, tt.want)
			}
		})
	}
}
