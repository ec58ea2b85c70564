package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/downlink"
	"github.com/ferrygw/ferry/drivers"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/ferrygw/ferry/gateway/commands"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/gateway/opsapi"
	"github.com/ferrygw/ferry/gateway/outbox"
	"github.com/ferrygw/ferry/gateway/remoteconfig"
	"github.com/ferrygw/ferry/gateway/resend"
	"github.com/ferrygw/ferry/gateway/rules"
	"github.com/ferrygw/ferry/gateway/rules/payload"
	"github.com/ferrygw/ferry/internal/audit"
	"github.com/ferrygw/ferry/internal/keyring"
	"github.com/ferrygw/ferry/uplink"
)

// The buffer is the uplink's queue.
var _ uplink.Queue = (*buffer.Log)(nil)

// The buffer is where the broker ingests.
var _ broker.EventSink = (*buffer.Log)(nil)

// The uplink announces drops and replays with the buffer's records.
var _ uplink.Sequenced = (*buffer.Log)(nil)

// The buffer file keeps the uplink's data budget usage across restarts.
var _ uplink.BudgetStore = (*buffer.Log)(nil)

// The uplink serves the downlink's resend requests.
var _ resend.Forwarder = (*uplink.Forwarder)(nil)

// Gateway is one running ferry.
type Gateway struct {
	cfg     *config.Config
	log     *slog.Logger
	buf     *buffer.Log
	broker  *broker.Broker
	demo    *demo // nil without a demo section
	hw      drivers.Env
	started atomic.Int64 // UnixNano of Run's start; read by Status concurrently
	now     func() time.Time
	statFS  func(string) (FSUsage, error) // nil: statfs(2)

	// load re-reads the configuration for Reload; nil: reload refused.
	load func() (*config.Config, error)
	// reloads carries a reload to the goroutine that runs the parts.
	reloads  chan *reloadReq
	reloadMu sync.Mutex // one Reload at a time
	// partsDone is closed when runParts returns.
	partsDone chan struct{}

	mu sync.RWMutex // guards cfg and parts, replaced by Reload
	*parts

	// ops serves the status listener (nil: status off); its listener is
	// bound by New, so that a taken address fails the start before
	// anything is announced.
	ops *opsapi.Server

	audit  *audit.Log // nil: audit off
	alerts alertRing  // recent pipeline outputs, for the status page

	metrics *opsapi.Metrics // what GET /metrics reports beyond Status

	// Remote configuration (remote.go): local is the local file as last
	// loaded (guarded by mu); remote is nil unless it enables remote_config.
	local        *config.Config
	remote       *remoteconfig.Manager
	remoteStatus remoteconfig.StatusSink
	remotePoll   time.Duration

	version  string             // WithVersion, for presence
	id       string             // gateway_id (a key that needs a restart)
	since    time.Time          // when New ran, for presence
	retained *downlink.Retained // status messages the downlink keeps publishing
	// configVersion is the remote configuration version in force (0: the
	// local file), for presence.
	configVersion atomic.Uint64
}

// Test hooks (statuslimits_export_test.go): the status listener's idle
// timeout and stream lifetime for gateways created afterwards; 0: opsapi's
// StatusIdleTimeout and SSEMaxLifetime.
var statusIdleTimeout, sseMaxLifetime time.Duration

// parts are the components a reload replaces; the broker, the buffer and
// the status listener stay.
type parts struct {
	fwd     *uplink.Forwarder // nil when the uplink is disabled
	runners []*rules.Runner
	hooks   []webhookOutbox
	sched   *drivers.Scheduler // nil without drivers
	// actuators are the drivers of sched that take commands (gpio_out).
	actuators []drivers.Item
	dl        *downlinkPart // nil without a downlink session
}

// webhookOutbox is one webhook output and the outbox stream it drains.
type webhookOutbox struct {
	stream string
	w      *outbox.Webhook
	log    *slog.Logger
}

// buildParts builds, without starting them, the components of cfg that a
// reload replaces.
func (g *Gateway) buildParts(cfg *config.Config) (*parts, error) {
	p := &parts{}
	logger := g.log
	if len(cfg.Drivers) > 0 {
		items, err := buildDrivers(cfg, g.hw, stateStore{g.buf})
		if err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
		dlog := logger.With("component", "drivers")
		devs := &driverEvents{cfg: cfg, buf: g.buf, log: dlog}
		for _, it := range items {
			if it.Actuator() != nil {
				p.actuators = append(p.actuators, it)
			}
		}
		p.sched = drivers.NewScheduler(items, drivers.SchedulerConfig{
			Emit:       devs.emit,
			Status:     devs.status,
			Timeout:    cfg.DriverSettings.Timeout,
			BackoffMax: cfg.DriverSettings.BackoffMax,
			Logger:     dlog,
		})
	}
	pipelines, err := buildPipelines(cfg)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	for _, pl := range pipelines {
		p.runners = append(p.runners, rules.NewRunner(pl, g.buf, rules.RunnerConfig{Logger: logger.With("component", "rules"),
			Committed: g.alerts.committed(pl.Name, cfg.DeadLetters.Stream)}))
	}
	for _, pc := range cfg.Pipelines {
		for j, o := range pc.Outputs {
			if o.Webhook == nil {
				continue
			}
			wlog := logger.With("component", "webhook", "pipeline", pc.Name)
			w, err := outbox.NewWebhook(*o.Webhook, g.buf, cfg.DeadLetters.Stream, wlog)
			if err != nil {
				return nil, fmt.Errorf("gateway: pipelines %s: %w", pc.Name, err)
			}
			p.hooks = append(p.hooks, webhookOutbox{stream: config.WebhookOutbox(pc.Name, j), w: w, log: wlog})
		}
	}
	if cfg.Uplink.Enabled != nil && *cfg.Uplink.Enabled && len(forwardedStreams(cfg)) == 0 {
		logger.Warn("uplink enabled but no stream is forwarded (every route is read by a pipeline that outputs no stream): the uplink stays off")
	} else if cfg.Uplink.Enabled != nil && *cfg.Uplink.Enabled {
		ucfg, err := uplinkConfig(cfg, logger.With("component", "uplink"))
		if err != nil {
			return nil, fmt.Errorf("gateway: uplink: %w", err)
		}
		ucfg.DeadLetters = newUplinkDeadLetters(g.buf, cfg) // uplink_poison.go
		if p.fwd, err = uplink.New(g.buf, ucfg); err != nil {
			return nil, fmt.Errorf("gateway: uplink: %w", err)
		}
	}
	if p.dl, err = g.buildDownlink(cfg, p.fwd); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	return p, nil
}

// components lists the parts as components to supervise; cfg is the
// configuration they were built from.
func (p *parts) components(g *Gateway, cfg *config.Config) []component {
	var comps []component
	if p.fwd != nil {
		comps = append(comps, component{"uplink", p.fwd.Run})
	}
	for _, r := range p.runners {
		comps = append(comps, component{"pipeline", r.Run})
	}
	if p.sched != nil {
		comps = append(comps, component{"drivers", g.runDrivers(p)})
	}
	if p.dl != nil {
		comps = append(comps, p.dl.components(g)...)
	}
	if len(cfg.Pipelines) > 0 {
		mlog := g.log.With("component", "mqtt-out")
		deliver := outbox.MQTT(g.broker.Server(), mlog)
		comps = append(comps, component{"mqtt-out", func(ctx context.Context) error {
			return outbox.Drain(ctx, g.buf, config.MQTTOutbox(), mlog, deliver)
		}})
	}
	for _, h := range p.hooks {
		comps = append(comps, component{"webhook", func(ctx context.Context) error {
			return outbox.Drain(ctx, g.buf, h.stream, h.log, h.w.Deliver)
		}})
	}
	return comps
}

// New opens the buffer and binds the broker's listeners; Run starts the
// work. cfg must have been loaded with config.Load (defaults set, valid).
func New(cfg *config.Config, logger *slog.Logger, opts ...Option) (g *Gateway, err error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	g = &Gateway{cfg: cfg, log: logger, now: time.Now, reloads: make(chan *reloadReq), partsDone: make(chan struct{})}
	for _, o := range opts {
		o(g)
	}
	g.since = g.now().UTC().Truncate(time.Second)
	g.id = cfg.GatewayID
	g.retained = downlink.NewRetained()
	cfg = g.startRemote(cfg) // the stored remote configuration, if one is in force
	g.cfg = cfg
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("gateway: data_dir: %w", err)
	}
	if g.audit, err = openAudit(cfg, logger.With("component", "audit")); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	defer func(a *audit.Log) {
		if err != nil { // write what was recorded and close the file
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_ = a.Run(ctx)
		}
	}(g.audit)
	// Every listener is bound here, before Run announces any of them: a
	// taken address fails the start once, naming its key.
	var statusLn net.Listener // nil: status off
	if cfg.Status.Listen != "" {
		if statusLn, err = listen("status.listen", cfg.Status.Listen); err != nil {
			return nil, err
		}
		defer func(ln net.Listener) {
			if err != nil {
				_ = ln.Close()
			}
		}(statusLn)
	}
	bopts, err := bufferOptions(cfg, logger.With("component", "buffer"))
	if err != nil {
		return nil, err
	}
	g.metrics = opsapi.NewMetrics()
	bopts.OnCommit = g.metrics.OnCommit
	if f := cfg.Buffer.Encryption.KeyFile; f != "" {
		if bopts.Keys, err = keyring.Load(f); err != nil {
			return nil, fmt.Errorf("gateway: buffer.encryption.key_file: %w", err)
		}
		g.auditKeys(bopts.Keys)
	}
	if g.buf, err = buffer.Open(cfg.Buffer.Path, bopts); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	buf := g.buf // g is nil on the error returns below
	defer func() {
		if err != nil {
			_ = buf.Close()
		}
	}()
	// The manager first: the downlink, a part, hands it configurations.
	if err = g.newRemote(); err != nil {
		return nil, err
	}
	if g.parts, err = g.buildParts(cfg); err != nil {
		return nil, err
	}
	bc, err := brokerConfig(cfg, logger.With("component", "broker"))
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	bc.Audit = g.audit
	bc.Keys = bopts.Keys // retained and queued messages sealed like events
	if g.broker, err = broker.New(bc, g.buf); err != nil {
		if errors.Is(err, broker.ErrListen) { // names its key and address, as listen does
			return nil, fmt.Errorf("%w: %w", ErrListen, err)
		}
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if cfg.Demo.Sensors > 0 || cfg.Demo.Cloud.Listen != "" {
		g.demo = newDemo(cfg, logger.With("component", "demo"))
	}
	if statusLn != nil {
		g.ops = opsapi.New(opsapi.Config{
			Listener: statusLn, Log: g.buf, Reporter: g, Operator: g, Readiness: g,
			Metrics: g.metrics, Pprof: cfg.Status.Pprof, Logger: logger,
			IdleTimeout: statusIdleTimeout, StreamLifetime: sseMaxLifetime,
		})
	}
	g.logDiskFit()
	return g, nil
}

// Buffer returns the gateway's durable log.
func (g *Gateway) Buffer() *buffer.Log { return g.buf }

// BrokerAddr returns the address the broker's TCP listener is bound to.
func (g *Gateway) BrokerAddr() string { return g.broker.Addr() }

// Run runs the gateway until ctx ends or a component fails, then stops
// everything and closes the buffer.
func (g *Gateway) Run(ctx context.Context) error {
	g.started.Store(g.now().UnixNano())
	g.log.Info("ferry starting", "gateway_id", g.cfg.GatewayID, "buffer", g.buf.Path(),
		"durability", g.cfg.Ingest.Durability, "uplink", g.parts.fwd != nil)
	// The buffer's commit loop outlives the broker: a hook waiting on its
	// commit must get an answer, so the loop stops only after the others.
	bufCtx, stopBuf := context.WithCancel(context.WithoutCancel(ctx))
	var bufErr error
	bufDone := make(chan struct{})
	go func() { bufErr = g.buf.Run(bufCtx); close(bufDone) }()
	// The audit writer, too, outlives the components that record to it.
	auditDone := make(chan error, 1)
	go func() {
		if g.audit == nil {
			auditDone <- nil
			return
		}
		auditDone <- g.audit.Run(bufCtx)
	}()

	comps := []component{{"broker", g.broker.Run}}
	if g.ops != nil {
		comps = append(comps, component{"status", g.ops.Run})
	}
	if g.cfg.Status.LogInterval > 0 {
		comps = append(comps, component{"health", g.logHealth})
	}
	// A commit loop that stops on its own (bbolt failed on a damaged
	// file) stops the gateway: systemd restarts it, and the buffer's Open
	// checks the file.
	comps = append(comps, component{"buffer", func(ctx context.Context) error {
		select {
		case <-bufDone:
			return bufErr
		case <-ctx.Done():
			return nil
		}
	}}, component{"parts", g.runParts}, component{"systemd", g.notifySystemd})
	comps = append(comps, g.remoteComponents()...)
	if g.demo != nil {
		comps = append(comps, component{"demo", func(ctx context.Context) error { return g.demo.Run(ctx, g.broker.Addr()) }})
	}
	err := supervise(ctx, g.log, comps)
	stopBuf()
	<-bufDone
	if bufErr != nil && err == nil {
		err = bufErr
	}
	if aerr := <-auditDone; aerr != nil {
		// Best effort: the audit log counts and logs its own write
		// failures; nothing it reports may fail the gateway.
		g.log.Error("audit log failed", "component", "audit", "err", aerr)
	}
	if cerr := g.buf.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("gateway: close buffer: %w", cerr)
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	g.log.Info("ferry stopped")
	return err
}

// listen binds the TCP address addr of config key key. The error names
// both, and says what to do when another program has the address.
func listen(key, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		return ln, nil
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("%w: %s %s: %w (another program, or another ferry, has it: stop that or change %s)",
			ErrListen, key, addr, err, key)
	}
	return nil, fmt.Errorf("%w: %s %s: %w", ErrListen, key, addr, err)
}

// orNegative maps a configured 0 ("off") to the buffer's negative: its
// zero means "the default".
func orNegative(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func bufferOptions(cfg *config.Config, log *slog.Logger) (buffer.Options, error) {
	d, err := buffer.ParseDurability(cfg.Ingest.Durability)
	if err != nil {
		return buffer.Options{}, err
	}
	o := buffer.Options{
		Durability:     d,
		BootID:         bootID(),
		BatchInterval:  cfg.Ingest.BatchInterval,
		CommitInterval: orNegative(cfg.Ingest.CommitInterval),
		AckInterval:    orNegative(cfg.Buffer.AckInterval),
		MaxBatch:       cfg.Ingest.MaxBatch,
		MinFreeDisk:    uint64(cfg.Buffer.MinFreeDisk),
		Logger:         log,
		DefaultStream:  buffer.StreamConfig{MaxEvents: 1_000_000, MaxBytes: 256 << 20},
		Numbers:        payload.Numbers, // rollup reads JSON, CBOR and SenML like the pipelines
	}
	if cfg.Buffer.OnCorrupt == "fail" {
		o.OnCorrupt = buffer.CorruptFail
	}
	for _, s := range cfg.Buffer.Streams {
		ov, err := buffer.ParseOverflow(s.Overflow)
		if err != nil {
			return buffer.Options{}, err
		}
		sc := buffer.StreamConfig{
			Name: s.Name, MaxEvents: s.MaxEvents, MaxBytes: int64(s.MaxBytes), Overflow: ov, TTL: s.TTL,
			Retain: s.Retain, RollupInterval: s.Rollup.Interval,
		}
		// An outbox is kept until its deliverer (and the uplink, when it is
		// forwarded too) has delivered it; the deliverer's position was
		// stored under the default consumer before it had a name.
		if config.IsOutbox(s.Name) {
			sc.Consumers = append(sc.Consumers, outbox.Consumer)
			if cfg.Forwarded(s.Name) {
				sc.Consumers = append(sc.Consumers, uplink.Consumer)
			}
			sc.Inherit = map[string]string{outbox.Consumer: outbox.FormerConsumer}
		}
		// Commands are kept until delivered locally, replies until sent.
		if cfg.IsDownlinkStream(s.Name) {
			if s.Name == cfg.Downlink.Stream {
				sc.Consumers = append(sc.Consumers, commands.Consumer)
			} else {
				sc.Consumers = append(sc.Consumers, downlink.Consumer)
			}
		}
		// A stream that pipelines read is kept until each of them (and the
		// uplink, when it is forwarded too) has processed it.
		if readers := cfg.PipelinesReading(s.Name); len(readers) > 0 {
			if cfg.Forwarded(s.Name) {
				sc.Consumers = append(sc.Consumers, uplink.Consumer)
			}
			for _, r := range readers {
				sc.Consumers = append(sc.Consumers, rules.ConsumerName(r))
			}
		}
		slices.Sort(sc.Consumers)
		sc.Consumers = slices.Compact(sc.Consumers) // an outbox pipelines read
		o.Streams = append(o.Streams, sc)
	}
	return o, nil
}

// brokerBudget translates the broker's memory budget keys.
func brokerBudget(b *config.Broker) broker.Budget {
	return broker.Budget{
		MaxConnectSize:         uint32(b.MaxConnectSize),
		MaxConnecting:          b.MaxConnecting,
		ConnectTimeout:         b.ConnectTimeout,
		MaxRetained:            b.MaxRetained,
		MaxRetainedBytes:       int64(b.MaxRetainedBytes),
		MaxClientSubscriptions: b.MaxSubscriptionsPerClient,
		MaxSubscriptions:       b.MaxSubscriptions,
		MaxOfflineSessions:     b.MaxOfflineSessions,
		MaxSessionExpiry:       b.MaxSessionExpiry,
		MaxSessionQueueBytes:   int64(b.MaxSessionQueueBytes),
		MaxQueueBytes:          int64(b.MaxQueueBytes),
		// max_queued bounds a session's queue (in flight and offline),
		// not mochi's per-connection write buffer (MaxPendingWrites).
		MaxSessionQueue: b.MaxQueued,
	}
}

// brokerConfig translates the broker and ingest sections, loading the
// users file.
func brokerConfig(cfg *config.Config, log *slog.Logger) (broker.Config, error) {
	bc := broker.Config{
		Listen:         cfg.Broker.Listen,
		Websocket:      cfg.Broker.Websocket,
		AllowAnonymous: cfg.Broker.AllowAnonymous,
		MaxPacketSize:  uint32(cfg.Broker.MaxPacketSize),
		MaxClients:     cfg.Broker.MaxClients,
		MaxInflight:    cfg.Broker.MaxInflight,
		MaxKeepalive:   cfg.Broker.MaxKeepalive,
		LoginLimit: broker.LoginLimit{
			Failures: cfg.Broker.LoginLimit.Failures,
			Window:   cfg.Broker.LoginLimit.Window,
			Block:    cfg.Broker.LoginLimit.Block,
		},
		Budget: brokerBudget(&cfg.Broker),
		Logger: log,
	}
	if t := cfg.Broker.TLS; t.Listen != "" {
		bc.TLS = &broker.TLSConfig{
			Listen: t.Listen, CertFile: t.CertFile, KeyFile: t.KeyFile,
			ClientCAFile: t.ClientCAFile, RequireClientCert: t.RequireClientCert,
			UsernameFrom: t.UsernameFrom, MinVersion: tls.VersionTLS12,
		}
		if t.MinVersion == "1.3" {
			bc.TLS.MinVersion = tls.VersionTLS13
		}
	}
	if cfg.Broker.PersistSessions == nil || *cfg.Broker.PersistSessions {
		bc.SessionPath = filepath.Join(cfg.DataDir, "sessions.db")
		bc.BootID = bootID()
	}
	// Replies first: the first route a topic matches takes it.
	if r, ok := replyRoute(cfg); ok {
		bc.Routes = append(bc.Routes, r)
	}
	for _, r := range cfg.Ingest.Routes {
		bc.Routes = append(bc.Routes, broker.Route{Topics: r.Topics, Stream: r.Stream, ContentType: r.ContentType})
	}
	if f := cfg.Broker.UsersFile; f != "" {
		users, err := broker.LoadUsers(f)
		if err != nil {
			return bc, fmt.Errorf("broker.users_file: %w", err)
		}
		bc.Users = users
	}
	for _, r := range cfg.Broker.ACL {
		bc.ACL = append(bc.ACL, broker.ACLRule{User: r.User, Publish: r.Publish, Subscribe: r.Subscribe, ClientIDs: r.ClientIDs})
	}
	return bc, nil
}

func uplinkConfig(cfg *config.Config, log *slog.Logger) (uplink.Config, error) {
	u := cfg.Uplink
	uc := uplink.Config{
		ClientID:          u.ClientID,
		Username:          u.Username,
		Password:          u.Password,
		GatewayID:         cfg.GatewayID,
		Topic:             u.Topic,
		Format:            uplink.Format(u.Format),
		Compression:       uplink.Compression(u.Compression),
		QoS:               byte(u.QoS),
		Inflight:          u.Inflight,
		Keepalive:         u.Keepalive,
		ConnectTimeout:    u.ConnectTimeout,
		BackoffMin:        u.Backoff.Min,
		BackoffMax:        u.Backoff.Max,
		ProbeInterval:     u.Backoff.ProbeInterval,
		StableAfter:       u.Backoff.StableAfter,
		BatchMaxEvents:    u.Batch.MaxEvents,
		BatchMaxBytes:     int(u.Batch.MaxBytes),
		BatchMaxDelay:     u.Batch.MaxDelay,
		MaxMessageBytes:   int(u.MaxMessage),
		MaxTopicBytes:     int(u.MaxTopic),
		PoisonAttempts:    u.PoisonAttempts,
		MessagesPerSecond: u.Rate.MessagesPerSecond,
		BytesPerSecond:    float64(u.Rate.BytesPerSecond),
		Streams:           forwardedStreams(cfg),
		Priorities:        maps.Clone(u.Priorities),
		DefaultPriority:   u.DefaultPriority,
		Logger:            log,
		Rand:              rand.Float64,
	}
	if u.Budget.Monthly > 0 {
		loc, err := time.LoadLocation(u.Budget.Location)
		if err != nil {
			return uc, fmt.Errorf("uplink.budget.location: %w", err)
		}
		// The usage is kept in the buffer file (buffer.Log is the
		// forwarder's Queue and its BudgetStore).
		uc.Budget = uplink.Budget{Bytes: uint64(u.Budget.Monthly), ResetDay: u.Budget.ResetDay,
			Location: loc, Reserve: slices.Clone(u.Budget.Reserve)}
	}
	if u.PasswordFile != "" {
		b, err := os.ReadFile(u.PasswordFile)
		if err != nil {
			return uc, fmt.Errorf("uplink.password_file: %w", err)
		}
		uc.Password = strings.TrimRight(string(b), "\r\n")
	}
	for i, ep := range u.Endpoints {
		t := &u.TLS
		if ep.TLS != nil {
			t = ep.TLS
		}
		var tc *tls.Config
		if isTLSURL(ep.URL) {
			var err error
			if tc, err = tlsConfig(t); err != nil {
				return uc, fmt.Errorf("uplink.endpoints[%d].tls: %w", i, err)
			}
			if tc.ServerName == "" {
				// Always send SNI and verify the endpoint's name, also when
				// paho dials through a proxy (where it would not fill it in).
				if pu, err := url.Parse(ep.URL); err == nil {
					tc.ServerName = pu.Hostname()
				}
			}
		}
		uc.Endpoints = append(uc.Endpoints, uplink.Endpoint{URL: ep.URL, TLS: tc})
	}
	return uc, nil
}

// forwardedStreams lists the streams the uplink forwards: see
// config.Forwarded.
func forwardedStreams(cfg *config.Config) []string {
	out := []string{}
	for _, s := range cfg.Buffer.Streams {
		if cfg.Forwarded(s.Name) {
			out = append(out, s.Name)
		}
	}
	return out
}

func isTLSURL(u string) bool {
	for _, p := range []string{"ssl://", "tls://", "mqtts://", "wss://"} {
		if strings.HasPrefix(u, p) {
			return true
		}
	}
	return false
}

// tlsConfig builds a client TLS config: TLS 1.2 at least, the CA file
// pinned as the only roots when given, and a client certificate for mutual
// TLS (as AWS IoT Core and Azure IoT Hub expect).
func tlsConfig(t *config.TLS) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificates", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if len(t.PinSHA256) > 0 {
		pins := make(map[[sha256.Size]byte]bool, len(t.PinSHA256))
		for i, p := range t.PinSHA256 {
			b, err := base64.StdEncoding.DecodeString(p)
			if err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("pin_sha256[%d]: not a base64 SHA-256", i)
			}
			pins[[sha256.Size]byte(b)] = true
		}
		// VerifyConnection runs after the usual chain and name checks
		// (also on resumed sessions), so a pin narrows trust, never widens it.
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			for _, chain := range cs.VerifiedChains {
				for _, c := range chain {
					if pins[sha256.Sum256(c.RawSubjectPublicKeyInfo)] {
						return nil
					}
				}
			}
			return errors.New("tls: no certificate of the server's chain matches uplink tls.pin_sha256")
		}
	}
	return tc, nil
}

// bootID identifies this boot of the machine, so the broker can tell a
// power cut from a killed process (buffer.Options.BootID and
// broker.Config.BootID); read once per process.
// FERRY_BOOT_ID overrides it: a test that cuts the power of a simulated
// disk (gateway.TestPowerCut) gives each "boot" its own.
var bootID = sync.OnceValue(func() string {
	if id := os.Getenv("FERRY_BOOT_ID"); id != "" {
		return id
	}
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
})
