package downlink

import (
	"encoding/base64"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrygw/ferry/event"
)

// reply is one reply event read from the queue.
type reply struct {
	off     uint64
	topic   string
	payload []byte
	props   *paho.PublishProperties
	drop    string     // why it is acked without being sent ("": send it)
	done    chan error // the publish's outcome; buffered
}

// replyPropsOverhead bounds a PUBLISH's fixed header, lengths and property
// identifiers, for the check against the cloud's Maximum Packet Size.
const replyPropsOverhead = 64

// makeReply copies what the publish of ev needs, or says why it cannot be
// sent. It never fails on what the event holds.
func (s *session) makeReply(off uint64, ev *event.Event) *reply {
	r := &reply{off: off, done: make(chan error, 1)}
	r.drop = s.checkReply(ev, r)
	return r
}

// checkReply fills r from ev and returns "" or why ev cannot be sent.
func (s *session) checkReply(ev *event.Event, r *reply) string {
	c := s.c
	topic := ev.Attrs[AttrResponseTopic]
	if topic == "" {
		return "no response topic"
	}
	if err := checkTopicName(topic); err != nil {
		return "invalid response topic: " + err.Error()
	}
	if c.subscribed(topic) {
		// The cloud would send it back to this client as a command.
		return "the response topic is one the client subscribes to"
	}
	props := &paho.PublishProperties{}
	if cd, ok := ev.Attrs[AttrCorrelationData]; ok {
		b, err := base64.StdEncoding.DecodeString(cd)
		if err != nil {
			return "correlation data is not base64"
		}
		if len(b) > 65535 {
			return "correlation data longer than 65,535 bytes"
		}
		props.CorrelationData = b
	}
	ct, ok := ev.Attrs[AttrContentType]
	if !ok {
		ct = ev.ContentType
	}
	if ct != "" {
		if !utf8.ValidString(ct) || len(ct) > 65535 || containsNUL(ct) {
			return "invalid content type"
		}
		props.ContentType = ct
	}
	size := len(ev.Payload) + len(topic) + len(props.CorrelationData) + len(ct) + replyPropsOverhead
	if len(ev.Payload) > c.cfg.MaxPayload || (s.serverMaxPacket > 0 && size > s.serverMaxPacket) {
		return fmt.Sprintf("too large (%d bytes)", len(ev.Payload))
	}
	r.topic = topic
	r.payload = append([]byte(nil), ev.Payload...)
	r.props = props
	return ""
}

func containsNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}

// replyLoop publishes the reply stream from the Consumer's position: up to
// ReplyInflight publishes at once, acked in the queue in offset order,
// each after its PUBACK. A reply that cannot be sent, or that the cloud
// refuses with an error reason code, is acked and counted as dropped. A
// publish that fails otherwise ends the session; the next one starts over
// after the last acked reply.
func (s *session) replyLoop() {
	defer s.wg.Done()
	c := s.c
	q, stream := c.cfg.Replies, c.cfg.ReplyStream
	next := q.Acked(stream, Consumer)
	if next > 0 {
		next++
	}
	var window []*reply // in offset order
	dirty := true
	changed := q.Changed()
	for {
		if dirty && len(window) < c.cfg.ReplyInflight && s.work.Err() == nil {
			changed = q.Changed() // before the read: no append can be missed
			n0 := len(window)
			want := c.cfg.ReplyInflight - n0
			var err error
			next, err = q.Read(stream, next, want, func(off uint64, ev *event.Event) error {
				window = append(window, s.makeReply(off, ev))
				return nil
			})
			dirty = len(window)-n0 == want
			for _, r := range window[n0:] {
				if r.drop != "" {
					r.done <- nil
					continue
				}
				go func() { r.done <- s.publish(r.topic, r.payload, false, r.props) }()
			}
			if err != nil {
				err = fmt.Errorf("%w: read %s: %v", ErrQueue, stream, err)
				c.setError(err)
				c.log.Error("reply queue read failed", "stream", stream, "err", err)
				dirty = false
				if len(window) == 0 {
					sleep(s.work, queueRetry)
					dirty = true
					continue
				}
			}
		}
		if len(window) == 0 {
			if s.work.Err() != nil {
				return
			}
			select {
			case <-changed:
				dirty = true
			case <-s.work.Done():
				return
			}
			continue
		}
		var wake <-chan struct{}
		if !dirty {
			wake = changed
		}
		select {
		case err := <-window[0].done:
			r := window[0]
			window = window[1:]
			if err != nil && !errors.Is(err, errCloudRefused) {
				// The link failed: the replies still in flight fail too;
				// the next session sends them again.
				if s.work.Err() == nil {
					s.lost(err)
				}
				for _, w := range window {
					<-w.done
				}
				return
			}
			s.finishReply(r, err)
		case <-wake:
			dirty = true
		}
	}
}

// finishReply acks r in the queue and counts it.
func (s *session) finishReply(r *reply, err error) {
	c := s.c
	stream := c.cfg.ReplyStream
	switch {
	case r.drop != "":
		c.log.Warn("dropping a reply that cannot be sent", "stream", stream, "offset", r.off, "reason", r.drop)
	case err != nil:
		c.setError(err)
		c.log.Warn("the cloud refused a reply; dropping it", "stream", stream, "offset", r.off, "topic", r.topic, "err", err)
	}
	if aerr := c.cfg.Replies.Ack(stream, Consumer, r.off); aerr != nil {
		aerr = fmt.Errorf("%w: ack %s through %d: %v", ErrQueue, stream, r.off, aerr)
		c.setError(aerr)
		c.log.Error("reply queue ack failed", "err", aerr)
	}
	c.update(func(st *Status) {
		if r.drop != "" || err != nil {
			st.RepliesDropped++
		} else {
			st.Replies++
		}
	})
}
