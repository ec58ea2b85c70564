package config

import (
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Defaults. firmware-config/reference.yaml documents them for users; a test
// keeps the two in step.
const (
	DefaultGatewayID      = "ferry" // if the hostname is unknown
	DefaultDataDir        = "/var/lib/ferry"
	DefaultLogLevel       = "info"
	DefaultLogFormat      = "auto"
	DefaultBrokerListen   = ":1883"
	DefaultMaxPacketSize  = 256 * KiB
	DefaultDurability     = "sync"
	DefaultBatchInterval  = 2 * time.Second
	DefaultCommitInterval = 500 * time.Millisecond
	DefaultAckInterval    = 5 * time.Second
	DefaultMaxBatch       = 2048
	DefaultRouteFilter    = "#"
	DefaultStream         = "telemetry"
	DefaultBufferFile     = "buffer.db" // in DataDir
	DefaultMinFreeDisk    = 64 * MiB
	DefaultOnCorrupt      = "quarantine"
	DefaultStreamEvents   = 1_000_000
	DefaultStreamBytes    = 256 * MiB
	DefaultOverflow       = "drop_largest"  // one source cannot evict the others' events
	DefaultRollupInterval = 5 * time.Minute // overflow: rollup
	DefaultTopic          = "{gateway_id}/{stream}/{source}"
	DefaultFormat         = "json"
	// DefaultCompression: zstd cuts a batch of JSON sensor readings by
	// about 80% but a single envelope by under 1% (README, "Wire size"),
	// and batching is off by default; a cloud consumer must also read zstd.
	DefaultCompression    = "none"
	DefaultQoS            = 1
	DefaultInflight       = 100 // AWS IoT Core's limit on unacknowledged QoS 1 PUBLISHes
	DefaultKeepalive      = 30 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	DefaultBackoffMin     = 1 * time.Second
	DefaultBackoffMax     = 60 * time.Second
	DefaultProbeInterval  = 2 * time.Second // or backoff.max when shorter
	DefaultStableAfter    = 10 * time.Second
	DefaultBatchEvents    = 1 // format json: one event per message
	// DefaultBatchEventsCBOR batches formats cbor and senml+cbor: a cloud
	// that stores each message with a replicated write (NATS JetStream)
	// drains 20× faster with 100 events a message (README, Running a fleet).
	DefaultBatchEventsCBOR = 100
	DefaultBatchBytes      = 128 * KiB
	DefaultMaxMessage      = 128 * KiB // AWS IoT Core's message size limit
	DefaultMaxTopic        = 256       // AWS IoT Core's topic size limit
	DefaultPoisonAttempts  = 3         // two drops as the oldest unacked message, one sent alone
	DefaultStatusListen    = "127.0.0.1:8080"
	DefaultLogInterval     = 30 * time.Second
	DefaultDemoInterval    = 1 * time.Second
	DefaultDemoTopic       = "demo/sensor"
	DefaultMaxInflight     = 32
	DefaultMaxQueued       = 1000 // as Mosquitto's max_queued_messages
	DefaultMaxKeepalive    = 5 * time.Minute
	DefaultUsernameFrom    = "cn"
	DefaultTLSMinVersion   = "1.2"
	DefaultLoginFailures   = 5
	DefaultLoginWindow     = time.Minute
	DefaultLoginBlock      = time.Minute
	DefaultAuditFile       = "audit.log" // in DataDir
	DefaultAuditMaxSize    = 1 * MiB
	DefaultAuditMaxFiles   = 3

	// remote_config (remote.go).
	DefaultRemoteConfigTopic  = "{gateway_id}/config"
	DefaultRemoteStatusTopic  = "{gateway_id}/config/status"
	DefaultRemoteRollbackTime = 2 * time.Minute

	// The broker's memory budget (README, "Limits"): with these, what
	// clients can make it hold stays within a few tens of MB, so the
	// gateway fits a 512 MB board whatever they send. Kept equal to
	// gateway/broker's Default* constants.
	DefaultMaxConnectSize       = 8 * KiB
	DefaultMaxConnecting        = 64
	DefaultBrokerConnectTimeout = 10 * time.Second
	DefaultMaxRetained          = 1000
	DefaultMaxRetainedBytes     = 1 * MiB
	DefaultMaxClientSubs        = 64
	DefaultMaxSubscriptions     = 2000
	DefaultMaxOfflineSessions   = 256
	DefaultMaxSessionExpiry     = 7 * 24 * time.Hour
	DefaultMaxSessionQueueBytes = 256 * KiB
	DefaultMaxQueueBytes        = 4 * MiB
)

// Defaults of uplink.default_priority and uplink.budget.
const (
	// DefaultDefaultPriority is the priority of streams uplink.priorities
	// does not list: "normal", between alerts (0) and bulk (2).
	DefaultDefaultPriority = 1
	DefaultBudgetResetDay  = 1
	DefaultBudgetLocation  = "UTC"
)

// DefaultBudgetReserve is uplink.budget.reserve's default: priority 1
// leaves the last 10% of the budget to priority 0, priority 2 and below
// the last 30% to priorities 0 and 1.
var DefaultBudgetReserve = []float64{0, 0.1, 0.3}

// SetDefaults fills every unset field with its default. It is the one place
// defaults are set; Load calls it before Validate, and code that builds a
// Config by hand should call it too. It is idempotent.
//
// A zero value means "unset", except for keys where zero is meaningful and
// the key was written in the loaded file: "uplink.qos: 0" keeps QoS 0,
// `status.listen: ""` disables the status endpoint and
// "status.log_interval: 0" disables the periodic health line.
func (c *Config) SetDefaults() {
	if c.GatewayID == "" {
		c.GatewayID = DefaultGatewayID
		if h, err := os.Hostname(); err == nil && h != "" {
			c.GatewayID = h
		}
	}
	setString(&c.DataDir, DefaultDataDir)

	setString(&c.Log.Level, DefaultLogLevel)
	setString(&c.Log.Format, DefaultLogFormat)

	b := &c.Broker
	if b.Listen == "" && !c.explicit("broker.listen") {
		// Written as "", listen turns the plain listener off (TLS only).
		b.Listen = DefaultBrokerListen
	}
	setSize(&b.MaxPacketSize, DefaultMaxPacketSize)
	if b.PersistSessions == nil {
		b.PersistSessions = ptr(true)
	}
	if b.MaxInflight == 0 {
		b.MaxInflight = DefaultMaxInflight
	}
	if b.MaxQueued == 0 {
		b.MaxQueued = DefaultMaxQueued
	}
	setDuration(&b.MaxKeepalive, DefaultMaxKeepalive)
	setString(&b.TLS.UsernameFrom, DefaultUsernameFrom)
	setString(&b.TLS.MinVersion, DefaultTLSMinVersion)
	if b.LoginLimit.Failures == 0 && !c.explicit("broker.login_limit.failures") {
		b.LoginLimit.Failures = DefaultLoginFailures
	}
	setDuration(&b.LoginLimit.Window, DefaultLoginWindow)
	setDuration(&b.LoginLimit.Block, DefaultLoginBlock)
	setSize(&b.MaxConnectSize, DefaultMaxConnectSize)
	setInt(&b.MaxConnecting, DefaultMaxConnecting)
	setDuration(&b.ConnectTimeout, DefaultBrokerConnectTimeout)
	setInt(&b.MaxRetained, DefaultMaxRetained)
	setSize(&b.MaxRetainedBytes, DefaultMaxRetainedBytes)
	setInt(&b.MaxSubscriptionsPerClient, DefaultMaxClientSubs)
	setInt(&b.MaxSubscriptions, DefaultMaxSubscriptions)
	setInt(&b.MaxOfflineSessions, DefaultMaxOfflineSessions)
	setDuration(&b.MaxSessionExpiry, DefaultMaxSessionExpiry)
	setSize(&b.MaxSessionQueueBytes, DefaultMaxSessionQueueBytes)
	setSize(&b.MaxQueueBytes, DefaultMaxQueueBytes)

	a := &c.Audit
	if a.Enabled == nil {
		a.Enabled = ptr(true)
	}
	if a.File == "" {
		a.File = filepath.Join(c.DataDir, DefaultAuditFile)
	}
	setSize(&a.MaxSize, DefaultAuditMaxSize)
	if a.MaxFiles == 0 {
		a.MaxFiles = DefaultAuditMaxFiles
	}

	in := &c.Ingest
	setString(&in.Durability, DefaultDurability)
	setDuration(&in.BatchInterval, DefaultBatchInterval)
	if in.CommitInterval == 0 && !c.explicit("ingest.commit_interval") {
		in.CommitInterval = DefaultCommitInterval
	}
	if in.MaxBatch == 0 {
		in.MaxBatch = DefaultMaxBatch
	}
	if len(in.Routes) == 0 {
		in.Routes = []Route{{Topics: []string{DefaultRouteFilter}, Stream: DefaultStream}}
	}

	buf := &c.Buffer
	if buf.Path == "" {
		buf.Path = filepath.Join(c.DataDir, DefaultBufferFile)
	}
	setSize(&buf.MinFreeDisk, DefaultMinFreeDisk)
	if buf.AckInterval == 0 && !c.explicit("buffer.ack_interval") {
		buf.AckInterval = DefaultAckInterval
	}
	setString(&buf.OnCorrupt, DefaultOnCorrupt)
	have := map[string]bool{}
	for _, s := range buf.Streams {
		have[s.Name] = true
	}
	for _, r := range in.Routes {
		// A stream only named by a route gets a default entry; invalid
		// names are left for Validate to report on the route.
		if !have[r.Stream] && validStreamName(r.Stream) {
			have[r.Stream] = true
			buf.Streams = append(buf.Streams, Stream{Name: r.Stream})
		}
	}
	for i := range buf.Streams {
		s := &buf.Streams[i]
		if s.MaxEvents == 0 {
			s.MaxEvents = DefaultStreamEvents
		}
		setSize(&s.MaxBytes, DefaultStreamBytes)
		setString(&s.Overflow, DefaultOverflow)
		if s.Overflow == "rollup" {
			setDuration(&s.Rollup.Interval, DefaultRollupInterval)
		}
	}

	c.setDriverDefaults()
	c.setPipelineDefaults()

	u := &c.Uplink
	if u.Enabled == nil {
		u.Enabled = ptr(len(u.Endpoints) > 0)
	}
	setString(&u.ClientID, c.GatewayID)
	setString(&u.Topic, DefaultTopic)
	setString(&u.Format, DefaultFormat)
	setString(&u.Compression, DefaultCompression)
	if u.QoS == 0 && !c.explicit("uplink.qos") {
		u.QoS = DefaultQoS
	}
	if u.Inflight == 0 {
		u.Inflight = DefaultInflight
	}
	setDuration(&u.Keepalive, DefaultKeepalive)
	setDuration(&u.ConnectTimeout, DefaultConnectTimeout)
	setDuration(&u.Backoff.Min, DefaultBackoffMin)
	setDuration(&u.Backoff.Max, DefaultBackoffMax)
	setDuration(&u.Backoff.ProbeInterval, min(DefaultProbeInterval, u.Backoff.Max))
	setDuration(&u.Backoff.StableAfter, DefaultStableAfter)
	if u.Batch.MaxEvents == 0 {
		u.Batch.MaxEvents = DefaultBatchEvents
		if u.Format != "json" {
			// A CBOR consumer decodes arrays anyway (SenML packs are
			// arrays); a JSON one (AWS IoT rules SQL, Azure IoT Hub
			// routing queries) addresses fields of one object.
			u.Batch.MaxEvents = DefaultBatchEventsCBOR
		}
	}
	setSize(&u.Batch.MaxBytes, DefaultBatchBytes)
	setSize(&u.MaxMessage, DefaultMaxMessage)
	setSize(&u.MaxTopic, DefaultMaxTopic)
	if u.PoisonAttempts == 0 {
		u.PoisonAttempts = DefaultPoisonAttempts
	}
	if u.DefaultPriority == 0 && !c.explicit("uplink.default_priority") {
		u.DefaultPriority = DefaultDefaultPriority // an explicit 0 is refused
	}
	setInt(&u.Budget.ResetDay, DefaultBudgetResetDay)
	setString(&u.Budget.Location, DefaultBudgetLocation)
	if len(u.Budget.Reserve) == 0 {
		u.Budget.Reserve = slices.Clone(DefaultBudgetReserve)
	}
	c.setDownlinkDefaults()

	if c.Status.Listen == "" && !c.explicit("status.listen") {
		c.Status.Listen = DefaultStatusListen
	}
	if c.Status.LogInterval == 0 && !c.explicit("status.log_interval") {
		c.Status.LogInterval = DefaultLogInterval
	}

	rc := &c.RemoteConfig
	setString(&rc.Topic, DefaultRemoteConfigTopic)
	setString(&rc.StatusTopic, DefaultRemoteStatusTopic)
	setDuration(&rc.RollbackAfter, DefaultRemoteRollbackTime)

	setDuration(&c.Demo.Interval, DefaultDemoInterval)
	setString(&c.Demo.Topic, DefaultDemoTopic)
}

// explicit reports whether path was written in the loaded file with a
// non-null value.
func (c *Config) explicit(path string) bool {
	if c.src == nil {
		return false
	}
	_, ok := c.src.lines[path]
	return ok
}

func setString(p *string, def string) {
	if *p == "" {
		*p = def
	}
}

func setSize(p *ByteSize, def ByteSize) {
	if *p == 0 {
		*p = def
	}
}

func setInt(p *int, def int) {
	if *p == 0 {
		*p = def
	}
}

func setDuration(p *time.Duration, def time.Duration) {
	if *p == 0 {
		*p = def
	}
}

func ptr[T any](v T) *T { return &v }
