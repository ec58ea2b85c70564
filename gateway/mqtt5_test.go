package gateway_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// v5 is an MQTT 5 test client (Eclipse Paho's paho.golang) that records
// every PUBLISH it receives; it stands for a cloud service or a local
// device.
type v5 struct {
	t    *testing.T
	id   string
	c    *paho.Client
	msgs chan *paho.Publish
	held []*paho.Publish // received, not yet asked for (next)
}

// dial5 connects an MQTT 5 client to url (tcp://host:port or host:port);
// mod may change the CONNECT (clean start, session expiry, will).
func dial5(t *testing.T, url, id string, mod func(*paho.Connect)) *v5 {
	t.Helper()
	addr := strings.TrimPrefix(url, "tcp://")
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: dial %s: %v", id, addr, err)
	}
	v := &v5{t: t, id: id, msgs: make(chan *paho.Publish, 10_000)}
	v.c = paho.NewClient(paho.ClientConfig{
		ClientID: id,
		Conn:     conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			v.msgs <- pr.Packet
			return true, nil
		}},
	})
	cp := &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}
	if mod != nil {
		mod(cp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := v.c.Connect(ctx, cp)
	if err != nil {
		t.Fatalf("%s: connect %s: %v", id, addr, err)
	}
	if ca.ReasonCode != 0 {
		t.Fatalf("%s: CONNACK reason 0x%02x", id, ca.ReasonCode)
	}
	t.Cleanup(v.close)
	return v
}

func (v *v5) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if v.c.Disconnect(&paho.Disconnect{ReasonCode: 0}) == nil {
		select {
		case <-v.c.Done():
		case <-ctx.Done():
		}
	}
}

func (v *v5) subscribe(filter string, qos byte) {
	v.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := v.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if err != nil {
		v.t.Fatalf("%s: subscribe %s: %v", v.id, filter, err)
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] > 2 {
		v.t.Fatalf("%s: subscribe %s refused: %v", v.id, filter, sa.Reasons)
	}
}

func (v *v5) publish(p *paho.Publish) {
	v.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := v.c.Publish(ctx, p); err != nil {
		v.t.Errorf("%s: publish %s: %v", v.id, p.Topic, err) // Errorf: also called from goroutines
	}
}

// next returns the next message on a topic matching filter, failing the
// test after d. Messages on other topics are kept, in order, for the
// calls that ask for them.
func (v *v5) next(filter string, d time.Duration) *paho.Publish {
	v.t.Helper()
	for i, m := range v.held {
		if topicMatch(filter, m.Topic) {
			v.held = append(v.held[:i], v.held[i+1:]...)
			return m
		}
	}
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		select {
		case m := <-v.msgs:
			if topicMatch(filter, m.Topic) {
				return m
			}
			v.held = append(v.held, m)
		case <-deadline.C:
			v.t.Fatalf("%s: nothing on %s within %s", v.id, filter, d)
			return nil
		}
	}
}

// topicMatch reports whether topic matches the MQTT filter.
func topicMatch(filter, topic string) bool {
	f, tp := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, l := range f {
		if l == "#" {
			return true
		}
		if i >= len(tp) || (l != "+" && l != tp[i]) {
			return false
		}
	}
	return len(f) == len(tp)
}

// userProp returns the first user property key of p, or "".
func userProp(p *paho.Publish, key string) string {
	if p.Properties == nil {
		return ""
	}
	return p.Properties.User.Get(key)
}
