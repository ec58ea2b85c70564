package broker

import (
	"bytes"
	"fmt"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Per-client limit defaults.
const (
	// DefaultMaxInflight is the default MaxInflight: room for a burst of
	// QoS 1/2 messages from a sensor, but 32 unacknowledged messages
	// (times MaxPacketSize) is all one client can make the broker hold.
	DefaultMaxInflight = 32
	// DefaultMaxKeepalive is the default MaxKeepalive. It is above every
	// common client default (mosquitto 60 s, paho 30-60 s, ESP-IDF 120 s),
	// so well-behaved sensors are never told otherwise, while a dead
	// connection (a sensor that lost power or Wi-Fi without closing it)
	// gives back its slot under MaxClients, and has its will published,
	// within 1.5 × 5 = 7.5 minutes rather than never (keep-alive 0) or
	// after 1.5 hours (keep-alive 3600).
	DefaultMaxKeepalive = 5 * time.Minute
	// maxTopicAliases is the Topic Alias Maximum the broker allows and
	// announces to MQTT 5 clients. mochi's default is 65535 and it keeps
	// each alias's topic in a per-client map, so one client could make the
	// broker hold 65535 topics of up to MaxPacketSize each.
	maxTopicAliases = 16
)

// limits are the resolved per-client limits.
type limits struct {
	maxInflight  uint16
	maxKeepalive uint16 // seconds
	maxPacket    uint32 // 0: none
}

func resolveLimits(cfg Config) (limits, error) {
	l := limits{maxPacket: cfg.MaxPacketSize}
	switch {
	case cfg.MaxInflight == 0:
		l.maxInflight = DefaultMaxInflight
	case cfg.MaxInflight < 0 || cfg.MaxInflight > 65535:
		return l, fmt.Errorf("broker: max inflight %d: want 1 to 65535", cfg.MaxInflight)
	default:
		l.maxInflight = uint16(cfg.MaxInflight)
	}
	ka := cfg.MaxKeepalive
	switch {
	case ka == 0:
		ka = DefaultMaxKeepalive
	case ka < time.Second || ka > 65535*time.Second:
		return l, fmt.Errorf("broker: max keepalive %v: want 1s to 65535s (MQTT counts it in whole seconds)", ka)
	}
	l.maxKeepalive = uint16(ka / time.Second)
	if cfg.MaxClients < 0 {
		return l, fmt.Errorf("broker: max clients %d: want 0 (no limit) or more", cfg.MaxClients)
	}
	return l, nil
}

// apply sets the limits mochi enforces itself.
func (l limits) apply(caps *mqtt.Capabilities, cfg Config) {
	if l.maxPacket > 0 {
		// mochi checks every packet's declared length before reading it
		// and drops the client that exceeds it.
		caps.MaximumPacketSize = l.maxPacket
	}
	if cfg.MaxClients > 0 {
		// Checked right after CONNECT is read; the client gets CONNACK
		// "server busy" (MQTT 5) or "server unavailable" (3.1.1).
		caps.MaximumClients = int64(cfg.MaxClients)
	}
	// Inbound: the Receive Maximum sent in CONNACK, enforced on every
	// client (3.1.1 too): a PUBLISH arriving while MaxInflight QoS 2
	// messages await their PUBREL gets the client disconnected (MQTT 5:
	// DISCONNECT 0x93). It also bounds the PUBLISHes (of any QoS) a
	// client has waiting for their events' commit (mochi patch 5). A QoS 1
	// message counts against the Receive Maximum only during that wait,
	// and a PUBLISH finding it taken up by such messages waits for them
	// rather than disconnect the client: a client sending faster than the
	// log commits, or not reading its PUBACKs, is throttled by TCP and,
	// once its socket is full, cut by the keep-alive deadline.
	caps.ReceiveMaximum = l.maxInflight
	// Outbound: the most messages sent to a client unacknowledged (mochi
	// lowers an MQTT 5 client's Receive Maximum to it, and gives it to a
	// client stating none); the rest wait in the client's queue. The
	// number of messages in flight to or queued for a client is
	// Budget.MaxSessionQueue (mochi patch 10), which mochi checks in its
	// place.
	caps.MaximumInflight = l.maxInflight
	caps.TopicAliasMaximum = maxTopicAliases
}

// limitHook holds clients to the keep-alive limit and tells MQTT 5
// clients the limits mochi does not announce.
type limitHook struct {
	mqtt.HookBase
	b   *Broker
	lim limits
}

func (h *limitHook) ID() string { return "ferry-limits" }

func (h *limitHook) Provides(b byte) bool {
	return bytes.IndexByte([]byte{mqtt.OnConnect, mqtt.OnPacketEncode}, b) >= 0
}

// OnConnect caps the keep-alive: a client asking for none (0) or for more
// than MaxKeepalive is given MaxKeepalive. mochi then sends it as Server
// Keep Alive in an MQTT 5 CONNACK and, for every client, sets the
// connection's deadline to 1.5 times it (in whole seconds, rounded down)
// before each read, dropping a client silent for that long. An MQTT 3.1.1
// client cannot be told; it is held to the limit all the same.
func (h *limitHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if ka := cl.State.Keepalive; ka == 0 || ka > h.lim.maxKeepalive {
		cl.State.Keepalive = h.lim.maxKeepalive
		cl.State.ServerKeepalive = true
	}
	return nil
}

// OnPacketEncode adds to a successful MQTT 5 CONNACK the Maximum Packet
// Size and Topic Alias Maximum mochi enforces but does not announce, so
// compliant clients keep within them instead of being dropped.
func (h *limitHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Connack || pk.ProtocolVersion != 5 || pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
		return pk
	}
	pk.Properties.MaximumPacketSize = h.lim.maxPacket // 0 is not encoded
	pk.Properties.TopicAliasMaximum = maxTopicAliases
	return pk
}
