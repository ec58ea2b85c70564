package config

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"mime"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ferrygw/ferry/uplink"
)

// Validate checks a defaulted Config (see SetDefaults) and returns every
// problem as Errors, each naming its key path and, for a loaded file, its
// line. Unknown enum values are always errors. Validate does not touch the
// file system or the network: files named by the config are opened by the
// components that use them, when they start, and by gateway.CheckHost for
// ferry check.
func (c *Config) Validate() error {
	errs := c.validate()
	errs.sortByLine()
	return errs.err()
}

// Warnings returns non-fatal advice about a defaulted Config: settings that
// are valid but probably not what a production gateway wants.
func (c *Config) Warnings() []*Error {
	k := &checker{c: c}
	c.warn(k)
	k.errs.sortByLine()
	return k.errs
}

// checker accumulates problems, putting file and line on them.
type checker struct {
	c    *Config
	errs Errors
}

func (k *checker) add(path, format string, args ...any) {
	e := &Error{Path: path, Msg: fmt.Sprintf(format, args...)}
	if s := k.c.src; s != nil {
		e.File = s.file
		e.Line = s.lineOf(path)
	}
	k.errs = append(k.errs, e)
}

// lineOf returns the line of path or of its nearest ancestor written in the
// file, 0 if none was.
func (s *source) lineOf(path string) int {
	for path != "" {
		if l, ok := s.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// oneOf checks an enum value; an unknown value is always an error.
func (k *checker) oneOf(path, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	k.add(path, "must be one of %s, not %q", strings.Join(allowed, ", "), v)
}

func (k *checker) positive(path string, d time.Duration) {
	if d <= 0 {
		k.add(path, "must be a positive duration, not %s", d)
	}
}

func (k *checker) nonNegative(path string, d time.Duration) {
	if d < 0 {
		k.add(path, "must not be negative, got %s", d)
	}
}

// mqttMaxPacket is the largest MQTT packet (the remaining-length limit).
const mqttMaxPacket = 268_435_455

var (
	streamNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

	// uplinkSchemes are the URL schemes the uplink can dial.
	uplinkSchemes = map[string]bool{"tcp": true, "ssl": true, "tls": true, "mqtts": true, "ws": true, "wss": true}

	// topicPlaceholders are the names uplink.topic may use in braces.
	topicPlaceholders = map[string]bool{"gateway_id": true, "stream": true, "source": true, "topic": true, "id": true}
)

func validStreamName(s string) bool { return streamNameRE.MatchString(s) }

func (c *Config) validate() Errors {
	k := &checker{c: c}

	if err := checkTopicLevel(c.GatewayID); err != nil {
		k.add("gateway_id", "%v (it becomes a level of the cloud topic)", err)
	}
	if c.DataDir == "" {
		k.add("data_dir", "must not be empty")
	}
	k.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	k.oneOf("log.format", c.Log.Format, "auto", "text", "json")

	c.validateBroker(k)
	streams := c.validateBuffer(k)
	c.validateIngest(k, streams)
	c.validateUplink(k, streams)
	c.validateDownlink(k)
	c.validatePipelines(k, streams)
	c.validateDrivers(k)
	c.validateRemote(k)

	if c.Status.Listen != "" {
		if err := checkHostPort(c.Status.Listen); err != nil {
			k.add("status.listen", "%v", err)
		} else if !isLoopback(c.Status.Listen) {
			k.add("status.listen", "must be a loopback address (127.0.0.1, ::1 or localhost), not %q: "+
				"the status endpoint has no authentication and must not be reachable from the network", c.Status.Listen)
		}
	}
	k.nonNegative("status.log_interval", c.Status.LogInterval)

	if a := &c.Audit; a.Enabled == nil || *a.Enabled {
		if a.MaxSize < 4*KiB {
			k.add("audit.max_size", "must be at least 4KiB, not %s", a.MaxSize)
		}
		if a.MaxFiles < 1 || a.MaxFiles > 100 {
			k.add("audit.max_files", "must be between 1 and 100, not %d", a.MaxFiles)
		}
	}

	d := &c.Demo
	if d.Sensors < 0 {
		k.add("demo.sensors", "must not be negative")
	}
	k.positive("demo.interval", d.Interval)
	if err := checkTopicName(d.Topic); err != nil {
		k.add("demo.topic", "%v", err)
	}
	if d.Cloud.Listen != "" {
		if err := checkHostPort(d.Cloud.Listen); err != nil {
			k.add("demo.cloud.listen", "%v", err)
		}
	}
	k.nonNegative("demo.cloud.up_for", d.Cloud.UpFor)
	k.nonNegative("demo.cloud.down_for", d.Cloud.DownFor)
	switch {
	case d.Cloud.UpFor > 0 && d.Cloud.DownFor == 0:
		k.add("demo.cloud.down_for", "must be set together with demo.cloud.up_for")
	case d.Cloud.DownFor > 0 && d.Cloud.UpFor == 0:
		k.add("demo.cloud.up_for", "must be set together with demo.cloud.down_for")
	}
	return k.errs
}

func (c *Config) validateBroker(k *checker) {
	b := &c.Broker
	switch {
	case b.Listen == "" && b.TLS.Listen == "":
		k.add("broker.listen", `is empty and broker.tls.listen is not set: the broker would have no listener`)
	case b.Listen != "":
		if err := checkHostPort(b.Listen); err != nil {
			k.add("broker.listen", "%v", err)
		}
	}
	c.validateBrokerTLS(k)
	if b.MaxInflight < 1 || b.MaxInflight > 65535 {
		k.add("broker.max_inflight", "must be between 1 and 65535, not %d", b.MaxInflight)
	}
	if b.MaxQueued < 1 || b.MaxQueued > 65535 {
		// 65535: each queued message holds a packet ID.
		k.add("broker.max_queued", "must be between 1 and 65535, not %d", b.MaxQueued)
	}
	switch {
	case b.MaxKeepalive < time.Second:
		k.add("broker.max_keepalive", "must be at least 1s, not %s", b.MaxKeepalive)
	case b.MaxKeepalive > 65535*time.Second:
		k.add("broker.max_keepalive", "must be at most 65535s (the MQTT limit), not %s", b.MaxKeepalive)
	}
	if b.LoginLimit.Failures < 0 {
		k.add("broker.login_limit.failures", "must not be negative (0 turns the limit off)")
	}
	k.positive("broker.login_limit.window", b.LoginLimit.Window)
	k.positive("broker.login_limit.block", b.LoginLimit.Block)
	if b.Websocket != "" {
		if err := checkHostPort(b.Websocket); err != nil {
			k.add("broker.websocket", "%v", err)
		}
	}
	if b.MaxPacketSize <= 0 || b.MaxPacketSize > mqttMaxPacket {
		k.add("broker.max_packet_size", "must be between 1B and %s (the MQTT limit), not %s", ByteSize(mqttMaxPacket), b.MaxPacketSize)
	}
	if b.MaxClients < 0 {
		k.add("broker.max_clients", "must not be negative (0 means no limit)")
	}
	c.validateBrokerBudget(k)
	for i, r := range b.ACL {
		p := fmt.Sprintf("broker.acl[%d]", i)
		switch {
		case r.User == "":
			k.add(p+".user", `must name a user, or be "*" for every client`)
		case r.User != "*" && (strings.ContainsRune(r.User, ':') || strings.IndexFunc(r.User, unicode.IsSpace) >= 0):
			k.add(p+".user", "user name %q must not contain ':' or whitespace", r.User)
		}
		for _, fs := range []struct {
			key     string
			filters []string
		}{{"publish", r.Publish}, {"subscribe", r.Subscribe}} {
			for j, f := range fs.filters {
				if err := checkACLFilter(f); err != nil {
					k.add(fmt.Sprintf("%s.%s[%d]", p, fs.key, j), "topic filter %q: %v", f, err)
				}
			}
		}
		for j, id := range r.ClientIDs {
			if err := checkClientIDPattern(id); err != nil {
				k.add(fmt.Sprintf("%s.client_ids[%d]", p, j), "client ID pattern %q: %v", id, err)
			}
		}
	}
}

// checkClientIDPattern checks an ACL rule's client ID pattern: '*' and %u
// are its only special parts.
func checkClientIDPattern(id string) error {
	switch {
	case id == "":
		return errors.New(`must not be empty (use "*" for any client ID)`)
	case strings.IndexFunc(id, unicode.IsControl) >= 0:
		return errors.New("must not contain control characters")
	case strings.Contains(strings.ReplaceAll(id, "%u", ""), "%"):
		return errors.New("%u (the user name) is the only substitution; %c would allow every client ID")
	}
	return nil
}

// validateBrokerTLS checks broker.tls; the files are read when the broker
// starts.
func (c *Config) validateBrokerTLS(k *checker) {
	t := &c.Broker.TLS
	k.oneOf("broker.tls.username_from", t.UsernameFrom, "cn", "san")
	k.oneOf("broker.tls.min_version", t.MinVersion, "1.2", "1.3")
	if t.Listen == "" {
		for _, f := range []struct{ key, v string }{
			{"cert_file", t.CertFile}, {"key_file", t.KeyFile}, {"client_ca_file", t.ClientCAFile},
		} {
			if f.v != "" {
				k.add("broker.tls."+f.key, "is set but broker.tls.listen is empty: no TLS listener would use it")
			}
		}
		return
	}
	if err := checkHostPort(t.Listen); err != nil {
		k.add("broker.tls.listen", "%v", err)
	}
	if t.CertFile == "" {
		k.add("broker.tls.cert_file", "must be set when broker.tls.listen is")
	}
	if t.KeyFile == "" {
		k.add("broker.tls.key_file", "must be set when broker.tls.listen is")
	}
	if t.RequireClientCert && t.ClientCAFile == "" {
		k.add("broker.tls.require_client_cert", "needs broker.tls.client_ca_file to verify the certificates against")
	}
}

// checkACLFilter checks an ACL topic filter: an MQTT filter in which %u
// and %c may stand inside a level, and '%' is only used for them.
func checkACLFilter(f string) error {
	if err := checkFilter(f); err != nil {
		return err
	}
	rest := strings.NewReplacer("%u", "", "%c", "").Replace(f)
	if strings.Contains(rest, "%") {
		return errors.New("% may only be used as %u (user name) or %c (client ID)")
	}
	return nil
}

// validateBuffer checks buffer and returns the set of stream names.
func (c *Config) validateBuffer(k *checker) map[string]bool {
	b := &c.Buffer
	if b.Path == "" {
		k.add("buffer.path", "must not be empty")
	}
	if b.MinFreeDisk < 0 {
		k.add("buffer.min_free_disk", "must not be negative")
	}
	k.oneOf("buffer.on_corrupt", b.OnCorrupt, "quarantine", "fail")
	k.nonNegative("buffer.ack_interval", b.AckInterval)
	names := map[string]bool{}
	first := map[string]int{}
	for i, s := range b.Streams {
		p := fmt.Sprintf("buffer.streams[%d]", i)
		switch {
		case !validStreamName(s.Name):
			k.add(p+".name", "stream name %q must be 1 to 64 letters, digits, '_', '.' or '-'", s.Name)
		case names[s.Name]:
			k.add(p+".name", "stream %q is already defined by buffer.streams[%d]", s.Name, first[s.Name])
		default:
			names[s.Name] = true
			first[s.Name] = i
		}
		if s.MaxEvents <= 0 {
			k.add(p+".max_events", "must be positive, not %d", s.MaxEvents)
		}
		if s.MaxBytes <= 0 {
			k.add(p+".max_bytes", "must be positive, not %s", s.MaxBytes)
		}
		k.oneOf(p+".overflow", s.Overflow, "drop_largest", "drop_oldest", "reject", "rollup")
		switch {
		case s.Overflow == "rollup":
			k.positive(p+".rollup.interval", s.Rollup.Interval)
		case s.Rollup.Interval != 0:
			k.add(p+".rollup.interval", "applies to overflow: rollup only, not %q", s.Overflow)
		}
		k.nonNegative(p+".ttl", s.TTL)
		k.nonNegative(p+".retain", s.Retain)
	}
	return names
}

func (c *Config) validateIngest(k *checker, streams map[string]bool) {
	in := &c.Ingest
	k.oneOf("ingest.durability", in.Durability, "sync", "batch", "none")
	k.positive("ingest.batch_interval", in.BatchInterval)
	k.nonNegative("ingest.commit_interval", in.CommitInterval)
	if in.MaxBatch <= 0 {
		k.add("ingest.max_batch", "must be positive, not %d", in.MaxBatch)
	}
	for i, r := range in.Routes {
		p := fmt.Sprintf("ingest.routes[%d]", i)
		if len(r.Topics) == 0 {
			k.add(p+".topics", "must list at least one MQTT topic filter")
		}
		for j, f := range r.Topics {
			if err := checkFilter(f); err != nil {
				k.add(fmt.Sprintf("%s.topics[%d]", p, j), "topic filter %q: %v", f, err)
			}
		}
		switch {
		case r.Stream == "":
			k.add(p+".stream", "must name the buffer stream the events go to")
		case !validStreamName(r.Stream):
			k.add(p+".stream", "stream name %q must be 1 to 64 letters, digits, '_', '.' or '-'", r.Stream)
		case !streams[r.Stream]:
			k.add(p+".stream", "names no stream in buffer.streams: %q", r.Stream)
		}
		if r.ContentType != "" {
			if _, _, err := mime.ParseMediaType(r.ContentType); err != nil {
				k.add(p+".content_type", "must be a MIME type like application/json, not %q", r.ContentType)
			}
		}
	}
}

func (c *Config) validateUplink(k *checker, streams map[string]bool) {
	u := &c.Uplink
	if u.Enabled != nil && *u.Enabled && len(u.Endpoints) == 0 {
		k.add("uplink.enabled", "is true but uplink.endpoints lists no broker")
	}
	for i, e := range u.Endpoints {
		p := fmt.Sprintf("uplink.endpoints[%d]", i)
		if err := checkEndpointURL(e.URL); err != nil {
			k.add(p+".url", "%v", err)
		}
		if e.TLS != nil {
			checkTLS(k, p+".tls", e.TLS)
		}
		if pu, err := url.Parse(e.URL); err == nil && (pu.Scheme == "tcp" || pu.Scheme == "ws") {
			// A TLS block means the user expects TLS: a plain URL next to
			// it is a mistake, never a fallback.
			switch {
			case e.TLS != nil:
				k.add(p+".url", "is a plain %s:// URL but %s.tls is set: use ssl:// or wss://, ferry never falls back to an unencrypted connection", pu.Scheme, p)
			case u.TLS.configured():
				k.add(p+".url", "is a plain %s:// URL but uplink.tls is set: use ssl:// or wss://, ferry never falls back to an unencrypted connection", pu.Scheme)
			}
		}
	}
	if u.ClientID == "" {
		k.add("uplink.client_id", "must not be empty")
	} else if !utf8.ValidString(u.ClientID) || strings.ContainsRune(u.ClientID, 0) {
		k.add("uplink.client_id", "must be valid UTF-8 without NUL characters")
	}
	if u.Password != "" && u.PasswordFile != "" {
		k.add("uplink.password_file", "cannot be used together with uplink.password; set one of them")
	}
	checkTLS(k, "uplink.tls", &u.TLS)
	if err := checkTemplate(u.Topic); err != nil {
		k.add("uplink.topic", "%v", err)
	}
	k.oneOf("uplink.format", u.Format, "json", "cbor", "senml+cbor")
	k.oneOf("uplink.compression", u.Compression, "none", "zstd")
	if u.Compression == "zstd" && u.Batch.MaxEvents == 1 && u.Format != "senml+cbor" {
		k.add("uplink.compression", "zstd compresses batches only (a single event gains under 1%%); set uplink.batch.max_events above 1")
	}
	switch u.QoS {
	case 0, 1:
	case 2:
		k.add("uplink.qos", "must be 0 or 1: QoS 2 is not supported")
	default:
		k.add("uplink.qos", "must be 0 or 1, not %d", u.QoS)
	}
	if u.Inflight < 1 || u.Inflight > 65535 {
		k.add("uplink.inflight", "must be between 1 and 65535, not %d", u.Inflight)
	}
	switch {
	case u.Keepalive < 0:
		k.add("uplink.keepalive", "must not be negative, got %s", u.Keepalive)
	case u.Keepalive > 0 && u.Keepalive < time.Second:
		k.add("uplink.keepalive", "must be 0 (off) or at least 1s, not %s", u.Keepalive)
	case u.Keepalive > 65535*time.Second:
		k.add("uplink.keepalive", "must be at most 65535s (the MQTT limit), not %s", u.Keepalive)
	}
	k.positive("uplink.connect_timeout", u.ConnectTimeout)
	k.positive("uplink.backoff.min", u.Backoff.Min)
	k.positive("uplink.backoff.max", u.Backoff.Max)
	k.positive("uplink.backoff.probe_interval", u.Backoff.ProbeInterval)
	k.positive("uplink.backoff.stable_after", u.Backoff.StableAfter)
	if u.Backoff.ProbeInterval > u.Backoff.Max && u.Backoff.Max > 0 {
		k.add("uplink.backoff.probe_interval", "must be at most uplink.backoff.max (%s), not %s", u.Backoff.Max, u.Backoff.ProbeInterval)
	}
	if u.Backoff.Min > 0 && u.Backoff.Max > 0 && u.Backoff.Max < u.Backoff.Min {
		k.add("uplink.backoff.max", "must be at least uplink.backoff.min (%s), not %s", u.Backoff.Min, u.Backoff.Max)
	}
	if u.Batch.MaxEvents < 1 {
		k.add("uplink.batch.max_events", "must be at least 1 (1 means no batching), not %d", u.Batch.MaxEvents)
	}
	switch {
	case u.Batch.MaxDelay < 0:
		k.add("uplink.batch.max_delay", "must not be negative, got %s", u.Batch.MaxDelay)
	case u.Batch.MaxDelay > 0 && u.Batch.MaxEvents == 1:
		k.add("uplink.batch.max_delay", "waits for a batch to fill, but uplink.batch.max_events is 1 (no batching)")
	}
	if u.MaxMessage <= 0 || u.MaxMessage > mqttMaxPacket {
		k.add("uplink.max_message_size", "must be between 1B and %s (the MQTT limit), not %s", ByteSize(mqttMaxPacket), u.MaxMessage)
	}
	if u.MaxTopic < 32 || u.MaxTopic > 65535 {
		k.add("uplink.max_topic_size", "must be between 32B and 65535B (the MQTT limit), not %s", u.MaxTopic)
	}
	if u.PoisonAttempts < 2 {
		k.add("uplink.poison_attempts", "must be at least 2 (drops while oldest unacknowledged, then one sent alone), not %d", u.PoisonAttempts)
	}
	switch {
	case u.Batch.MaxBytes <= 0:
		k.add("uplink.batch.max_bytes", "must be positive, not %s", u.Batch.MaxBytes)
	case u.MaxMessage > 0 && u.Batch.MaxBytes > u.MaxMessage:
		k.add("uplink.batch.max_bytes", "%s is more than uplink.max_message_size (%s); a batch must fit in one message",
			u.Batch.MaxBytes, u.MaxMessage)
	}
	if u.Rate.MessagesPerSecond < 0 {
		k.add("uplink.rate.messages_per_second", "must not be negative (0 means no limit)")
	}
	if u.Rate.BytesPerSecond < 0 {
		k.add("uplink.rate.bytes_per_second", "must not be negative (0 means no limit)")
	}
	validateBudget(k, u, streams)
	seen := map[string]bool{}
	for i, s := range u.Streams {
		p := fmt.Sprintf("uplink.streams[%d]", i)
		switch {
		case !streams[s]:
			k.add(p, "names no stream in buffer.streams: %q", s)
		case seen[s]:
			k.add(p, "stream %q is listed twice", s)
		}
		seen[s] = true
	}
}

// checkTLS checks the parts of a TLS block that need no files.
func checkTLS(k *checker, path string, t *TLS) {
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		k.add(path+".key_file", "must be set together with %s.cert_file", path)
	case t.KeyFile != "" && t.CertFile == "":
		k.add(path+".cert_file", "must be set together with %s.key_file", path)
	}
	for i, pin := range t.PinSHA256 {
		if b, err := base64.StdEncoding.DecodeString(pin); err != nil || len(b) != sha256.Size {
			k.add(fmt.Sprintf("%s.pin_sha256[%d]", path, i), "must be the base64 SHA-256 of a public key (44 characters), not %q", pin)
		}
	}
	if len(t.PinSHA256) > 0 && t.InsecureSkipVerify {
		k.add(path+".pin_sha256", "cannot be used with insecure_skip_verify: pins are checked on a verified chain")
	}
}

// configured reports whether any TLS setting is made.
func (t *TLS) configured() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify || len(t.PinSHA256) > 0
}

// checkEndpointURL checks an uplink broker URL.
func checkEndpointURL(raw string) error {
	const want = "must be a tcp://, ssl://, tls://, mqtts://, ws:// or wss:// URL"
	u, err := url.Parse(raw)
	if err != nil || !uplinkSchemes[u.Scheme] || u.Opaque != "" {
		if raw == "" {
			return errors.New(want + ", not empty")
		}
		return fmt.Errorf("%s, not %q", want, raw)
	}
	if u.User != nil {
		return errors.New("must not contain credentials; use uplink.username and uplink.password_file")
	}
	if u.Hostname() == "" || u.Port() == "" {
		return fmt.Errorf("must name a host and a port, like %s://broker.example.com:%s, not %q", u.Scheme, defaultPort(u.Scheme), raw)
	}
	if p, err := strconv.Atoi(u.Port()); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q must be between 1 and 65535", u.Port())
	}
	if u.Scheme != "ws" && u.Scheme != "wss" && (u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "") {
		return fmt.Errorf("%s:// URLs take no path or query, only ws:// and wss:// do: %q", u.Scheme, raw)
	}
	return nil
}

func defaultPort(scheme string) string {
	switch scheme {
	case "tcp":
		return "1883"
	case "ws":
		return "80"
	case "wss":
		return "443"
	}
	return "8883"
}

// checkHostPort checks a listen address such as ":1883" or "127.0.0.1:8080".
func checkHostPort(addr string) error {
	const want = `must be host:port, like "127.0.0.1:1883" or ":1883"`
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s, not %q", want, addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%s, not %q (bad port)", want, addr)
	}
	return nil
}

// isLoopback reports whether the host of a host:port address is loopback:
// localhost, 127.0.0.0/8 or ::1. An empty host means all interfaces.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkMQTTString checks what MQTT asks of every topic string.
func checkMQTTString(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case len(s) > 65535:
		return errors.New("must be at most 65535 bytes")
	case !utf8.ValidString(s):
		return errors.New("must be valid UTF-8")
	case strings.ContainsRune(s, 0):
		return errors.New("must not contain NUL characters")
	}
	return nil
}

// checkFilter checks an MQTT topic filter: "#" only as the last level, "+"
// and "#" only as whole levels.
func checkFilter(f string) error {
	if err := checkMQTTString(f); err != nil {
		return err
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") {
			if l != "#" {
				return errors.New("# must be a whole level, like sensors/#")
			}
			if i != len(levels)-1 {
				return errors.New("# must be the last level")
			}
		}
		if strings.Contains(l, "+") && l != "+" {
			return errors.New("+ must be a whole level, like sensors/+/temp")
		}
	}
	return nil
}

// checkTopicName checks an MQTT topic name (no wildcards).
func checkTopicName(t string) error {
	if err := checkMQTTString(t); err != nil {
		return err
	}
	if strings.ContainsAny(t, "+#") {
		return errors.New("must not contain the MQTT wildcards + or #")
	}
	return nil
}

// checkTopicLevel checks a string that must fit in one topic level.
func checkTopicLevel(s string) error {
	if err := checkTopicName(s); err != nil {
		return err
	}
	if strings.Contains(s, "/") {
		return errors.New("must not contain /")
	}
	return nil
}

// checkTemplate checks an uplink topic template: only known placeholders,
// balanced braces, no wildcards.
func checkTemplate(t string) error {
	if err := checkTopicName(t); err != nil {
		return err
	}
	for rest := t; rest != ""; {
		i := strings.IndexAny(rest, "{}")
		if i < 0 {
			break
		}
		if rest[i] == '}' {
			return errors.New(`has a "}" without a matching "{"`)
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return errors.New(`has a "{" without a matching "}"`)
		}
		name := rest[i+1 : i+j]
		if !topicPlaceholders[name] {
			return fmt.Errorf("unknown placeholder {%s}; known: {gateway_id} {stream} {source} {topic} {id}", name)
		}
		rest = rest[i+j+1:]
	}
	return nil
}

// matchFilter reports whether topic matches the MQTT filter.
func matchFilter(filter, topic string) bool {
	fs, ts := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fs {
		if f == "#" {
			return true
		}
		if i >= len(ts) || f != "+" && f != ts[i] {
			return false
		}
	}
	return len(fs) == len(ts)
}

// warn adds the non-fatal advice to k.
func (c *Config) warn(k *checker) {
	b := &c.Broker
	if b.AllowAnonymous {
		if !isLoopback(b.Listen) {
			k.add("broker.allow_anonymous", "anyone who can reach broker.listen %q can publish and subscribe without credentials; listen on 127.0.0.1 or turn this off", b.Listen)
		}
		if b.TLS.Listen != "" && !isLoopback(b.TLS.Listen) && !b.TLS.RequireClientCert {
			k.add("broker.allow_anonymous", "anyone who can reach broker.tls.listen %q can publish and subscribe without credentials", b.TLS.Listen)
		}
		if b.Websocket != "" && !isLoopback(b.Websocket) {
			k.add("broker.allow_anonymous", "anyone who can reach broker.websocket %q can publish and subscribe without credentials", b.Websocket)
		}
	}
	if c.Ingest.Durability == "none" {
		k.add("ingest.durability", "none acknowledges events before they are on disk: a crash or power cut loses them")
	}
	u := &c.Uplink
	if u.Enabled != nil && !*u.Enabled {
		k.add("uplink.enabled", "the uplink is off: events are buffered but never forwarded")
	}
	if u.Enabled != nil && *u.Enabled && u.QoS == 0 {
		k.add("uplink.qos", "QoS 0 events leave the buffer unacknowledged and can be lost in transit")
	}
	if u.TLS.InsecureSkipVerify {
		k.add("uplink.tls.insecure_skip_verify", "the cloud broker's certificate is not checked; anyone in the path can impersonate it")
	}
	aws := false
	for i, e := range u.Endpoints {
		p := fmt.Sprintf("uplink.endpoints[%d]", i)
		pu, err := url.Parse(e.URL)
		if err != nil {
			continue
		}
		plain := pu.Scheme == "tcp" || pu.Scheme == "ws"
		if plain && (u.Password != "" || u.PasswordFile != "") {
			k.add(p+".url", "the uplink password is sent unencrypted over %s://", pu.Scheme)
		}
		if e.TLS != nil && e.TLS.InsecureSkipVerify {
			k.add(p+".tls.insecure_skip_verify", "the cloud broker's certificate is not checked; anyone in the path can impersonate it")
		}
		if strings.HasSuffix(strings.ToLower(pu.Hostname()), ".amazonaws.com") {
			aws = true
		}
	}
	if aws && u.Inflight > 100 {
		k.add("uplink.inflight", "AWS IoT Core allows at most 100 unacknowledged QoS 1 messages per connection, not %d", u.Inflight)
	}
	if aws && u.MaxMessage > 128*KiB {
		k.add("uplink.max_message_size", "AWS IoT Core rejects messages larger than 128KiB, not %s", u.MaxMessage)
	}
	if u.Rate.BytesPerSecond > 0 && u.Rate.BytesPerSecond < u.MaxMessage {
		k.add("uplink.rate.bytes_per_second", "%s/s is less than uplink.max_message_size (%s): the largest messages wait more than a second each",
			u.Rate.BytesPerSecond, u.MaxMessage)
	}
	if c.Demo.Sensors > 0 {
		sample := c.Demo.Topic + "/0"
		routed := false
		for _, r := range c.Ingest.Routes {
			for _, f := range r.Topics {
				routed = routed || matchFilter(f, sample)
			}
		}
		if !routed {
			k.add("demo.topic", "no ingest.routes filter matches %q: the demo readings are not buffered", sample)
		}
	}
}

// validateBrokerBudget checks the broker's memory budget keys.
func (c *Config) validateBrokerBudget(k *checker) {
	b := &c.Broker
	for _, f := range []struct {
		key string
		v   int
	}{
		{"broker.max_connecting", b.MaxConnecting},
		{"broker.max_retained", b.MaxRetained},
		{"broker.max_subscriptions_per_client", b.MaxSubscriptionsPerClient},
		{"broker.max_subscriptions", b.MaxSubscriptions},
		{"broker.max_offline_sessions", b.MaxOfflineSessions},
	} {
		if f.v < 1 {
			k.add(f.key, "must be at least 1, not %d", f.v)
		}
	}
	for _, f := range []struct {
		key string
		v   ByteSize
	}{
		{"broker.max_retained_bytes", b.MaxRetainedBytes},
		{"broker.max_session_queue_bytes", b.MaxSessionQueueBytes},
		{"broker.max_queue_bytes", b.MaxQueueBytes},
	} {
		if f.v < 1 {
			k.add(f.key, "must be at least 1B, not %s", f.v)
		}
	}
	if b.MaxConnectSize < 64 || b.MaxConnectSize > mqttMaxPacket {
		k.add("broker.max_connect_size", "must be between 64B (room for a CONNECT with credentials) and %s, not %s", ByteSize(mqttMaxPacket), b.MaxConnectSize)
	}
	k.positive("broker.connect_timeout", b.ConnectTimeout)
	switch {
	case b.MaxSessionExpiry < time.Second:
		k.add("broker.max_session_expiry", "must be at least 1s, not %s", b.MaxSessionExpiry)
	case b.MaxSessionExpiry > (1<<32-1)*time.Second:
		k.add("broker.max_session_expiry", "must be at most %s (the MQTT limit), not %s", (1<<32-1)*time.Second, b.MaxSessionExpiry)
	}
}

// validateBudget checks uplink.priorities, uplink.default_priority and
// uplink.budget.
func validateBudget(k *checker, u *Uplink, streams map[string]bool) {
	for _, name := range slices.Sorted(maps.Keys(u.Priorities)) {
		p := u.Priorities[name]
		switch {
		case !streams[name]:
			k.add("uplink.priorities."+name, "names no stream in buffer.streams")
		case p < 0 || p > uplink.MaxPriority:
			k.add("uplink.priorities."+name, "must be between 0 (highest) and %d, not %d", uplink.MaxPriority, p)
		}
	}
	if p := u.DefaultPriority; p < 1 || p > uplink.MaxPriority {
		k.add("uplink.default_priority", "must be between 1 and %d (priority 0 is given by name in uplink.priorities), not %d", uplink.MaxPriority, p)
	}
	b := &u.Budget
	if b.Monthly < 0 {
		k.add("uplink.budget.monthly", "must not be negative (0 means no budget), not %s", b.Monthly)
	}
	if b.ResetDay < 1 || b.ResetDay > 28 {
		k.add("uplink.budget.reset_day", "must be a day between 1 and 28 (every month has it), not %d", b.ResetDay)
	}
	if _, err := time.LoadLocation(b.Location); err != nil || b.Location == "" || b.Location == "Local" {
		k.add("uplink.budget.location", "must be an IANA time zone such as UTC or Europe/Berlin (the board needs its tzdata), not %q", b.Location)
	}
	for i, r := range b.Reserve {
		p := fmt.Sprintf("uplink.budget.reserve[%d]", i)
		switch {
		case i == 0 && r != 0:
			k.add(p, "must be 0: priority 0 may spend the whole budget, not %v", r)
		case !(r >= 0 && r < 1):
			k.add(p, "must be a share of the budget in [0, 1), not %v", r)
		case i > 0 && r < b.Reserve[i-1]:
			k.add(p, "must not be less than uplink.budget.reserve[%d] (%v): a lower priority leaves at least as much", i-1, b.Reserve[i-1])
		}
	}
}
