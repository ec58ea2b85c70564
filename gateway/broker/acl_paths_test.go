package broker_test

// The tests in this file check that the ACL covers every path a message
// can take through the broker (issue 12, mochi patch 6 in
// third_party/mochi-mqtt/PATCHES.md): wills, client IDs and the sessions
// they name, queued and in-flight messages of a resumed session, shared
// subscriptions, topic aliases, %u/%c substitution, and concurrent logins.
// The users and rules are the issue's: dash may subscribe sensors/#;
// everyone may publish sensors/%u/# and subscribe cmd/%c and
// sensors/%u/#.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/mochi-mqtt/server/v2/packets"
)

// forged is the will payload mallory tries to get delivered; it must
// reach no subscriber and no log line.
const forged = "FORGED by mallory: OPEN VALVE"

// issueACL is the issue's ACL.
func issueACL() []broker.ACLRule {
	return []broker.ACLRule{
		{User: "dash", Publish: []string{"sensors/%u/#"}, Subscribe: []string{"sensors/#", "cmd/%c"}},
		{User: "*", Publish: []string{"sensors/%u/#"}, Subscribe: []string{"cmd/%c", "sensors/%u/#"}},
	}
}

// aclBroker is a broker with the issue's users and ACL, a session file
// that outlives it (restart), an audit log and a captured debug log.
type aclBroker struct {
	t     *testing.T
	cfg   broker.Config
	l     *buffertest.Log
	a     *auditLog
	logs  *syncBuffer
	b     *broker.Broker
	stopB func()
}

var aclUsers struct {
	once  sync.Once
	users broker.Users
}

// issueUsers are sensor1, dash and mallory, password "pw-" + name, and
// anon-ok (for the anonymous tests); hashed once for all tests.
func issueUsers(t *testing.T) broker.Users {
	aclUsers.once.Do(func() {
		aclUsers.users = usersFile(t, "sensor1", "pw-sensor1", "dash", "pw-dash", "mallory", "pw-mallory")
	})
	return aclUsers.users
}

func startACL(t *testing.T, mod func(*broker.Config)) *aclBroker {
	t.Helper()
	e := &aclBroker{t: t, l: buffertest.MustOpen(t, buffer.Options{}), a: startAudit(t), logs: &syncBuffer{}}
	e.cfg = broker.Config{
		Listen:         "127.0.0.1:0",
		AllowAnonymous: false,
		Users:          issueUsers(t),
		ACL:            issueACL(),
		MaxPacketSize:  4096,
		SessionPath:    filepath.Join(t.TempDir(), "sessions.db"),
		Audit:          e.a,
		Logger:         slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Routes:         []broker.Route{{Topics: []string{"sensors/#"}, Stream: "telemetry"}},
	}
	if mod != nil {
		mod(&e.cfg)
	}
	e.run()
	t.Cleanup(e.stop)
	return e
}

func (e *aclBroker) run() {
	e.t.Helper()
	b, err := broker.New(e.cfg, e.l)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	e.b = b
	e.stopB = func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("broker run: %v", err)
		}
	}
}

func (e *aclBroker) stop() {
	if e.stopB != nil {
		e.stopB()
		e.stopB = nil
	}
}

// restart stops the broker and starts a new one on the same session file
// (a new port: Listen is 127.0.0.1:0).
func (e *aclBroker) restart() {
	e.t.Helper()
	e.stop()
	e.run()
}

// noPayloadLogged fails if the captured log holds payload.
func (e *aclBroker) noPayloadLogged(payload string) {
	e.t.Helper()
	if strings.Contains(e.logs.String(), payload) {
		e.t.Fatalf("a log line carries the payload %q:\n%s", payload, e.logs.String())
	}
}

// conn describes a raw CONNECT.
type conn struct {
	ver           byte // 4 or 5
	id, user      string
	clean         bool
	expiry        uint32 // MQTT 5 session expiry
	willTopic     string
	willRetain    bool
	aliasMax      uint16 // MQTT 5 Topic Alias Maximum the client accepts
	keepaliveSecs uint16
}

// dial sends c's CONNECT (password "pw-" + user) and returns the client
// and the CONNACK's reason code and session-present flag; after a refusal
// the client is nil.
func (e *aclBroker) dial(c conn) (*rawClient, byte, bool) {
	e.t.Helper()
	nc, err := net.DialTimeout("tcp", e.b.Addr(), 5*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { nc.Close() })
	rc := &rawClient{t: e.t, conn: nc, r: bufio.NewReader(nc), ver: c.ver}
	p := packets.ConnectParams{
		ProtocolName:     []byte("MQTT"),
		Clean:            c.clean,
		Keepalive:        max(c.keepaliveSecs, 60),
		ClientIdentifier: c.id,
	}
	if c.user != "" {
		p.UsernameFlag, p.Username = true, []byte(c.user)
		p.PasswordFlag, p.Password = true, []byte("pw-"+c.user)
	}
	if c.willTopic != "" {
		p.WillFlag, p.WillTopic, p.WillPayload, p.WillQos, p.WillRetain = true, c.willTopic, []byte(forged), 1, c.willRetain
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, Connect: p}
	if c.ver == 5 {
		pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = c.expiry, c.expiry > 0
		pk.Properties.TopicAliasMaximum = c.aliasMax
	}
	rc.send(pk)
	ack, err := rc.read(hangDeadline)
	if err != nil || ack.FixedHeader.Type != packets.Connack {
		e.t.Fatalf("%s: no CONNACK (%v)", c.id, err)
	}
	if ack.ReasonCode != 0 {
		nc.Close()
		return nil, ack.ReasonCode, false
	}
	return rc, 0, ack.SessionPresent
}

// notAuthorizedCode is the CONNACK refusal for "not authorized": 0x87 in
// MQTT 5, return code 5 in 3.1.1.
func notAuthorizedCode(ver byte) byte {
	if ver == 5 {
		return packets.ErrNotAuthorized.Code
	}
	return packets.Err3NotAuthorized.Code
}

// sub subscribes c to filters and returns the SUBACK's codes.
func (c *rawClient) sub(filters ...string) []byte {
	c.t.Helper()
	pk := subscribe(1, filters...)
	for i := range pk.Filters {
		pk.Filters[i].Qos = 1
	}
	c.send(pk)
	for {
		ack, err := c.read(hangDeadline)
		if err != nil {
			c.t.Fatalf("no SUBACK: %v", err)
		}
		if ack.FixedHeader.Type == packets.Suback {
			return ack.ReasonCodes
		}
		c.hold(ack)
	}
}

// collect reads PUBLISHes (acknowledging QoS 1 ones) until the connection
// is quiet for quiet, and returns their topics and payloads.
func (c *rawClient) collect(quiet time.Duration) []string {
	c.t.Helper()
	var got []string
	for {
		pk, err := c.next(quiet)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return got
		}
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		if pk.FixedHeader.Type != packets.Publish {
			continue
		}
		got = append(got, pk.TopicName+" "+string(pk.Payload))
		if pk.FixedHeader.Qos == 1 {
			c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		}
	}
}

// expectPublish reads until a PUBLISH to topic arrives.
func (c *rawClient) expectPublish(topic string) packets.Packet {
	c.t.Helper()
	for {
		pk, err := c.next(hangDeadline)
		if err != nil {
			c.t.Fatalf("waiting for a PUBLISH to %s: %v", topic, err)
		}
		if pk.FixedHeader.Type == packets.Publish && pk.TopicName == topic {
			return pk
		}
	}
}

// pub publishes at QoS 1 and returns the PUBACK's reason code.
func (c *rawClient) pub(id uint16, pk packets.Packet) byte {
	c.t.Helper()
	pk.PacketID, pk.FixedHeader.Qos = id, 1
	c.send(pk)
	for {
		ack, err := c.read(hangDeadline)
		if err != nil {
			c.t.Fatalf("no PUBACK for %d: %v", id, err)
		}
		if ack.FixedHeader.Type == packets.Puback && ack.PacketID == id {
			return ack.ReasonCode
		}
		c.hold(ack)
	}
}

// aclDenials returns the audit's acl_deny entries with action.
func aclDenials(t *testing.T, a *auditLog, action string) []map[string]any {
	t.Helper()
	return find(a.entries(t), map[string]any{"event": "acl_deny", "action": action})
}

// TestWillACL: a will whose topic the user may not publish is refused at
// CONNECT (0x87 / 0x05), retained or not, audited, never delivered or
// retained; an allowed will is delivered; a will the ACL stops allowing
// after the CONNECT (reload) is dropped when it would be sent.
func TestWillACL(t *testing.T) {
	for _, ver := range []byte{5, 4} {
		t.Run(fmt.Sprintf("v%d", ver), func(t *testing.T) {
			e := startACL(t, nil)
			dash, code, _ := e.dial(conn{ver: ver, id: "dash-1", user: "dash", clean: true})
			if code != 0 {
				t.Fatalf("dash refused: %#x", code)
			}
			// The actuator listens on its command topic.
			act, code, _ := e.dial(conn{ver: ver, id: "actuator-1", user: "sensor1", clean: true})
			if code != 0 {
				t.Fatalf("actuator refused: %#x", code)
			}
			if rc := act.sub("cmd/actuator-1"); rc[0] > 2 {
				t.Fatalf("actuator subscribe: %#x", rc[0])
			}
			if rc := dash.sub("sensors/#"); rc[0] > 2 {
				t.Fatalf("dash subscribe: %#x", rc[0])
			}

			for _, w := range []conn{
				{willTopic: "cmd/actuator-1"},
				{willTopic: "sensors/sensor1/status", willRetain: true},
			} {
				w.ver, w.id, w.user, w.clean = ver, "mallory-1", "mallory", true
				m, code, _ := e.dial(w)
				if m != nil || code != notAuthorizedCode(ver) {
					t.Fatalf("CONNECT with will on %s: CONNACK %#x, want %#x", w.willTopic, code, notAuthorizedCode(ver))
				}
			}
			// Allowed: a will on mallory's own topic is delivered when her
			// connection drops.
			m, code, _ := e.dial(conn{ver: ver, id: "mallory-2", user: "mallory", clean: true, willTopic: "sensors/mallory/status"})
			if code != 0 {
				t.Fatalf("allowed will refused: %#x", code)
			}
			m.conn.Close()
			if pk := dash.expectPublish("sensors/mallory/status"); string(pk.Payload) != forged {
				t.Fatalf("allowed will payload %q", pk.Payload)
			}

			// A will allowed at CONNECT but no longer when it is sent.
			m, code, _ = e.dial(conn{ver: ver, id: "mallory-3", user: "mallory", clean: true, willTopic: "sensors/mallory/gone", willRetain: true})
			if code != 0 {
				t.Fatalf("allowed will refused: %#x", code)
			}
			cfg := e.cfg
			cfg.ACL = []broker.ACLRule{
				{User: "dash", Subscribe: []string{"sensors/#"}},
				{User: "*", Publish: []string{"sensors/%u/seq"}},
			}
			if err := e.b.Reconfigure(cfg); err != nil {
				t.Fatal(err)
			}
			m.conn.Close()
			if got := act.collect(300 * time.Millisecond); len(got) != 0 {
				t.Errorf("actuator received %q", got)
			}
			if got := dash.collect(300 * time.Millisecond); len(got) != 0 {
				t.Errorf("dash received %q after the wills", got)
			}
			// No retained will either: a new subscriber gets nothing.
			late, code, _ := e.dial(conn{ver: ver, id: "dash-2", user: "dash", clean: true})
			if code != 0 {
				t.Fatalf("dash refused: %#x", code)
			}
			late.sub("sensors/#")
			if got := late.collect(300 * time.Millisecond); len(got) != 0 {
				t.Errorf("a later subscriber received retained %q", got)
			}
			e.stop()
			if n := len(aclDenials(t, e.a, "will")); n != 3 {
				t.Errorf("%d will denials audited, want 3 (two at CONNECT, one when sent)", n)
			}
			e.noPayloadLogged(forged)
		})
	}
}

// TestClientIDOwnership: a session belongs to the user who made it. A
// CONNECT by another user with its client ID is refused (0x87 / 0x05),
// does not kick the owner's live connection, and does not resume (or
// read) the owner's offline session, also after a restart; the owner
// resumes it with everything queued.
func TestClientIDOwnership(t *testing.T) {
	for _, ver := range []byte{5, 4} {
		t.Run(fmt.Sprintf("v%d", ver), func(t *testing.T) {
			e := startACL(t, nil)
			persistent := func(id, user string) conn {
				return conn{ver: ver, id: id, user: user, clean: false, expiry: 3600}
			}
			// Live: mallory cannot kick the sensor.
			legit, code, _ := e.dial(persistent("legit-1", "sensor1"))
			if code != 0 {
				t.Fatalf("sensor refused: %#x", code)
			}
			for range 3 {
				for _, clean := range []bool{true, false} {
					c := persistent("legit-1", "mallory")
					c.clean = clean
					if m, code, _ := e.dial(c); m != nil || code != notAuthorizedCode(ver) {
						t.Fatalf("mallory as legit-1 (clean %v): CONNACK %#x, want %#x", clean, code, notAuthorizedCode(ver))
					}
				}
			}
			if rc := legit.pub(1, publish("sensors/sensor1/seq", 1, 0, []byte("still here"))); rc != 0 {
				t.Fatalf("sensor's publish after the take-over attempts: %#x (connection lost?)", rc)
			}

			// Offline: dash's persistent session queues what sensor1 sends.
			dash, code, _ := e.dial(persistent("dash-1", "dash"))
			if code != 0 {
				t.Fatalf("dash refused: %#x", code)
			}
			dash.sub("sensors/#")
			dash.conn.Close()
			waitFor(t, "dash offline", func() bool { return e.b.Stats().Clients == 1 })
			for i := range 5 {
				if rc := legit.pub(uint16(10+i), publish("sensors/sensor1/seq", 1, 0, []byte(fmt.Sprint(i)))); rc != 0 {
					t.Fatalf("publish %d: %#x", i, rc)
				}
			}
			for round, restart := range []bool{false, true} {
				if restart {
					legit.conn.Close()
					e.restart()
				}
				for _, c := range []conn{persistent("dash-1", "mallory"), persistent("dash-1", "sensor1")} {
					if m, code, present := e.dial(c); m != nil || code != notAuthorizedCode(ver) || present {
						t.Fatalf("round %d: %s as dash-1: CONNACK %#x (session present %v), want %#x", round, c.user, code, present, notAuthorizedCode(ver))
					}
				}
			}
			dash, code, present := e.dial(persistent("dash-1", "dash"))
			if code != 0 || !present {
				t.Fatalf("dash's own resume: CONNACK %#x, session present %v", code, present)
			}
			if got := dash.collect(500 * time.Millisecond); len(got) != 5 {
				t.Fatalf("dash got %d queued messages, want 5: %q", len(got), got)
			}
			e.stop()
			if n := len(aclDenials(t, e.a, "session")); n != 10 {
				t.Errorf("%d session denials audited, want 10", n)
			}
		})
	}
}

// TestClientIDOwnershipAnonymous: with anonymous access, anonymous
// clients own their sessions as the empty user: a named user cannot take
// one, an anonymous client cannot take a named user's, and nobody can
// take the broker's own inline client's ID.
func TestClientIDOwnershipAnonymous(t *testing.T) {
	e := startACL(t, func(c *broker.Config) { c.AllowAnonymous = true; c.ACL = nil })
	anon, code, _ := e.dial(conn{ver: 5, id: "anon-1", clean: true})
	if code != 0 {
		t.Fatalf("anonymous refused: %#x", code)
	}
	named, code, _ := e.dial(conn{ver: 5, id: "named-1", user: "sensor1", clean: true})
	if code != 0 {
		t.Fatalf("sensor1 refused: %#x", code)
	}
	for _, c := range []conn{
		{ver: 5, id: "anon-1", user: "mallory", clean: true},
		{ver: 5, id: "named-1", clean: true},
		{ver: 4, id: "inline", clean: true},
	} {
		if m, code, _ := e.dial(c); m != nil || code != notAuthorizedCode(c.ver) {
			t.Errorf("%q as %s: CONNACK %#x, want %#x", c.user, c.id, code, notAuthorizedCode(c.ver))
		}
	}
	for _, c := range []*rawClient{anon, named} {
		c.sendAll(pingreq)
		if pk, err := c.read(hangDeadline); err != nil || pk.FixedHeader.Type != packets.Pingresp {
			t.Fatalf("owner lost its connection: %v", err)
		}
	}
	// Its own user takes a session over as before.
	if _, code, _ := e.dial(conn{ver: 5, id: "anon-1", clean: true}); code != 0 {
		t.Fatalf("anonymous take-over of its own session refused: %#x", code)
	}
}

// TestResumeRechecksACL: messages queued for an offline session, and
// in-flight ones, are checked against the subscriber's read ACL again
// when it resumes: the ACL was narrowed by a reload meanwhile, and
// denied messages are dropped and counted, allowed ones delivered.
func TestResumeRechecksACL(t *testing.T) {
	for _, ver := range []byte{5, 4} {
		t.Run(fmt.Sprintf("v%d", ver), func(t *testing.T) {
			e := startACL(t, nil)
			dash, code, _ := e.dial(conn{ver: ver, id: "dash-1", user: "dash", expiry: 3600})
			if code != 0 {
				t.Fatalf("dash refused: %#x", code)
			}
			dash.sub("sensors/#")
			dash.conn.Close()
			waitFor(t, "dash offline", func() bool { return e.b.Stats().Clients == 0 })
			for _, user := range []string{"sensor1", "mallory"} {
				s, code, _ := e.dial(conn{ver: ver, id: user + "-1", user: user, clean: true})
				if code != 0 {
					t.Fatalf("%s refused: %#x", user, code)
				}
				for i := range 3 {
					if rc := s.pub(uint16(i+1), publish("sensors/"+user+"/seq", 1, 0, []byte(fmt.Sprint(i)))); rc != 0 {
						t.Fatalf("%s publish %d: %#x", user, i, rc)
					}
				}
			}
			cfg := e.cfg
			cfg.ACL = []broker.ACLRule{
				{User: "dash", Subscribe: []string{"sensors/sensor1/#"}},
				{User: "*", Publish: []string{"sensors/%u/#"}},
			}
			if err := e.b.Reconfigure(cfg); err != nil {
				t.Fatal(err)
			}
			before := e.b.Stats().ACLDenied
			dash, code, present := e.dial(conn{ver: ver, id: "dash-1", user: "dash", expiry: 3600})
			if code != 0 || !present {
				t.Fatalf("dash resume: CONNACK %#x, present %v", code, present)
			}
			got := dash.collect(500 * time.Millisecond)
			for _, m := range got {
				if strings.HasPrefix(m, "sensors/mallory/") {
					t.Errorf("delivered %q, which dash may no longer read", m)
				}
			}
			if len(got) != 3 {
				t.Errorf("delivered %q, want sensor1's 3", got)
			}
			if d := e.b.Stats().ACLDenied - before; d != 3 {
				t.Errorf("%d denials counted on resume, want 3", d)
			}
		})
	}
}

// TestSharedSubscriptionACL: a shared subscription is checked as its
// filter; "$share/g/#" does not get around a rule, and a shared
// subscription within a rule works.
func TestSharedSubscriptionACL(t *testing.T) {
	e := startACL(t, nil)
	m, code, _ := e.dial(conn{ver: 5, id: "mallory-1", user: "mallory", clean: true})
	if code != 0 {
		t.Fatalf("mallory refused: %#x", code)
	}
	d, code, _ := e.dial(conn{ver: 5, id: "dash-1", user: "dash", clean: true})
	if code != 0 {
		t.Fatalf("dash refused: %#x", code)
	}
	for _, tt := range []struct {
		c      *rawClient
		filter string
		ok     bool
	}{
		{m, "$share/g/#", false},
		{m, "$share/g/sensors/#", false},
		{m, "$share/g/sensors/+/seq", false},
		{m, "$share/g/$SYS/#", false},
		{m, "$share/g/sensors/mallory/#", true},
		{d, "$share/g/sensors/#", true},
		{d, "$share/g/#", false},
	} {
		rc := tt.c.sub(tt.filter)
		if got := rc[0] <= 2; got != tt.ok || !tt.ok && rc[0] != packets.ErrNotAuthorized.Code {
			t.Errorf("subscribe %s: %#x, want allowed %v (else 0x87)", tt.filter, rc[0], tt.ok)
		}
	}
	s, code, _ := e.dial(conn{ver: 5, id: "sensor1-1", user: "sensor1", clean: true})
	if code != 0 {
		t.Fatalf("sensor1 refused: %#x", code)
	}
	s.pub(1, publish("sensors/sensor1/seq", 1, 0, []byte("x")))
	if got := m.collect(300 * time.Millisecond); len(got) != 0 {
		t.Errorf("mallory received %q", got)
	}
	if got := d.collect(300 * time.Millisecond); len(got) != 1 {
		t.Errorf("dash's shared subscription received %q, want 1 message", got)
	}
}

// TestTopicAliasACL: a PUBLISH by topic alias is checked against the
// alias's topic: a refused PUBLISH does not rebind the alias, and an
// alias-only PUBLISH to an allowed topic goes through.
func TestTopicAliasACL(t *testing.T) {
	e := startACL(t, nil)
	act, code, _ := e.dial(conn{ver: 5, id: "actuator-1", user: "sensor1", clean: true})
	if code != 0 {
		t.Fatalf("actuator refused: %#x", code)
	}
	act.sub("cmd/actuator-1")
	m, code, _ := e.dial(conn{ver: 5, id: "mallory-1", user: "mallory", clean: true})
	if code != 0 {
		t.Fatalf("mallory refused: %#x", code)
	}
	m.sub("sensors/mallory/#")
	aliased := func(topic string, payload string) packets.Packet {
		pk := publish(topic, 1, 0, []byte(payload))
		pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = 1, true
		return pk
	}
	if rc := m.pub(1, aliased("sensors/mallory/a", "set")); rc != 0 {
		t.Fatalf("allowed aliased publish: %#x", rc)
	}
	m.expectPublish("sensors/mallory/a")
	if rc := m.pub(2, aliased("cmd/actuator-1", "rebind")); rc != packets.ErrNotAuthorized.Code {
		t.Fatalf("aliased publish to cmd/actuator-1: %#x, want 0x87", rc)
	}
	if rc := m.pub(3, aliased("", "by alias")); rc != 0 {
		t.Fatalf("alias-only publish to the allowed topic: %#x, want success", rc)
	}
	if pk := m.expectPublish("sensors/mallory/a"); string(pk.Payload) != "by alias" {
		t.Fatalf("alias-only publish delivered %q", pk.Payload)
	}
	if got := act.collect(300 * time.Millisecond); len(got) != 0 {
		t.Fatalf("actuator received %q", got)
	}
	if got := payloads(t, e.l, "telemetry", "sensors/mallory/a"); len(got) != 2 {
		t.Fatalf("ingested %q on sensors/mallory/a, want 2", got)
	}
}

// TestClientIDSubstitution: a client ID with '+', '#' or '/' substituted
// for %c does not widen a rule (that filter grants nothing), and does not
// cost the client the rules that do not use %c.
func TestClientIDSubstitution(t *testing.T) {
	e := startACL(t, nil)
	for _, tt := range []struct{ id, filter string }{
		{"+", "cmd/other"},    // "cmd/+" would cover it
		{"#", "cmd/a/b"},      // "cmd/#" would
		{"x/y", "cmd/x/y"},    // a second level
		{"$SYS", "cmd/$SYS"},  // a leading '$' is not substituted either
		{"ok-1", "cmd/other"}, // control: not its own
	} {
		c, code, _ := e.dial(conn{ver: 5, id: tt.id, user: "sensor1", clean: true})
		if code != 0 {
			t.Fatalf("%q refused: %#x", tt.id, code)
		}
		if rc := c.sub(tt.filter); rc[0] != packets.ErrNotAuthorized.Code {
			t.Errorf("client %q subscribe %s: %#x, want 0x87", tt.id, tt.filter, rc[0])
		}
		if rc := c.pub(1, publish("sensors/sensor1/seq", 1, 0, []byte(tt.id))); rc != 0 {
			t.Errorf("client %q: publish under its user's rule: %#x, want success", tt.id, rc)
		}
	}
	c, _, _ := e.dial(conn{ver: 5, id: "ok-2", user: "sensor1", clean: true})
	if rc := c.sub("cmd/ok-2"); rc[0] > 2 {
		t.Errorf("control: client ok-2 subscribe cmd/ok-2: %#x", rc[0])
	}
}

// TestConcurrentLogins: 20 simultaneous correct logins from one address
// all succeed and do not block it, with the default login limit; a
// guessing run from the same address is still blocked after Failures
// checks.
func TestConcurrentLogins(t *testing.T) {
	e := startACL(t, func(c *broker.Config) {
		c.LoginLimit = broker.LoginLimit{Failures: 5, Window: time.Minute, Block: time.Minute}
	})
	const n = 20
	began := time.Now()
	var wg sync.WaitGroup
	outs := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// -k 300: 20 bcrypt checks take a while under -race on a
			// loaded 2-core machine, and libmosquitto gives up on a
			// CONNACK after its keep-alive.
			out, ok := client(t, e.b, "mosquitto_pub", "-k", "300", "-A", "127.0.0.3", "-i", fmt.Sprintf("s-%d", i),
				"-u", "sensor1", "-P", "pw-sensor1", "-q", "1", "-t", "sensors/sensor1/seq", "-m", fmt.Sprint(i))
			if !ok {
				outs <- out
			}
		}()
	}
	wg.Wait()
	t.Logf("%d correct logins in %v", n, time.Since(began))
	close(outs)
	for out := range outs {
		t.Errorf("a correct login was refused:\n%s", out)
	}
	if st := e.b.Stats(); st.LoginBlocked != 0 || st.AuthFailures != 0 {
		t.Fatalf("stats after correct logins: %+v", st)
	}
	if got := len(payloads(t, e.l, "telemetry", "sensors/sensor1/seq")); got != n {
		t.Fatalf("%d events, want %d", got, n)
	}
	// Guessing from the same address: 12 parallel wrong passwords, 5
	// checked, the rest refused unchecked.
	var guesses sync.WaitGroup
	for i := range 12 {
		guesses.Add(1)
		go func() {
			defer guesses.Done()
			if out, ok := client(t, e.b, "mosquitto_pub", "-A", "127.0.0.3", "-i", fmt.Sprintf("g-%d", i),
				"-u", "sensor1", "-P", fmt.Sprintf("guess-%d", i), "-t", "sensors/sensor1/seq", "-m", "x"); ok {
				t.Errorf("guess %d accepted:\n%s", i, out)
			}
		}()
	}
	guesses.Wait()
	if st := e.b.Stats(); st.AuthFailures != 5 || st.LoginBlocked != 7 {
		t.Fatalf("guessing run: %d checked, %d blocked; want 5 and 7", st.AuthFailures, st.LoginBlocked)
	}
}

// TestUserNamePatternChars: user names with ACL pattern or control
// characters are refused when set and when a users file is loaded (the
// error names the file and line).
func TestUserNamePatternChars(t *testing.T) {
	hash, err := broker.HashPassword([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"%c", "%u", "a%b", "a+b", "a#b", "a/b", "#x", "a\x00b", "a\x01b", "a\x7fb"} {
		t.Run(fmt.Sprintf("%q", name), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "users")
			if err := broker.SetUser(path, name, []byte("pw")); err == nil {
				t.Fatalf("SetUser(%q) accepted it", name)
			}
			if strings.HasPrefix(name, "#") {
				return // a comment line in a users file
			}
			data := "ok:" + string(hash) + "\n" + name + ":" + string(hash) + "\n"
			if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := broker.LoadUsers(path)
			if err == nil || !strings.Contains(err.Error(), path+" line 2") {
				t.Fatalf("LoadUsers: %v, want an error naming %s line 2", err, path)
			}
		})
	}
}

// TestClientIDPatterns: with ACLRule.ClientIDs a user may connect only
// with the client IDs its rule names, so nobody can claim another user's
// client ID even while that client has no session at all.
func TestClientIDPatterns(t *testing.T) {
	e := startACL(t, func(c *broker.Config) {
		c.ACL = issueACL()
		c.ACL[1].ClientIDs = []string{"%u", "%u-*"}
	})
	for _, tt := range []struct {
		user, id string
		ok       bool
	}{
		{"sensor1", "sensor1", true},
		{"sensor1", "sensor1-a/b", true},
		{"mallory", "sensor1-a", false}, // no session exists: ownership alone would allow it
		{"mallory", "legit-1", false},
		{"mallory", "mallory-2", true},
		{"dash", "anything", true}, // dash's rule has no client_ids
	} {
		for _, ver := range []byte{5, 4} {
			c, code, _ := e.dial(conn{ver: ver, id: tt.id, user: tt.user, clean: true})
			if got := code == 0; got != tt.ok || !tt.ok && code != notAuthorizedCode(ver) {
				t.Errorf("v%d %s as %q: CONNACK %#x, want allowed %v (else %#x)", ver, tt.user, tt.id, code, tt.ok, notAuthorizedCode(ver))
			}
			if c != nil {
				c.conn.Close()
			}
		}
	}
	e.stop()
	if n := len(aclDenials(t, e.a, "client_id")); n != 4 {
		t.Errorf("%d client_id denials audited, want 4", n)
	}
}
