package bench

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// Defaults used by ParseFlags and, for zero fields, by Run.
const (
	DefaultBroker       = "tcp://127.0.0.1:1883"
	DefaultPublishers   = 50
	DefaultMessages     = 1000
	DefaultQoS          = 1
	DefaultPayloadSize  = 100
	DefaultInflight     = 1
	DefaultTopic        = "bench"
	DefaultClientPrefix = "ferry-bench"
	DefaultSubTopic     = "#"
	DefaultSettle       = 2 * time.Second
	DefaultTimeout      = 5 * time.Minute
)

// Limits enforced by Config validation.
const (
	// MaxPublishers bounds the number of concurrent connections.
	MaxPublishers = 10000
	// MaxPayloadSize is the largest payload ferry accepts (16 MiB).
	MaxPayloadSize = 16 << 20
	// MaxInflight is the most QoS 1 message IDs an MQTT connection has.
	MaxInflight = math.MaxUint16
)

// Config describes one benchmark run. Zero values of Broker, PayloadSize,
// Inflight, Topic, ClientPrefix, SubTopic and Now are replaced by the
// defaults above; a zero Settle means report as soon as publishing ends, and
// a zero Timeout means no bound other than the context's.
type Config struct {
	// Broker is the tcp://host:port URL of the broker to publish to.
	Broker string
	// Publishers is the number of concurrent publishers, one MQTT
	// connection each.
	Publishers int
	// Messages is the number of messages each publisher sends; 0 only
	// connects (see Hold).
	Messages int
	// QoS is the publish QoS, 0 or 1.
	QoS byte
	// PayloadSize is the size of every payload in bytes; at least
	// HeaderSize.
	PayloadSize int
	// Inflight is the per-publisher window of unacknowledged publishes
	// (1 = stop-and-wait).
	Inflight int
	// Topic is the topic prefix: publisher i publishes to <Topic>/<i>.
	Topic string
	// ClientPrefix prefixes the MQTT client IDs, which also carry the run ID
	// so concurrent runs do not take over each other's sessions.
	ClientPrefix string
	// Username and Password authenticate both publishers and subscriber.
	Username, Password string

	// Subscribe is the tcp://host:port URL of the cloud broker to subscribe
	// to; empty selects publish-only mode.
	Subscribe string
	// SubTopic is the topic filter subscribed to at the cloud (e.g. "#").
	SubTopic string
	// Settle is how long to wait for stragglers after the last PUBACK
	// before reporting (ParseFlags default DefaultSettle); the wait ends
	// early once every published message has arrived.
	Settle time.Duration
	// Hold is how long to keep every publisher's connection open, idle
	// with its keepalive running, after publishing (and settling) ends and
	// before disconnecting; zero disconnects at once. With Messages 0 the
	// publishers only connect and hold, e.g. to measure a broker's memory
	// with many idle clients.
	Hold time.Duration
	// Timeout bounds the whole run, including connecting, settling and
	// holding.
	Timeout time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time

	// Unwrap, when non-nil, replaces the default extraction of payloads
	// from a cloud message (ferry's envelope decoder). It returns nil when
	// b is not an envelope.
	Unwrap func(b []byte) [][]byte

	// JSON records the -json flag: the caller should print the report with
	// WriteJSON rather than WriteText. Run ignores it.
	JSON bool
}

// withDefaults returns c with zero fields defaulted, or an error naming the
// first invalid field.
func (c Config) withDefaults() (Config, error) {
	if c.Broker == "" {
		c.Broker = DefaultBroker
	}
	if c.PayloadSize == 0 {
		c.PayloadSize = DefaultPayloadSize
	}
	if c.Inflight == 0 {
		c.Inflight = DefaultInflight
	}
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	if c.ClientPrefix == "" {
		c.ClientPrefix = DefaultClientPrefix
	}
	if c.SubTopic == "" {
		c.SubTopic = DefaultSubTopic
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Unwrap == nil {
		c.Unwrap = defaultUnwrap
	}
	return c, c.validate()
}

func (c *Config) validate() error {
	switch {
	case !validURL(c.Broker):
		return fmt.Errorf("bench: broker %q: want tcp://host:port", c.Broker)
	case c.Subscribe != "" && !validURL(c.Subscribe):
		return fmt.Errorf("bench: subscribe broker %q: want tcp://host:port", c.Subscribe)
	case c.Publishers < 1 || c.Publishers > MaxPublishers:
		return fmt.Errorf("bench: %d publishers: want 1..%d", c.Publishers, MaxPublishers)
	case c.Messages < 0 || int64(c.Messages) > math.MaxUint32:
		return fmt.Errorf("bench: %d messages per publisher: want 0..%d", c.Messages, uint32(math.MaxUint32))
	case c.QoS > 1:
		return fmt.Errorf("bench: qos %d: want 0 or 1", c.QoS)
	case c.PayloadSize < HeaderSize || c.PayloadSize > MaxPayloadSize:
		return fmt.Errorf("bench: payload size %d: want %d (the header) to %d bytes", c.PayloadSize, HeaderSize, MaxPayloadSize)
	case c.Inflight < 1 || c.Inflight > MaxInflight:
		return fmt.Errorf("bench: inflight %d: want 1..%d", c.Inflight, MaxInflight)
	case strings.ContainsAny(c.Topic, "+#\x00") || strings.HasPrefix(c.Topic, "$"):
		return fmt.Errorf("bench: topic prefix %q: must not contain wildcards or start with $", c.Topic)
	case c.Settle < 0:
		return fmt.Errorf("bench: settle %v: must not be negative", c.Settle)
	case c.Hold < 0:
		return fmt.Errorf("bench: hold %v: must not be negative", c.Hold)
	case c.Timeout < 0:
		return fmt.Errorf("bench: timeout %v: must not be negative", c.Timeout)
	}
	return nil
}

// validURL accepts the schemes paho dials over plain or TLS TCP.
func validURL(s string) bool {
	for _, p := range []string{"tcp://", "mqtt://", "ssl://", "tls://", "mqtts://", "tcps://", "ws://", "wss://"} {
		if rest, ok := strings.CutPrefix(s, p); ok {
			return rest != ""
		}
	}
	return false
}

// ParseFlags parses the arguments of `ferry bench` (without the subcommand
// name). Usage and parse errors are written to stderr; -h yields an error
// wrapping flag.ErrHelp.
func ParseFlags(args []string, stderr io.Writer) (Config, error) {
	if stderr == nil {
		stderr = io.Discard
	}
	c := Config{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: ferry bench [flags]\n\nPublish load to an MQTT broker and report throughput and latency;\nwith -sub, also check delivery end to end at a second broker.\n\nflags:\n")
		fs.PrintDefaults()
	}
	var qos uint
	fs.StringVar(&c.Broker, "broker", DefaultBroker, "`url` of the broker to publish to")
	fs.IntVar(&c.Publishers, "n", DefaultPublishers, "number of concurrent publishers (one connection each)")
	fs.IntVar(&c.Messages, "m", DefaultMessages, "messages per publisher (0: connect only, see -hold)")
	fs.UintVar(&qos, "qos", DefaultQoS, "publish QoS (0 or 1)")
	fs.IntVar(&c.PayloadSize, "size", DefaultPayloadSize, fmt.Sprintf("payload size in bytes (at least %d)", HeaderSize))
	fs.IntVar(&c.Inflight, "inflight", DefaultInflight, "unacknowledged QoS 1 publishes per publisher (1 = stop-and-wait)")
	fs.StringVar(&c.Topic, "topic", DefaultTopic, "topic `prefix`; publisher i publishes to <prefix>/<i>")
	fs.StringVar(&c.ClientPrefix, "client-prefix", DefaultClientPrefix, "MQTT client ID `prefix`")
	fs.StringVar(&c.Username, "username", "", "MQTT username")
	fs.StringVar(&c.Password, "password", "", "MQTT password")
	fs.StringVar(&c.Subscribe, "sub", "", "`url` of the cloud broker to check delivery at (empty: publish only)")
	fs.StringVar(&c.SubTopic, "sub-topic", DefaultSubTopic, "topic `filter` to subscribe to at the cloud broker")
	fs.DurationVar(&c.Settle, "settle", DefaultSettle, "how long to wait for stragglers after the last PUBACK")
	fs.DurationVar(&c.Hold, "hold", 0, "keep all connections open, idle, this long after publishing before disconnecting")
	fs.DurationVar(&c.Timeout, "timeout", DefaultTimeout, "bound on the whole run, hold included (0: none)")
	fs.BoolVar(&c.JSON, "json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, fmt.Errorf("bench: %w", err)
		}
		return Config{}, fmt.Errorf("bench: parse flags: %w", err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return Config{}, fmt.Errorf("bench: unexpected argument %q", fs.Arg(0))
	}
	if qos > 1 {
		err := fmt.Errorf("bench: -qos %d: want 0 or 1", qos)
		fmt.Fprintln(stderr, err)
		return Config{}, err
	}
	c.QoS = byte(qos)
	if _, err := c.withDefaults(); err != nil {
		fmt.Fprintln(stderr, err)
		return Config{}, err
	}
	return c, nil
}
