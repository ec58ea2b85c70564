package downlink

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrygw/ferry/event"
)

func TestConfigValidation(t *testing.T) {
	s := newSink()
	base := func() Config {
		c := testConfig(t, "gw1-cmd", "tcp://cloud:1883")
		c.Subscriptions = []Subscription{{Filter: "gw1/cmd/#", CloudPrefix: "gw1/cmd/", LocalPrefix: "dev/", QoS: 1, ReplyTopic: "gw1/reply"}}
		c.Commands = s
		return c
	}
	if _, err := New(base()); err != nil {
		t.Fatalf("base config: %v", err)
	}
	for _, tc := range []struct {
		name, want string
		mod        func(*Config)
	}{
		{"no client ID", "ClientID", func(c *Config) { c.ClientID = "" }},
		{"no endpoint", "no endpoints", func(c *Config) { c.Endpoints = nil }},
		{"bad scheme", "endpoints[0]", func(c *Config) { c.Endpoints[0].URL = "http://cloud:80" }},
		{"no port", "endpoints[0]", func(c *Config) { c.Endpoints[0].URL = "tcp://cloud" }},
		{"TLS on plain", "not a TLS URL", func(c *Config) { c.Endpoints[0].TLS = tlsEmpty() }},
		{"keepalive", "keepalive", func(c *Config) { c.Keepalive = time.Millisecond }},
		{"session expiry", "session expiry", func(c *Config) { c.SessionExpiry = 1 << 62 }},
		{"backoff", "backoff", func(c *Config) { c.BackoffMin, c.BackoffMax = time.Second, time.Millisecond }},
		{"payload", "MaxPayload", func(c *Config) { c.MaxPayload = -1 }},
		{"no sink", "CommandSink", func(c *Config) { c.Commands = nil }},
		{"bad filter", "Filter", func(c *Config) { c.Subscriptions[0].Filter = "gw1/#/x" }},
		{"mixed wildcard", "Filter", func(c *Config) { c.Subscriptions[0].Filter = "gw1/cmd+" }},
		{"shared", "shared", func(c *Config) { c.Subscriptions[0].Filter = "$share/g/gw1/cmd/#"; c.Subscriptions[0].CloudPrefix = "" }},
		{"QoS 2", "QoS", func(c *Config) { c.Subscriptions[0].QoS = 2 }},
		{"prefix not of filter", "CloudPrefix", func(c *Config) { c.Subscriptions[0].CloudPrefix = "gw2/" }},
		{"wild prefix", "CloudPrefix", func(c *Config) {
			c.Subscriptions[0].Filter, c.Subscriptions[0].CloudPrefix = "+/cmd/#", "+/"
		}},
		{"local wildcard", "LocalPrefix", func(c *Config) { c.Subscriptions[0].LocalPrefix = "dev/+/" }},
		{"local $", "LocalPrefix", func(c *Config) { c.Subscriptions[0].LocalPrefix = "$SYS/" }},
		{"reserved local", "reserved", func(c *Config) { c.ReservedLocal = []string{"dev/"} }},
		{"empty reserved", "ReservedLocal", func(c *Config) { c.ReservedLocal = []string{""} }},
		{"reply wildcard", "ReplyTopic", func(c *Config) { c.Subscriptions[0].ReplyTopic = "r/#" }},
		{"reply loops", "ReplyTopic", func(c *Config) { c.Subscriptions[0].ReplyTopic = "gw1/cmd/reply" }},
		{"overlap", "overlaps", func(c *Config) {
			c.Subscriptions = append(c.Subscriptions, Subscription{Filter: "gw1/+/relay", CloudPrefix: "gw1/"})
		}},
		{"config without sink", "ConfigSink", func(c *Config) { c.ConfigTopic = "gw1/config" }},
		{"config wildcard", "ConfigTopic", func(c *Config) { c.ConfigTopic, c.Configs = "gw1/config/#", s }},
		{"config under a filter", "ConfigTopic", func(c *Config) { c.ConfigTopic, c.Configs = "gw1/cmd/config", s }},
		{"presence under a filter", "Presence.Topic", func(c *Config) {
			c.Presence = Presence{Topic: "gw1/cmd/presence", Online: []byte("1"), Offline: []byte("0")}
		}},
		{"empty presence payload", "Presence.Online", func(c *Config) { c.Presence = Presence{Topic: "p", Online: []byte("1")} }},
		{"reply inflight", "ReplyInflight", func(c *Config) { c.ReplyInflight = -1 }},
	} {
		cfg := base()
		tc.mod(&cfg)
		_, err := New(cfg)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrConfig naming %q", tc.name, err, tc.want)
		}
	}
	c, err := New(Config{ClientID: "x", Endpoints: []Endpoint{{URL: "wss://h:443/mqtt"}}, Replies: newMemQueue()})
	if err != nil {
		t.Fatal(err)
	}
	if c.cfg.ReplyStream != DefaultReplyStream || c.cfg.SessionExpiry != DefaultSessionExpiry ||
		c.cfg.MaxPayload != DefaultMaxPayload || c.cfg.ReplyInflight != DefaultReplyInflight || c.cfg.ProbeInterval != DefaultProbeInterval {
		t.Errorf("defaults %+v", c.cfg)
	}
}

func TestMatchAndOverlap(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		match         bool
	}{
		{"a/b", "a/b", true}, {"a/b", "a/c", false}, {"a/+", "a/b", true}, {"a/+", "a/b/c", false},
		{"a/#", "a", true}, {"a/#", "a/b/c", true}, {"#", "a/b", true}, {"+/+", "a/b", true},
		{"+", "a/b", false}, {"a/+/c", "a//c", true}, {"#", "$SYS/x", false}, {"+/x", "$a/x", false},
		{"$SYS/#", "$SYS/x", true}, {"a/b/#", "a", false}, {"a", "a/b", false}, {"+/#", "a", true},
	} {
		if got := MatchFilter(tc.filter, tc.topic); got != tc.match {
			t.Errorf("MatchFilter(%q, %q) = %v", tc.filter, tc.topic, got)
		}
	}
	for _, tc := range []struct {
		a, b    string
		overlap bool
	}{
		{"a/#", "a/b", true}, {"a/#", "a", true}, {"a/+", "a/b/c", false}, {"a/+", "+/b", true},
		{"a/b", "a/c", false}, {"#", "$SYS/x", false}, {"$SYS/#", "$SYS/+", true}, {"a/b/#", "a/+/c", true},
		{"a", "a/#", true}, {"a/b", "a/b/c", false}, {"+", "a/b", false}, {"+/#", "x", true},
	} {
		if got := FiltersOverlap(tc.a, tc.b); got != tc.overlap {
			t.Errorf("FiltersOverlap(%q, %q) = %v", tc.a, tc.b, got)
		}
		if got := FiltersOverlap(tc.b, tc.a); got != tc.overlap {
			t.Errorf("FiltersOverlap(%q, %q) = %v", tc.b, tc.a, got)
		}
	}
}

func TestMapTopic(t *testing.T) {
	for _, tc := range []struct {
		sub         Subscription
		cloud, want string
	}{
		{Subscription{CloudPrefix: "gw1/cmd/", LocalPrefix: "dev/"}, "gw1/cmd/relay/1", "dev/relay/1"},
		{Subscription{CloudPrefix: "gw1/cmd", LocalPrefix: "dev"}, "gw1/cmd", "dev"},
		{Subscription{CloudPrefix: "", LocalPrefix: "cloud/"}, "x/y", "cloud/x/y"},
		{Subscription{CloudPrefix: "gw1/", LocalPrefix: ""}, "gw1/a", "a"},
		{Subscription{CloudPrefix: "gw1/cmd/", LocalPrefix: "dev/"}, "gw1/cmd", ""},                     // no prefix
		{Subscription{CloudPrefix: "gw1/", LocalPrefix: ""}, "gw1/", ""},                                // empty
		{Subscription{CloudPrefix: "gw1/", LocalPrefix: ""}, "gw1/$SYS/x", ""},                          // $
		{Subscription{CloudPrefix: "gw1/", LocalPrefix: "d/"}, "gw1/a\x01b", ""},                        // control character
		{Subscription{CloudPrefix: "gw1/", LocalPrefix: "d/"}, "gw1/a\xffb", ""},                        // invalid UTF-8
		{Subscription{CloudPrefix: "gw1/", LocalPrefix: "d/"}, "gw1/" + strings.Repeat("x", 65534), ""}, // too long
	} {
		got, err := tc.sub.MapTopic(tc.cloud)
		if tc.want == "" {
			if err == nil || !errors.Is(err, ErrTopic) {
				t.Errorf("MapTopic(%q) = %q, %v; want ErrTopic", tc.cloud, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("MapTopic(%q) = %q, %v; want %q", tc.cloud, got, err, tc.want)
		}
	}
}

func TestBackoffSchedule(t *testing.T) {
	r := newReconnect(Config{BackoffMin: time.Second, BackoffMax: 8 * time.Second, ProbeInterval: 2 * time.Second,
		StableAfter: 10 * time.Second, Rand: func() float64 { return 0.999999 }})
	var got []time.Duration
	for range 6 {
		got = append(got, r.afterConnectFailure(ErrRefused).Round(time.Second))
	}
	want := []time.Duration{1, 2, 4, 8, 8, 8}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("refusals: %v, want %v s", got, want)
		}
	}
	if d := r.afterConnectFailure(ErrUnreachable); d < time.Second || d >= 2*time.Second {
		t.Errorf("probe %v", d)
	}
	if d := r.afterSession(time.Minute, false); d >= 2*time.Second {
		t.Errorf("after a stable session: %v", d)
	}
	if d := r.afterSession(time.Minute, true); d.Round(time.Second) != time.Second {
		t.Errorf("after a sink failure: %v, want a backoff step", d)
	}
	broken := newReconnect(Config{BackoffMin: time.Second, BackoffMax: 8 * time.Second, ProbeInterval: 2 * time.Second,
		Rand: func() float64 { return 7 }})
	if d := broken.afterConnectFailure(ErrRefused); d < 0 || d > time.Second {
		t.Errorf("a broken rand gave %v", d)
	}
}

func TestFrameLimit(t *testing.T) {
	f := frameLimit{max: 300}
	// CONNACK (4 bytes), a PUBLISH of 300 bytes split anywhere, a PINGRESP.
	stream := []byte{0x20, 0x02, 0, 0}
	stream = append(stream, 0x30, 0xac, 0x02) // 300
	stream = append(stream, make([]byte, 300)...)
	stream = append(stream, 0xd0, 0x00)
	for i := 0; i < len(stream); i += 7 {
		if err := f.scan(stream[i:min(i+7, len(stream))]); err != nil {
			t.Fatalf("at %d: %v", i, err)
		}
	}
	if f.state != 0 {
		t.Errorf("state %d after whole packets", f.state)
	}
	if err := f.scan([]byte{0x30, 0xad, 0x02}); !errors.Is(err, ErrPacketTooLarge) {
		t.Errorf("301 bytes: %v", err)
	}
	g := frameLimit{max: 1 << 30}
	if err := g.scan([]byte{0x30, 0xff, 0xff, 0xff, 0xff}); !errors.Is(err, ErrPacketTooLarge) {
		t.Errorf("malformed length: %v", err)
	}
	h := frameLimit{max: 100}
	if err := h.scan([]byte{0xe0, 0x02, 0x8e, 0x00}); err != nil || h.disconnect.Load() != 0x8e+1 {
		t.Errorf("DISCONNECT 0x8e: %v, %d", err, h.disconnect.Load())
	}
}

func TestRetainedKeepsTheLatest(t *testing.T) {
	r := NewRetained()
	sent := map[string]uint64{}
	_, todo := r.pending(sent)
	if len(todo) != 0 {
		t.Fatalf("empty: %v", todo)
	}
	r.Set("b", []byte("b1"))
	r.Set("a", []byte("a1"))
	ch, _ := r.pending(sent)
	buf := []byte("b2")
	r.Set("b", buf)
	buf[0] = 'X' // Set copies
	select {
	case <-ch:
	default:
		t.Error("Set did not signal")
	}
	_, todo = r.pending(sent)
	if len(todo) != 2 || todo[0].topic != "a" || todo[1].topic != "b" || string(todo[1].payload) != "b2" {
		t.Fatalf("pending %+v", todo)
	}
	for _, it := range todo {
		sent[it.topic] = it.gen
	}
	if _, todo = r.pending(sent); len(todo) != 0 {
		t.Errorf("after sending: %+v", todo)
	}
	if p, ok := r.Get("b"); !ok || string(p) != "b2" {
		t.Errorf("Get: %q %v", p, ok)
	}
}

// testSession is a session on a pipe, for calling the handlers directly.
func testSession(t *testing.T, cfg Config) (*session, *Client) {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	s := &session{c: c, url: "pipe", wire: &wireConn{Conn: a}}
	s.link, s.cancelLink = context.WithCancelCause(context.Background())
	s.work, s.stopWork = context.WithCancel(s.link)
	t.Cleanup(func() { s.cancelLink(nil); s.stopWork() })
	return s, c
}

// Messages that cannot become commands are acked and counted, never
// handed to the sink.
func TestDroppedCommands(t *testing.T) {
	sk := newSink()
	now := time.Unix(1000, 0)
	cfg := testConfig(t, "gw1-cmd", "tcp://cloud:1883")
	cfg.Subscriptions = []Subscription{
		{Filter: "gw1/cmd/#", CloudPrefix: "gw1/cmd/", LocalPrefix: "dev/", QoS: 1},
		{Filter: "gw1/raw/#", CloudPrefix: "gw1/raw/", QoS: 1},
	}
	cfg.ReservedLocal = []string{"ferry/"}
	cfg.Commands = sk
	cfg.MaxPayload = 10
	cfg.Now = func() time.Time { return now }
	s, c := testSession(t, cfg)
	zero := uint32(0)
	for _, tc := range []struct {
		reason string
		p      *paho.Publish
	}{
		{"unmatched", &paho.Publish{Topic: "gw2/cmd/x", QoS: 1}},
		{"unmatched", &paho.Publish{Topic: "", QoS: 1}},
		{"oversize", &paho.Publish{Topic: "gw1/cmd/x", QoS: 1, Payload: make([]byte, 11)}},
		{"topic", &paho.Publish{Topic: "gw1/cmd", QoS: 1}},
		{"topic", &paho.Publish{Topic: "gw1/raw/ferry/reply/7", QoS: 1}},
		{"topic", &paho.Publish{Topic: "gw1/raw/a+b", QoS: 1}},
		{"expired", &paho.Publish{Topic: "gw1/cmd/x", QoS: 1, Properties: &paho.PublishProperties{MessageExpiry: &zero}}},
	} {
		before := c.Status().Dropped[tc.reason]
		if _, err := s.onPublish(paho.PublishReceived{Packet: tc.p}); err != nil {
			t.Fatal(err)
		}
		if got := c.Status().Dropped[tc.reason]; got != before+1 {
			t.Errorf("%s on %q: dropped %v", tc.reason, tc.p.Topic, c.Status().Dropped)
		}
	}
	if n := sk.callCount(); n != 0 {
		t.Errorf("the sink was called %d times", n)
	}
	// A valid one goes through, with the clock's expiry.
	one := uint32(5)
	if _, err := s.onPublish(paho.PublishReceived{Packet: &paho.Publish{Topic: "gw1/raw/ok", QoS: 1, Payload: []byte("x"),
		Properties: &paho.PublishProperties{MessageExpiry: &one}}}); err != nil {
		t.Fatal(err)
	}
	if cmds := sk.commands(); len(cmds) != 1 || cmds[0].LocalTopic != "ok" || !cmds[0].Expires.Equal(now.Add(5*time.Second)) {
		t.Errorf("commands %+v", cmds)
	}
	// Once the session is ending, nothing more reaches the sink and the
	// connection is closed, so no PUBACK can follow.
	s.stopWork()
	if _, err := s.onPublish(paho.PublishReceived{Packet: &paho.Publish{Topic: "gw1/raw/late", QoS: 1}}); err != nil {
		t.Fatal(err)
	}
	if n := sk.callCount(); n != 1 {
		t.Errorf("the sink was called for a message after the session ended")
	}
	if _, err := s.wire.Write([]byte{0}); err == nil {
		t.Errorf("the connection is still open")
	}
}

func TestCheckReply(t *testing.T) {
	cfg := testConfig(t, "gw1-cmd", "tcp://cloud:1883")
	cfg.Subscriptions = []Subscription{{Filter: "gw1/cmd/#", CloudPrefix: "gw1/cmd/"}}
	cfg.Commands = newSink()
	cfg.ConfigTopic, cfg.Configs = "gw1/config", newSink()
	cfg.MaxPayload = 100
	s, _ := testSession(t, cfg)
	s.serverMaxPacket = 200
	ev := func(attrs map[string]string, payload int) *event.Event {
		return &event.Event{Attrs: attrs, Payload: make([]byte, payload), ContentType: "text/plain"}
	}
	for _, tc := range []struct {
		name string
		ev   *event.Event
		drop string
	}{
		{"ok", ev(map[string]string{AttrResponseTopic: "r", AttrCorrelationData: b64([]byte{0, 1})}, 10), ""},
		{"no topic", ev(map[string]string{}, 1), "no response topic"},
		{"nil attrs", &event.Event{}, "no response topic"},
		{"wildcard", ev(map[string]string{AttrResponseTopic: "r/+"}, 1), "invalid response topic"},
		{"NUL", ev(map[string]string{AttrResponseTopic: "r\x00"}, 1), "invalid response topic"},
		{"loop", ev(map[string]string{AttrResponseTopic: "gw1/cmd/x"}, 1), "subscribes to"},
		{"config loop", ev(map[string]string{AttrResponseTopic: "gw1/config"}, 1), "subscribes to"},
		{"bad base64", ev(map[string]string{AttrResponseTopic: "r", AttrCorrelationData: "!!"}, 1), "base64"},
		{"bad content type", ev(map[string]string{AttrResponseTopic: "r", AttrContentType: "\xff"}, 1), "content type"},
		{"over MaxPayload", ev(map[string]string{AttrResponseTopic: "r"}, 101), "too large"},
		{"over the cloud's max", ev(map[string]string{AttrResponseTopic: "r", AttrCorrelationData: b64(make([]byte, 90))}, 90), "too large"},
	} {
		r := s.makeReply(7, tc.ev)
		if tc.drop == "" && r.drop != "" || !strings.Contains(r.drop, tc.drop) {
			t.Errorf("%s: drop %q, want %q", tc.name, r.drop, tc.drop)
		}
	}
	r := s.makeReply(7, ev(map[string]string{AttrResponseTopic: "r", AttrCorrelationData: b64([]byte{0, 1}), AttrContentType: "a/b"}, 3))
	if r.topic != "r" || string(r.props.CorrelationData) != "\x00\x01" || r.props.ContentType != "a/b" || len(r.payload) != 3 {
		t.Errorf("reply %+v %+v", r, r.props)
	}
}

func tlsEmpty() *tls.Config { return &tls.Config{} }
