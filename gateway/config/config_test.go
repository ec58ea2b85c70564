package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	firmwareconfig "github.com/ferrygw/ferry/firmware-config"
)

// load is LoadBytes that fails the test on error.
func load(t *testing.T, yml string) *Config {
	t.Helper()
	c, err := LoadBytes([]byte(yml), "ferry.yaml")
	if err != nil {
		t.Fatalf("LoadBytes:\n%v", err)
	}
	return c
}

func TestFirmwareConfigs(t *testing.T) {
	names, err := fs.Glob(firmwareconfig.FS, "*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"default.yaml", "reference.yaml", "aws-iot-core.yaml", "mosquitto-cloud.yaml"} {
		if !slices.Contains(names, want) {
			t.Errorf("firmware-config lacks %s (has %v)", want, names)
		}
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			data, err := firmwareconfig.FS.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			c, err := Parse(data, name)
			if err != nil {
				t.Fatalf("Parse:\n%v", err)
			}
			c.SetDefaults()
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate:\n%v", err)
			}
			for _, w := range c.Warnings() {
				t.Logf("warning: %v", w)
			}
		})
	}
}

func TestDefaultYAML(t *testing.T) {
	data, err := firmwareconfig.FS.ReadFile("default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := firmwareconfig.Default(); string(got) != string(data) {
		t.Fatal("Default() differs from default.yaml")
	}
	c, err := LoadBytes(firmwareconfig.Default(), "default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("default.yaml has warnings: %v", Errors(w))
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"gateway_id", c.GatewayID, "ferry-demo"},
		{"data_dir", c.DataDir, "./.ferry-data"},
		{"buffer.path", c.Buffer.Path, filepath.Join(".ferry-data", "buffer.db")},
		{"broker.listen", c.Broker.Listen, "127.0.0.1:1883"},
		{"allow_anonymous", c.Broker.AllowAnonymous, true},
		{"durability", c.Ingest.Durability, "sync"},
		{"routes", c.Ingest.Routes, []Route{{Topics: []string{"demo/#", "sensors/#"}, Stream: "telemetry"}}},
		{"streams", len(c.Buffer.Streams), 2}, // telemetry and driver_status
		{"drivers", len(c.Drivers), 1},
		{"driver stream", c.Drivers[0].Stream, "telemetry"},
		{"uplink.enabled", *c.Uplink.Enabled, true},
		{"uplink.url", c.Uplink.Endpoints[0].URL, "tcp://127.0.0.1:1884"},
		{"uplink.topic", c.Uplink.Topic, "{gateway_id}/{stream}/{source}"},
		{"status", c.Status, Status{Listen: "127.0.0.1:8080", LogInterval: 5 * time.Second}},
		{"demo", c.Demo, Demo{Sensors: 3, Interval: time.Second, Topic: "demo/sensor",
			Cloud: DemoCloud{Listen: "127.0.0.1:1884", UpFor: 20 * time.Second, DownFor: 10 * time.Second}}},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.want) {
			t.Errorf("%s = %#v, want %#v", ck.name, ck.got, ck.want)
		}
	}
}

// TestReferenceIsDefaults keeps reference.yaml honest: loading it gives the
// same Config as loading an empty file, and it mentions every key.
func TestReferenceIsDefaults(t *testing.T) {
	data, err := firmwareconfig.FS.ReadFile("reference.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ref := load(t, string(data))
	empty := load(t, "")
	ref.src, empty.src = nil, nil
	if !reflect.DeepEqual(ref, empty) {
		t.Errorf("reference.yaml does not hold the defaults:\n got  %+v\n want %+v", ref, empty)
	}
	for _, key := range yamlKeys(reflect.TypeFor[Config]()) {
		if !regexp.MustCompile(`(?m)^[\s#-]*` + regexp.QuoteMeta(key) + `:`).Match(data) {
			t.Errorf("reference.yaml does not document key %q", key)
		}
	}
}

// yamlKeys lists the yaml names of t's fields, recursively.
func yamlKeys(t reflect.Type) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == durationType {
		return nil
	}
	var keys []string
	for name, i := range fieldsOf(t).index {
		keys = append(keys, name)
		keys = append(keys, yamlKeys(t.Field(i).Type)...)
	}
	return keys
}

func TestDefaults(t *testing.T) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "ferry"
	}
	want := &Config{
		GatewayID: host,
		DataDir:   "/var/lib/ferry",
		Log:       Log{Level: "info", Format: "auto"},
		Broker: Broker{Listen: ":1883", MaxPacketSize: 256 * KiB, PersistSessions: ptr(true),
			TLS:         BrokerTLS{UsernameFrom: "cn", MinVersion: "1.2"},
			MaxInflight: 32, MaxQueued: 1000, MaxKeepalive: 5 * time.Minute,
			LoginLimit:     LoginLimit{Failures: 5, Window: time.Minute, Block: time.Minute},
			MaxConnectSize: 8 * KiB, MaxConnecting: 64, ConnectTimeout: 10 * time.Second,
			MaxRetained: 1000, MaxRetainedBytes: MiB, MaxSubscriptionsPerClient: 64, MaxSubscriptions: 2000,
			MaxOfflineSessions: 256, MaxSessionExpiry: 7 * 24 * time.Hour,
			MaxSessionQueueBytes: 256 * KiB, MaxQueueBytes: 4 * MiB},
		Ingest: Ingest{Durability: "sync", BatchInterval: 2 * time.Second, CommitInterval: 500 * time.Millisecond, MaxBatch: 2048,
			Routes: []Route{{Topics: []string{"#"}, Stream: "telemetry"}}},
		Buffer: Buffer{Path: "/var/lib/ferry/buffer.db", MinFreeDisk: 64 * MiB, AckInterval: 5 * time.Second, OnCorrupt: "quarantine",
			Streams: []Stream{{Name: "telemetry", MaxEvents: 1_000_000, MaxBytes: 256 * MiB, Overflow: "drop_largest"}}},
		Uplink: Uplink{Enabled: ptr(false), ClientID: host, Topic: "{gateway_id}/{stream}/{source}",
			Format: "json", Compression: "none", QoS: 1, Inflight: 100, Keepalive: 30 * time.Second, ConnectTimeout: 10 * time.Second,
			Backoff: Backoff{Min: time.Second, Max: time.Minute, ProbeInterval: 2 * time.Second, StableAfter: 10 * time.Second},
			Batch:   Batch{MaxEvents: 1, MaxBytes: 128 * KiB}, MaxMessage: 128 * KiB, MaxTopic: 256, PoisonAttempts: 3,
			DefaultPriority: 1, Budget: Budget{ResetDay: 1, Location: "UTC", Reserve: []float64{0, 0.1, 0.3}}},
		Downlink: Downlink{ClientID: host + "-cmd", SessionExpiry: 24 * time.Hour, Stream: "commands", ReplyStream: "replies",
			MaxPayload: 256 * KiB, Presence: Presence{Topic: "{gateway_id}/presence"}},
		Status:         Status{Listen: "127.0.0.1:8080", LogInterval: 30 * time.Second},
		Audit:          Audit{Enabled: ptr(true), File: "/var/lib/ferry/audit.log", MaxSize: MiB, MaxFiles: 3},
		DeadLetters:    DeadLetters{Stream: DefaultDeadLetterStream, MaxPayload: DefaultDeadLetterMaxPayload},
		DriverSettings: DriverSettings{BackoffMax: DefaultDriverBackoffMax, StatusStream: DefaultDriverStatus},
		Demo:           Demo{Interval: time.Second, Topic: "demo/sensor"},
		RemoteConfig: RemoteConfig{Topic: "{gateway_id}/config", StatusTopic: "{gateway_id}/config/status",
			RollbackAfter: 2 * time.Minute},
	}
	for _, tc := range []struct{ name, yml string }{
		{"empty", ""},
		{"braces", "{}"},
		{"comment", "# nothing here\n"},
		{"nulls", "log:\nbroker: ~\nuplink: null\n"},
		{"document marker", "---\n...\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := load(t, tc.yml)
			c.src = nil
			if !reflect.DeepEqual(c, want) {
				t.Errorf("got  %+v\nwant %+v", c, want)
			}
		})
	}
	t.Run("code", func(t *testing.T) {
		var c Config
		c.SetDefaults()
		if !reflect.DeepEqual(&c, want) {
			t.Errorf("got  %+v\nwant %+v", &c, want)
		}
		if err := c.Validate(); err != nil {
			t.Error(err)
		}
	})
	t.Run("idempotent", func(t *testing.T) {
		c := load(t, "ingest: {routes: [{topics: [a], stream: s1}]}")
		before := *c
		c.SetDefaults()
		if !reflect.DeepEqual(*c, before) {
			t.Errorf("second SetDefaults changed the config:\n%+v\n%+v", *c, before)
		}
	})
}

func TestSetDefaultsDetails(t *testing.T) {
	t.Run("streams from routes", func(t *testing.T) {
		c := load(t, `
data_dir: /data
ingest:
  routes:
    - {topics: [a/#], stream: s1}
    - {topics: [b/#], stream: s2}
    - {topics: [c/#], stream: s1}
buffer:
  streams:
    - {name: s2, max_events: 5}
uplink:
  endpoints: [{url: "ssl://h:8883"}]
`)
		want := []Stream{
			{Name: "s2", MaxEvents: 5, MaxBytes: 256 * MiB, Overflow: "drop_largest"},
			{Name: "s1", MaxEvents: 1_000_000, MaxBytes: 256 * MiB, Overflow: "drop_largest"},
		}
		if !reflect.DeepEqual(c.Buffer.Streams, want) {
			t.Errorf("streams = %+v, want %+v", c.Buffer.Streams, want)
		}
		if c.Buffer.Path != "/data/buffer.db" {
			t.Errorf("buffer.path = %q", c.Buffer.Path)
		}
		if !*c.Uplink.Enabled {
			t.Error("uplink not enabled by endpoints")
		}
	})
	t.Run("explicit zeros kept", func(t *testing.T) {
		c := load(t, "uplink: {qos: 0}\nstatus: {listen: '', log_interval: 0}\n")
		if c.Uplink.QoS != 0 || c.Status.Listen != "" || c.Status.LogInterval != 0 {
			t.Errorf("qos %d, status %+v: explicit zeros were defaulted", c.Uplink.QoS, c.Status)
		}
	})
	t.Run("explicit false kept", func(t *testing.T) {
		c := load(t, "broker: {persist_sessions: false}\nuplink: {enabled: false, endpoints: [{url: 'tcp://h:1883'}]}\n")
		if *c.Broker.PersistSessions || *c.Uplink.Enabled {
			t.Error("explicit false was defaulted to true")
		}
	})
	t.Run("client id follows gateway id", func(t *testing.T) {
		c := load(t, "gateway_id: gw7\n")
		if c.Uplink.ClientID != "gw7" {
			t.Errorf("client_id = %q", c.Uplink.ClientID)
		}
	})
	t.Run("merge keys", func(t *testing.T) {
		c := load(t, `
buffer:
  streams:
    - &base {name: a, max_events: 5, overflow: reject}
    - <<: *base
      name: b
`)
		if s := c.Buffer.Streams[1]; s.Name != "b" || s.MaxEvents != 5 || s.Overflow != "reject" {
			t.Errorf("merged stream = %+v", s)
		}
	})
	t.Run("rollup interval", func(t *testing.T) {
		c := load(t, "buffer:\n  streams:\n    - {name: a, overflow: rollup}\n    - {name: b, overflow: rollup, rollup: {interval: 1m}}\n")
		if a, b := c.Buffer.Streams[0], c.Buffer.Streams[1]; a.Rollup.Interval != DefaultRollupInterval || b.Rollup.Interval != time.Minute {
			t.Errorf("rollup intervals %s and %s, want %s (default) and 1m", a.Rollup.Interval, b.Rollup.Interval, DefaultRollupInterval)
		}
	})
	t.Run("batching follows the format", func(t *testing.T) {
		for _, tc := range []struct {
			yaml string
			want int
		}{
			{"uplink: {format: json}\n", DefaultBatchEvents},
			{"uplink: {format: cbor}\n", DefaultBatchEventsCBOR},
			{"uplink: {format: senml+cbor}\n", DefaultBatchEventsCBOR},
			{"uplink: {format: cbor, batch: {max_events: 1}}\n", 1},
			{"uplink: {batch: {max_events: 7}}\n", 7},
		} {
			if got := load(t, tc.yaml).Uplink.Batch.MaxEvents; got != tc.want {
				t.Errorf("%q: batch.max_events = %d, want %d", tc.yaml, got, tc.want)
			}
		}
	})
	t.Run("yaml number forms", func(t *testing.T) {
		c := load(t, "ingest: {max_batch: 0x10}\nbuffer: {min_free_disk: 1_000_000}\nuplink: {rate: {messages_per_second: 2.5}}\n")
		if c.Ingest.MaxBatch != 16 || c.Buffer.MinFreeDisk != 1_000_000 || c.Uplink.Rate.MessagesPerSecond != 2.5 {
			t.Errorf("got %d %d %v", c.Ingest.MaxBatch, c.Buffer.MinFreeDisk, c.Uplink.Rate.MessagesPerSecond)
		}
	})
}

// problem is what a test expects of one Error.
type problem struct {
	line int
	path string
}

func TestBadConfigs(t *testing.T) {
	tests := []struct {
		name string
		yml  string
		want []problem
		msg  string // a substring of the first problem's message
	}{
		// Decoding.
		{"unknown top-level key", "brokr:\n  listen: :1883\n",
			[]problem{{1, "brokr"}}, `did you mean "broker"`},
		{"unknown key at depth", "uplink:\n  endpoints:\n    - url: ssl://h:8883\n      tls:\n        certfile: /a\n",
			[]problem{{5, "uplink.endpoints[0].tls.certfile"}}, `did you mean "cert_file"`},
		{"unknown key in list item", "ingest:\n  routes:\n    - topics: [a]\n      stream: s\n    - topics: [b]\n      streams: s\n",
			[]problem{{5, "ingest.routes[1].stream"}, {6, "ingest.routes[1].streams"}}, "must name"},
		{"duplicate key", "log:\n  level: info\n  level: debug\n",
			[]problem{{3, "log.level"}}, "duplicate key (first set on line 2)"},
		{"string for int", "ingest:\n  max_batch: lots\n",
			[]problem{{2, "ingest.max_batch"}}, `must be a whole number, not the string "lots"`},
		{"quoted int", "uplink:\n  inflight: \"10\"\n",
			[]problem{{2, "uplink.inflight"}}, "whole number"},
		{"int overflow", "uplink:\n  qos: 99999999999999999999\n",
			[]problem{{2, "uplink.qos"}}, "out of range"},
		// Security.
		{"no listener at all", "broker:\n  listen: \"\"\n",
			[]problem{{2, "broker.listen"}}, "no listener"},
		{"tls without cert", "broker:\n  tls:\n    listen: :8883\n",
			[]problem{{2, "broker.tls.cert_file"}, {2, "broker.tls.key_file"}}, "must be set"},
		{"tls file without listener", "broker:\n  tls:\n    cert_file: /c.pem\n",
			[]problem{{3, "broker.tls.cert_file"}}, "no TLS listener"},
		{"tls 1.1", "broker:\n  tls:\n    listen: :8883\n    cert_file: c\n    key_file: k\n    min_version: \"1.1\"\n",
			[]problem{{6, "broker.tls.min_version"}}, `one of 1.2, 1.3`},
		{"client cert without ca", "broker:\n  tls: {listen: ':8883', cert_file: c, key_file: k, require_client_cert: true}\n",
			[]problem{{2, "broker.tls.require_client_cert"}}, "client_ca_file"},
		{"keepalive", "broker:\n  max_keepalive: 0.5s\n",
			[]problem{{2, "broker.max_keepalive"}}, "at least 1s"},
		{"budget count", "broker:\n  max_retained: -1\n",
			[]problem{{2, "broker.max_retained"}}, "at least 1"},
		{"budget connect size", "broker:\n  max_connect_size: 10B\n",
			[]problem{{2, "broker.max_connect_size"}}, "between 64B"},
		{"budget session expiry", "broker:\n  max_session_expiry: 2000000h\n",
			[]problem{{2, "broker.max_session_expiry"}}, "MQTT limit"},
		{"plain endpoint with tls", "uplink:\n  endpoints:\n    - url: ssl://a:8883\n    - url: tcp://b:1883\n  tls:\n    ca_file: /ca.pem\n",
			[]problem{{4, "uplink.endpoints[1].url"}}, "never falls back"},
		{"plain endpoint with its tls", "uplink:\n  endpoints:\n    - url: ws://b:80\n      tls: {ca_file: /ca.pem}\n",
			[]problem{{3, "uplink.endpoints[0].url"}}, "never falls back"},
		{"bad pin", "uplink:\n  endpoints: [{url: 'ssl://a:8883'}]\n  tls:\n    pin_sha256: [abc]\n",
			[]problem{{4, "uplink.tls.pin_sha256[0]"}}, "base64 SHA-256"},
		{"audit too small", "audit:\n  max_size: 100B\n",
			[]problem{{2, "audit.max_size"}}, "4KiB"},
		{"yes is not a bool", "broker:\n  allow_anonymous: yes\n",
			[]problem{{2, "broker.allow_anonymous"}}, "true or false"},
		{"scalar for mapping", "log: debug\n",
			[]problem{{1, "log"}}, "must be a mapping"},
		{"list for string", "gateway_id: [a, b]\n",
			[]problem{{1, "gateway_id"}}, "must be a string, not a list"},
		{"string for list", "ingest:\n  routes:\n    - topics: sensors/#\n      stream: s\n",
			[]problem{{3, "ingest.routes[0].topics"}}, "must be a list"},
		{"duration without unit", "uplink:\n  keepalive: 30\n",
			[]problem{{2, "uplink.keepalive"}}, `like "30s"`},
		{"bad duration", "status:\n  log_interval: 5 minutes\n",
			[]problem{{2, "status.log_interval"}}, `not "5 minutes"`},
		{"bad byte size", "buffer:\n  streams:\n    - name: a\n      max_bytes: 64 MegaBytes\n",
			[]problem{{4, "buffer.streams[0].max_bytes"}}, "unknown unit"},
		{"negative byte size", "buffer:\n  min_free_disk: -1\n",
			[]problem{{2, "buffer.min_free_disk"}}, "negative"},
		{"non-finite float", "uplink:\n  rate:\n    messages_per_second: .inf\n",
			[]problem{{3, "uplink.rate.messages_per_second"}}, "finite"},
		{"yaml syntax", "log:\n  level: [info\n",
			[]problem{{2, ""}}, "bad YAML: did not find expected ',' or ']'"},
		{"tab indentation", "log:\n\tlevel: info\n",
			[]problem{{2, ""}}, "bad YAML"},
		{"root is a list", "- a\n- b\n",
			[]problem{{1, ""}}, "must be a mapping"},
		{"two documents", "log: {level: info}\n---\nlog: {level: debug}\n",
			[]problem{{2, ""}}, "only one YAML document"},
		{"non-string key", "log:\n  [a]: b\n",
			[]problem{{2, "log"}}, "keys must be strings"},
		{"self-referential alias", "log: &a\n  <<: *a\n",
			[]problem{{2, "log"}}, "refers to itself"},
		{"unknown anchor", "log: *nope\n",
			[]problem{{1, ""}}, "alias *nope refers to no anchor"},

		// Enums.
		{"bad durability", "ingest:\n  durability: fsync\n",
			[]problem{{2, "ingest.durability"}}, `must be one of sync, batch, none, not "fsync"`},
		{"bad overflow", "buffer:\n  streams:\n    - name: a\n      overflow: drop_newest\n",
			[]problem{{4, "buffer.streams[0].overflow"}}, "drop_oldest, reject"},
		{"rollup interval without rollup", "buffer:\n  streams:\n    - name: a\n      overflow: drop_oldest\n      rollup:\n        interval: 1m\n",
			[]problem{{6, "buffer.streams[0].rollup.interval"}}, `applies to overflow: rollup only, not "drop_oldest"`},
		{"negative rollup interval", "buffer:\n  streams:\n    - name: a\n      overflow: rollup\n      rollup: {interval: -1m}\n",
			[]problem{{5, "buffer.streams[0].rollup.interval"}}, "must be a positive duration"},
		{"bad on_corrupt", "buffer:\n  on_corrupt: ignore\n",
			[]problem{{2, "buffer.on_corrupt"}}, "quarantine, fail"},
		{"bad log level", "log:\n  level: verbose\n",
			[]problem{{2, "log.level"}}, "debug, info, warn, error"},
		{"bad log format", "log:\n  format: xml\n",
			[]problem{{2, "log.format"}}, "auto, text, json"},
		{"explicit empty enum", "ingest:\n  durability: ''\n",
			[]problem{}, ""}, // empty means default, like an absent key
		{"bad uplink format", "uplink:\n  format: protobuf\n",
			[]problem{{2, "uplink.format"}}, "json, cbor, senml+cbor"},
		{"bad uplink compression", "uplink:\n  compression: gzip\n",
			[]problem{{2, "uplink.compression"}}, "none, zstd"},
		{"zstd without batches", "uplink:\n  compression: zstd\n",
			[]problem{{2, "uplink.compression"}}, "batches only"},
		{"negative batch delay", "uplink:\n  batch:\n    max_events: 10\n    max_delay: -1s\n",
			[]problem{{4, "uplink.batch.max_delay"}}, "negative"},
		{"batch delay without batches", "uplink:\n  batch:\n    max_delay: 10s\n",
			[]problem{{3, "uplink.batch.max_delay"}}, "max_events is 1"},
		{"qos 2", "uplink:\n  qos: 2\n",
			[]problem{{2, "uplink.qos"}}, "QoS 2 is not supported"},
		{"inflight too big", "uplink:\n  inflight: 70000\n",
			[]problem{{2, "uplink.inflight"}}, "between 1 and 65535"},
		{"topic bound too small", "uplink:\n  max_topic_size: 16B\n",
			[]problem{{2, "uplink.max_topic_size"}}, "between 32B and 65535B"},
		{"one poison attempt", "uplink:\n  poison_attempts: 1\n",
			[]problem{{2, "uplink.poison_attempts"}}, "at least 2"},
		{"priority of an unknown stream", "uplink:\n  priorities:\n    telemetry: 1\n    nosuch: 0\n",
			[]problem{{4, "uplink.priorities.nosuch"}}, "names no stream in buffer.streams"},
		{"priority out of range", "uplink:\n  priorities: {telemetry: 10}\n",
			[]problem{{2, "uplink.priorities.telemetry"}}, "between 0 (highest) and 9"},
		{"priority twice", "uplink:\n  priorities:\n    telemetry: 1\n    telemetry: 2\n",
			[]problem{{4, "uplink.priorities.telemetry"}}, ""},
		{"priorities not a mapping", "uplink:\n  priorities: [telemetry]\n",
			[]problem{{2, "uplink.priorities"}}, "must be a mapping"},
		{"priority not a number", "uplink:\n  priorities:\n    telemetry: high\n",
			[]problem{{3, "uplink.priorities.telemetry"}}, "whole number"},
		{"default priority 0", "uplink:\n  default_priority: 0\n",
			[]problem{{2, "uplink.default_priority"}}, "between 1 and 9"},
		{"negative budget", "uplink:\n  budget:\n    monthly: -1\n",
			[]problem{{3, "uplink.budget.monthly"}}, ""},
		{"reset day 31", "uplink:\n  budget:\n    monthly: 500MB\n    reset_day: 31\n",
			[]problem{{4, "uplink.budget.reset_day"}}, "between 1 and 28"},
		{"unknown time zone", "uplink:\n  budget:\n    location: Mars/Olympus\n",
			[]problem{{3, "uplink.budget.location"}}, "IANA time zone"},
		{"reserve of priority 0", "uplink:\n  budget:\n    reserve: [0.1, 0.2]\n",
			[]problem{{3, "uplink.budget.reserve[0]"}}, "must be 0"},
		{"reserve of 1", "uplink:\n  budget:\n    reserve: [0, 1]\n",
			[]problem{{3, "uplink.budget.reserve[1]"}}, "[0, 1)"},
		{"reserve decreasing", "uplink:\n  budget:\n    reserve: [0, 0.5, 0.2]\n",
			[]problem{{3, "uplink.budget.reserve[2]"}}, "not be less than uplink.budget.reserve[1]"},
		{"budget ok", "uplink:\n  priorities: {telemetry: 0}\n  default_priority: 2\n  budget:\n    monthly: 500MB\n    reset_day: 28\n    location: Europe/Berlin\n    reserve: [0, 0.2]\n",
			nil, ""},

		// URLs, filters, templates, addresses.
		{"http url", "uplink:\n  endpoints:\n    - url: https://example.com:443\n",
			[]problem{{3, "uplink.endpoints[0].url"}}, "must be a tcp://, ssl://, tls://, mqtts://, ws:// or wss:// URL"},
		{"url without scheme", "uplink:\n  endpoints:\n    - url: example.com:8883\n",
			[]problem{{3, "uplink.endpoints[0].url"}}, "must be a tcp://"},
		{"url without port", "uplink:\n  endpoints:\n    - url: ssl://ok:8883\n    - url: ssl://example.com\n",
			[]problem{{4, "uplink.endpoints[1].url"}}, "host and a port"},
		{"url with credentials", "uplink:\n  endpoints:\n    - url: tcp://u:p@h:1883\n",
			[]problem{{3, "uplink.endpoints[0].url"}}, "credentials"},
		{"missing url", "uplink:\n  endpoints:\n    - tls: {ca_file: /ca.pem}\n",
			[]problem{{3, "uplink.endpoints[0].url"}}, "not empty"},
		{"enabled without endpoints", "uplink:\n  enabled: true\n",
			[]problem{{2, "uplink.enabled"}}, "no broker"},
		{"hash not last", "ingest:\n  routes:\n    - topics: [ok/#, sensors/#/temp]\n      stream: s\n",
			[]problem{{3, "ingest.routes[0].topics[1]"}}, "# must be the last level"},
		{"plus inside level", "ingest:\n  routes:\n    - topics:\n        - a/b\n        - sensors/temp+\n      stream: s\n",
			[]problem{{5, "ingest.routes[0].topics[1]"}}, "+ must be a whole level"},
		{"empty filter", "ingest:\n  routes:\n    - topics: ['']\n      stream: s\n",
			[]problem{{3, "ingest.routes[0].topics[0]"}}, "must not be empty"},
		{"nul in filter", "ingest:\n  routes:\n    - topics: [\"a\\0b\"]\n      stream: s\n",
			[]problem{{3, "ingest.routes[0].topics[0]"}}, "NUL"},
		{"no topics", "ingest:\n  routes:\n    - stream: s\n",
			[]problem{{3, "ingest.routes[0].topics"}}, "at least one"},
		{"route without stream", "ingest:\n  routes:\n    - topics: [a]\n",
			[]problem{{3, "ingest.routes[0].stream"}}, "must name"},
		{"bad stream name", "ingest:\n  routes:\n    - topics: [a]\n      stream: my stream\n",
			[]problem{{4, "ingest.routes[0].stream"}}, "letters, digits"},
		{"duplicate stream", "buffer:\n  streams:\n    - name: a\n    - name: b\n    - name: a\n",
			[]problem{{5, "buffer.streams[2].name"}}, "already defined by buffer.streams[0]"},
		{"uplink streams unknown", "uplink:\n  streams: [telemetry, nope]\n",
			[]problem{{2, "uplink.streams[1]"}}, `"nope"`},
		{"unknown placeholder", "uplink:\n  topic: \"{gateway}/{stream}\"\n",
			[]problem{{2, "uplink.topic"}}, "unknown placeholder {gateway}"},
		{"unclosed placeholder", "uplink:\n  topic: \"{gateway_id/x\"\n",
			[]problem{{2, "uplink.topic"}}, "without a matching"},
		{"wildcard in template", "uplink:\n  topic: \"{gateway_id}/#\"\n",
			[]problem{{2, "uplink.topic"}}, "wildcards"},
		{"slash in gateway id", "gateway_id: a/b\n",
			[]problem{{1, "gateway_id"}}, "must not contain /"},
		{"status on all interfaces", "status:\n  listen: :8080\n",
			[]problem{{2, "status.listen"}}, "no authentication"},
		{"status on lan address", "status:\n  log_interval: 5s\n  listen: 192.168.1.10:8080\n",
			[]problem{{3, "status.listen"}}, "must be a loopback address"},
		{"bad listen", "broker:\n  listen: 1883\n",
			[]problem{{2, "broker.listen"}}, "host:port"},
		{"acl wildcard inside level", "broker:\n  acl:\n    - user: \"*\"\n      publish: [\"sensors/%u/#\", \"a/b#\"]\n",
			[]problem{{4, "broker.acl[0].publish[1]"}}, "# must be a whole level"},
		{"acl unknown placeholder", "broker:\n  acl:\n    - user: s1\n      subscribe: [\"cmd/%x\"]\n",
			[]problem{{4, "broker.acl[0].subscribe[0]"}}, "%u (user name) or %c"},
		{"acl without user", "broker:\n  acl:\n    - subscribe: [\"cmd/%c\"]\n",
			[]problem{{3, "broker.acl[0].user"}}, "must name a user"},
		{"acl ok", "broker:\n  users_file: /etc/ferry/users\n  acl:\n    - user: \"*\"\n      publish: [\"sensors/%u/#\"]\n      subscribe: [\"cmd/%c\", \"x/%u-%c/+\"]\n      client_ids: [\"%u\", \"%u-*\"]\n",
			nil, ""},
		{"acl client id %c", "broker:\n  acl:\n    - user: \"*\"\n      client_ids: [\"%u\", \"%c\"]\n",
			[]problem{{4, "broker.acl[0].client_ids[1]"}}, "only substitution"},

		// Pairs and limits.
		{"cert without key", "uplink:\n  tls:\n    cert_file: /etc/ferry/c.pem\n",
			[]problem{{2, "uplink.tls.key_file"}}, "together with uplink.tls.cert_file"},
		{"endpoint key without cert", "uplink:\n  endpoints:\n    - url: ssl://h:8883\n      tls:\n        key_file: /k\n",
			[]problem{{4, "uplink.endpoints[0].tls.cert_file"}}, "together"},
		{"password and password file", "uplink:\n  password: x\n  password_file: /p\n",
			[]problem{{3, "uplink.password_file"}}, "cannot be used together"},
		{"batch bigger than message", "uplink:\n  max_message_size: 64KiB\n  batch:\n    max_bytes: 1MiB\n",
			[]problem{{4, "uplink.batch.max_bytes"}}, "more than uplink.max_message_size"},
		{"batch bigger than default message", "uplink:\n  batch:\n    max_bytes: 1MiB\n",
			[]problem{{3, "uplink.batch.max_bytes"}}, "(128KiB)"},
		{"backoff inverted", "uplink:\n  backoff:\n    min: 10s\n    max: 1s\n",
			[]problem{{4, "uplink.backoff.max"}}, "at least"},
		{"probe slower than backoff cap", "uplink:\n  backoff:\n    max: 5s\n    probe_interval: 10s\n",
			[]problem{{4, "uplink.backoff.probe_interval"}}, "at most uplink.backoff.max"},
		{"up_for without down_for", "demo:\n  cloud:\n    listen: 127.0.0.1:1884\n    up_for: 20s\n",
			[]problem{{2, "demo.cloud.down_for"}}, "together with demo.cloud.up_for"},
		{"negative ttl", "buffer:\n  streams:\n    - name: a\n      ttl: -1h\n",
			[]problem{{4, "buffer.streams[0].ttl"}}, "negative"},
		{"negative stream limits", "buffer:\n  streams:\n    - name: a\n      max_events: -5\n",
			[]problem{{4, "buffer.streams[0].max_events"}}, "positive"},

		// Everything at once: decoding and validation problems together,
		// in line order.
		{"several problems", `gateway_id: gw
log:
  level: loud
broker:
  listen: ":1883"
  max_clients: many
ingest:
  durability: batch
  routes:
    - topics: ["a/#/b"]
      stream: telemetry
uplink:
  endpoints:
    - url: http://cloud:1883
  qos: 3
  topic: "{gateway_id}/{nope}"
  extra: true
status:
  listen: 0.0.0.0:8080
`, []problem{
			{3, "log.level"},
			{6, "broker.max_clients"},
			{10, "ingest.routes[0].topics[0]"},
			{14, "uplink.endpoints[0].url"},
			{15, "uplink.qos"},
			{16, "uplink.topic"},
			{17, "uplink.extra"},
			{19, "status.listen"},
		}, "log.level"},

		// Downlink.
		{"downlink without uplink", "downlink:\n  subscriptions:\n    - {cloud_prefix: 'gw/cmd/', local_prefix: 'cmd/'}\n",
			[]problem{{1, "downlink"}}, "needs the uplink"},
		{"resend without uplink", "downlink:\n  resend: true\n",
			[]problem{{1, "downlink"}}, "needs the uplink"},
		{"downlink subscription errors", `uplink:
  endpoints: [{url: "tcp://h:1883"}]
  client_id: gw
  streams: [commands]
downlink:
  client_id: gw
  subscriptions:
    - cloud_prefix: "gw/+/"
      local_prefix: "cmd/#"
      qos: 2
    - topic: "a/#/b"
      local_prefix: "ferry/reply/x/"
    - topic: "#"
`, []problem{
			{4, "uplink.streams"},
			{6, "downlink.client_id"},
			{8, "downlink.subscriptions[0].cloud_prefix"},
			{9, "downlink.subscriptions[0].local_prefix"},
			{10, "downlink.subscriptions[0].qos"},
			{11, "downlink.subscriptions[1].topic"},
			{12, "downlink.subscriptions[1].local_prefix"},
			{13, "downlink.subscriptions[2].local_prefix"},
		}, "uplink.streams"},
		{"downlink stream written by a route", "ingest:\n  routes: [{topics: ['#'], stream: commands}]\nuplink:\n  endpoints: [{url: 'tcp://h:1883'}]\ndownlink:\n  presence: {enabled: true}\n",
			[]problem{{5, "downlink.stream"}}, "streams of their own"},
		{"downlink ok", "uplink:\n  endpoints: [{url: 'tcp://h:1883'}]\ndownlink:\n  subscriptions:\n    - {cloud_prefix: '{gateway_id}/cmd/', local_prefix: 'cmd/', reply_topic: '{gateway_id}/reply'}\n",
			nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadBytes([]byte(tc.yml), "ferry.yaml")
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error:\n%v", err)
				}
				return
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error %v (%T) is not Errors", err, err)
			}
			var got []problem
			for _, e := range errs {
				got = append(got, problem{e.Line, e.Path})
				if e.File != "ferry.yaml" {
					t.Errorf("problem %q has file %q", e, e.File)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got problems %v, want %v; errors:\n%v", got, tc.want, err)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error does not contain %q:\n%v", tc.msg, err)
			}
			// One problem per line of Error(), each "file:line: ...".
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(errs) {
				t.Errorf("Error() has %d lines for %d problems", len(lines), len(errs))
			}
			for _, l := range lines {
				if !strings.HasPrefix(l, "ferry.yaml:") {
					t.Errorf("line %q does not start with ferry.yaml:", l)
				}
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		e    Error
		want string
	}{
		{Error{File: "ferry.yaml", Line: 12, Path: "uplink.endpoints[0].url", Msg: "bad"}, "ferry.yaml:12: uplink.endpoints[0].url: bad"},
		{Error{File: "ferry.yaml", Path: "uplink.qos", Msg: "bad"}, "ferry.yaml: uplink.qos: bad"},
		{Error{File: "ferry.yaml", Line: 3, Msg: "bad YAML"}, "ferry.yaml:3: bad YAML"},
		{Error{Line: 3, Path: "a", Msg: "bad"}, "line 3: a: bad"},
		{Error{Path: "a", Msg: "bad"}, "a: bad"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := tc.e.Error(); got != tc.want {
				t.Errorf("got %q", got)
			}
		})
	}
	es := Errors{&tests[0].e, &tests[1].e}
	if got, want := es.Error(), tests[0].want+"\n"+tests[1].want; got != want {
		t.Errorf("Errors.Error() = %q, want %q", got, want)
	}
	var one *Error
	if !errors.As(error(es), &one) || one != &tests[0].e {
		t.Error("errors.As does not find the first Error")
	}
}

func TestValidateWithoutFile(t *testing.T) {
	c := &Config{}
	c.SetDefaults()
	c.Uplink.QoS = 2
	c.Status.Listen = "[::]:8080"
	err := c.Validate()
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 2 {
		t.Fatalf("got %v", err)
	}
	for _, e := range errs {
		if e.Line != 0 || e.File != "" {
			t.Errorf("problem of a Config built in code has a location: %+v", e)
		}
	}
	c.Status.Listen = "[::1]:8080"
	c.Uplink.QoS = 0
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	c.Status.Listen = "localhost:8080"
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestWarnings(t *testing.T) {
	tests := []struct {
		name string
		yml  string
		want []problem
	}{
		{"quiet", "broker: {listen: '127.0.0.1:1883', allow_anonymous: true}\nuplink: {endpoints: [{url: 'ssl://h:8883'}]}\n", nil},
		{"anonymous on the network", "broker:\n  listen: :1883\n  allow_anonymous: true\nuplink: {endpoints: [{url: 'ssl://h:8883'}]}\n",
			[]problem{{3, "broker.allow_anonymous"}}},
		{"durability none", "ingest:\n  durability: none\nuplink: {endpoints: [{url: 'ssl://h:8883'}]}\n",
			[]problem{{2, "ingest.durability"}}},
		{"uplink off", "log: {level: info}\n", []problem{{0, "uplink.enabled"}}},
		{"password in clear", "uplink:\n  endpoints:\n    - url: tcp://h:1883\n  password_file: /p\n",
			[]problem{{3, "uplink.endpoints[0].url"}}},
		{"aws limits", "uplink:\n  endpoints:\n    - url: ssl://x-ats.iot.eu-west-1.amazonaws.com:8883\n  inflight: 500\n",
			[]problem{{4, "uplink.inflight"}}},
		{"demo not routed", "demo:\n  sensors: 2\ningest:\n  routes: [{topics: [other/#], stream: s}]\nuplink: {endpoints: [{url: 'ssl://h:8883'}]}\n",
			[]problem{{1, "demo.topic"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := load(t, tc.yml)
			var got []problem
			for _, w := range c.Warnings() {
				got = append(got, problem{w.Line, w.Path})
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got warnings %v, want %v: %v", got, tc.want, Errors(c.Warnings()))
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(path, []byte("gateway_id: gw1\nuplink:\n  qos: 5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":3: uplink.qos: ") {
		t.Errorf("Load error = %v", err)
	}
	if err := os.WriteFile(path, []byte("gateway_id: gw1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil || c.GatewayID != "gw1" {
		t.Errorf("Load = %+v, %v", c, err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file: %v", err)
	}
}

func TestParseOnly(t *testing.T) {
	// Parse neither defaults nor validates.
	c, err := Parse([]byte("uplink: {qos: 7}\n"), "x.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Uplink.QoS != 7 || c.DataDir != "" {
		t.Errorf("Parse changed values: %+v", c)
	}
	if _, err := Parse([]byte("nope: 1\n"), "x.yaml"); err == nil || err.Error() != `x.yaml:1: nope: unknown key; known keys here: audit, broker, buffer, data_dir, dead_letters, demo, downlink, driver_settings, drivers, gateway_id, ingest, log, pipelines, remote_config, status, uplink` {
		t.Errorf("Parse error = %v", err)
	}
}

func TestLimits(t *testing.T) {
	t.Run("alias fan-out", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("ingest:\n  routes:\n    - &r0 {topics: [a], stream: s}\n")
		for i := 1; i < 40; i++ {
			fmt.Fprintf(&b, "    - &r%d {<<: [*r%d, *r%d]}\n", i, i-1, i-1)
		}
		_, err := LoadBytes([]byte(b.String()), "ferry.yaml")
		if err == nil || !strings.Contains(err.Error(), "too complex") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("many problems", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("ingest:\n  routes:\n")
		for range 3 * maxErrors {
			b.WriteString("    - {topics: ['a/#/b'], stream: s}\n")
		}
		_, err := LoadBytes([]byte(b.String()), "ferry.yaml")
		var errs Errors
		if !errors.As(err, &errs) || len(errs) != maxErrors+1 || !strings.Contains(err.Error(), "too many problems") {
			t.Errorf("got %d problems: %v", len(errs), err)
		}
	})
}

// TestFlashKnobsExplicitZero: commit_interval and ack_interval written as
// 0 turn grouping off (the buffer commits at once); absent, the defaults.
func TestFlashKnobsExplicitZero(t *testing.T) {
	for _, tc := range []struct {
		yml           string
		commit, ackIv time.Duration
	}{
		{"", DefaultCommitInterval, DefaultAckInterval},
		{"ingest: {commit_interval: 0}\nbuffer: {ack_interval: 0}\n", 0, 0},
		{"ingest: {commit_interval: 20ms}\nbuffer: {ack_interval: 1s}\n", 20 * time.Millisecond, time.Second},
	} {
		t.Run(tc.yml, func(t *testing.T) {
			c := load(t, tc.yml)
			if c.Ingest.CommitInterval != tc.commit || c.Buffer.AckInterval != tc.ackIv {
				t.Fatalf("commit_interval %v, ack_interval %v; want %v, %v", c.Ingest.CommitInterval, c.Buffer.AckInterval, tc.commit, tc.ackIv)
			}
		})
	}
}
