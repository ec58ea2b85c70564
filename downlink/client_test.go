package downlink

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/ferrygw/ferry/internal/tcpproxy"
)

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func u32(v uint32) *uint32 { return &v }

// cmdConfig is a client of the broker with one command subscription
// "gw1/cmd/#" delivered under "dev/", replies defaulting to "gw1/reply".
func cmdConfig(t testing.TB, id string, s *sink, urls ...string) Config {
	cfg := testConfig(t, id, urls...)
	cfg.Subscriptions = []Subscription{{Filter: "gw1/cmd/#", CloudPrefix: "gw1/cmd/", LocalPrefix: "dev/", QoS: 1, ReplyTopic: "gw1/reply"}}
	cfg.Commands = s
	return cfg
}

func TestCommandsArriveWithTheirProperties(t *testing.T) {
	b := mqtttest.Start(t)
	s := newSink()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	cfg := cmdConfig(t, "gw1-cmd", s, b.URL())
	cfg.Subscriptions = append(cfg.Subscriptions,
		Subscription{Filter: "gw1/q0/+", CloudPrefix: "gw1/", LocalPrefix: "", QoS: 0},
		Subscription{Filter: "fleet/all/#", CloudPrefix: "fleet/all", LocalPrefix: "broadcast", QoS: 1})
	cfg.Now = func() time.Time { return now }
	c, _ := startClient(t, cfg)
	waitSubscribed(t, b, "gw1-cmd", "fleet/all/#", 1)
	cl := dialCloud(t, b.Addr)

	cases := []struct {
		name   string
		topic  string
		qos    byte
		props  *paho.PublishProperties
		retain bool
		want   Command
	}{
		{name: "bare", topic: "gw1/cmd/relay/1", qos: 1,
			want: Command{CloudTopic: "gw1/cmd/relay/1", LocalTopic: "dev/relay/1", QoS: 1, ResponseTopic: "gw1/reply"}},
		{name: "request/response", topic: "gw1/cmd/valve", qos: 1,
			props: &paho.PublishProperties{ResponseTopic: "app/resp/42", CorrelationData: []byte{0, 1, 2, 0xff}},
			want: Command{CloudTopic: "gw1/cmd/valve", LocalTopic: "dev/valve", QoS: 1, ResponseTopic: "app/resp/42",
				CorrelationData: []byte{0, 1, 2, 0xff}}},
		{name: "content type and user properties", topic: "gw1/cmd/led", qos: 1,
			props: &paho.PublishProperties{ContentType: "application/json",
				User: paho.UserProperties{{Key: "k", Value: "v1"}, {Key: "k", Value: "v2"}, {Key: "op", Value: "ada"}}},
			want: Command{CloudTopic: "gw1/cmd/led", LocalTopic: "dev/led", QoS: 1, ResponseTopic: "gw1/reply",
				ContentType: "application/json", UserProperties: [][2]string{{"k", "v1"}, {"k", "v2"}, {"op", "ada"}}}},
		{name: "expiry", topic: "gw1/cmd/x", qos: 1, props: &paho.PublishProperties{MessageExpiry: u32(30)},
			want: Command{CloudTopic: "gw1/cmd/x", LocalTopic: "dev/x", QoS: 1, ResponseTopic: "gw1/reply", Expires: now.Add(30 * time.Second)}},
		{name: "everything", topic: "gw1/cmd/a/b/c", qos: 1,
			props: &paho.PublishProperties{ResponseTopic: "r", CorrelationData: []byte("id-7"), ContentType: "text/plain",
				MessageExpiry: u32(3600), User: paho.UserProperties{{Key: "a", Value: ""}}},
			want: Command{CloudTopic: "gw1/cmd/a/b/c", LocalTopic: "dev/a/b/c", QoS: 1, ResponseTopic: "r",
				CorrelationData: []byte("id-7"), ContentType: "text/plain", Expires: now.Add(time.Hour),
				UserProperties: [][2]string{{"a", ""}}}},
		{name: "QoS 2 downgraded", topic: "gw1/cmd/q2", qos: 2,
			want: Command{CloudTopic: "gw1/cmd/q2", LocalTopic: "dev/q2", QoS: 1, ResponseTopic: "gw1/reply"}},
		{name: "QoS 0 subscription", topic: "gw1/q0/lamp", qos: 1,
			want: Command{CloudTopic: "gw1/q0/lamp", LocalTopic: "q0/lamp", QoS: 0}},
		{name: "prefix without slash", topic: "fleet/all/reboot", qos: 1,
			want: Command{CloudTopic: "fleet/all/reboot", LocalTopic: "broadcast/reboot", QoS: 1}},
		{name: "filter parent level", topic: "fleet/all", qos: 1,
			want: Command{CloudTopic: "fleet/all", LocalTopic: "broadcast", QoS: 1}},
		{name: "retained", topic: "gw1/cmd/ret", qos: 1, retain: true,
			want: Command{CloudTopic: "gw1/cmd/ret", LocalTopic: "dev/ret", QoS: 1, ResponseTopic: "gw1/reply"}},
	}
	for i, tc := range cases {
		payload := fmt.Appendf(nil, "payload %d \x00 %s", i, tc.name)
		cl.publish(tc.topic, payload, tc.qos, tc.retain, tc.props)
		waitFor(t, 10*time.Second, tc.name, func() bool { return len(s.commands()) > i })
		got := s.commands()[i]
		want := tc.want
		want.Payload = payload
		want.Received = now
		if !commandsEqual(got, &want) {
			t.Errorf("%s:\ngot  %+v\nwant %+v", tc.name, *got, want)
		}
	}
	if st := c.Status(); st.Commands != uint64(len(cases)) || !st.Connected || st.SessionExpiry != time.Hour {
		t.Errorf("status %+v", st)
	}
}

func commandsEqual(a, b *Command) bool {
	return a.CloudTopic == b.CloudTopic && a.LocalTopic == b.LocalTopic && bytes.Equal(a.Payload, b.Payload) &&
		a.QoS == b.QoS && a.Retained == b.Retained && a.ResponseTopic == b.ResponseTopic && bytes.Equal(a.CorrelationData, b.CorrelationData) &&
		a.ContentType == b.ContentType && slices.Equal(a.UserProperties, b.UserProperties) &&
		a.Expires.Equal(b.Expires) && a.Received.Equal(b.Received)
}

// Commands published while the client is stopped wait in the cloud's
// session and arrive when it is back, before it has even subscribed again;
// a retained command comes once, when the session first subscribes.
func TestPersistentSessionKeepsCommandsWhileAway(t *testing.T) {
	b := mqtttest.Start(t)
	cl := dialCloud(t, b.Addr)
	cl.publish("gw1/cmd/retained", []byte("retained"), 1, true, nil)
	t.Cleanup(func() { cl.publish("gw1/cmd/retained", nil, 1, true, nil) })

	s := newSink()
	_, stop := startClient(t, cmdConfig(t, "gw1-cmd", s, b.URL()))
	waitFor(t, 10*time.Second, "the retained command", func() bool { return len(s.commands()) == 1 })
	if c := s.commands()[0]; !c.Retained || string(c.Payload) != "retained" {
		t.Fatalf("first command %+v, want the retained one", c)
	}
	stop()

	for i := range 5 {
		cl.publish(fmt.Sprintf("gw1/cmd/n%d", i), fmt.Appendf(nil, "while away %d", i), 1, false, nil)
	}
	s2 := newSink()
	c2, _ := startClient(t, cmdConfig(t, "gw1-cmd", s2, b.URL()))
	waitFor(t, 10*time.Second, "the commands sent while away", func() bool { return len(s2.commands()) == 5 })
	want := []string{"while away 0", "while away 1", "while away 2", "while away 3", "while away 4"}
	if got := s2.payloads(); !slices.Equal(got, want) {
		t.Errorf("after the restart: %q, want %q in order", got, want)
	}
	if !c2.Status().SessionPresent {
		t.Errorf("session not resumed: %+v", c2.Status())
	}
	// Subscribed again: the retained command is not delivered again.
	waitSubscribed(t, b, "gw1-cmd", "gw1/cmd/#", 2)
	cl.publish("gw1/cmd/after", []byte("after"), 1, false, nil)
	waitFor(t, 10*time.Second, "a live command", func() bool { return len(s2.commands()) == 6 })
	if got := s2.payloads(); got[5] != "after" {
		t.Errorf("got %q after the restart; the retained command must not come again", got)
	}
}

// A command whose sink fails is not acknowledged: the session ends, and
// after the reconnect the cloud delivers it again, then the ones after it,
// in order.
func TestFailingSinkGetsTheCommandAgain(t *testing.T) {
	b := mqtttest.Start(t)
	s := newSink()
	s.fail = 2
	c, _ := startClient(t, cmdConfig(t, "gw1-cmd", s, b.URL()))
	waitSubscribed(t, b, "gw1-cmd", "gw1/cmd/#", 1)
	cl := dialCloud(t, b.Addr)
	for i := range 3 {
		cl.publish("gw1/cmd/x", fmt.Appendf(nil, "c%d", i), 1, false, nil)
	}
	waitFor(t, 15*time.Second, "three commands", func() bool { return len(s.commands()) == 3 })
	if got := s.payloads(); !slices.Equal(got, []string{"c0", "c1", "c2"}) {
		t.Errorf("got %q, want c0 c1 c2", got)
	}
	st := c.Status()
	if st.Reconnects < 2 || !strings.Contains(st.LastError, "sink failed") {
		t.Errorf("status %+v: want two reconnects after sink failures", st)
	}
	if n := s.callCount(); n != 5 {
		t.Errorf("%d sink calls, want 5 (two failures, three successes)", n)
	}
}

// No PUBACK before the sink returned: a command whose sink is still
// working when the connection dies comes again on the next connection.
func TestCommandInSinkWhenTheLinkDiesComesAgain(t *testing.T) {
	b := mqtttest.Start(t)
	p := tcpproxy.Start(t, b.Addr)
	s := newSink()
	release := make(chan struct{})
	s.block = release
	startClient(t, cmdConfig(t, "gw1-cmd", s, p.URL()))
	waitSubscribed(t, b, "gw1-cmd", "gw1/cmd/#", 1)
	cl := dialCloud(t, b.Addr)
	cl.publish("gw1/cmd/x", []byte("slow"), 1, false, nil)
	<-s.blocked // the sink holds the command
	p.CutAll()
	// The sink's context ends with the connection; the command is
	// delivered again on the next one, where the sink takes it.
	<-s.blocked
	s.mu.Lock()
	s.block = nil
	s.mu.Unlock()
	close(release)
	waitFor(t, 10*time.Second, "the command", func() bool { return len(s.commands()) >= 1 })
	if got := s.payloads(); got[0] != "slow" {
		t.Errorf("got %q", got)
	}
	if n := s.callCount(); n < 2 {
		t.Errorf("%d sink calls, want the command twice", n)
	}
}

// Replies go to their response topic with their correlation data and
// content type; a reply that cannot be sent is acked and counted; the
// queue advances in order, each reply after its PUBACK.
func TestRepliesReachTheirResponseTopic(t *testing.T) {
	b := mqtttest.Start(t)
	p := tcpproxy.Start(t, b.Addr)
	cl := dialCloud(t, b.Addr, "app/#")
	q := newMemQueue()
	cfg := cmdConfig(t, "gw1-cmd", newSink(), p.URL())
	cfg.Replies = q
	c, _ := startClient(t, cfg)

	ok1 := replyEvent("app/resp/1", []byte{1, 2, 3}, "first")
	ok1.ContentType = "text/plain"
	ok2 := replyEvent("app/resp/2", nil, "second")
	ok2.Attrs[AttrContentType] = "application/json"
	noTopic := replyEvent("", []byte("x"), "lost")
	badCorr := replyEvent("app/resp/3", nil, "bad")
	badCorr.Attrs[AttrCorrelationData] = "%%%"
	wild := replyEvent("app/resp/#", nil, "wild")
	loop := replyEvent("gw1/cmd/back", nil, "would loop")
	ok3 := replyEvent("app/resp/3", []byte("c3"), "third")
	q.append(DefaultReplyStream, ok1, noTopic, ok2, badCorr, wild, loop, ok3)

	waitFor(t, 10*time.Second, "the replies", func() bool { return len(cl.messages()) == 3 && q.ackedThrough(DefaultReplyStream) == 7 })
	msgs := cl.messages()
	slices.SortFunc(msgs, func(a, b *paho.Publish) int { return strings.Compare(a.Topic, b.Topic) })
	check := func(m *paho.Publish, topic, payload string, corr []byte, ct string) {
		t.Helper()
		var gotCorr []byte
		var gotCT string
		if m.Properties != nil {
			gotCorr, gotCT = m.Properties.CorrelationData, m.Properties.ContentType
		}
		if m.Topic != topic || string(m.Payload) != payload || !bytes.Equal(gotCorr, corr) || gotCT != ct || m.Retain {
			t.Errorf("reply on %s %q corr %q ct %q retain %v; want %s %q %q %q", m.Topic, m.Payload, gotCorr, gotCT, m.Retain, topic, payload, corr, ct)
		}
	}
	check(msgs[0], "app/resp/1", "first", []byte{1, 2, 3}, "text/plain")
	check(msgs[1], "app/resp/2", "second", nil, "application/json")
	check(msgs[2], "app/resp/3", "third", []byte("c3"), "")
	if st := c.Status(); st.Replies != 3 || st.RepliesDropped != 4 {
		t.Errorf("status %+v: want 3 replies, 4 dropped", st)
	}

	// Acked only after the PUBACK: hold the cloud's answers back.
	p.Pause()
	q.append(DefaultReplyStream, replyEvent("app/resp/4", []byte("c4"), "fourth"))
	waitFor(t, 10*time.Second, "the fourth reply at the cloud", func() bool { return len(cl.messages()) == 4 })
	if got := q.ackedThrough(DefaultReplyStream); got != 7 {
		t.Errorf("acked through %d before the PUBACK reached the client", got)
	}
	p.Unpause()
	waitFor(t, 10*time.Second, "the ack of the fourth reply", func() bool { return q.ackedThrough(DefaultReplyStream) == 8 })
}

// A reply whose PUBACK never came is sent again after the reconnect,
// and the queue is acked in order.
func TestRepliesResentAfterALostConnection(t *testing.T) {
	b := mqtttest.Start(t)
	p := tcpproxy.Start(t, b.Addr)
	cl := dialCloud(t, b.Addr, "app/#")
	q := newMemQueue()
	cfg := cmdConfig(t, "gw1-cmd", newSink(), p.URL())
	cfg.Replies = q
	cfg.ReplyInflight = 3
	c, _ := startClient(t, cfg)
	waitSubscribed(t, b, "gw1-cmd", "gw1/cmd/#", 1)
	p.Pause()
	for i := range 5 {
		q.append(DefaultReplyStream, replyEvent("app/r", fmt.Appendf(nil, "%d", i), fmt.Sprintf("r%d", i)))
	}
	waitFor(t, 10*time.Second, "three replies in flight at the cloud", func() bool { return len(cl.messages()) == 3 })
	p.CutAll()
	p.Unpause()
	waitFor(t, 15*time.Second, "every reply acked", func() bool { return q.ackedThrough(DefaultReplyStream) == 5 })
	seen := map[string]int{}
	for _, m := range cl.messages() {
		seen[string(m.Payload)]++
	}
	for i := range 5 {
		if seen[fmt.Sprintf("r%d", i)] == 0 {
			t.Errorf("reply r%d never reached the cloud: %v", i, seen)
		}
	}
	if c.Status().Reconnects == 0 {
		t.Errorf("no reconnect: %+v", c.Status())
	}
}

// The documented round trip: mosquitto_rr publishes a request with a
// response topic; the gateway's reply (here: the test sink storing a reply
// event as the gateway's reply route does) comes back to it.
func TestMosquittoRRRoundTrip(t *testing.T) {
	b := mqtttest.Start(t)
	rr := mqtttest.RequireClient(t, "mosquitto_rr")
	q := newMemQueue()
	s := newSink()
	s.after = func(c *Command) error {
		ev := replyEvent(c.ResponseTopic, c.CorrelationData, "pong:"+string(c.Payload))
		q.append(DefaultReplyStream, ev)
		return nil
	}
	cfg := cmdConfig(t, "gw1-cmd", s, b.URL())
	cfg.Replies = q
	startClient(t, cfg)
	waitSubscribed(t, b, "gw1-cmd", "gw1/cmd/#", 1)
	_, port, _ := strings.Cut(b.Addr, ":")
	for _, args := range [][]string{
		{"-D", "publish", "correlation-data", "abc"}, // with correlation data
		nil, // the plain form the README shows
	} {
		args = append([]string{"-V", "5", "-h", "127.0.0.1", "-p", port, "-t", "gw1/cmd/ping", "-e", "app/rr/resp", "-m", "x", "-W", "10"}, args...)
		out, err := exec.Command(rr, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_rr %q: %v\n%s", args, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != "pong:x" {
			t.Errorf("mosquitto_rr %q printed %q, want pong:x", args, got)
		}
	}
	if c := s.commands(); len(c) != 2 || string(c[0].CorrelationData) != "abc" || c[0].ResponseTopic != "app/rr/resp" ||
		c[1].CorrelationData != nil || c[1].ResponseTopic != "app/rr/resp" {
		t.Errorf("commands %+v", c)
	}
}

// retainedOn returns the retained message of topic at the broker ("" when
// none), read by a fresh subscriber.
func retainedOn(t testing.TB, addr, topic string) string {
	t.Helper()
	cl := dialCloud(t, addr, topic)
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		for _, m := range cl.messages() {
			if m.Retain {
				return string(m.Payload)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return ""
}

// payloadsOn lists the payloads cl received on topic.
func payloadsOn(cl *cloud, topic string) []string {
	var out []string
	for _, m := range cl.messages() {
		if m.Topic == topic {
			out = append(out, string(m.Payload))
		}
	}
	return out
}

func TestPresenceOnlineAndWill(t *testing.T) {
	b := mqtttest.Start(t)
	p := tcpproxy.Start(t, b.Addr)
	watch := dialCloud(t, b.Addr, "gw1/presence")
	cfg := testConfig(t, "gw1-cmd", p.URL())
	cfg.Presence = Presence{Topic: "gw1/presence", Online: []byte("online"), Offline: []byte("offline")}
	c, stop := startClient(t, cfg)
	waitFor(t, 10*time.Second, "online", func() bool { return slices.Equal(payloadsOn(watch, "gw1/presence"), []string{"online"}) })
	if got := retainedOn(t, b.Addr, "gw1/presence"); got != "online" {
		t.Errorf("retained presence %q, want online", got)
	}

	// The connection is lost: the cloud publishes the will.
	p.SetOpen(false)
	p.CutAll()
	waitFor(t, 10*time.Second, "offline (the will)", func() bool {
		return slices.Equal(payloadsOn(watch, "gw1/presence"), []string{"online", "offline"})
	})
	if got := retainedOn(t, b.Addr, "gw1/presence"); got != "offline" {
		t.Errorf("retained presence %q after the loss, want offline", got)
	}
	p.SetOpen(true)
	waitFor(t, 10*time.Second, "online again", func() bool { return len(payloadsOn(watch, "gw1/presence")) == 3 })
	waitFor(t, 10*time.Second, "two retained publishes acknowledged", func() bool { return c.Status().RetainedPublished == 2 })

	// A clean shutdown: offline too.
	stop()
	waitFor(t, 10*time.Second, "offline after the shutdown", func() bool {
		return slices.Equal(payloadsOn(watch, "gw1/presence"), []string{"online", "offline", "online", "offline"})
	})
	if got := retainedOn(t, b.Addr, "gw1/presence"); got != "offline" {
		t.Errorf("retained presence %q after the shutdown, want offline", got)
	}
	// It was the DISCONNECT with reason 0x04 (a clean disconnect that
	// keeps the will), not a dropped connection.
	if !strings.Contains(b.Logs(), "Client gw1-cmd disconnected.") {
		t.Errorf("no clean DISCONNECT in the broker's log:\n%s", b.Logs())
	}
}

func TestRetainedSlotsRepublished(t *testing.T) {
	b := mqtttest.Start(t)
	p := tcpproxy.Start(t, b.Addr)
	watch := dialCloud(t, b.Addr, "gw1/config/#")
	r := NewRetained()
	r.Set("gw1/config/status", []byte("v1 applied"))
	cfg := testConfig(t, "gw1-cmd", p.URL())
	cfg.Retained = r
	c, stop := startClient(t, cfg)
	waitFor(t, 10*time.Second, "v1", func() bool { return slices.Equal(payloadsOn(watch, "gw1/config/status"), []string{"v1 applied"}) })

	r.Set("gw1/config/status", []byte("v2 refused"))
	r.Set("gw1/config/other", []byte("x"))
	waitFor(t, 10*time.Second, "v2 and other", func() bool {
		return slices.Equal(payloadsOn(watch, "gw1/config/status"), []string{"v1 applied", "v2 refused"}) &&
			slices.Equal(payloadsOn(watch, "gw1/config/other"), []string{"x"})
	})

	// The cloud loses the retained message; after a reconnect the client
	// publishes it again.
	watch.publish("gw1/config/status", nil, 1, true, nil)
	p.CutAll()
	waitFor(t, 10*time.Second, "the reconnect", func() bool { return c.Status().Reconnects == 1 && c.Status().Connected })
	waitFor(t, 10*time.Second, "v2 again", func() bool { return retainedOn(t, b.Addr, "gw1/config/status") == "v2 refused" })
	stop()

	// A new Client (the gateway reloaded) publishes the entries too.
	watch.publish("gw1/config/status", nil, 1, true, nil)
	startClient(t, cfg)
	waitFor(t, 10*time.Second, "v2 from the new client", func() bool { return retainedOn(t, b.Addr, "gw1/config/status") == "v2 refused" })
	watch.publish("gw1/config/status", nil, 1, true, nil)
	watch.publish("gw1/config/other", nil, 1, true, nil)
}

// Configurations go to the ConfigSink, with the same acknowledgement rule
// as commands; one above the payload limit is acked and dropped.
func TestConfigTopic(t *testing.T) {
	b := mqtttest.Start(t)
	cl := dialCloud(t, b.Addr)
	cl.publish("gw1/config", []byte("retained v1"), 1, true, nil)
	t.Cleanup(func() { cl.publish("gw1/config", nil, 1, true, nil) })
	s := newSink()
	s.fail = 1
	cfg := cmdConfig(t, "gw1-cmd", s, b.URL())
	cfg.ConfigTopic = "gw1/config"
	cfg.Configs = s
	cfg.MaxPayload = 1000
	c, _ := startClient(t, cfg)
	// The first offer fails: no PUBACK, the session ends, and the resumed
	// session delivers it again.
	waitFor(t, 10*time.Second, "the retained config", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.configs) == 1
	})
	waitSubscribed(t, b, "gw1-cmd", "gw1/config", 2)
	cl.publish("gw1/config", make([]byte, 1001), 1, false, nil)
	cl.publish("gw1/config", []byte("v2"), 1, false, nil)
	waitFor(t, 10*time.Second, "v2", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.configs) == 2
	})
	s.mu.Lock()
	got := []string{string(s.configs[0]), string(s.configs[1])}
	s.mu.Unlock()
	if !slices.Equal(got, []string{"retained v1", "v2"}) {
		t.Errorf("configs %q", got)
	}
	if st := c.Status(); st.ConfigsReceived != 2 || st.Dropped["oversize"] != 1 || st.Reconnects != 1 {
		t.Errorf("status %+v", st)
	}
}

// A cancelled Run returns promptly even while a sink holds a command, and
// the command, never acknowledged, goes to the next client.
func TestShutdownWithACommandInTheSink(t *testing.T) {
	b := mqtttest.Start(t)
	s := newSink()
	s.block = make(chan struct{}) // never released
	_, stop := startClient(t, cmdConfig(t, "gw1-cmd", s, b.URL()))
	waitSubscribed(t, b, "gw1-cmd", "gw1/cmd/#", 1)
	cl := dialCloud(t, b.Addr)
	cl.publish("gw1/cmd/x", []byte("held"), 1, false, nil)
	<-s.blocked
	start := time.Now()
	stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Run took %v to return", d)
	}
	s2 := newSink()
	startClient(t, cmdConfig(t, "gw1-cmd", s2, b.URL()))
	waitFor(t, 10*time.Second, "the held command", func() bool { return slices.Equal(s2.payloads(), []string{"held"}) })
}

func TestCloudRefusingTheConnection(t *testing.T) {
	bin := mqtttest.RequireMosquitto(t)
	port := mqtttest.FreePort(t)
	conf := filepath.Join(t.TempDir(), "m.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "listener %d 127.0.0.1\nallow_anonymous false\npersistence false\n", port), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	cfg := testConfig(t, "gw1-cmd", fmt.Sprintf("tcp://127.0.0.1:%d", port))
	cfg.Username, cfg.Password = "u", "p"
	c, _ := startClient(t, cfg)
	waitFor(t, 10*time.Second, "a refusal", func() bool { return strings.Contains(c.Status().LastError, "CONNACK 0x87") })
	if st := c.Status(); st.Connected || !strings.Contains(st.LastError, "refused") {
		t.Errorf("status %+v", st)
	}
}

func TestRunTwice(t *testing.T) {
	c, err := New(testConfig(t, "x", "tcp://127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	waitFor(t, 5*time.Second, "Run", func() bool { return c.running.Load() })
	if err := c.Run(ctx); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run: %v, want ErrRunning", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}
