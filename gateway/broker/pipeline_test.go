package broker_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/goleak"
)

// The tests in this file check pipelined acknowledgements (mochi patch 5,
// third_party/mochi-mqtt/PATCHES.md): a client's PUBLISHes in flight are
// stored in shared commits, and everything the client sees, and local
// subscribers see, stays in publish order.

// sendAll writes pks in one write, so that the broker reads them back to
// back, as from a client keeping them all in flight.
func (c *rawClient) sendAll(pks ...packets.Packet) {
	c.t.Helper()
	var buf bytes.Buffer
	for _, pk := range pks {
		pk.ProtocolVersion = c.ver
		var err error
		switch pk.FixedHeader.Type {
		case packets.Publish:
			err = pk.PublishEncode(&buf)
		case packets.Pubrel:
			err = pk.PubrelEncode(&buf)
		case packets.Subscribe:
			err = pk.SubscribeEncode(&buf)
		case packets.Pingreq:
			err = pk.PingreqEncode(&buf)
		case packets.Disconnect:
			err = pk.DisconnectEncode(&buf)
		default:
			c.t.Fatalf("rawClient: cannot send packet type %d", pk.FixedHeader.Type)
		}
		if err != nil {
			c.t.Fatal(err)
		}
	}
	if _, err := c.conn.Write(buf.Bytes()); err != nil {
		c.t.Fatalf("rawClient: write: %v", err)
	}
}

// readN reads n packets.
func (c *rawClient) readN(n int) []packets.Packet {
	c.t.Helper()
	got := make([]packets.Packet, 0, n)
	for len(got) < n {
		pk, err := c.read(hangDeadline)
		if err != nil {
			c.t.Fatalf("after %d of %d packets: %v", len(got), n, err)
		}
		got = append(got, pk)
	}
	return got
}

// untilPingresp returns the packets the broker sends before its PINGRESP.
func (c *rawClient) untilPingresp() []packets.Packet {
	c.t.Helper()
	var got []packets.Packet
	for {
		pk, err := c.read(hangDeadline)
		if err != nil {
			c.t.Fatalf("after %d packets, no PINGRESP: %v", len(got), err)
		}
		if pk.FixedHeader.Type == packets.Pingresp {
			return got
		}
		got = append(got, pk)
	}
}

var pingreq = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}}

func pubrel(id uint16) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: id}
}

func subscribe(id uint16, filters ...string) packets.Packet {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: id}
	for _, f := range filters {
		pk.Filters = append(pk.Filters, packets.Subscription{Filter: f})
	}
	return pk
}

// ackType is the acknowledgement a PUBLISH of qos gets.
func ackType(qos byte) byte {
	if qos == 2 {
		return packets.Pubrec
	}
	return packets.Puback
}

// checkAck fails unless pk is the acknowledgement of type typ for packet
// id, with a success reason (refused false) or 0x97 (refused true).
func checkAck(t *testing.T, pk packets.Packet, typ byte, id uint16, refused bool) {
	t.Helper()
	code := packets.CodeSuccess.Code
	if refused {
		code = packets.ErrQuotaExceeded.Code
	}
	if pk.FixedHeader.Type != typ || pk.PacketID != id || pk.ReasonCode != code {
		t.Fatalf("got %s for packet %d, reason %#x; want %s for packet %d, reason %#x",
			packets.PacketNames[pk.FixedHeader.Type], pk.PacketID, pk.ReasonCode, packets.PacketNames[typ], id, code)
	}
}

// payloads returns the payloads of the events of stream on topic, in log
// order.
func payloads(t *testing.T, l *buffertest.Log, stream, topic string) []string {
	t.Helper()
	var out []string
	for _, e := range events(t, l, stream) {
		if e.Topic == topic {
			out = append(out, string(e.Payload))
		}
	}
	return out
}

// seq returns "0" to "n-1", the payloads the tests publish.
func seq(n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return s
}

// waitFor polls cond until it holds, failing the test after hangDeadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			failHung(t, what)
		}
		time.Sleep(5 * time.Millisecond) // polling
	}
}

// TestPipelinedAcks has a client keep 32 (the default Receive Maximum)
// QoS 1 or QoS 2 PUBLISHes in flight: their events share a few commits
// instead of taking one each, every acknowledgement arrives, in publish
// order, and the log holds the events in publish order. Without patch 5
// the ingest hook waited for each commit in the client's read loop: 32
// messages, 32 commits.
func TestPipelinedAcks(t *testing.T) {
	const n = broker.DefaultMaxInflight
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, nil)
	for _, tt := range []struct{ ver, qos byte }{{4, 1}, {5, 1}, {4, 2}, {5, 2}} {
		t.Run(fmt.Sprintf("MQTT v%d QoS %d", tt.ver, tt.qos), func(t *testing.T) {
			c, _ := dialRaw(t, b.Addr(), tt.ver, fmt.Sprintf("pipe-%d-%d", tt.ver, tt.qos), 30)
			topic := fmt.Sprintf("sensors/pipe/%d/%d", tt.ver, tt.qos)
			pks := make([]packets.Packet, n)
			for i := range pks {
				pks[i] = publish(topic, tt.qos, uint16(i+1), []byte(strconv.Itoa(i)))
			}
			before, _ := l.CommitStats()
			c.sendAll(pks...)
			acks := c.readN(n)
			after, _ := l.CommitStats()
			for i, ack := range acks {
				checkAck(t, ack, ackType(tt.qos), uint16(i+1), false)
			}
			commits := after - before
			t.Logf("%d messages in flight: %d commits", n, commits)
			if commits >= n/4 {
				t.Fatalf("%d messages in flight took %d commits, want fewer than %d", n, commits, n/4)
			}
			if got := payloads(t, l, "telemetry", topic); !slices.Equal(got, seq(n)) {
				t.Fatalf("log holds %v, want %v", got, seq(n))
			}
			if tt.qos == 2 {
				rels := make([]packets.Packet, n)
				for i := range rels {
					rels[i] = pubrel(uint16(i + 1))
				}
				c.sendAll(rels...)
				for i, pk := range c.readN(n) {
					if pk.FixedHeader.Type != packets.Pubcomp || pk.PacketID != uint16(i+1) {
						t.Fatalf("after PUBREL %d: %s for packet %d", i+1, packets.PacketNames[pk.FixedHeader.Type], pk.PacketID)
					}
				}
			}
		})
	}
}

// TestPipelinedRefusals fills a reject-policy stream with room for 4
// events from 8 PUBLISHes in flight: the first 4 are stored and
// acknowledged, the other 4 refused as they are one at a time (MQTT 5: a
// PUBACK or PUBREC with 0x97; MQTT 3.1.1: no acknowledgement), all in
// publish order.
func TestPipelinedRefusals(t *testing.T) {
	const n, room = 8, 4
	for _, tt := range []struct{ ver, qos byte }{{5, 1}, {5, 2}, {4, 1}, {4, 2}} {
		t.Run(fmt.Sprintf("MQTT v%d QoS %d", tt.ver, tt.qos), func(t *testing.T) {
			l := buffertest.MustOpen(t, buffer.Options{Streams: []buffer.StreamConfig{{Name: "telemetry", MaxEvents: room, Overflow: buffer.Reject}}})
			b := start(t, l, nil)
			c, _ := dialRaw(t, b.Addr(), tt.ver, "filling", 30)
			var pks []packets.Packet
			for i := range n {
				pks = append(pks, publish("sensors/fill", tt.qos, uint16(i+1), []byte(strconv.Itoa(i))))
			}
			c.sendAll(append(pks, pingreq)...)
			got := c.untilPingresp()
			want := n
			if tt.ver == 4 {
				want = room // the refused get no acknowledgement
			}
			if len(got) != want {
				t.Fatalf("%d acknowledgements before the PINGRESP, want %d: %+v", len(got), want, got)
			}
			for i, ack := range got {
				checkAck(t, ack, ackType(tt.qos), uint16(i+1), i >= room)
			}
			if got := payloads(t, l, "telemetry", "sensors/fill"); !slices.Equal(got, seq(room)) {
				t.Fatalf("log holds %v, want %v", got, seq(room))
			}
			if st := b.Stats(); st.Ingested != room || st.Refused != n-room {
				t.Fatalf("stats %+v, want %d ingested, %d refused", st, room, n-room)
			}
		})
	}
}

// TestPipelinedRefusalsKeepQuota sends three times the Receive Maximum of
// PUBLISHes that are refused, in one go. A queued PUBLISH takes a unit of
// the client's receive quota; a refusal ends its flow and gives it back,
// so the client is not taken for one exceeding its Receive Maximum and
// stays connected.
func TestPipelinedRefusalsKeepQuota(t *testing.T) {
	const max = 4
	b, _ := fullBroker(t, func(c *broker.Config) { c.MaxInflight = max })
	for _, tt := range []struct{ ver, qos byte }{{5, 1}, {5, 2}, {4, 1}, {4, 2}} {
		t.Run(fmt.Sprintf("MQTT v%d QoS %d", tt.ver, tt.qos), func(t *testing.T) {
			c, _ := dialRaw(t, b.Addr(), tt.ver, fmt.Sprintf("refused-%d-%d", tt.ver, tt.qos), 30)
			var pks []packets.Packet
			for i := range 3 * max {
				pks = append(pks, publish("sensors/full", tt.qos, uint16(i+1), []byte("x")))
			}
			c.sendAll(append(pks, pingreq)...)
			got := c.untilPingresp()
			if tt.ver == 4 {
				if len(got) != 0 {
					t.Fatalf("MQTT 3.1.1 client got %d acknowledgements of refused PUBLISHes, want none", len(got))
				}
			} else {
				if len(got) != len(pks) {
					t.Fatalf("%d acknowledgements, want %d", len(got), len(pks))
				}
				for i, ack := range got {
					checkAck(t, ack, ackType(tt.qos), uint16(i+1), true)
				}
			}
			// Still connected, and refused again.
			again := ackOf(t, c, publish("sensors/full", tt.qos, 100, []byte("y")))
			if tt.ver == 5 && (len(again) != 1 || again[0].ReasonCode != packets.ErrQuotaExceeded.Code) {
				t.Fatalf("after the refusals: %+v, want one acknowledgement with 0x97", again)
			}
		})
	}
}

// TestPipelineDeliveryOrder sends, in one go, a mix from one client: QoS
// 1, QoS 0 and QoS 2 PUBLISHes on an ingested topic and QoS 0 ones on a
// topic that is not ingested. The ingested ones wait for their commits and
// the others do not, yet a local subscriber receives all of them in
// publish order, the acknowledgements come in publish order, and the log
// holds the ingested ones in publish order. 40 PUBLISHes are more than the
// queue holds (32), so the read loop also waits for room.
func TestPipelineDeliveryOrder(t *testing.T) {
	const n = 40
	for _, ver := range []byte{4, 5} {
		t.Run(fmt.Sprintf("MQTT v%d publisher", ver), func(t *testing.T) {
			l := buffertest.MustOpen(t, buffer.Options{})
			b := start(t, l, nil)
			sub, _ := dialRaw(t, b.Addr(), 5, "order-sub", 30)
			sub.send(subscribe(1, "sensors/#", "other/#"))
			if pk, err := sub.read(hangDeadline); err != nil || pk.FixedHeader.Type != packets.Suback {
				t.Fatalf("subscribe: %v %+v", err, pk.FixedHeader)
			}

			pub, _ := dialRaw(t, b.Addr(), ver, "order-pub", 30)
			var pks []packets.Packet
			var ingested, rels []string
			var acked []packets.Packet
			for i := range n {
				topic, qos := "sensors/order", byte(i%4%3) // QoS 0, 1, 2, 0
				if i%4 == 3 {
					topic = "other/order"
				} else {
					ingested = append(ingested, strconv.Itoa(i))
				}
				pk := publish(topic, qos, 0, []byte(strconv.Itoa(i)))
				if qos > 0 {
					pk.PacketID = uint16(i + 1)
					acked = append(acked, pk)
				}
				if qos == 2 {
					rels = append(rels, strconv.Itoa(i))
				}
				pks = append(pks, pk)
			}
			pub.sendAll(append(pks, pingreq)...)
			acks := pub.untilPingresp()
			if len(acks) != len(acked) {
				t.Fatalf("%d acknowledgements, want %d", len(acks), len(acked))
			}
			for i, ack := range acks {
				checkAck(t, ack, ackType(acked[i].FixedHeader.Qos), acked[i].PacketID, false)
			}

			var got []string
			for _, pk := range sub.readN(n) {
				if pk.FixedHeader.Type != packets.Publish {
					t.Fatalf("subscriber got %s", packets.PacketNames[pk.FixedHeader.Type])
				}
				got = append(got, string(pk.Payload))
			}
			if !slices.Equal(got, seq(n)) {
				t.Fatalf("subscriber got %v, want %v", got, seq(n))
			}
			if got := payloads(t, l, "telemetry", "sensors/order"); !slices.Equal(got, ingested) {
				t.Fatalf("log holds %v, want %v", got, ingested)
			}
			for _, pk := range acked {
				if pk.FixedHeader.Qos == 2 {
					pub.send(pubrel(pk.PacketID))
				}
			}
			for _, pk := range pub.readN(len(rels)) {
				if pk.FixedHeader.Type != packets.Pubcomp {
					t.Fatalf("after PUBREL: %s", packets.PacketNames[pk.FixedHeader.Type])
				}
			}
		})
	}
}

// TestPipelineRetained sends retained PUBLISHes and, in the same write, a
// SUBSCRIBE to their topic: the SUBSCRIBE is handled after them, so its
// SUBACK follows their acknowledgements and brings the last of them as the
// retained message, which a later subscriber gets too; a subscriber from
// before gets all of them live, in order.
func TestPipelineRetained(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, nil)
	early, _ := dialRaw(t, b.Addr(), 5, "early", 30)
	early.send(subscribe(1, "sensors/state"))
	if pk, err := early.read(hangDeadline); err != nil || pk.FixedHeader.Type != packets.Suback {
		t.Fatalf("subscribe: %v %+v", err, pk.FixedHeader)
	}

	pub, _ := dialRaw(t, b.Addr(), 5, "retainer", 30)
	retained := func(qos byte, id uint16, v string) packets.Packet {
		pk := publish("sensors/state", qos, id, []byte(v))
		pk.FixedHeader.Retain = true
		return pk
	}
	pub.sendAll(retained(1, 1, "a"), retained(2, 2, "b"), retained(0, 0, "c"), subscribe(10, "sensors/state"))
	got := pub.readN(4)
	checkAck(t, got[0], packets.Puback, 1, false)
	checkAck(t, got[1], packets.Pubrec, 2, false)
	if got[2].FixedHeader.Type != packets.Suback || got[2].PacketID != 10 {
		t.Fatalf("third packet: %s %d, want the SUBACK", packets.PacketNames[got[2].FixedHeader.Type], got[2].PacketID)
	}
	if pk := got[3]; pk.FixedHeader.Type != packets.Publish || !pk.FixedHeader.Retain || string(pk.Payload) != "c" {
		t.Fatalf("after the SUBACK: %s retain %v %q, want the retained message c", packets.PacketNames[pk.FixedHeader.Type], pk.FixedHeader.Retain, pk.Payload)
	}
	pub.send(pubrel(2))

	var live []string
	for _, pk := range early.readN(3) {
		live = append(live, string(pk.Payload))
	}
	if !slices.Equal(live, []string{"a", "b", "c"}) {
		t.Fatalf("earlier subscriber got %v, want [a b c]", live)
	}

	late, _ := dialRaw(t, b.Addr(), 4, "late", 30)
	late.send(subscribe(1, "sensors/state"))
	got = late.readN(2)
	if pk := got[1]; got[0].FixedHeader.Type != packets.Suback || pk.FixedHeader.Type != packets.Publish || !pk.FixedHeader.Retain || string(pk.Payload) != "c" {
		t.Fatalf("later subscriber got %+v, want the SUBACK and the retained message c", got)
	}
	if got := payloads(t, l, "telemetry", "sensors/state"); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("log holds %v", got)
	}
}

// TestPipelineReceiveMaximum checks the Receive Maximum (MaxInflight 4)
// with PUBLISHes in flight: a client with more QoS 2 PUBLISHes
// unacknowledged is still disconnected (MQTT 5: DISCONNECT 0x93), after
// the acknowledgements of those within the maximum; a burst of QoS 1
// PUBLISHes over it waits for their commits instead, as it did when each
// PUBLISH waited for its commit in the read loop (an MQTT 3.1.1 client is
// never told the maximum).
func TestPipelineReceiveMaximum(t *testing.T) {
	const max = 4
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, func(c *broker.Config) { c.MaxInflight = max })
	for _, ver := range []byte{4, 5} {
		t.Run(fmt.Sprintf("QoS 2 over the maximum, MQTT v%d", ver), func(t *testing.T) {
			c, _ := dialRaw(t, b.Addr(), ver, fmt.Sprintf("greedy-%d", ver), 30)
			var pks []packets.Packet
			for i := range max + 1 {
				pks = append(pks, publish("sensors/greedy", 2, uint16(i+1), []byte("x")))
			}
			c.sendAll(pks...)
			for i, pk := range c.readN(max) {
				checkAck(t, pk, packets.Pubrec, uint16(i+1), false)
			}
			disc, closed := c.closed(hangDeadline)
			if !closed {
				t.Fatal("client over the Receive Maximum stayed connected")
			}
			if ver == 5 && (disc == nil || disc.ReasonCode != packets.ErrReceiveMaximum.Code) {
				t.Fatalf("DISCONNECT %+v, want reason 0x93", disc)
			}
		})
		t.Run(fmt.Sprintf("QoS 1 burst, MQTT v%d", ver), func(t *testing.T) {
			const n = 5 * max
			c, _ := dialRaw(t, b.Addr(), ver, fmt.Sprintf("burst-%d", ver), 30)
			topic := fmt.Sprintf("sensors/burst/%d", ver)
			var pks []packets.Packet
			for i := range n {
				pks = append(pks, publish(topic, 1, uint16(i+1), []byte(strconv.Itoa(i))))
			}
			c.sendAll(append(pks, pingreq)...)
			got := c.untilPingresp()
			if len(got) != n {
				t.Fatalf("%d PUBACKs, want %d", len(got), n)
			}
			for i, pk := range got {
				checkAck(t, pk, packets.Puback, uint16(i+1), false)
			}
			if got := payloads(t, l, "telemetry", topic); !slices.Equal(got, seq(n)) {
				t.Fatalf("log holds %v", got)
			}
		})
	}
}

// TestPipelineConnectionEnds ends connections with PUBLISHes pending in
// each way a connection ends: the client's DISCONNECT right behind them,
// a protocol error right behind them (their acknowledgements come first,
// then the broker's DISCONNECT), the connection dropped, the session taken
// over, and the log closing under them. Nothing hangs, what was read is stored (or refused, once the
// log is closed), the broker stops, and no goroutine is left behind.
func TestPipelineConnectionEnds(t *testing.T) {
	const n = broker.DefaultMaxInflight
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // runs after the other cleanups
	pending := func(topic string) []packets.Packet {
		pks := make([]packets.Packet, n)
		for i := range pks {
			pks[i] = publish(topic, 1, uint16(i+1), []byte(strconv.Itoa(i)))
		}
		return pks
	}
	stopWithin := func(t *testing.T, stop func()) {
		t.Helper()
		done := make(chan struct{})
		go func() { stop(); close(done) }()
		select {
		case <-done:
		case <-time.After(hangDeadline):
			failHung(t, "stopping the broker")
		}
	}
	cfg := broker.Config{Listen: "127.0.0.1:0", AllowAnonymous: true, Routes: []broker.Route{{Topics: []string{"sensors/#"}, Stream: "telemetry"}}}

	l := buffertest.MustOpen(t, buffer.Options{})
	b, stop := runBroker(t, l, cfg)

	t.Run("DISCONNECT behind them", func(t *testing.T) {
		c, _ := dialRaw(t, b.Addr(), 4, "polite", 30)
		c.sendAll(append(pending("sensors/polite"), packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})...)
		for i, pk := range c.readN(n) {
			checkAck(t, pk, packets.Puback, uint16(i+1), false)
		}
		if _, err := c.read(hangDeadline); !errors.Is(err, io.EOF) {
			t.Fatalf("after the PUBACKs: %v, want the connection closed", err)
		}
		if got := payloads(t, l, "telemetry", "sensors/polite"); !slices.Equal(got, seq(n)) {
			t.Fatalf("log holds %v", got)
		}
	})

	t.Run("protocol error behind them", func(t *testing.T) {
		c, _ := dialRaw(t, b.Addr(), 5, "offender", 30)
		bad := publish("sensors/offender", 1, n+1, []byte("x"))
		bad.Properties.TopicAlias, bad.Properties.TopicAliasFlag = 17, true // over the maximum, 16
		c.sendAll(append(pending("sensors/offender"), bad)...)
		for i, pk := range c.readN(n) {
			checkAck(t, pk, packets.Puback, uint16(i+1), false)
		}
		disc, closed := c.closed(hangDeadline)
		if !closed || disc == nil || disc.ReasonCode != packets.ErrTopicAliasInvalid.Code {
			t.Fatalf("after the PUBACKs: closed %v, DISCONNECT %+v, want reason 0x94", closed, disc)
		}
	})

	t.Run("dropped", func(t *testing.T) {
		c, _ := dialRaw(t, b.Addr(), 5, "dropper", 30)
		c.sendAll(pending("sensors/dropped")...)
		c.conn.Close()
		// Events stored: what the broker read before noticing.
		waitFor(t, "the client's end", func() bool { return b.Stats().Clients == 0 })
		got := payloads(t, l, "telemetry", "sensors/dropped")
		if !slices.Equal(got, seq(n)[:len(got)]) {
			t.Fatalf("log holds %v, want a prefix of %v", got, seq(n))
		}
		t.Logf("%d of %d stored", len(got), n)
	})

	t.Run("taken over", func(t *testing.T) {
		old, _ := dialRaw(t, b.Addr(), 5, "twin", 30)
		old.sendAll(pending("sensors/twin")...)
		c, ack := dialRaw(t, b.Addr(), 5, "twin", 30)
		if ack.ReasonCode != packets.CodeSuccess.Code {
			t.Fatalf("CONNACK %#x", ack.ReasonCode)
		}
		if _, closed := old.closed(hangDeadline); !closed {
			t.Fatal("taken-over connection stayed open")
		}
		if got := ackOf(t, c, publish("sensors/twin", 1, 1, []byte("new"))); len(got) != 1 {
			t.Fatalf("new connection: %+v, want its PUBACK", got)
		}
		// The old connection's read loop may still be storing what it
		// read while the new one publishes (so it was before pipelining):
		// "new" may come before some of them.
		got := payloads(t, l, "telemetry", "sensors/twin")
		olds := slices.DeleteFunc(slices.Clone(got), func(p string) bool { return p == "new" })
		if len(olds) != len(got)-1 || !slices.Equal(olds, seq(n)[:len(olds)]) {
			t.Fatalf("log holds %v, want new once and, in order, a prefix of %v", got, seq(n))
		}
	})

	stopWithin(t, stop)

	t.Run("log closes", func(t *testing.T) {
		l := buffertest.MustOpen(t, buffer.Options{})
		b, stop := runBroker(t, l, cfg)
		c, _ := dialRaw(t, b.Addr(), 5, "orphan", 30)
		closed := make(chan struct{})
		go func() {
			defer close(closed)
			l.Close() // answers what was queued, after committing it; refuses the rest
		}()
		c.sendAll(pending("sensors/orphan")...)
		<-closed
		stored := 0
		for i, pk := range c.readN(n) {
			refused := pk.ReasonCode == packets.ErrQuotaExceeded.Code
			if !refused {
				if stored != i {
					t.Fatalf("PUBLISH %d stored after one refused", i+1)
				}
				stored++
			}
			checkAck(t, pk, packets.Puback, uint16(i+1), refused)
		}
		t.Logf("%d of %d stored before the log closed", stored, n)
		stopWithin(t, stop)
		l2, err := buffer.Open(l.Path(), buffer.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer l2.Close()
		var got []string
		if _, err := l2.Read("telemetry", 0, n, func(_ uint64, e *event.Event) error {
			got = append(got, string(e.Payload))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, seq(n)[:stored]) {
			t.Fatalf("log holds %v, want the %d acknowledged", got, stored)
		}
	})
}
