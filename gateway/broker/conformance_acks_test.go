package broker_test

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"maps"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The tests in this file check what the broker answers MQTT 5 clients on
// the wire, byte for byte, and run the same exchange against Debian's
// Mosquitto as the reference (issue 13, items 1, 2 and 4; mochi patch 9,
// third_party/mochi-mqtt/PATCHES.md).

// wireConn is a raw connection speaking hand-written bytes, so that what
// is compared is exactly what a broker put on the wire.
type wireConn struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	ref  bool // connected to the reference, Mosquitto
}

// wireDeadline bounds every wait for a packet that must come.
const wireDeadline = 5 * time.Second

// dialWire connects to addr and sends an MQTT 5 CONNECT for id with the
// given CONNECT properties; it fails the test unless the CONNACK accepts.
func dialWire(t *testing.T, addr, id string, clean bool, props []byte) *wireConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, wireDeadline)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &wireConn{t: t, conn: conn, r: bufio.NewReader(conn)}
	flags := byte(0)
	if clean {
		flags = 0x02
	}
	c.write(wirePacket(0x10, []byte{0, 4, 'M', 'Q', 'T', 'T', 5, flags, 0, 30}, wireProps(props), wireStr(id)))
	ack, err := c.next(wireDeadline)
	if err != nil || len(ack) < 4 || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("%s: CONNACK % x, %v", id, ack, err)
	}
	return c
}

func (c *wireConn) write(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// next returns the next packet's bytes, fixed header included.
func (c *wireConn) next(timeout time.Duration) ([]byte, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	first, err := c.r.ReadByte()
	if err != nil {
		return nil, err
	}
	out := []byte{first}
	n, mult := 0, 1
	for i := 0; ; i++ {
		b, err := c.r.ReadByte()
		if err != nil {
			return out, err
		}
		out = append(out, b)
		n += int(b&0x7f) * mult
		mult *= 128
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return out, errors.New("malformed remaining length")
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return out, err
	}
	return append(out, body...), nil
}

// wirePacket is a packet of fixed header byte first and the body parts.
func wirePacket(first byte, parts ...[]byte) []byte {
	var body []byte
	for _, p := range parts {
		body = append(body, p...)
	}
	out := []byte{first}
	n := len(body)
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			break
		}
	}
	return append(out, body...)
}

func wireStr(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

func wireU16(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }

// wireProps is a property block (its length is below 128 in these tests).
func wireProps(props ...[]byte) []byte {
	var b []byte
	for _, p := range props {
		b = append(b, p...)
	}
	return append([]byte{byte(len(b))}, b...)
}

// userProp is the user property k=v, as in the capture (26 00 01
// 6b 00 01 76).
func userProp(k, v string) []byte {
	return append(append([]byte{0x26}, wireStr(k)...), wireStr(v)...)
}

func topicAlias(a uint16) []byte { return append([]byte{0x23}, wireU16(a)...) }

func expiryProp(s uint32) []byte {
	return []byte{0x02, byte(s >> 24), byte(s >> 16), byte(s >> 8), byte(s)}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wireStep sends a packet and checks the answer: one of acks (hex, as a
// broker may omit a success reason code or say "no matching subscribers"),
// or, when disconnect is set, a DISCONNECT with that reason code and the
// connection closed. mosquitto, when set, is what Mosquitto answers where
// ferry differs (listed in the README).
type wireStep struct {
	send       []byte
	acks       []string
	disconnect byte
	mosquitto  []string
}

func (s wireStep) check(t *testing.T, c *wireConn) {
	t.Helper()
	if s.mosquitto != nil && c.ref {
		s.acks, s.disconnect = s.mosquitto, 0
	}
	c.write(s.send)
	got, err := c.next(wireDeadline)
	if err != nil {
		t.Fatalf("after % x: no answer: %v", s.send, err)
	}
	if s.disconnect != 0 {
		if len(got) < 3 || got[0] != 0xe0 || got[2] != s.disconnect {
			t.Fatalf("after % x: got % x, want DISCONNECT %#x", s.send, got, s.disconnect)
		}
		if more, err := c.next(wireDeadline); err == nil {
			t.Fatalf("after DISCONNECT: got % x, want the connection closed", more)
		}
		return
	}
	for _, want := range s.acks {
		if slices.Equal(got, unhex(t, want)) {
			return
		}
	}
	t.Fatalf("after % x: got % x, want one of %q", s.send, got, s.acks)
}

// wireBrokers returns the addresses to run an exchange against: ferry's
// broker (ingesting every topic into l's stream "all"), also returned, and
// Mosquitto.
func wireBrokers(t *testing.T, l broker.EventSink) (map[string]string, *broker.Broker) {
	mqtttest.RequireMosquitto(t)
	b := start(t, l, func(c *broker.Config) {
		c.Routes = []broker.Route{{Topics: []string{"#"}, Stream: "all"}}
	})
	ref := mqtttest.Start(t)
	if ref.Kind != "mosquitto" {
		t.Fatalf("reference broker is %s, want mosquitto", ref.Kind)
	}
	return map[string]string{"ferry": b.Addr(), "mosquitto": ref.Addr}, b
}

// TestAckConformance: every acknowledgement carries a reason code its
// type has, and none of the client's properties back (issue 13, item 1).
// Before mochi patch 9, a QoS 1 PUBLISH with a user property was answered
// 40 0b 00 01 01 07 26 00 01 6b 00 01 76 (reason 0x01, the user property
// copied), which MQTT.js and Python paho reject.
func TestAckConformance(t *testing.T) {
	up := userProp("k", "v")
	cases := []struct {
		name  string
		steps []wireStep
	}{
		{"QoS 1 PUBLISH with a user property", []wireStep{{
			send: wirePacket(0x32, wireStr("sensors/a"), wireU16(1), wireProps(up), []byte("x")),
			acks: []string{"40 02 00 01", "40 03 00 01 10"},
		}}},
		{"QoS 1 PUBLISH", []wireStep{{
			send: wirePacket(0x32, wireStr("sensors/a"), wireU16(2), wireProps(), []byte("x")),
			acks: []string{"40 02 00 02", "40 03 00 02 10"},
		}}},
		{"QoS 2 flow with user properties", []wireStep{{
			send: wirePacket(0x34, wireStr("sensors/b"), wireU16(3), wireProps(up), []byte("x")),
			acks: []string{"50 02 00 03", "50 03 00 03 10"},
		}, {
			send: wirePacket(0x62, wireU16(3), []byte{0}, wireProps(up)),
			acks: []string{"70 02 00 03"},
		}}},
		{"PUBREL for an unknown packet id", []wireStep{{
			send: wirePacket(0x62, wireU16(9), []byte{0}, wireProps(up)),
			// 0x92 with or without a reason string; never the client's
			// user property.
			acks: []string{"70 02 00 09", "70 03 00 09 92",
				"70 " + hex.EncodeToString([]byte{byte(4 + 3 + len("packet identifier not found"))}) +
					" 00 09 92 " + hex.EncodeToString(append([]byte{byte(3 + len("packet identifier not found")), 0x1f},
					wireStr("packet identifier not found")...))},
		}}},
		{"SUBSCRIBE and UNSUBSCRIBE with user properties", []wireStep{{
			send: wirePacket(0x82, wireU16(4), wireProps(up), wireStr("a/b"), []byte{1}),
			acks: []string{"90 04 00 04 00 01"},
		}, {
			send: wirePacket(0xa2, wireU16(5), wireProps(up), wireStr("a/b")),
			acks: []string{"b0 04 00 05 00 00"},
		}}},
		{"UNSUBSCRIBE of no subscription", []wireStep{{
			send: wirePacket(0xa2, wireU16(6), wireProps(up), wireStr("x/y")),
			acks: []string{"b0 04 00 06 00 11", "b0 04 00 06 00 00"},
		}}},
		{"shared subscription with No Local", []wireStep{{
			// [MQTT-3.8.3-4]: a protocol error; upstream put 0x82, which
			// is no SUBACK code, in the SUBACK. Mosquitto 2.0.11 grants
			// it, ignoring No Local.
			send:       wirePacket(0x82, wireU16(7), wireProps(), wireStr("$share/g/a/b"), []byte{0x05}),
			disconnect: 0x82,
			mosquitto:  []string{"90 04 00 07 00 01"},
		}}},
	}
	l := buffertest.MustOpen(t, buffer.Options{})
	addrs, _ := wireBrokers(t, l)
	for name, addr := range addrs {
		for _, tc := range cases {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				c := dialWire(t, addr, "acks-"+name, true, nil)
				c.ref = name == "mosquitto"
				for _, s := range tc.steps {
					s.check(t, c)
				}
			})
		}
	}
}

// TestTopicAliasConformance: an alias-only PUBLISH with an alias the
// connection never set is a protocol error, and an alias over the Topic
// Alias Maximum an invalid alias (issue 13, item 2). Before mochi patch 9
// the former was acknowledged and stored as an event on topic "".
func TestTopicAliasConformance(t *testing.T) {
	cases := []struct {
		name  string
		steps []wireStep
	}{
		{"unknown alias", []wireStep{{
			send:       wirePacket(0x32, wireStr(""), wireU16(1), wireProps(topicAlias(1)), []byte("lost")),
			disconnect: 0x82,
		}}},
		{"unknown alias, QoS 0", []wireStep{{
			send:       wirePacket(0x30, wireStr(""), wireProps(topicAlias(2)), []byte("lost")),
			disconnect: 0x82,
		}}},
		{"alias over the maximum", []wireStep{{
			// ferry allows 16 aliases, Mosquitto 10.
			send:       wirePacket(0x32, wireStr("sensors/a"), wireU16(1), wireProps(topicAlias(17)), []byte("x")),
			disconnect: 0x94,
		}}},
		{"alias set, then used", []wireStep{{
			send: wirePacket(0x32, wireStr("sensors/alias"), wireU16(1), wireProps(topicAlias(1)), []byte("set")),
			acks: []string{"40 02 00 01", "40 03 00 01 10"},
		}, {
			send: wirePacket(0x32, wireStr(""), wireU16(2), wireProps(topicAlias(1)), []byte("used")),
			acks: []string{"40 02 00 02", "40 03 00 02 10"},
		}}},
	}
	l := buffertest.MustOpen(t, buffer.Options{})
	addrs, _ := wireBrokers(t, l)
	for name, addr := range addrs {
		for _, tc := range cases {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				c := dialWire(t, addr, "alias-"+name, true, nil)
				c.ref = name == "mosquitto"
				for _, s := range tc.steps {
					s.check(t, c)
				}
			})
		}
	}
	var topics []string
	for _, e := range events(t, l, "all") {
		topics = append(topics, e.Topic+"="+string(e.Payload))
	}
	if want := []string{"sensors/alias=set", "sensors/alias=used"}; !slices.Equal(topics, want) {
		t.Fatalf("events %q, want %q", topics, want)
	}
}

// TestMessageExpiryPassThrough: a message queued for an offline session
// keeps the expiry its publisher set, and one published without an expiry
// arrives without one (issue 13, item 4). Before, mochi's 24-hour default
// maximum gave it MessageExpiryInterval=86400 less its time queued, and
// dropped it after a day.
func TestMessageExpiryPassThrough(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	addrs, _ := wireBrokers(t, l)
	for name, addr := range addrs {
		t.Run(name, func(t *testing.T) {
			// A persistent session (Session Expiry Interval 3600 s)
			// subscribed with QoS 1, then offline.
			sessionExpiry := []byte{0x11, 0, 0, 0x0e, 0x10}
			sub := dialWire(t, addr, "expiry-sub", true, sessionExpiry)
			wireStep{
				send: wirePacket(0x82, wireU16(1), wireProps(), wireStr("exp/#"), []byte{1}),
				acks: []string{"90 04 00 01 00 01"},
			}.check(t, sub)
			// DISCONNECT, and the broker closing the connection, so that
			// the messages below find the session offline.
			sub.write([]byte{0xe0, 0})
			if more, err := sub.next(wireDeadline); err == nil {
				t.Fatalf("after DISCONNECT: got % x, want the connection closed", more)
			}

			pub := dialWire(t, addr, "expiry-pub", true, nil)
			ack := []string{"40 02 00 01", "40 03 00 01 10", "40 02 00 02", "40 03 00 02 10"}
			wireStep{send: wirePacket(0x32, wireStr("exp/none"), wireU16(1), wireProps(), []byte("a")), acks: ack}.check(t, pub)
			wireStep{send: wirePacket(0x32, wireStr("exp/set"), wireU16(2), wireProps(expiryProp(600)), []byte("b")), acks: ack}.check(t, pub)

			// Resumed right after the PUBACK: the message is queued for
			// the session before the PUBACK leaves (mochi patch 14).
			sub = dialWire(t, addr, "expiry-sub", false, sessionExpiry)
			got := map[string]packets.Packet{}
			for len(got) < 2 {
				raw, err := sub.next(wireDeadline)
				if err != nil {
					t.Fatalf("queued messages: got %v, then %v", slices.Collect(maps.Keys(got)), err)
				}
				pk := packets.Packet{ProtocolVersion: 5}
				if err := pk.FixedHeader.Decode(raw[0]); err != nil || pk.FixedHeader.Type != packets.Publish {
					t.Fatalf("got % x, want a PUBLISH", raw)
				}
				hdr := 2
				for raw[hdr-1]&0x80 != 0 {
					hdr++
				}
				pk.FixedHeader.Remaining = len(raw) - hdr
				if err := pk.PublishDecode(raw[hdr:]); err != nil {
					t.Fatal(err)
				}
				got[pk.TopicName] = pk
				sub.write(wirePacket(0x40, wireU16(pk.PacketID)))
			}
			if p := got["exp/none"].Properties; p.MessageExpiryInterval != 0 {
				t.Errorf("message published without expiry arrived with MessageExpiryInterval=%d", p.MessageExpiryInterval)
			}
			if e := got["exp/set"].Properties.MessageExpiryInterval; e == 0 || e > 600 {
				t.Errorf("message published with expiry 600 arrived with MessageExpiryInterval=%d, want 1..600", e)
			}
		})
	}
}

// TestMosquittoPubUserProperty: Debian's mosquitto_pub -V 5 publishing
// with a user property at QoS 1 and 2 gets its acknowledgements with
// reason code 0 and exits cleanly, and its message is stored once.
func TestMosquittoPubUserProperty(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, nil)
	host, port, _ := net.SplitHostPort(b.Addr())
	for _, qos := range []string{"1", "2"} {
		t.Run("QoS "+qos, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, mosquitto(t, "mosquitto_pub"), "-h", host, "-p", port, "-V", "5",
				"-q", qos, "-t", "sensors/up"+qos, "-m", "m", "-D", "publish", "user-property", "k", "v", "-d")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("mosquitto_pub: %v\n%s", err, out)
			}
			// -d prints the reason code it read: 1 (not a PUBACK code)
			// before mochi patch 9.
			want := map[string]string{"1": "received PUBACK (Mid: 1, RC:0)", "2": "received PUBCOMP (Mid: 1, RC:0)"}[qos]
			if strings.Contains(string(out), "rror") || !strings.Contains(string(out), want) {
				t.Fatalf("mosquitto_pub: want %q, got:\n%s", want, out)
			}
			if got := payloads(t, l, "telemetry", "sensors/up"+qos); len(got) != 1 {
				t.Fatalf("stored %q, want one event", got)
			}
		})
	}
}
