// Package config loads, defaults and validates ferry's YAML configuration.
//
// Load is the one place a config is read: unknown keys are errors, and every
// error names the key path (e.g. "uplink.endpoints[0].url") and the line it
// is on. Defaults are filled in one function, Config.SetDefaults, before
// Validate runs. Loaded configs are plain values and safe to share read-only.
package config

import "time"

// Config is the whole gateway configuration.
type Config struct {
	// GatewayID names this gateway to the cloud; it appears in cloud topics.
	GatewayID string `yaml:"gateway_id"`
	// DataDir holds the buffer and the broker's session state.
	DataDir string `yaml:"data_dir"`
	Log     Log    `yaml:"log"`
	Broker  Broker `yaml:"broker"`
	Ingest  Ingest `yaml:"ingest"`
	Buffer  Buffer `yaml:"buffer"`
	Uplink  Uplink `yaml:"uplink"`
	// Downlink carries commands from the cloud to local topics.
	Downlink Downlink `yaml:"downlink"`
	Status   Status   `yaml:"status"`
	Audit    Audit    `yaml:"audit"`
	// Pipelines turn ingested events into results (rules pipeline).
	Pipelines   []Pipeline  `yaml:"pipelines"`
	DeadLetters DeadLetters `yaml:"dead_letters"`
	// Drivers read sensors wired to the board (I2C, 1-Wire, GPIO).
	Drivers        []Driver       `yaml:"drivers"`
	DriverSettings DriverSettings `yaml:"driver_settings"`
	Demo           Demo           `yaml:"demo"`
	// RemoteConfig lets the cloud push signed configurations (remote.go).
	RemoteConfig RemoteConfig `yaml:"remote_config"`

	// src records the file and the line of every key written in it, for
	// error messages and for telling explicit zeros from absent keys; nil
	// for a Config built in code.
	src *source
}

// Log configures log/slog output.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // auto, text, json
}

// Broker configures the embedded MQTT broker.
type Broker struct {
	Listen          string   `yaml:"listen"`           // TCP address, e.g. ":1883"
	Websocket       string   `yaml:"websocket"`        // optional websocket address
	AllowAnonymous  bool     `yaml:"allow_anonymous"`  // must be said by name
	MaxPacketSize   ByteSize `yaml:"max_packet_size"`  // larger packets disconnect the client
	PersistSessions *bool    `yaml:"persist_sessions"` // keep sessions, subscriptions, retained and queued messages across restarts
	MaxClients      int      `yaml:"max_clients"`      // 0: no limit
	// UsersFile lists the clients that may connect with a user name and
	// password, one "user:bcrypt-hash" a line (ferry passwd writes it).
	UsersFile string `yaml:"users_file"`
	// ACL limits what clients may publish and subscribe to: the first rule
	// whose user matches applies, and anything it does not allow is
	// denied. Empty: connected clients may do anything.
	ACL []ACLRule `yaml:"acl"`
	// TLS adds a TLS listener (with optional client certificates).
	TLS BrokerTLS `yaml:"tls"`
	// MaxInflight bounds each client's unacknowledged QoS 1/2 messages in
	// each direction.
	MaxInflight int `yaml:"max_inflight"`
	// MaxQueued bounds the QoS 1/2 messages in flight to, or queued for,
	// each client, offline sessions included; beyond it a message is
	// dropped for that client, counted and audited.
	MaxQueued int `yaml:"max_queued"`
	// MaxKeepalive is the longest keep-alive a client may ask for; a client
	// asking for more, or for none, is held to this one.
	MaxKeepalive time.Duration `yaml:"max_keepalive"`
	// LoginLimit blocks addresses that fail to log in too often.
	LoginLimit LoginLimit `yaml:"login_limit"`

	// The memory budget: what clients can make the broker hold (README,
	// "Limits"). Each refusal is counted (ferry status, /metrics).

	// MaxConnectSize bounds the CONNECT packet; larger: connection closed.
	MaxConnectSize ByteSize `yaml:"max_connect_size"`
	// MaxConnecting bounds connections not yet past CONNECT (and login).
	MaxConnecting int `yaml:"max_connecting"`
	// ConnectTimeout is how long a connection has to send CONNECT.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// MaxRetained and MaxRetainedBytes bound the retained messages.
	MaxRetained      int      `yaml:"max_retained"`
	MaxRetainedBytes ByteSize `yaml:"max_retained_bytes"`
	// MaxSubscriptionsPerClient and MaxSubscriptions bound subscriptions.
	MaxSubscriptionsPerClient int `yaml:"max_subscriptions_per_client"`
	MaxSubscriptions          int `yaml:"max_subscriptions"`
	// MaxOfflineSessions bounds the persistent sessions kept while their
	// clients are away; MaxSessionExpiry is the longest one is kept.
	MaxOfflineSessions int           `yaml:"max_offline_sessions"`
	MaxSessionExpiry   time.Duration `yaml:"max_session_expiry"`
	// MaxSessionQueueBytes and MaxQueueBytes bound the QoS 1/2 payload
	// bytes queued or in flight per client and in all.
	MaxSessionQueueBytes ByteSize `yaml:"max_session_queue_bytes"`
	MaxQueueBytes        ByteSize `yaml:"max_queue_bytes"`
}

// BrokerTLS configures the broker's TLS listener.
type BrokerTLS struct {
	Listen            string `yaml:"listen"`              // address, e.g. ":8883"; empty: no TLS listener
	CertFile          string `yaml:"cert_file"`           // PEM certificate chain
	KeyFile           string `yaml:"key_file"`            // PEM private key
	ClientCAFile      string `yaml:"client_ca_file"`      // CAs for client certificates; empty: none asked
	RequireClientCert bool   `yaml:"require_client_cert"` // refuse clients without a certificate
	UsernameFrom      string `yaml:"username_from"`       // cn or san
	MinVersion        string `yaml:"min_version"`         // "1.2" or "1.3"
}

// LoginLimit configures failed-login limiting per remote address.
type LoginLimit struct {
	Failures int           `yaml:"failures"` // failures per window before blocking; 0: off
	Window   time.Duration `yaml:"window"`
	Block    time.Duration `yaml:"block"`
}

// Audit configures the security audit log.
type Audit struct {
	Enabled  *bool    `yaml:"enabled"`
	File     string   `yaml:"file"`      // default: <data_dir>/audit.log
	MaxSize  ByteSize `yaml:"max_size"`  // per file before rotation
	MaxFiles int      `yaml:"max_files"` // rotated files kept
}

// ACLRule says what the clients it applies to may publish and subscribe
// to. In the filters %u stands for the user name and %c for the client ID.
type ACLRule struct {
	User      string   `yaml:"user"`      // user name, or "*" for every client
	Publish   []string `yaml:"publish"`   // MQTT topic filters the client may publish to
	Subscribe []string `yaml:"subscribe"` // filters the client may subscribe within
	// ClientIDs: the client IDs the rule's users may connect with ('*'
	// any characters, %u the user name, e.g. "%u-*"); empty: any.
	ClientIDs []string `yaml:"client_ids"`
}

// Ingest says which PUBLISHes become events and how durably.
type Ingest struct {
	Durability    string        `yaml:"durability"`     // sync, batch, none
	BatchInterval time.Duration `yaml:"batch_interval"` // batch: commit at most this often
	// CommitInterval (sync): how long a commit started after a quiet
	// spell is held open for other sensors' readings; 0 disables.
	CommitInterval time.Duration `yaml:"commit_interval"`
	MaxBatch       int           `yaml:"max_batch"` // events per commit at most
	Routes         []Route       `yaml:"routes"`
}

// Route sends events whose topic matches any filter to a stream.
type Route struct {
	Topics      []string `yaml:"topics"`       // MQTT topic filters
	Stream      string   `yaml:"stream"`       // buffer stream name
	ContentType string   `yaml:"content_type"` // default MIME type for the payload
	// Forward says whether the uplink forwards these events raw; default:
	// yes unless a pipeline reads the stream.
	Forward *bool `yaml:"forward"`
}

// Buffer configures the durable log.
type Buffer struct {
	Path        string   `yaml:"path"`          // default: <data_dir>/buffer.db
	MinFreeDisk ByteSize `yaml:"min_free_disk"` // stop taking events below this much free space
	// AckInterval bounds how long delivered events' positions wait for a
	// commit when nothing is appended; 0: commit each at once.
	AckInterval time.Duration `yaml:"ack_interval"`
	OnCorrupt   string        `yaml:"on_corrupt"` // quarantine or fail
	Streams     []Stream      `yaml:"streams"`
	// Encryption seals buffered events at rest.
	Encryption Encryption `yaml:"encryption"`
}

// Encryption configures encryption at rest.
type Encryption struct {
	KeyFile string `yaml:"key_file"` // key file ("ferry key new" writes it); empty: events stored in the clear
}

// Stream bounds one stream of the buffer.
type Stream struct {
	Name      string        `yaml:"name"`
	MaxEvents int64         `yaml:"max_events"`
	MaxBytes  ByteSize      `yaml:"max_bytes"`
	Overflow  string        `yaml:"overflow"` // drop_largest, drop_oldest, reject or rollup
	TTL       time.Duration `yaml:"ttl"`      // 0: keep until forwarded
	// Retain keeps forwarded events this long after they were accepted,
	// so `ferry buffer replay` can send them again; 0: delete once sent.
	Retain time.Duration `yaml:"retain"`
	// Rollup configures overflow: rollup.
	Rollup Rollup `yaml:"rollup"`
}

// Rollup configures the rollup overflow policy of a stream.
type Rollup struct {
	// Interval is the aggregation window of the oldest events replaced
	// by aggregates when the stream is full.
	Interval time.Duration `yaml:"interval"`
}

// Uplink configures forwarding to the cloud.
type Uplink struct {
	Enabled        *bool         `yaml:"enabled"`
	Endpoints      []Endpoint    `yaml:"endpoints"` // tried in order
	ClientID       string        `yaml:"client_id"`
	Username       string        `yaml:"username"`
	Password       string        `yaml:"password"`
	PasswordFile   string        `yaml:"password_file"`
	TLS            TLS           `yaml:"tls"`
	Topic          string        `yaml:"topic"`       // template: {gateway_id} {stream} {source} {topic} {id}
	Format         string        `yaml:"format"`      // json, cbor or senml+cbor
	Compression    string        `yaml:"compression"` // none or zstd (batches and SenML packs)
	QoS            int           `yaml:"qos"`
	Inflight       int           `yaml:"inflight"`
	Keepalive      time.Duration `yaml:"keepalive"`
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	Backoff        Backoff       `yaml:"backoff"`
	Batch          Batch         `yaml:"batch"`
	MaxMessage     ByteSize      `yaml:"max_message_size"`
	MaxTopic       ByteSize      `yaml:"max_topic_size"`  // longer rendered topics are shortened
	PoisonAttempts int           `yaml:"poison_attempts"` // drops a message may cause before it is dead-lettered
	Rate           Rate          `yaml:"rate"`
	Streams        []string      `yaml:"streams"` // empty: all

	// Priorities maps stream names to priorities, 0 the highest; streams
	// not listed have DefaultPriority (README, "Data budget").
	Priorities      map[string]int `yaml:"priorities"`
	DefaultPriority int            `yaml:"default_priority"`
	Budget          Budget         `yaml:"budget"`
}

// Budget is the uplink's monthly data budget (README, "Data budget").
type Budget struct {
	Monthly  ByteSize `yaml:"monthly"`   // 0: no budget
	ResetDay int      `yaml:"reset_day"` // 1..28
	Location string   `yaml:"location"`  // IANA time zone of the period boundaries
	// Reserve[p] is the share of the budget priority p leaves to higher
	// priorities; past the end, the last entry.
	Reserve []float64 `yaml:"reserve"`
}

// Endpoint is one cloud broker.
type Endpoint struct {
	URL string `yaml:"url"` // tcp://, ssl://, tls://, mqtts://, ws://, wss://
	TLS *TLS   `yaml:"tls"` // overrides Uplink.TLS for this endpoint
}

// TLS configures a TLS client.
type TLS struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
	// PinSHA256 lists base64 SHA-256 hashes of public keys (SPKI); when
	// set, the server's verified chain must contain one of them.
	PinSHA256 []string `yaml:"pin_sha256"`
}

// Backoff paces reconnects: a cloud that cannot be reached is probed every
// ProbeInterval (jittered); one that refuses, or drops a connection within
// StableAfter, is retried with full jitter under a cap growing from Min to
// Max.
type Backoff struct {
	Min           time.Duration `yaml:"min"`
	Max           time.Duration `yaml:"max"`
	ProbeInterval time.Duration `yaml:"probe_interval"`
	StableAfter   time.Duration `yaml:"stable_after"`
}

// Batch packs several events into one cloud message.
type Batch struct {
	MaxEvents int      `yaml:"max_events"` // 1: no batching
	MaxBytes  ByteSize `yaml:"max_bytes"`
	// MaxDelay is how long a stream's oldest unsent event may wait for
	// more to fill a batch; 0: send what there is at once.
	MaxDelay time.Duration `yaml:"max_delay"`
}

// Rate caps the uplink; zero means no cap.
type Rate struct {
	MessagesPerSecond float64  `yaml:"messages_per_second"`
	BytesPerSecond    ByteSize `yaml:"bytes_per_second"`
}

// Status configures the local status endpoint and the periodic health line.
type Status struct {
	Listen      string        `yaml:"listen"` // loopback HTTP address; empty disables
	LogInterval time.Duration `yaml:"log_interval"`
	// Pprof serves /debug/pprof on the status listener (off by default).
	Pprof bool `yaml:"pprof"`
}

// Demo runs a built-in sensor and a stand-in cloud, for `make run`.
type Demo struct {
	Sensors  int           `yaml:"sensors"`  // demo publishers; 0: none
	Interval time.Duration `yaml:"interval"` // between readings of one sensor
	Topic    string        `yaml:"topic"`    // prefix; sensor i publishes <topic>/<i>
	Cloud    DemoCloud     `yaml:"cloud"`
}

// DemoCloud is an embedded broker standing in for the cloud.
type DemoCloud struct {
	Listen  string        `yaml:"listen"` // empty: no stand-in cloud
	UpFor   time.Duration `yaml:"up_for"` // with DownFor: a periodic outage
	DownFor time.Duration `yaml:"down_for"`
}
