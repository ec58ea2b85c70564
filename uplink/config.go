package uplink

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/url"
	"slices"
	"time"
)

// Defaults applied by New to zero Config fields. They match the gateway's
// configuration defaults.
const (
	DefaultInflight        = 100 // AWS IoT Core's limit on unacknowledged QoS 1 PUBLISHes
	DefaultKeepalive       = 30 * time.Second
	DefaultConnectTimeout  = 10 * time.Second
	DefaultBackoffMin      = 1 * time.Second
	DefaultBackoffMax      = 60 * time.Second
	DefaultProbeInterval   = 2 * time.Second // or BackoffMax when that is shorter
	DefaultStableAfter     = 10 * time.Second
	DefaultMaxMessageBytes = 128 << 10 // AWS IoT Core's message size limit
	// DefaultPoisonAttempts is how many times a message may end the cloud
	// connection before it is isolated (see "Poison" in the package doc):
	// two drops while it was the oldest unacknowledged publish, then one
	// attempt sent alone.
	DefaultPoisonAttempts = 3
)

// Endpoint is one cloud broker.
type Endpoint struct {
	// URL is the broker address: tcp://, ssl://, tls://, mqtts://, ws:// or wss://.
	URL string
	// TLS configures TLS for ssl, tls, mqtts and wss URLs; nil uses the defaults.
	TLS *tls.Config
}

// Config configures a Forwarder. Zero fields take the defaults noted.
type Config struct {
	// Endpoints are tried in rounds, each once, in order, starting with
	// the first or, after a lost connection, with the one after it (see
	// "Reconnecting" in the package doc); when all of a round failed the
	// forwarder backs off.
	Endpoints []Endpoint
	// ClientID is the MQTT client ID; empty means "ferry-" + GatewayID.
	ClientID string
	// Username and Password authenticate to the brokers, when set.
	Username, Password string
	// GatewayID names this gateway in messages and topics.
	GatewayID string
	// Topic is the topic template with the placeholders {gateway_id},
	// {stream}, {source}, {topic} and {id}; empty means DefaultTopic.
	Topic string
	// MaxTopicBytes bounds a rendered topic (default DefaultMaxTopicBytes,
	// 256, at least 32); a longer one is shortened (see appendTopic).
	MaxTopicBytes int
	// Format is FormatJSON (the default when empty), FormatCBOR or
	// FormatSenMLCBOR.
	Format Format
	// Compression is CompressionNone (the default when empty) or
	// CompressionZstd (see "Compression" in the package doc).
	Compression Compression
	// QoS is 1 (at least once) or 0 (at most once: an event is acked as
	// soon as it was written to the socket and is lost if the connection
	// drops before the broker has it). Zero means QoS 0, as configured.
	QoS byte
	// Inflight is the window of unacknowledged publishes (default 100).
	Inflight int
	// Keepalive is the MQTT keepalive (default 30 s).
	Keepalive time.Duration
	// ConnectTimeout bounds a connection attempt and a socket write (default 10 s).
	ConnectTimeout time.Duration
	// BackoffMin and BackoffMax bound the delay after a connection the
	// cloud refused (ErrRefused) or one lost before StableAfter: full
	// jitter below a cap that doubles from BackoffMin to BackoffMax with
	// each such failure (default 1 s, 60 s).
	BackoffMin, BackoffMax time.Duration
	// ProbeInterval is the longest pause between attempts while no
	// endpoint can be dialled at all (ErrUnreachable), so a returning cloud
	// is found within it; each pause is random in [ProbeInterval/2,
	// ProbeInterval) so a fleet probes out of step. At most BackoffMax
	// (default 2 s, or BackoffMax when shorter).
	ProbeInterval time.Duration
	// StableAfter is how long a connection must have been up for its loss
	// to reset the backoff; the first attempt then comes after a random
	// pause in [0, ProbeInterval). A connection lost sooner counts as
	// refused (default 10 s).
	StableAfter time.Duration
	// BatchMaxEvents is the most events per message, all of one stream and
	// one rendered topic; 0 or 1 turns batching off. With batching on every
	// message is an array, even of one event; off, a single envelope.
	BatchMaxEvents int
	// BatchMaxDelay, with batching on, is how long a stream's oldest
	// unsent event (by its Time) may wait for more events to fill a batch
	// of BatchMaxEvents before a smaller one is sent; 0 sends what there
	// is at once. A live stream of a few events a second is then sent in
	// one message per BatchMaxDelay instead of one per event (see "Wire
	// size" in README); a backlog, whose batches are full, never waits.
	BatchMaxDelay time.Duration
	// BatchMaxBytes caps the size of a batch message; 0 means
	// MaxMessageBytes. An event alone is still sent when it exceeds
	// BatchMaxBytes but not MaxMessageBytes.
	BatchMaxBytes int
	// MaxMessageBytes is the largest message the cloud accepts (default
	// 128 KiB). An event that alone does not fit is dropped (acked) and
	// counted in Status.Dropped["oversize"].
	MaxMessageBytes int
	// MessagesPerSecond and BytesPerSecond cap the uplink; 0 means no cap.
	MessagesPerSecond, BytesPerSecond float64
	// Priorities maps stream names to priorities, 0 the highest, at most
	// MaxPriority: when the window, the rate caps or the budget are scarce
	// a stream's events go only after those of every stream of a higher
	// priority (see budget.go). Unlisted streams have DefaultPriority.
	Priorities map[string]int
	// DefaultPriority is the priority of the streams Priorities does not
	// list (1..MaxPriority; 0 means DefaultPriority, 1): priority 0, which
	// may spend the whole budget, is only given by name.
	DefaultPriority int
	// Budget is the link's data budget per period; Budget.Bytes 0 (the
	// default) means none (see budget.go).
	Budget Budget
	// PoisonAttempts is how many times one message may end an established
	// cloud connection before it is isolated: moved to DeadLetters and
	// acked, so its stream goes on (default 3, at least 2; QoS 1 only).
	PoisonAttempts int
	// DeadLetters receives isolated messages' events; nil drops them
	// (counted in Status.Dropped["poison"] either way).
	DeadLetters DeadLetterer
	// Streams lists the streams to forward; empty means every stream of the
	// queue, re-listed whenever it changes.
	Streams []string
	// Logger receives the forwarder's lines; nil means slog.Default(). A
	// flapping link or a stream of events that cannot be sent writes them
	// at any rate, so it should rate-limit repeats, as the gateway's
	// logger (internal/logging) does; the forwarder does not limit them
	// itself, so that there is one limit, with one summary line. The
	// gateway scopes it with component=uplink.
	Logger *slog.Logger
	// Now is the clock (default time.Now); tests inject one.
	Now func() time.Time
	// Rand returns a uniform float64 in [0, 1) for backoff jitter (default
	// math/rand/v2.Float64); tests inject one.
	Rand func() float64
}

// validURLSchemes are the schemes paho dials.
var validURLSchemes = map[string]bool{
	"tcp": true, "mqtt": true, "ssl": true, "tls": true, "mqtts": true, "ws": true, "wss": true,
}

// tlsSchemes are the schemes paho dials over TLS.
var tlsSchemes = map[string]bool{"ssl": true, "tls": true, "mqtts": true, "wss": true}

// normalize returns c with defaults applied, or an error naming the first
// invalid field.
func (c Config) normalize() (Config, error) {
	if len(c.Endpoints) == 0 {
		return c, fmt.Errorf("%w: no endpoints", ErrConfig)
	}
	for i, ep := range c.Endpoints {
		u, err := url.Parse(ep.URL)
		if err != nil || !validURLSchemes[u.Scheme] || u.Host == "" {
			return c, fmt.Errorf("%w: endpoints[%d]: bad URL %q", ErrConfig, i, ep.URL)
		}
		if ep.TLS != nil && !tlsSchemes[u.Scheme] {
			// paho would silently dial in the clear: a TLS config with a
			// plain URL is a mistake, never a fallback.
			return c, fmt.Errorf("%w: endpoints[%d]: TLS is configured but %q is not a TLS URL (ssl://, tls://, mqtts://, wss://)", ErrConfig, i, ep.URL)
		}
	}
	if c.ClientID == "" {
		if c.GatewayID == "" {
			return c, fmt.Errorf("%w: ClientID and GatewayID are both empty", ErrConfig)
		}
		c.ClientID = "ferry-" + c.GatewayID
	}
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	switch c.Format {
	case "":
		c.Format = FormatJSON
	case FormatJSON, FormatCBOR, FormatSenMLCBOR:
	default:
		return c, fmt.Errorf("%w: format %q", ErrConfig, c.Format)
	}
	switch c.Compression {
	case "":
		c.Compression = CompressionNone
	case CompressionNone, CompressionZstd:
	default:
		return c, fmt.Errorf("%w: compression %q", ErrConfig, c.Compression)
	}
	if c.QoS != 0 && c.QoS != 1 {
		return c, fmt.Errorf("%w: QoS %d (0 or 1)", ErrConfig, c.QoS)
	}
	if c.Inflight == 0 {
		c.Inflight = DefaultInflight
	}
	if c.Inflight < 1 || c.Inflight > 65535 {
		return c, fmt.Errorf("%w: Inflight %d (1..65535)", ErrConfig, c.Inflight)
	}
	c.Keepalive = orDefault(c.Keepalive, DefaultKeepalive)
	c.ConnectTimeout = orDefault(c.ConnectTimeout, DefaultConnectTimeout)
	c.BackoffMin = orDefault(c.BackoffMin, DefaultBackoffMin)
	c.BackoffMax = orDefault(c.BackoffMax, DefaultBackoffMax)
	if c.Keepalive < time.Second || c.ConnectTimeout < 0 || c.BackoffMin < 0 || c.BackoffMax < c.BackoffMin {
		return c, fmt.Errorf("%w: keepalive %v (>= 1s), connect timeout %v, backoff %v..%v",
			ErrConfig, c.Keepalive, c.ConnectTimeout, c.BackoffMin, c.BackoffMax)
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = min(DefaultProbeInterval, c.BackoffMax)
	}
	c.StableAfter = orDefault(c.StableAfter, DefaultStableAfter)
	// A probe interval above BackoffMax would probe an absent cloud more
	// slowly than it retries one that refuses.
	if c.ProbeInterval <= 0 || c.ProbeInterval > c.BackoffMax || c.StableAfter < 0 {
		return c, fmt.Errorf("%w: probe interval %v (> 0, <= backoff max %v), stable after %v (>= 0)",
			ErrConfig, c.ProbeInterval, c.BackoffMax, c.StableAfter)
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxTopicBytes == 0 {
		c.MaxTopicBytes = DefaultMaxTopicBytes
	}
	if c.MaxTopicBytes < minTopicBytes || c.MaxTopicBytes > 65535 {
		return c, fmt.Errorf("%w: MaxTopicBytes %d (%d..65535)", ErrConfig, c.MaxTopicBytes, minTopicBytes)
	}
	if c.PoisonAttempts == 0 {
		c.PoisonAttempts = DefaultPoisonAttempts
	}
	if c.PoisonAttempts < 2 {
		return c, fmt.Errorf("%w: PoisonAttempts %d (>= 2)", ErrConfig, c.PoisonAttempts)
	}
	if c.BatchMaxEvents == 0 {
		c.BatchMaxEvents = 1
	}
	if c.BatchMaxBytes == 0 || c.BatchMaxBytes > c.MaxMessageBytes {
		c.BatchMaxBytes = c.MaxMessageBytes
	}
	if c.MaxMessageBytes < 64 || c.BatchMaxEvents < 1 || c.BatchMaxEvents > MaxBatchEvents || c.BatchMaxBytes < 1 {
		return c, fmt.Errorf("%w: MaxMessageBytes %d (>= 64), batch %d events (1..%d), %d bytes",
			ErrConfig, c.MaxMessageBytes, c.BatchMaxEvents, MaxBatchEvents, c.BatchMaxBytes)
	}
	if c.BatchMaxDelay < 0 {
		return c, fmt.Errorf("%w: BatchMaxDelay %v (>= 0)", ErrConfig, c.BatchMaxDelay)
	}
	if c.MessagesPerSecond < 0 || c.BytesPerSecond < 0 {
		return c, fmt.Errorf("%w: negative rate", ErrConfig)
	}
	if c.DefaultPriority == 0 {
		c.DefaultPriority = DefaultPriority
	}
	if c.DefaultPriority < 1 || c.DefaultPriority > MaxPriority {
		return c, fmt.Errorf("%w: DefaultPriority %d (1..%d)", ErrConfig, c.DefaultPriority, MaxPriority)
	}
	for name, p := range c.Priorities {
		if p < 0 || p > MaxPriority {
			return c, fmt.Errorf("%w: Priorities[%q] %d (0..%d)", ErrConfig, name, p, MaxPriority)
		}
	}
	c.Priorities = maps.Clone(c.Priorities)
	if c.Budget.Bytes > 0 {
		var err error
		if c.Budget, err = normalizeBudget(c.Budget); err != nil {
			return c, err
		}
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
	if len(c.Streams) > 0 {
		c.Streams = slices.Clone(c.Streams)
	} else {
		c.Streams = nil // all streams
	}
	return c, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
