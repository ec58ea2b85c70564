package downlink

import (
	"bytes"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrygw/ferry/internal/mqtttest"
)

// resendSink records resend requests and answers each on the response
// topic, else on "verify/reply"; it refuses a payload "refuse" and
// answers nothing to "quiet".
type resendSink struct {
	mu  sync.Mutex
	got []string // payload + " " + response topic
}

func (s *resendSink) Resend(payload []byte, response string) (string, []byte, bool) {
	s.mu.Lock()
	s.got = append(s.got, string(payload)+" "+response)
	s.mu.Unlock()
	if string(payload) == "quiet" {
		return "", nil, false
	}
	topic := response
	if topic == "" {
		topic = "verify/reply"
	}
	return topic, append([]byte("re: "), payload...), string(payload) == "refuse"
}

func (s *resendSink) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// Resend requests go to the ResendSink, never to the CommandSink, whether
// a command filter covers their topic or the client subscribes to it on
// its own; the replies go to the topic the sink names, with the request's
// correlation data; an oversize request is dropped; a reply to a topic the
// client subscribes to is not published.
func TestResendTopic(t *testing.T) {
	b := mqtttest.Start(t)
	cases := []struct {
		name    string
		filters bool // a command filter covers gw1/cmd/ferry/resend
	}{
		{"covered by a command filter", true},
		{"subscribed alone", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmds := newSink()
			rs := &resendSink{}
			id := "gw1-cmd-covered"
			cfg := testConfig(t, id, b.URL())
			if tc.filters {
				cfg.Subscriptions = []Subscription{{Filter: "gw1/cmd/#", CloudPrefix: "gw1/cmd/", LocalPrefix: "dev/", QoS: 1}}
				cfg.Commands = cmds
			} else {
				id = "gw1-cmd-alone"
				cfg.ClientID = id
			}
			cfg.ResendTopic = "gw1/cmd/ferry/resend"
			cfg.Resends = rs
			cfg.MaxPayload = 100
			c, stop := startClient(t, cfg)
			if tc.filters {
				waitSubscribed(t, b, id, "gw1/cmd/#", 1)
			} else {
				waitSubscribed(t, b, id, "gw1/cmd/ferry/resend", 1)
			}
			cl := dialCloud(t, b.Addr, "verify/#", "resp/#")
			cl.publish(cfg.ResendTopic, []byte("one"), 1, false, nil)
			cl.publish(cfg.ResendTopic, make([]byte, 101), 1, false, nil)
			cl.publish(cfg.ResendTopic, []byte("two"), 1, false, &paho.PublishProperties{ResponseTopic: "resp/x", CorrelationData: []byte("c-2")})
			cl.publish(cfg.ResendTopic, []byte("refuse"), 1, false, nil)
			cl.publish(cfg.ResendTopic, []byte("quiet"), 1, false, nil)
			cl.publish(cfg.ResendTopic, []byte("loop"), 1, false, &paho.PublishProperties{ResponseTopic: "gw1/cmd/ferry/resend"})
			waitFor(t, 60*time.Second, "the replies", func() bool { return len(cl.messages()) >= 3 })
			waitFor(t, 60*time.Second, "the requests", func() bool { return len(rs.requests()) >= 5 })
			waitFor(t, 60*time.Second, "the loop reply dropped", func() bool { return c.Status().ResendRepliesDropped >= 1 })
			stop()
			want := []string{"one ", "two resp/x", "refuse ", "quiet ", "loop gw1/cmd/ferry/resend"}
			if got := rs.requests(); !slices.Equal(got, want) {
				t.Errorf("requests %q, want %q", got, want)
			}
			if n := len(cmds.commands()); n != 0 {
				t.Errorf("%d commands reached the command sink", n)
			}
			replies := map[string]string{}
			for _, m := range cl.messages() {
				replies[m.Topic+" "+string(m.Payload)] = ""
				if m.Topic == "resp/x" && (m.Properties == nil || !bytes.Equal(m.Properties.CorrelationData, []byte("c-2"))) {
					t.Errorf("reply on resp/x without the correlation data: %+v", m.Properties)
				}
			}
			for _, r := range []string{"verify/reply re: one", "resp/x re: two", "verify/reply re: refuse"} {
				if _, ok := replies[r]; !ok {
					t.Errorf("reply %q missing; got %v", r, replies)
				}
			}
			if len(replies) != 3 {
				t.Errorf("replies %v", replies)
			}
			st := c.Status()
			if st.ResendRequests != 5 || st.ResendRefused != 1 || st.ResendReplies != 3 || st.ResendRepliesDropped != 1 || st.Dropped["oversize"] != 1 {
				t.Errorf("status: requests %d refused %d replies %d dropped %d, dropped %v",
					st.ResendRequests, st.ResendRefused, st.ResendReplies, st.ResendRepliesDropped, st.Dropped)
			}
		})
	}
}
