// Package commands carries the cloud's commands through the durable log
// to the board's local MQTT subscribers, and their replies back to the
// cloud.
//
// # Commands
//
// Sink.AcceptCommand appends a command the downlink received to the
// command stream and returns once that commit is on disk; only then does
// the downlink acknowledge the cloud (PUBACK), so a crash at any point
// either leaves the command with the cloud, which sends it again, or in
// the log. Deliver then publishes each command on the embedded broker, as
// the broker's inline client, in stream order, one at a time, with the
// MQTT 5 properties it came with: content type, correlation data, user
// properties, the message expiry interval that remains, and a response
// topic (below). Local subscribers need the ACL's permission to subscribe
// to the command topic like any other. A command whose expiry has passed
// when its turn comes is acknowledged without being published, and
// counted. The broker's inline client is never ingested, so a command can
// never reach the uplink: no loop is possible.
//
// Local delivery is at least once. A crash or kill between a command's
// local publish and the commit of its acknowledgement publishes it again
// after the restart; every local copy carries the user property
// "ferry-command-id" (the event ID, the same in both copies) for an
// actuator that must not act twice. A command whose expiry passed while
// ferry was down is not published.
//
// # Replies
//
// A command with a response topic (the MQTT 5 one, or the subscription's
// reply topic) is published locally with response topic
// config.ReplyTopicPrefix followed by its offset in the command stream. A
// local device publishing there is ingested, durably, into the reply
// stream; Replies then gives the downlink each reply with the response
// topic and correlation data of the command it answers, looked up in the
// command stream (which keeps commands for the reply window). The device
// cannot choose where its reply goes in the cloud: only to the topic the
// cloud asked for. A reply to no known command leaves without a response
// topic, and the downlink drops it, counted.
//
// # Concurrency
//
// Sink and Replies are safe for concurrent use. One Deliver runs per
// command stream (outbox.DrainAs).
package commands

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/downlink"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Consumer is the position name of the local deliverer in the command
// stream.
const Consumer = "commands"

// CommandIDProperty is the user property every local copy of a command
// carries: the command's event ID.
const CommandIDProperty = "ferry-command-id"

// Attributes of a command event, beside downlink.AttrResponseTopic and
// downlink.AttrCorrelationData.
const (
	attrCloudTopic = "cloud_topic"
	attrExpires    = "expires" // Unix milliseconds
	attrQoS        = "qos"
	userPrefix     = "user:" // user properties, each under its key
)

// Store is the durable log as the command sink sees it.
type Store interface {
	Update(ctx context.Context, fn func(*buffer.Tx) error) error
}

var _ Store = (*buffer.Log)(nil)

// Sink stores commands in the command stream.
type Sink struct {
	Store  Store
	Stream string
	Now    func() time.Time
	Rand   io.Reader // for event IDs; nil: crypto/rand
	Log    *slog.Logger

	accepted atomic.Uint64
}

var _ downlink.CommandSink = (*Sink)(nil)

// AcceptCommand appends c to the command stream and returns once it is
// committed. A stream refusing it (full with the reject policy, disk
// below its watermark) is an error: the downlink then does not
// acknowledge the cloud, which sends the command again later.
func (s *Sink) AcceptCommand(ctx context.Context, c *downlink.Command) error {
	ev, err := s.event(c)
	if err != nil {
		return err
	}
	err = s.Store.Update(ctx, func(tx *buffer.Tx) error { return tx.Append(ev) })
	if err != nil {
		return fmt.Errorf("store command for %s: %w", c.LocalTopic, err)
	}
	s.accepted.Add(1)
	return nil
}

// Accepted returns how many commands were stored.
func (s *Sink) Accepted() uint64 { return s.accepted.Load() }

func (s *Sink) event(c *downlink.Command) (*event.Event, error) {
	now := s.Now()
	id, err := event.NewID(now, s.Rand)
	if err != nil {
		return nil, fmt.Errorf("command event ID: %w", err)
	}
	ev := &event.Event{
		ID: id, Stream: s.Stream, Source: "cloud", Topic: c.LocalTopic, Time: now,
		ContentType: c.ContentType, Payload: c.Payload,
		Attrs: map[string]string{attrCloudTopic: c.CloudTopic, attrQoS: strconv.Itoa(int(c.QoS))},
	}
	if c.ResponseTopic != "" {
		ev.Attrs[downlink.AttrResponseTopic] = c.ResponseTopic
	}
	if len(c.CorrelationData) > 0 {
		ev.Attrs[downlink.AttrCorrelationData] = base64.StdEncoding.EncodeToString(c.CorrelationData)
	}
	if !c.Expires.IsZero() {
		ev.Attrs[attrExpires] = strconv.FormatInt(c.Expires.UnixMilli(), 10)
	}
	for _, up := range c.UserProperties {
		if len(ev.Attrs) >= event.MaxAttrs {
			break // more than an event keeps; the command itself is intact
		}
		ev.Attrs[userPrefix+up[0]] = up[1]
	}
	return ev, nil
}

// Publisher publishes a packet on the embedded broker as its inline
// client.
type Publisher interface {
	Inject(pk packets.Packet) error
}

// Deliverer publishes stored commands on the embedded broker.
type Deliverer struct {
	Pub Publisher
	Now func() time.Time
	Log *slog.Logger

	delivered, expired, failed atomic.Uint64
}

// Stats counts what Deliver did.
type Stats struct {
	Delivered, Expired, Failed uint64
}

// Stats returns the counts so far.
func (d *Deliverer) Stats() Stats {
	return Stats{Delivered: d.delivered.Load(), Expired: d.expired.Load(), Failed: d.failed.Load()}
}

// Deliver publishes the command at offset off locally, or drops it when
// it expired. It has outbox.DrainAs's signature.
func (d *Deliverer) Deliver(ctx context.Context, off uint64, ev *event.Event) error {
	pk, err := Packet(off, ev, d.Now())
	switch {
	case errors.Is(err, ErrExpired):
		d.expired.Add(1)
		d.Log.Info("command expired before delivery: dropped", "topic", ev.Topic, "id", ev.ID.String())
		return ctx.Err()
	case err != nil:
		d.failed.Add(1)
		d.Log.Warn("stored command unreadable: dropped", "id", ev.ID.String(), "err", err)
		return ctx.Err()
	}
	if err := d.Pub.Inject(pk); err != nil {
		// The broker refused it (a topic it does not take): retrying
		// cannot help, as with any local publish.
		d.failed.Add(1)
		d.Log.Warn("command publish failed: dropped", "topic", ev.Topic, "id", ev.ID.String(), "err", err)
		return ctx.Err()
	}
	d.delivered.Add(1)
	return ctx.Err()
}

// ErrExpired is returned by Packet for a command whose expiry has passed.
var ErrExpired = errors.New("commands: expired")

// Packet builds the local PUBLISH of the command at offset off, as of now.
func Packet(off uint64, ev *event.Event, now time.Time) (packets.Packet, error) {
	qos := byte(1)
	if ev.Attrs[attrQoS] == "0" {
		qos = 0
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   ev.Topic,
		Payload:     ev.Payload,
		PacketID:    uint16(qos), // the inline client's PUBLISH is never acknowledged; mochi wants an ID for QoS > 0
	}
	pr := &pk.Properties
	pr.ContentType = ev.ContentType
	if ms, ok := ev.Attrs[attrExpires]; ok {
		at, err := strconv.ParseInt(ms, 10, 64)
		if err != nil {
			return pk, fmt.Errorf("expiry %q: %w", ms, err)
		}
		left := time.UnixMilli(at).Sub(now)
		if left <= 0 {
			return pk, ErrExpired
		}
		pr.MessageExpiryInterval = uint32(min(math.Ceil(left.Seconds()), math.MaxUint32))
	}
	if ev.Attrs[downlink.AttrResponseTopic] != "" {
		pr.ResponseTopic = ReplyTopic(off)
	}
	if cd, ok := ev.Attrs[downlink.AttrCorrelationData]; ok {
		b, err := base64.StdEncoding.DecodeString(cd)
		if err != nil {
			return pk, fmt.Errorf("correlation data: %w", err)
		}
		pr.CorrelationData = b
	}
	pr.User = append(pr.User, packets.UserProperty{Key: CommandIDProperty, Val: ev.ID.String()})
	for _, k := range slices.Sorted(maps.Keys(ev.Attrs)) {
		if name, ok := strings.CutPrefix(k, userPrefix); ok {
			pr.User = append(pr.User, packets.UserProperty{Key: name, Val: ev.Attrs[k]})
		}
	}
	return pk, nil
}

// ReplyFilter is the ingest route's filter for replies.
const ReplyFilter = config.ReplyTopicPrefix + "+"

// ReplyTopic is the local response topic of the command at offset off.
func ReplyTopic(off uint64) string { return config.ReplyTopicPrefix + strconv.FormatUint(off, 10) }
