package downlink

import (
	"fmt"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// onPublish handles a message from the cloud. paho calls it from one
// goroutine, in arrival order, and sends the PUBACK (QoS 1) after it
// returns; so the sinks get the messages one at a time in order, and a
// message is acknowledged only after its sink returned nil. When a sink
// fails, the connection is closed before returning, so that neither this
// message nor any later one is acknowledged (see session.lost); the cloud
// delivers them again after the reconnect. Messages that arrive before the
// SUBSCRIBE (a resumed session's) are routed the same way, by topic.
func (s *session) onPublish(pr paho.PublishReceived) (bool, error) {
	if s.work.Err() != nil {
		// The session is ending: the message must not be acknowledged
		// without having reached its sink.
		s.wire.Close()
		return true, nil
	}
	p := pr.Packet
	c := s.c
	if p.Topic != "" {
		if c.cfg.ConfigTopic != "" && p.Topic == c.cfg.ConfigTopic {
			s.offerConfig(p)
			return true, nil
		}
		if c.cfg.ResendTopic != "" && p.Topic == c.cfg.ResendTopic {
			s.offerResend(p)
			return true, nil
		}
		for i := range c.cfg.Subscriptions {
			if MatchFilter(c.cfg.Subscriptions[i].Filter, p.Topic) {
				s.acceptCommand(&c.cfg.Subscriptions[i], p)
				return true, nil
			}
		}
	}
	c.drop("unmatched")
	c.log.Warn("dropping a cloud message no subscription matches", "topic", p.Topic, "bytes", len(p.Payload))
	return true, nil
}

// oversize drops p, a message of kind what, counted and logged, when it
// is larger than the payload limit.
func (c *Client) oversize(p *paho.Publish, what string) bool {
	if len(p.Payload) <= c.cfg.MaxPayload {
		return false
	}
	c.drop("oversize")
	c.log.Warn("dropping a cloud message larger than the payload limit", "kind", what, "topic", p.Topic,
		"bytes", len(p.Payload), "max_payload", c.cfg.MaxPayload)
	return true
}

// offerConfig hands a configuration to the ConfigSink.
func (s *session) offerConfig(p *paho.Publish) {
	c := s.c
	if c.oversize(p, "configuration") {
		return
	}
	if err := c.cfg.Configs.OfferConfig(s.work, p.Payload); err != nil {
		err = fmt.Errorf("%w: configuration on %s: %w", ErrSink, p.Topic, err)
		s.lost(err)
		c.log.Error("configuration not taken; ending the session so that the cloud delivers it again", "topic", p.Topic, "err", err)
		return
	}
	c.update(func(st *Status) { st.ConfigsReceived++ })
}

// acceptCommand builds the Command of p, received through sub, and hands
// it to the CommandSink.
func (s *session) acceptCommand(sub *Subscription, p *paho.Publish) {
	c := s.c
	now := c.cfg.Now()
	if c.oversize(p, "command") {
		return
	}
	local, err := c.localTopic(sub, p.Topic)
	if err != nil {
		c.drop("topic")
		c.log.Warn("dropping a command without a valid local topic", "topic", p.Topic, "err", err)
		return
	}
	cmd := newCommand(sub, p, local, now)
	if props := p.Properties; props != nil && props.MessageExpiry != nil && *props.MessageExpiry == 0 {
		c.drop("expired")
		c.log.Info("dropping a command that expired on its way", "topic", p.Topic)
		return
	}
	if err := c.cfg.Commands.AcceptCommand(s.work, cmd); err != nil {
		err = fmt.Errorf("%w: command on %s: %w", ErrSink, p.Topic, err)
		s.lost(err)
		c.log.Error("command not taken; ending the session so that the cloud delivers it again", "topic", p.Topic, "err", err)
		return
	}
	c.update(func(st *Status) { st.Commands++ })
}

// localTopic maps a cloud topic through sub, refusing reserved local topics.
func (c *Client) localTopic(sub *Subscription, cloudTopic string) (string, error) {
	local, err := sub.MapTopic(cloudTopic)
	if err != nil {
		return "", err
	}
	for _, r := range c.cfg.ReservedLocal {
		if strings.HasPrefix(local, r) {
			return "", fmt.Errorf("%w: local topic %q is under the reserved prefix %q", ErrTopic, local, r)
		}
	}
	return local, nil
}

// newCommand builds the Command of p with its MQTT 5 properties.
func newCommand(sub *Subscription, p *paho.Publish, local string, now time.Time) *Command {
	cmd := &Command{
		CloudTopic: p.Topic,
		LocalTopic: local,
		Payload:    p.Payload,
		QoS:        p.QoS,
		Retained:   p.Retain,
		Received:   now,
	}
	if props := p.Properties; props != nil {
		cmd.ResponseTopic = props.ResponseTopic
		cmd.CorrelationData = props.CorrelationData
		cmd.ContentType = props.ContentType
		for _, u := range props.User {
			cmd.UserProperties = append(cmd.UserProperties, [2]string{u.Key, u.Value})
		}
		if props.MessageExpiry != nil {
			cmd.Expires = now.Add(time.Duration(*props.MessageExpiry) * time.Second)
		}
	}
	if cmd.ResponseTopic == "" {
		cmd.ResponseTopic = sub.ReplyTopic
	}
	return cmd
}
