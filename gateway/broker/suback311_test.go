package broker_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/mochi-mqtt/server/v2/packets"
)

// TestSubackV311FailureCode checks mochi patch 9's mapping for MQTT 3.1.1:
// its SUBACK has one failure code, 0x80. A SUBSCRIBE whose packet ID the
// client's own QoS 2 publish still holds (before its PUBREL) is refused as
// "packet identifier in use", 0x91 in MQTT 5, which 3.1.1 does not have.
func TestSubackV311FailureCode(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, nil)
	for _, tt := range []struct {
		name string
		ver  byte
		want []byte
	}{
		{"MQTT 3.1.1", 4, []byte{0x80}},
		{"MQTT 5", 5, []byte{0x91}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := dialRaw(t, b.Addr(), tt.ver, "suback-"+tt.name[5:], 30)
			c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: 7,
				TopicName: "sensors/q2", Payload: []byte(`{"t":1}`)})
			if rec, err := c.read(5 * time.Second); err != nil || rec.FixedHeader.Type != packets.Pubrec {
				t.Fatalf("no PUBREC: %v", err)
			}
			c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 7,
				Filters: packets.Subscriptions{{Filter: "sensors/x", Qos: 1}}})
			ack, err := c.read(5 * time.Second)
			if err != nil || ack.FixedHeader.Type != packets.Suback {
				t.Fatalf("no SUBACK: %v", err)
			}
			if !bytes.Equal(ack.ReasonCodes, tt.want) {
				t.Fatalf("SUBACK %x, want %x", ack.ReasonCodes, tt.want)
			}
		})
	}
}
