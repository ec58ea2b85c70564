package downlink

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ferrygw/ferry/event"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultKeepalive      = 30 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	// DefaultSessionExpiry is how long the cloud keeps the session, and so
	// the QoS 1 commands sent to it, while the gateway is away. Cloud
	// brokers may grant less (AWS IoT Core: one hour unless raised); the
	// client logs what the broker granted.
	DefaultSessionExpiry = 24 * time.Hour
	DefaultBackoffMin    = 1 * time.Second
	DefaultBackoffMax    = 60 * time.Second
	DefaultProbeInterval = 2 * time.Second // or BackoffMax when that is shorter
	DefaultStableAfter   = 10 * time.Second
	// DefaultMaxPayload bounds a command, config or reply payload.
	DefaultMaxPayload = 256 << 10
	// DefaultReplyInflight is how many replies may await their PUBACK.
	DefaultReplyInflight = 4
	// DefaultReplyStream is the Queue stream replies are read from.
	DefaultReplyStream = "replies"
	// DefaultReceiveMaximum is how many unacknowledged QoS 1 messages the
	// cloud may send at once (the CONNECT's Receive Maximum): with the
	// payload bound, what a burst of commands may hold in memory.
	DefaultReceiveMaximum = 8
)

// Consumer is the name the Client records its position in the reply
// stream under (Queue.Ack, Queue.Acked). The reply stream must list it
// among its consumers.
const Consumer = "downlink"

// Attributes of a reply event (event.Event.Attrs) that the Client reads.
const (
	// AttrResponseTopic is the cloud topic the reply is published to.
	AttrResponseTopic = "response_topic"
	// AttrCorrelationData is the command's correlation data, base64
	// (standard encoding, padded); absent when the command had none.
	AttrCorrelationData = "correlation_data"
	// AttrContentType is the reply's MQTT 5 content type; absent: the
	// event's ContentType.
	AttrContentType = "content_type"
)

// Endpoint is one cloud broker.
type Endpoint struct {
	// URL is the broker address: tcp://, mqtt://, ssl://, tls://,
	// mqtts://, ws:// or wss://, with a port.
	URL string
	// TLS configures TLS for ssl, tls, mqtts and wss URLs; nil uses the
	// defaults. It must be nil for the others.
	TLS *tls.Config
}

// Subscription maps a cloud topic filter to local topics on the embedded
// broker.
type Subscription struct {
	// Filter is the cloud topic filter, already rendered (e.g. "gw1/cmd/#").
	Filter string
	// CloudPrefix is stripped from the topic of each message received ...
	CloudPrefix string
	// ... and LocalPrefix put in its place, giving the local topic the
	// command is delivered to (Mosquitto bridge semantics; see MapTopic).
	LocalPrefix string
	// QoS is the subscription's maximum QoS, 0 or 1: the cloud downgrades
	// QoS 2 commands to it.
	QoS byte
	// ReplyTopic is the cloud topic replies go to when a command carries
	// no response topic ("": such a command gets no reply).
	ReplyTopic string
}

// Presence is the gateway's retained online/offline state in the cloud.
type Presence struct {
	// Topic is where it is published; "" turns presence off.
	Topic string
	// Online is published retained, QoS 1, after every connect (the
	// birth); Offline is the will, retained, QoS 1, which the cloud
	// publishes when the connection is lost, and on a clean shutdown.
	Online, Offline []byte
}

// Command is one message received from the cloud on a Subscription.
type Command struct {
	// CloudTopic is the topic the cloud published on; LocalTopic where the
	// gateway delivers it (Subscription.MapTopic).
	CloudTopic, LocalTopic string
	// Payload is the message body, uninterpreted; the sink may keep it.
	Payload []byte
	// QoS is the QoS the command arrived with (at most the subscription's).
	QoS byte
	// Retained reports that the cloud delivered a retained message (when
	// the subscription was first made in the session).
	Retained bool
	// ResponseTopic is the MQTT 5 response topic, else the subscription's
	// ReplyTopic, else "".
	ResponseTopic string
	// CorrelationData is the MQTT 5 correlation data (nil: none).
	CorrelationData []byte
	// ContentType is the MQTT 5 content type ("": none).
	ContentType string
	// UserProperties are the MQTT 5 user properties, in order.
	UserProperties [][2]string
	// Expires is zero when the message had no Message Expiry Interval,
	// else Received plus the interval the cloud sent (what remained of it).
	Expires time.Time
	// Received is when the client read the message (Config.Now).
	Received time.Time
}

// CommandSink takes commands durably.
type CommandSink interface {
	// AcceptCommand returns once c is durable (or with an error if it
	// cannot be made durable). The cloud's PUBACK is sent only after a nil
	// return; after an error the session ends without it and the client
	// reconnects with backoff, so the cloud delivers c again. Called from
	// one goroutine at a time, in arrival order; ctx ends with the
	// connection.
	AcceptCommand(ctx context.Context, c *Command) error
}

// ConfigSink takes configurations pushed by the cloud on
// Config.ConfigTopic.
type ConfigSink interface {
	// OfferConfig returns once payload is durable, with the same
	// acknowledgement rule as CommandSink.AcceptCommand. A configuration
	// that is stored but refused (bad signature, old version) is a nil
	// return: an error has the cloud deliver it again and again.
	OfferConfig(ctx context.Context, payload []byte) error
}

// Queue is the durable log holding the reply stream (buffer.Log satisfies
// it). Implementations must be safe for concurrent use.
type Queue interface {
	// Read calls fn, in offset order, for up to max events of stream with
	// an offset >= from, and returns the offset after the last one (from
	// when none). fn must not keep ev.
	Read(stream string, from uint64, max int, fn func(off uint64, ev *event.Event) error) (next uint64, err error)
	// Ack records consumer's position on stream through offset through.
	Ack(stream, consumer string, through uint64) error
	// Acked returns consumer's position on stream (0: none).
	Acked(stream, consumer string) uint64
	// Changed returns a channel closed after the next commit that appends.
	Changed() <-chan struct{}
}

// Config configures a Client. Zero fields take the defaults noted.
type Config struct {
	// ClientID is the MQTT client ID of the session (required; the gateway
	// uses the uplink's client ID + "-cmd"). The cloud keeps the session
	// under it: two gateways must never share one.
	ClientID string
	// Username and Password authenticate to the brokers, when set.
	Username, Password string
	// Endpoints are tried in order on every (re)connection.
	Endpoints []Endpoint
	// Keepalive is the MQTT keepalive (default 30 s, at least 1 s).
	Keepalive time.Duration
	// ConnectTimeout bounds a dial, a handshake and each acknowledgement
	// the client waits for (default 10 s).
	ConnectTimeout time.Duration
	// SessionExpiry is how long the cloud keeps the session after the
	// connection is lost (default 24 h, at least 1 s, at most 2³²-2 s).
	SessionExpiry time.Duration
	// BackoffMin and BackoffMax bound the pause after a refused connection
	// or one lost before StableAfter (default 1 s, 60 s); see
	// "Reconnecting" in the package doc.
	BackoffMin, BackoffMax time.Duration
	// ProbeInterval is the longest pause between attempts while no
	// endpoint can be dialled (default 2 s, at most BackoffMax).
	ProbeInterval time.Duration
	// StableAfter is how long a connection must have been up for its loss
	// to reset the backoff (default 10 s).
	StableAfter time.Duration
	// Subscriptions are the command filters. No two may overlap, and none
	// may match ConfigTopic, Presence.Topic or a ReplyTopic.
	Subscriptions []Subscription
	// Commands takes the commands; required with Subscriptions.
	Commands CommandSink
	// ReservedLocal lists local topic prefixes no command may be delivered
	// to (the gateway's reply topics): such a command is acknowledged and
	// dropped (Status.Dropped["topic"]).
	ReservedLocal []string
	// ConfigTopic is the topic (no wildcards) configurations arrive on,
	// subscribed at QoS 1; "" none.
	ConfigTopic string
	// Configs takes them; required with ConfigTopic.
	Configs ConfigSink
	// ResendTopic is the topic (no wildcards) the cloud's resend requests
	// arrive on, subscribed at QoS 1 unless a command filter already
	// covers it (the request goes to Resends all the same, never to
	// Commands); "" none.
	ResendTopic string
	// Resends serves them; required with ResendTopic.
	Resends ResendSink
	// Presence is the online/offline state; zero: off.
	Presence Presence
	// Retained holds the retained status messages to publish; nil: none.
	Retained *Retained
	// Replies is the Queue replies are read from; nil: no replies.
	Replies Queue
	// ReplyStream is the stream of Replies to read (default "replies").
	ReplyStream string
	// ReplyInflight is how many replies may await their PUBACK at once
	// (default 4; 1 keeps them in order on the wire).
	ReplyInflight int
	// MaxPayload bounds a command, config or reply payload (default
	// 256 KiB): larger ones are acknowledged and dropped, never buffered.
	MaxPayload int
	// Now is the clock (default time.Now); Rand a uniform float64 in
	// [0, 1) for jitter (default math/rand/v2.Float64).
	Now  func() time.Time
	Rand func() float64
	// Logger receives the client's lines (default slog.Default()); it
	// should rate-limit repeats, as the gateway's does.
	Logger *slog.Logger
}

// schemes maps the accepted URL schemes to whether they use TLS.
var schemes = map[string]bool{
	"tcp": false, "mqtt": false, "ws": false,
	"ssl": true, "tls": true, "mqtts": true, "wss": true,
}

// normalize returns c with defaults applied, or an error naming the first
// invalid field.
func (c Config) normalize() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return c, fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	if c.ClientID == "" {
		return bad("empty ClientID")
	}
	if len(c.Endpoints) == 0 {
		return bad("no endpoints")
	}
	c.Endpoints = slices.Clone(c.Endpoints)
	for i, ep := range c.Endpoints {
		u, err := url.Parse(ep.URL)
		if err != nil {
			return bad("endpoints[%d]: bad URL %q", i, ep.URL)
		}
		useTLS, ok := schemes[u.Scheme]
		if !ok || u.Hostname() == "" || u.Port() == "" {
			return bad("endpoints[%d]: %q is not a tcp://, mqtt://, ssl://, tls://, mqtts://, ws:// or wss:// URL with a host and a port", i, ep.URL)
		}
		if ep.TLS != nil && !useTLS {
			return bad("endpoints[%d]: TLS is configured but %q is not a TLS URL", i, ep.URL)
		}
	}
	c.Keepalive = orDefault(c.Keepalive, DefaultKeepalive)
	c.ConnectTimeout = orDefault(c.ConnectTimeout, DefaultConnectTimeout)
	c.SessionExpiry = orDefault(c.SessionExpiry, DefaultSessionExpiry)
	c.BackoffMin = orDefault(c.BackoffMin, DefaultBackoffMin)
	c.BackoffMax = orDefault(c.BackoffMax, DefaultBackoffMax)
	if c.Keepalive < time.Second || c.Keepalive > 65535*time.Second || c.ConnectTimeout < 0 ||
		c.BackoffMin < 0 || c.BackoffMax < c.BackoffMin {
		return bad("keepalive %v (1s..65535s), connect timeout %v, backoff %v..%v",
			c.Keepalive, c.ConnectTimeout, c.BackoffMin, c.BackoffMax)
	}
	if c.SessionExpiry < time.Second || c.SessionExpiry/time.Second >= 1<<32-1 {
		// 2³²-1 would mean "never expires": the cloud would keep a dead
		// gateway's commands forever.
		return bad("session expiry %v (1s..%ds)", c.SessionExpiry, uint32(1<<32-2))
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = min(DefaultProbeInterval, c.BackoffMax)
	}
	c.StableAfter = orDefault(c.StableAfter, DefaultStableAfter)
	if c.ProbeInterval <= 0 || c.ProbeInterval > c.BackoffMax || c.StableAfter < 0 {
		return bad("probe interval %v (> 0, <= backoff max %v), stable after %v (>= 0)",
			c.ProbeInterval, c.BackoffMax, c.StableAfter)
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = DefaultMaxPayload
	}
	if c.MaxPayload < 1 || c.MaxPayload > 64<<20 {
		return bad("MaxPayload %d (1..64 MiB)", c.MaxPayload)
	}
	if c.ReplyInflight == 0 {
		c.ReplyInflight = DefaultReplyInflight
	}
	if c.ReplyInflight < 1 || c.ReplyInflight > 1000 {
		return bad("ReplyInflight %d (1..1000)", c.ReplyInflight)
	}
	if c.Replies != nil && c.ReplyStream == "" {
		c.ReplyStream = DefaultReplyStream
	}
	if err := c.checkTopics(); err != nil {
		return c, err
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	return c, nil
}

// checkTopics validates the subscriptions, config and presence topics, and
// that no topic the client publishes to or takes configs from is one of its
// command filters: nothing the gateway sends can come back as a command.
func (c *Config) checkTopics() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	if len(c.Subscriptions) > 0 && c.Commands == nil {
		return bad("subscriptions without a CommandSink")
	}
	c.Subscriptions = slices.Clone(c.Subscriptions)
	c.ReservedLocal = slices.Clone(c.ReservedLocal)
	for _, r := range c.ReservedLocal {
		if r == "" {
			return bad("an empty ReservedLocal prefix would reserve every topic")
		}
	}
	// Topics the client publishes to or takes configs from.
	own := map[string]string{}
	if c.ConfigTopic != "" {
		if c.Configs == nil {
			return bad("ConfigTopic %q without a ConfigSink", c.ConfigTopic)
		}
		if err := checkTopicName(c.ConfigTopic); err != nil {
			return bad("ConfigTopic %q: %v", c.ConfigTopic, err)
		}
		own[c.ConfigTopic] = "ConfigTopic"
	}
	if c.ResendTopic != "" {
		if c.Resends == nil {
			return bad("ResendTopic %q without a ResendSink", c.ResendTopic)
		}
		if err := checkTopicName(c.ResendTopic); err != nil {
			return bad("ResendTopic %q: %v", c.ResendTopic, err)
		}
		if c.ResendTopic == c.ConfigTopic {
			return bad("ResendTopic %q is the ConfigTopic", c.ResendTopic)
		}
	}
	if p := c.Presence; p.Topic != "" {
		if err := checkTopicName(p.Topic); err != nil {
			return bad("Presence.Topic %q: %v", p.Topic, err)
		}
		if len(p.Online) == 0 || len(p.Offline) == 0 {
			// An empty retained payload deletes the retained message.
			return bad("Presence.Online and Presence.Offline must not be empty")
		}
		own[p.Topic] = "Presence.Topic"
	}
	for i, s := range c.Subscriptions {
		if err := checkFilter(s.Filter); err != nil {
			return bad("subscriptions[%d].Filter %q: %v", i, s.Filter, err)
		}
		if s.QoS > 1 {
			return bad("subscriptions[%d].QoS %d (0 or 1)", i, s.QoS)
		}
		if strings.ContainsAny(s.CloudPrefix, "+#") || !strings.HasPrefix(s.Filter, s.CloudPrefix) {
			return bad("subscriptions[%d].CloudPrefix %q: not a wildcard-free prefix of the filter %q", i, s.CloudPrefix, s.Filter)
		}
		if s.LocalPrefix != "" {
			if err := checkTopicName(s.LocalPrefix); err != nil {
				return bad("subscriptions[%d].LocalPrefix %q: %v", i, s.LocalPrefix, err)
			}
			if s.LocalPrefix[0] == '$' {
				return bad("subscriptions[%d].LocalPrefix %q starts with $, reserved for the broker", i, s.LocalPrefix)
			}
		}
		for _, r := range c.ReservedLocal {
			if strings.HasPrefix(s.LocalPrefix, r) {
				return bad("subscriptions[%d].LocalPrefix %q is under the reserved local prefix %q", i, s.LocalPrefix, r)
			}
		}
		if s.ReplyTopic != "" {
			if err := checkTopicName(s.ReplyTopic); err != nil {
				return bad("subscriptions[%d].ReplyTopic %q: %v", i, s.ReplyTopic, err)
			}
			own[s.ReplyTopic] = fmt.Sprintf("subscriptions[%d].ReplyTopic", i)
		}
		for j, o := range c.Subscriptions[:i] {
			if FiltersOverlap(s.Filter, o.Filter) {
				return bad("subscriptions[%d].Filter %q overlaps subscriptions[%d].Filter %q: a command matching both would be delivered twice", i, s.Filter, j, o.Filter)
			}
		}
	}
	for i, s := range c.Subscriptions {
		for topic, what := range own {
			if MatchFilter(s.Filter, topic) {
				return bad("subscriptions[%d].Filter %q matches %s %q: the gateway's own messages would come back as commands", i, s.Filter, what, topic)
			}
		}
	}
	return nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
