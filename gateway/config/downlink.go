package config

import (
	"fmt"
	"strings"
	"time"
)

// Downlink configures what flows from the cloud down to the board:
// commands the cloud publishes, delivered to local topics on the embedded
// broker, the local devices' replies going back up, and the gateway's
// presence. It runs on an MQTT 5 session of its own with the uplink's
// endpoints, TLS settings and credentials (the uplink's connection speaks
// MQTT 3.1.1, which has no response topic, correlation data or message
// expiry), and only when there is something for it to do: a subscription,
// remote configuration, or presence asked for by name.
type Downlink struct {
	// ClientID of the downlink session; default: uplink.client_id + "-cmd".
	ClientID string `yaml:"client_id"`
	// SessionExpiry is how long the cloud keeps the session, and the
	// commands queued in it, while the gateway is away. Default 24h.
	SessionExpiry time.Duration `yaml:"session_expiry"`
	// Stream is the buffer stream commands are stored in before the cloud
	// is acknowledged; ReplyStream the one local replies are stored in
	// before they go up. Neither is forwarded by the uplink.
	Stream      string `yaml:"stream"`
	ReplyStream string `yaml:"reply_stream"`
	// MaxPayload bounds one command; a larger one is acknowledged to the
	// cloud and dropped, counted. Default 256KiB.
	MaxPayload    ByteSize               `yaml:"max_payload"`
	Subscriptions []DownlinkSubscription `yaml:"subscriptions"`
	Presence      Presence               `yaml:"presence"`
	// Resend serves the cloud's resend requests ({gateway_id}/cmd/ferry/resend,
	// sent by `ferry verify -repair`) from the forwarded streams' retained
	// events. Default: on whenever the session runs and the uplink
	// forwards; set it true to run the session for it alone.
	Resend *bool `yaml:"resend"`
}

// DownlinkSubscription maps cloud topics to local ones, as a Mosquitto
// bridge's topic line does: the cloud filter is CloudPrefix+Topic, and a
// command on CloudPrefix+X is delivered locally on LocalPrefix+X.
type DownlinkSubscription struct {
	Topic       string `yaml:"topic"`        // filter below the prefixes; default "#"
	CloudPrefix string `yaml:"cloud_prefix"` // may use {gateway_id}
	LocalPrefix string `yaml:"local_prefix"`
	QoS         *int   `yaml:"qos"` // 0 or 1; default 1
	// ReplyTopic is the cloud topic (may use {gateway_id}) replies go to
	// when a command carries no MQTT 5 response topic (an MQTT 3.1.1
	// sender); empty: such commands get no reply.
	ReplyTopic string `yaml:"reply_topic"`
}

// Presence publishes the gateway's state, retained, on Topic: "online"
// when the downlink session connects, "offline" as its last will.
type Presence struct {
	// Enabled defaults to true when the downlink session runs; set it true
	// to run the session for presence alone.
	Enabled *bool  `yaml:"enabled"`
	Topic   string `yaml:"topic"` // may use {gateway_id}; default "{gateway_id}/presence"
}

// Defaults of the downlink section.
const (
	DefaultDownlinkStream        = "commands"
	DefaultDownlinkReplyStream   = "replies"
	DefaultDownlinkSessionExpiry = 24 * time.Hour
	DefaultDownlinkMaxPayload    = 256 * KiB
	DefaultPresenceTopic         = "{gateway_id}/presence"
	// DefaultCommandStreamEvents bounds the command and reply streams: a
	// board is not commanded thousands of times between two deliveries.
	DefaultCommandStreamEvents = 10_000
	DefaultCommandStreamBytes  = 16 * MiB
	// DefaultReplyWindow is how long the command stream keeps a command
	// after it arrived (its retain): a reply must come within it.
	DefaultReplyWindow = time.Hour
	// ReplyTopicPrefix is the local response topic prefix: a command with
	// a response topic is delivered with response topic ReplyTopicPrefix
	// followed by the command's offset in its stream.
	ReplyTopicPrefix = "ferry/reply/"
)

// DownlinkSession reports whether the downlink's MQTT 5 session runs: the
// uplink is on and there are commands to take or presence to publish.
func (c *Config) DownlinkSession() bool {
	if c.Uplink.Enabled == nil || !*c.Uplink.Enabled {
		return false
	}
	d := &c.Downlink
	return len(d.Subscriptions) > 0 || (d.Presence.Enabled != nil && *d.Presence.Enabled) || c.RemoteConfig.Enabled ||
		(d.Resend != nil && *d.Resend)
}

// ResendOn reports whether the downlink session serves resend requests.
func (c *Config) ResendOn() bool {
	r := c.Downlink.Resend
	return c.DownlinkSession() && (r == nil || *r)
}

// ResendTopic is where resend requests arrive: {gateway_id}/cmd/ferry/resend.
func (c *Config) ResendTopic() string { return c.GatewayID + "/cmd/ferry/resend" }

// PresenceOn reports whether presence is published.
func (c *Config) PresenceOn() bool {
	p := c.Downlink.Presence
	return c.DownlinkSession() && (p.Enabled == nil || *p.Enabled)
}

// Render replaces {gateway_id} in a downlink or presence topic.
func (c *Config) Render(t string) string {
	return strings.ReplaceAll(t, "{gateway_id}", c.GatewayID)
}

func (c *Config) setDownlinkDefaults() {
	d := &c.Downlink
	setString(&d.ClientID, c.Uplink.ClientID+"-cmd")
	setDuration(&d.SessionExpiry, DefaultDownlinkSessionExpiry)
	setString(&d.Stream, DefaultDownlinkStream)
	setString(&d.ReplyStream, DefaultDownlinkReplyStream)
	setSize(&d.MaxPayload, DefaultDownlinkMaxPayload)
	setString(&d.Presence.Topic, DefaultPresenceTopic)
	for i := range d.Subscriptions {
		s := &d.Subscriptions[i]
		setString(&s.Topic, "#")
		if s.QoS == nil {
			s.QoS = ptr(1)
		}
	}
	if !c.DownlinkSession() {
		return
	}
	// The command and reply streams get bounds of their own (rejecting,
	// so a command is refused, and resent by the cloud, rather than
	// dropped) unless buffer.streams sets them.
	for _, name := range []string{d.Stream, d.ReplyStream} {
		if c.streamListed(name) {
			continue
		}
		c.Buffer.Streams = append(c.Buffer.Streams, Stream{
			Name: name, MaxEvents: DefaultCommandStreamEvents, MaxBytes: DefaultCommandStreamBytes, Overflow: "reject",
		})
		if name == d.Stream {
			c.Buffer.Streams[len(c.Buffer.Streams)-1].Retain = DefaultReplyWindow
		}
	}
}

func (c *Config) streamListed(name string) bool {
	for _, s := range c.Buffer.Streams {
		if s.Name == name {
			return true
		}
	}
	return false
}

// IsDownlinkStream reports whether stream holds commands or replies.
func (c *Config) IsDownlinkStream(stream string) bool {
	return c.DownlinkSession() && (stream == c.Downlink.Stream || stream == c.Downlink.ReplyStream)
}

func (c *Config) validateDownlink(k *checker) {
	d := &c.Downlink
	if !c.DownlinkSession() {
		if len(d.Subscriptions) > 0 || (d.Presence.Enabled != nil && *d.Presence.Enabled) || (d.Resend != nil && *d.Resend) {
			k.add("downlink", "needs the uplink: the downlink uses the uplink's endpoints, and uplink.enabled is false")
		}
		return
	}
	if d.ClientID == c.Uplink.ClientID {
		k.add("downlink.client_id", "must differ from uplink.client_id %q: the two sessions would take each other over", d.ClientID)
	} else if err := checkMQTTString(d.ClientID); err != nil || d.ClientID == "" {
		k.add("downlink.client_id", "must be a non-empty MQTT string")
	}
	if d.SessionExpiry < 0 || d.SessionExpiry > time.Duration(1<<32-1)*time.Second {
		k.add("downlink.session_expiry", "must be between 0 and 136 years, not %s", d.SessionExpiry)
	}
	if d.MaxPayload <= 0 || d.MaxPayload > DefaultStreamBytes {
		k.add("downlink.max_payload", "must be between 1B and %s, not %s", DefaultStreamBytes, d.MaxPayload)
	}
	for _, f := range []struct{ key, name string }{{"downlink.stream", d.Stream}, {"downlink.reply_stream", d.ReplyStream}} {
		switch {
		case !validStreamName(f.name):
			k.add(f.key, "stream name %q must be 1 to 64 letters, digits, '_', '.' or '-'", f.name)
		case c.writtenByOthers(f.name):
			k.add(f.key, "stream %q is written by an ingest route, a pipeline or the dead letters: commands and replies need streams of their own", f.name)
		case c.listedForUplink(f.name):
			k.add("uplink.streams", "lists %q, the stream of %s: the uplink must not send commands or replies back up (a loop)", f.name, f.key)
		}
	}
	if d.Stream == d.ReplyStream {
		k.add("downlink.reply_stream", "must differ from downlink.stream")
	}
	for i, s := range d.Subscriptions {
		p := fmt.Sprintf("downlink.subscriptions[%d]", i)
		if s.QoS != nil && *s.QoS != 0 && *s.QoS != 1 {
			k.add(p+".qos", "must be 0 or 1, not %d", *s.QoS)
		}
		if err := checkFilter(c.Render(s.CloudPrefix + s.Topic)); err != nil {
			k.add(p+".topic", "cloud filter %q: %v", s.CloudPrefix+s.Topic, err)
		}
		if strings.ContainsAny(s.CloudPrefix, "+#") {
			k.add(p+".cloud_prefix", "must not contain wildcards: put them in topic")
		}
		if s.LocalPrefix == "" {
			if s.CloudPrefix == "" {
				k.add(p+".local_prefix", "or cloud_prefix must be set: commands would land on the very topics the cloud uses")
			}
		} else if err := checkMQTTString(s.LocalPrefix); err != nil {
			k.add(p+".local_prefix", "%v", err)
		} else if strings.ContainsAny(s.LocalPrefix, "+#") {
			k.add(p+".local_prefix", "must not contain wildcards")
		} else if strings.HasPrefix(s.LocalPrefix, "$") || strings.HasPrefix(s.LocalPrefix, ReplyTopicPrefix) {
			k.add(p+".local_prefix", "must not start with $ or %s (reserved)", ReplyTopicPrefix)
		}
		if s.ReplyTopic != "" {
			if err := checkTopicName(c.Render(s.ReplyTopic)); err != nil {
				k.add(p+".reply_topic", "%v", err)
			}
		}
	}
	if c.PresenceOn() {
		if err := checkTopicName(c.Render(d.Presence.Topic)); err != nil {
			k.add("downlink.presence.topic", "%v", err)
		}
	}
	if c.ResendOn() {
		if err := checkTopicName(c.ResendTopic()); err != nil {
			k.add("downlink.resend", "topic %q: %v", c.ResendTopic(), err)
		}
	}
}

// writtenByOthers reports whether an ingest route, a pipeline output or
// the dead letters write stream.
func (c *Config) writtenByOthers(stream string) bool {
	for _, r := range c.Ingest.Routes {
		if r.Stream == stream {
			return true
		}
	}
	for _, p := range c.Pipelines {
		for _, o := range p.Outputs {
			if o.Stream == stream {
				return true
			}
		}
	}
	return stream == c.DeadLetters.Stream
}

func (c *Config) listedForUplink(stream string) bool {
	for _, s := range c.Uplink.Streams {
		if s == stream {
			return true
		}
	}
	return false
}
