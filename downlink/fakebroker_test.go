package downlink

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// fakeBroker accepts MQTT connections and runs script on each, for what
// a real broker will not do on demand.
type fakeBroker struct {
	ln net.Listener
	wg sync.WaitGroup
}

func startFakeBroker(t *testing.T, script func(c net.Conn, connect *packets.Connect)) *fakeBroker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeBroker{ln: ln}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				cp, err := packets.ReadPacket(c)
				if err != nil || cp.Type != packets.CONNECT {
					return
				}
				script(c, cp.Content.(*packets.Connect))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); f.wg.Wait() })
	return f
}

func (f *fakeBroker) url() string { return "tcp://" + f.ln.Addr().String() }

// connack answers a CONNECT with success.
func connack(c net.Conn) {
	_, _ = (&packets.Connack{ReasonCode: 0, Properties: &packets.Properties{}}).WriteTo(c)
}

// drain reads until the connection fails.
func drain(c net.Conn) {
	for {
		if _, err := packets.ReadPacket(c); err != nil {
			return
		}
	}
}

// The reason code of a DISCONNECT from the cloud (here: session taken
// over, as EMQX and HiveMQ send it) is what Status reports.
func TestDisconnectReasonReported(t *testing.T) {
	f := startFakeBroker(t, func(c net.Conn, cp *packets.Connect) {
		connack(c)
		_, _ = (&packets.Disconnect{ReasonCode: 0x8e, Properties: &packets.Properties{}}).WriteTo(c)
		drain(c)
	})
	c, _ := startClient(t, testConfig(t, "gw1-cmd", f.url()))
	waitFor(t, 10*time.Second, "the DISCONNECT", func() bool { return strings.Contains(c.Status().LastError, "DISCONNECT 0x8e") })
}

// What the CONNECT asks for: a persistent session, the bounds, the will.
func TestConnectPacket(t *testing.T) {
	got := make(chan *packets.Connect, 1)
	f := startFakeBroker(t, func(c net.Conn, cp *packets.Connect) {
		select {
		case got <- cp:
		default:
		}
	})
	cfg := testConfig(t, "gw1-cmd", f.url())
	cfg.Username, cfg.Password = "user", "secret"
	cfg.SessionExpiry = 36 * time.Hour
	cfg.MaxPayload = 1000
	cfg.Presence = Presence{Topic: "p", Online: []byte("on"), Offline: []byte("off")}
	startClient(t, cfg)
	cp := <-got
	pr := cp.Properties
	switch {
	case cp.CleanStart, cp.ClientID != "gw1-cmd", cp.Username != "user", string(cp.Password) != "secret",
		cp.KeepAlive != 30:
		t.Errorf("CONNECT %+v", cp)
	case pr == nil || pr.SessionExpiryInterval == nil || *pr.SessionExpiryInterval != 36*3600:
		t.Errorf("session expiry %+v", pr)
	case pr.ReceiveMaximum == nil || *pr.ReceiveMaximum != DefaultReceiveMaximum,
		pr.MaximumPacketSize == nil || *pr.MaximumPacketSize != 1000+packetOverhead:
		t.Errorf("bounds %+v", pr)
	case !cp.WillFlag || !cp.WillRetain || cp.WillQOS != 1 || cp.WillTopic != "p" || string(cp.WillMessage) != "off":
		t.Errorf("will %+v", cp)
	}
}

// A packet above the announced maximum size ends the connection before
// paho buffers it.
func TestOversizePacketEndsTheConnection(t *testing.T) {
	f := startFakeBroker(t, func(c net.Conn, cp *packets.Connect) {
		connack(c)
		// A PUBLISH header announcing 200 MB.
		_, _ = c.Write([]byte{0x30, 0x80, 0x80, 0x80, 0x60})
		drain(c)
	})
	cfg := testConfig(t, "gw1-cmd", f.url())
	c, _ := startClient(t, cfg)
	waitFor(t, 10*time.Second, "the connection to end", func() bool {
		return strings.Contains(c.Status().LastError, "exceeds the announced maximum size")
	})
}

// A resumed session's messages may come right after the CONNACK, before
// the client subscribed again: they are routed by topic all the same, and
// each PUBACK follows its sink's return.
func TestMessagesBeforeSubscribe(t *testing.T) {
	var mu sync.Mutex
	var seq []string
	note := func(s string) { mu.Lock(); seq = append(seq, s); mu.Unlock() }
	f := startFakeBroker(t, func(c net.Conn, cp *packets.Connect) {
		_, _ = (&packets.Connack{SessionPresent: true, Properties: &packets.Properties{}}).WriteTo(c)
		for i, topic := range []string{"gw1/cmd/a", "gw1/cmd/b"} {
			pub := &packets.Publish{QoS: 1, PacketID: uint16(10 + i), Topic: topic, Payload: []byte(topic), Properties: &packets.Properties{}}
			_, _ = (&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.PUBLISH}, Content: pub}).WriteTo(c)
		}
		for {
			p, err := packets.ReadPacket(c)
			if err != nil {
				return
			}
			switch x := p.Content.(type) {
			case *packets.Puback:
				note(fmt.Sprintf("puback %d", x.PacketID))
			case *packets.Subscribe:
				note("subscribe")
				// Never answered: the client gives up on it later.
			}
		}
	})
	s := newSink()
	s.after = func(c *Command) error { note("sink " + c.CloudTopic); return nil }
	cfg := cmdConfig(t, "gw1-cmd", s, f.url())
	startClient(t, cfg)
	waitFor(t, 10*time.Second, "both PUBACKs", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, s := range seq {
			if strings.HasPrefix(s, "puback") {
				n++
			}
		}
		return n == 2
	})
	mu.Lock()
	defer mu.Unlock()
	at := map[string]int{}
	for i, s := range seq {
		at[s] = i + 1
	}
	// Each PUBACK after its sink returned, in order. The broker sent both
	// messages before reading the SUBSCRIBE, which it never answers.
	if at["sink gw1/cmd/a"] == 0 || at["sink gw1/cmd/b"] == 0 ||
		at["puback 10"] < at["sink gw1/cmd/a"] || at["puback 11"] < at["sink gw1/cmd/b"] || at["puback 11"] < at["puback 10"] {
		t.Errorf("sequence %q", seq)
	}
}
