package downlink

import (
	"errors"

	"github.com/eclipse/paho.golang/paho"
)

// ResendSink serves the cloud's requests to resend events it missed
// (Config.ResendTopic): the gateway's uplink sends them again.
type ResendSink interface {
	// Resend takes the payload of a request and the MQTT 5 response
	// topic it came with ("" none). It runs on the session's message
	// router, so it must return at once, never waiting for the network:
	// it queues the resend and returns the reply to publish on
	// replyTopic ("" or an empty reply: none) and whether the request was
	// refused.
	Resend(payload []byte, responseTopic string) (replyTopic string, reply []byte, refused bool)
}

// maxResendReplies bounds the resend replies waiting to be published: a
// reply beyond it is dropped (replies are best effort; the cloud asks
// again) and counted in Status.ResendRepliesDropped.
const maxResendReplies = 16

// resendReply is a reply waiting to be published.
type resendReply struct {
	topic       string
	payload     []byte
	correlation []byte
}

// offerResend hands a resend request to the ResendSink and queues its
// reply. The request is acknowledged whatever the sink makes of it: it
// is never stored, and the cloud asks again when its events do not come.
func (s *session) offerResend(p *paho.Publish) {
	c := s.c
	if c.oversize(p, "resend request") {
		return
	}
	var response string
	var correlation []byte
	if props := p.Properties; props != nil {
		response, correlation = props.ResponseTopic, props.CorrelationData
	}
	topic, reply, refused := c.cfg.Resends.Resend(p.Payload, response)
	c.update(func(st *Status) {
		st.ResendRequests++
		if refused {
			st.ResendRefused++
		}
	})
	if topic == "" || len(reply) == 0 {
		return
	}
	select {
	case c.resendOut <- resendReply{topic: topic, payload: reply, correlation: correlation}:
	default:
		c.update(func(st *Status) { st.ResendRepliesDropped++ })
		c.log.Warn("dropping a resend reply: too many waiting", "topic", topic, "max", maxResendReplies)
	}
}

// publishResendReplies publishes the queued resend replies, QoS 1, while
// the session lasts. A reply the cloud refuses, or to a topic the client
// must not publish to, is dropped and counted.
func (s *session) publishResendReplies() {
	defer s.wg.Done()
	c := s.c
	for {
		var r resendReply
		select {
		case r = <-c.resendOut:
		case <-s.work.Done():
			return
		}
		if err := checkTopicName(r.topic); err != nil || c.subscribed(r.topic) {
			if err == nil {
				err = errors.New("the client subscribes to it")
			}
			c.update(func(st *Status) { st.ResendRepliesDropped++ })
			c.log.Warn("dropping a resend reply to an invalid topic", "topic", r.topic, "err", err)
			continue
		}
		var props *paho.PublishProperties
		if len(r.correlation) > 0 {
			props = &paho.PublishProperties{CorrelationData: r.correlation}
		}
		err := s.publish(r.topic, r.payload, false, props)
		switch {
		case err == nil:
			c.update(func(st *Status) { st.ResendReplies++ })
		case errors.Is(err, errCloudRefused):
			c.update(func(st *Status) { st.ResendRepliesDropped++ })
			c.log.Warn("the cloud refused a resend reply", "topic", r.topic, "err", err)
		default:
			// Best effort: not sent again on the next connection.
			c.update(func(st *Status) { st.ResendRepliesDropped++ })
			if s.work.Err() == nil {
				s.lost(err)
			}
			return
		}
	}
}
