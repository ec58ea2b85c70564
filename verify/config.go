package verify

import (
	"crypto/tls"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/ferrygw/ferry/uplink"
)

// Defaults, in one place.
const (
	// DefaultTopic matches the uplink's default topic,
	// {gateway_id}/{stream}/{source}, and nothing a gateway subscribes to.
	DefaultTopic = "+/+/+"
	// DefaultSettle is how long a hole may stay open before it is judged
	// unexplained: long enough for a gateway's reconnect and resend.
	DefaultSettle = 30 * time.Second
	// DefaultMaxStreams bounds the sequence spaces (gateway, stream,
	// epoch) tracked: ten times a fleet of 1,000 gateways × 10 streams.
	DefaultMaxStreams = 100_000
	// DefaultMaxHoles bounds the holes (open or unexplained) kept per
	// sequence space.
	DefaultMaxHoles = 64
	// DefaultRepairAttempts is how many resend requests are sent for one
	// unexplained hole, one settle window apart.
	DefaultRepairAttempts = 3
	// DefaultReportEvery is the period of the progress report.
	DefaultReportEvery = 10 * time.Second
	// DefaultConnectTimeout bounds a connection attempt.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultKeepalive is the MQTT keepalive.
	DefaultKeepalive = 30 * time.Second
	// DefaultClientIDPrefix starts the default client ID.
	DefaultClientIDPrefix = "ferry-verify"
	// ResendTopicSuffix follows the gateway ID in a resend request's
	// topic: {gateway_id}/cmd/ferry/resend.
	ResendTopicSuffix = uplink.ResendTopicSuffix

	// MaxEpochs is how many epochs of one (gateway, stream) are tracked
	// at once; an older one is retired (see the package doc).
	MaxEpochs = 4
	// MaxNameBytes bounds a gateway ID, stream name or epoch: an envelope
	// with a longer one is rejected, not tracked.
	MaxNameBytes = 256
	// maxRepairsPerTick bounds the resend requests one Tick returns.
	maxRepairsPerTick = 1000
)

// Metric label modes (Config.MetricsLabels).
const (
	LabelsStream  = "stream"  // gateway and stream labels: one series per (gateway, stream)
	LabelsGateway = "gateway" // a gateway label: one series per gateway
	LabelsNone    = "none"    // fleet totals only
)

// Partition selects the gateways one instance checks: those whose ID
// hashes (FNV-1a, 64 bits) to Index modulo Count. Count 0 or 1: all.
type Partition struct {
	Index, Count int
}

// ParsePartition parses "i/N" (0 <= i < N).
func ParsePartition(s string) (Partition, error) {
	a, b, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n < 1 || i < 0 || i >= n {
		return Partition{}, fmt.Errorf("%w: partition %q: want i/N with 0 <= i < N", ErrConfig, s)
	}
	return Partition{Index: i, Count: n}, nil
}

// Owns reports whether the partition checks gateway.
func (p Partition) Owns(gateway string) bool {
	if p.Count <= 1 {
		return true
	}
	h := fnv.New64a()
	_, _ = io.WriteString(h, gateway)
	return h.Sum64()%uint64(p.Count) == uint64(p.Index)
}

// String is "i/N", or "" for all gateways.
func (p Partition) String() string {
	if p.Count <= 1 {
		return ""
	}
	return strconv.Itoa(p.Index) + "/" + strconv.Itoa(p.Count)
}

// Config configures a Checker (the fields marked "checker") and a
// Verifier (all of them). Zero values take the defaults above.
type Config struct {
	// URLs are the cloud broker's endpoints (tcp://, ssl://, tls://,
	// ws://, wss://), tried in order; several nodes of a cluster may be
	// listed.
	URLs []string
	// Topic is the topic filter the gateways publish under.
	Topic string
	// Share, when set, subscribes as $share/<Share>/<Topic> (see the
	// package doc for the caveat).
	Share string
	// ClientID is the MQTT client ID; default ferry-verify-<host>, with
	// -p<i>of<N> for a partition.
	ClientID string
	// Username and Password authenticate the client.
	Username, Password string
	// TLS is used for ssl://, tls:// and wss:// endpoints (nil: the
	// system's roots).
	TLS *tls.Config
	// CleanSession starts a new session; by default the session is
	// persistent, so messages published while the checker reconnects are
	// kept by the broker and no false hole appears.
	CleanSession bool
	// ConnectTimeout and Keepalive tune the connection.
	ConnectTimeout, Keepalive time.Duration

	// Listen is the address of the Prometheus endpoint (GET /metrics);
	// empty: none.
	Listen string
	// MetricsLabels is LabelsStream (default), LabelsGateway or LabelsNone.
	MetricsLabels string

	// ReportEvery is the period of the progress report written to
	// Progress (negative: none).
	ReportEvery time.Duration
	// Progress receives the progress report (nil: none).
	Progress io.Writer

	// Repair sends a resend request for each unexplained hole (checker).
	Repair bool
	// RepairAttempts is how many requests one hole gets (checker).
	RepairAttempts int
	// ReplyTopic is where gateways answer resend requests; default
	// <ClientID>/resend-reply.
	ReplyTopic string

	// Settle is how long a hole may stay open before it counts as
	// unexplained (checker).
	Settle time.Duration
	// MaxStreams and MaxHoles bound the checker's memory (checker).
	MaxStreams, MaxHoles int
	// Partition selects the gateways to check (checker).
	Partition Partition
	// Decode decodes a message's payload (checker); nil:
	// uplink.DecodeEnvelopes (every form a gateway sends).
	// Wire uplink.DecodeEnvelopes here to read every form.
	Decode func([]byte) ([]Envelope, error)

	// Now and Rand are the clock and the randomness (request IDs); nil:
	// time.Now and math/rand/v2.
	Now  func() time.Time
	Rand func() float64
	// Logger receives the log lines (nil: discarded).
	Logger *slog.Logger
}

// normalize validates c and fills in the defaults.
func (c Config) normalize() (Config, error) {
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	if c.Settle == 0 {
		c.Settle = DefaultSettle
	}
	if c.Settle < 0 {
		return c, fmt.Errorf("%w: settle %v is negative", ErrConfig, c.Settle)
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = DefaultMaxStreams
	}
	if c.MaxHoles == 0 {
		c.MaxHoles = DefaultMaxHoles
	}
	if c.MaxStreams < 0 || c.MaxHoles < 1 {
		return c, fmt.Errorf("%w: max streams %d, max holes %d", ErrConfig, c.MaxStreams, c.MaxHoles)
	}
	if c.RepairAttempts == 0 {
		c.RepairAttempts = DefaultRepairAttempts
	}
	if c.ReportEvery == 0 {
		c.ReportEvery = DefaultReportEvery
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.Keepalive <= 0 {
		c.Keepalive = DefaultKeepalive
	}
	switch c.MetricsLabels {
	case "":
		c.MetricsLabels = LabelsStream
	case LabelsStream, LabelsGateway, LabelsNone:
	default:
		return c, fmt.Errorf("%w: metrics labels %q: want %s, %s or %s", ErrConfig, c.MetricsLabels, LabelsStream, LabelsGateway, LabelsNone)
	}
	if p := c.Partition; p.Count > 1 && (p.Index < 0 || p.Index >= p.Count) || p.Count < 0 {
		return c, fmt.Errorf("%w: partition %d/%d", ErrConfig, p.Index, p.Count)
	}
	if c.Share != "" && strings.ContainsAny(c.Share, "/+#") {
		return c, fmt.Errorf("%w: share group %q: no '/', '+' or '#'", ErrConfig, c.Share)
	}
	if c.Decode == nil {
		c.Decode = uplink.DecodeEnvelopes
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// filter is the subscription's topic filter.
func (c *Config) filter() string {
	if c.Share != "" {
		return "$share/" + c.Share + "/" + c.Topic
	}
	return c.Topic
}
