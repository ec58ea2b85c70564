package conformance

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// The rest of issue 13 item 6: behaviour that worked at 38fca53 and must
// keep working, each on ferry and on Mosquitto. (QoS 0/1/2 and 200 KB
// payloads are TestClients.)

// TestRetained: a retained message is delivered to a later subscriber,
// flagged retained; an empty retained publish clears it.
func TestRetained(t *testing.T) {
	for _, bk := range brokers {
		for _, v := range []string{"mqttv311", "mqttv5"} {
			t.Run(bk.name+"/"+v, func(t *testing.T) {
				tg := bk.start(t, opts{})
				topic := "conf/" + uniq(t)
				pub(t, tg, v, "-q", "1", "-r", "-t", topic, "-m", "kept")
				s := startSub(t, tg, v, "-q", "1", "-t", topic, "-F", "MSG %r %t %p")
				if got, want := s.next(), "MSG 1 "+topic+" kept"; got != want {
					t.Fatalf("%s: got %q, want %q (retain flag, topic, payload)", tg.name, got, want)
				}
				pub(t, tg, v, "-q", "1", "-r", "-t", topic, "-n")
				s = startSub(t, tg, v, "-q", "1", "-t", topic)
				s.none(time.Second)
			})
		}
	}
}

// TestWillOnAbruptDisconnect: a client killed without DISCONNECT has its
// will published; one that disconnects normally (mosquitto_pub: DISCONNECT
// 0x00) does not.
func TestWillOnAbruptDisconnect(t *testing.T) {
	for _, bk := range brokers {
		for _, v := range []string{"mqttv311", "mqttv5"} {
			t.Run(bk.name+"/"+v, func(t *testing.T) {
				tg := bk.start(t, opts{})
				will := "conf/" + uniq(t) + "/will"
				w := startSub(t, tg, v, "-q", "1", "-t", will)
				pub(t, tg, v, "-t", "conf/"+uniq(t)+"/x", "-m", "m", "--will-topic", will, "--will-payload", "clean", "--will-qos", "1")
				victim := startSub(t, tg, v, "-t", "conf/"+uniq(t)+"/x", "--will-topic", will, "--will-payload", "gone", "--will-qos", "1")
				victim.kill()
				if got, want := w.next(), "MSG 1 "+will+" 4 gone"; got != want {
					t.Fatalf("%s: got %q, want %q", tg.name, got, want)
				}
			})
		}
	}
}

// TestWildcards: + matches one level, # any number (and the parent), and
// neither matches $SYS topics.
func TestWildcards(t *testing.T) {
	for _, bk := range brokers {
		t.Run(bk.name, func(t *testing.T) {
			tg := bk.start(t, opts{})
			base := "conf/" + uniq(t)
			plus := startSub(t, tg, "mqttv5", "-q", "1", "-t", base+"/+/c")
			hash := startSub(t, tg, "mqttv5", "-q", "1", "-t", base+"/#")
			for _, tp := range []string{base + "/b/c", base + "/b/d", base + "/b/c/d", base, base + "/end/c"} {
				pub(t, tg, "mqttv5", "-q", "1", "-t", tp, "-m", "m")
			}
			for _, c := range []struct {
				s    *sub
				want []string
			}{
				{plus, []string{base + "/b/c", base + "/end/c"}},
				{hash, []string{base + "/b/c", base + "/b/d", base + "/b/c/d", base, base + "/end/c"}},
			} {
				var got []string
				for range c.want {
					got = append(got, strings.Fields(c.s.next())[2])
				}
				if fmt.Sprint(got) != fmt.Sprint(c.want) {
					t.Errorf("%s: got %v, want %v", tg.name, got, c.want)
				}
			}
		})
	}
}

// TestSysHiddenFromHash: $SYS topics exist (a $SYS/# subscriber gets
// them) but a # subscriber's first message is the test's own, not one of
// the retained $SYS messages it would otherwise be sent at once.
func TestSysHiddenFromHash(t *testing.T) {
	for _, bk := range brokers {
		t.Run(bk.name, func(t *testing.T) {
			tg := bk.start(t, opts{})
			sys := startSub(t, tg, "mqttv311", "-t", "$SYS/#", "-C", "1")
			if f := strings.Fields(sys.next()); !strings.HasPrefix(f[2], "$SYS/") {
				t.Fatalf("%s: $SYS/# got %v", tg.name, f)
			}
			all := startSub(t, tg, "mqttv311", "-t", "#")
			marker := "conf/" + uniq(t)
			pub(t, tg, "mqttv311", "-t", marker, "-m", "m")
			if f := strings.Fields(all.next()); f[2] != marker {
				t.Fatalf("%s: # got %v first, want %s", tg.name, f, marker)
			}
		})
	}
}

// TestReceiveMaximum: ferry disconnects a client sending more
// unacknowledged QoS 2 messages than the Receive Maximum in its CONNACK
// with 0x93. Mosquitto 2.0.11 (Receive Maximum 20) instead refuses the
// 21st with PUBREC 0x97 and keeps the connection (README, "What differs
// from Mosquitto"); that is checked too, so the table stays true.
func TestReceiveMaximum(t *testing.T) {
	for _, bk := range brokers {
		t.Run(bk.name, func(t *testing.T) {
			tg := bk.start(t, opts{})
			r, ack := dialRaw(t, tg, 5, nil)
			rm := int(ack.Properties.ReceiveMaximum)
			if rm == 0 || rm > 1000 {
				t.Fatalf("%s: Receive Maximum %d: want an announced limit small enough to exceed", tg.name, rm)
			}
			topic := "conf/" + uniq(t)
			for range rm + 1 {
				r.publish(topic, 2, []byte("q2"), packets.Properties{}) // never released
			}
			if tg.name == "mosquitto" {
				for i := range rm + 1 {
					want := byte(0x00)
					if i == rm {
						want = 0x97 // quota exceeded
					}
					if pk, _ := r.readType(packets.Pubrec); pk.ReasonCode != want {
						t.Fatalf("%s: PUBREC %d: 0x%02x, want 0x%02x", tg.name, i, pk.ReasonCode, want)
					}
				}
				return
			}
			if got := r.closedWith(); got != 0x93 {
				t.Fatalf("%s: %d unreleased QoS 2 publishes with Receive Maximum %d: ended with DISCONNECT %d, want 0x93", tg.name, rm+1, rm, got)
			}
		})
	}
}

// TestSubscriptionIdentifiers: a message is delivered with the identifier
// of the subscription it matched, and without one for a subscription that
// set none.
func TestSubscriptionIdentifiers(t *testing.T) {
	for _, bk := range brokers {
		t.Run(bk.name, func(t *testing.T) {
			tg := bk.start(t, opts{})
			base := "conf/" + uniq(t)
			r, _ := dialRaw(t, tg, 5, nil)
			r.subscribe(base+"/a/#", 1, packets.Properties{SubscriptionIdentifier: []int{7}}, 7)
			r.subscribe(base+"/b", 1, packets.Properties{}, 0)
			for _, c := range []struct {
				topic string
				want  string
			}{{base + "/a/x", "[7]"}, {base + "/b", "[]"}} {
				pub(t, tg, "mqttv5", "-q", "1", "-t", c.topic, "-m", "m")
				pk, _ := r.readType(packets.Publish)
				if got := fmt.Sprint(pk.Properties.SubscriptionIdentifier); pk.TopicName != c.topic || got != c.want {
					t.Errorf("%s: %s delivered with identifiers %s, want %s", tg.name, pk.TopicName, got, c.want)
				}
				r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
			}
		})
	}
}

// TestServerTopicAliases: to a client announcing Topic Alias Maximum 5,
// every delivery resolves to its topic; ferry replaces repeated topics
// with an alias (within the client's maximum), Mosquitto 2.0.11 never
// sends aliases.
func TestServerTopicAliases(t *testing.T) {
	for _, bk := range brokers {
		t.Run(bk.name, func(t *testing.T) {
			tg := bk.start(t, opts{})
			topic := "conf/" + uniq(t)
			r, _ := dialRaw(t, tg, 5, func(pk *packets.Packet) {
				pk.Properties.TopicAliasMaximum = 5
			})
			r.subscribe(topic, 1, packets.Properties{}, 0)
			aliases := map[uint16]string{}
			used := 0
			for i := range 3 {
				pub(t, tg, "mqttv5", "-q", "1", "-t", topic, "-m", fmt.Sprint(i))
				pk, b := r.readType(packets.Publish)
				resolved := pk.TopicName
				if a := pk.Properties.TopicAlias; a != 0 {
					if a > 5 {
						t.Fatalf("%s: alias %d above the client's maximum 5", tg.name, a)
					}
					if resolved == "" {
						resolved = aliases[a]
						used++
					} else {
						aliases[a] = resolved
					}
				}
				if resolved != topic || string(pk.Payload) != fmt.Sprint(i) {
					t.Fatalf("%s: delivery %d resolves to %q %q, want %q (% x)", tg.name, i, resolved, pk.Payload, topic, b)
				}
				r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
			}
			if tg.name == "ferry" && used == 0 {
				t.Errorf("%s: no delivery used a topic alias", tg.name)
			}
			t.Logf("%s: %d of 3 deliveries by alias alone", tg.name, used)
		})
	}
}

// TestWillDelay: a will with Will Delay Interval 2 s is published about
// 2 s after the abrupt disconnect, not at once.
func TestWillDelay(t *testing.T) {
	const delay = 2 * time.Second
	for _, bk := range brokers {
		t.Run(bk.name, func(t *testing.T) {
			tg := bk.start(t, opts{})
			will := "conf/" + uniq(t) + "/will"
			w := startSub(t, tg, "mqttv5", "-q", "1", "-t", will)
			r, _ := dialRaw(t, tg, 5, func(pk *packets.Packet) {
				pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 60, true
				pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload, pk.Connect.WillQos = true, will, []byte("late"), 1
				pk.Connect.WillProperties.WillDelayInterval = uint32(delay / time.Second)
			})
			start := time.Now()
			r.c.Close() // abrupt: no DISCONNECT
			w.none(delay / 2)
			got := w.next()
			if el := time.Since(start); got != "MSG 1 "+will+" 4 late" || el < delay-300*time.Millisecond {
				t.Fatalf("%s: got %q after %v, want the will after about %v", tg.name, got, el, delay)
			}
		})
	}
}

// TestDisconnectWithWillMessage: a client ending with DISCONNECT reason
// 0x04 "disconnect with Will Message" has its will published. mosquitto_sub
// -V 5 -W (timeout) ends that way, sending the 3 bytes `e0 01 04`: the
// reason code without properties, which MQTT 5 allows (3.14.2.2.1) and
// mochi v2.7.9 reads as 0x00 (it decodes the reason code only from a
// remaining length of 2 or more), so ferry drops the will.
func TestDisconnectWithWillMessage(t *testing.T) {
	for _, bk := range brokers {
		t.Run(bk.name, func(t *testing.T) {
			tg := bk.start(t, opts{})
			will := "conf/" + uniq(t) + "/will"
			w := startSub(t, tg, "mqttv5", "-q", "1", "-t", will)
			c := startSub(t, tg, "mqttv5", "-t", "conf/"+uniq(t)+"/x", "--will-topic", will, "--will-payload", "w04", "--will-qos", "1", "-W", "1")
			select {
			case <-c.done:
			case <-time.After(wait):
				t.Fatalf("%s: mosquitto_sub -W 1 did not end", tg.name)
			}
			if got, want := w.next(), "MSG 1 "+will+" 3 w04"; got != want {
				t.Fatalf("%s: got %q, want %q", tg.name, got, want)
			}
		})
	}
}
