package broker

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/topic"
	"github.com/ferrygw/ferry/internal/audit"
	"github.com/ferrygw/ferry/internal/keyring"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
)

// EventSink is where the broker hands the events it accepts: the durable
// log, whose answer decides each PUBLISH's acknowledgement;
// *buffer.Log satisfies it.
type EventSink interface {
	// Enqueue queues ev for the log's next commit and returns without
	// waiting for it; the Pending's Wait returns once ev is stored durably
	// (per the log's durability) or says why it was not. Events are
	// committed in the order they were queued.
	Enqueue(ctx context.Context, ev *event.Event) (buffer.Pending, error)
}

var _ EventSink = (*buffer.Log)(nil)

// Route sends PUBLISHes whose topic matches any of Topics to Stream.
type Route struct {
	Topics      []string
	Stream      string
	ContentType string // used when the publisher sets none (MQTT 5)
}

// Config configures a Broker.
type Config struct {
	Listen    string // plain TCP address; "": no plain TCP listener
	Websocket string // websocket address, or ""
	// TLS adds a TLS listener; nil: none.
	TLS *TLSConfig
	// AllowAnonymous lets clients connect without a user name.
	AllowAnonymous bool
	// Users are the clients that may connect with a user name and
	// password; nil: none may (only anonymous clients, if allowed).
	Users Users
	// ACL limits what clients may publish and subscribe to; see ACLRule.
	// Empty: every connected client may do anything.
	ACL []ACLRule

	// Per-client limits. A client exceeding one is disconnected; other
	// clients are not affected.

	// MaxPacketSize bounds every packet a client sends (0: mochi's
	// default, none).
	MaxPacketSize uint32
	// MaxClients bounds the connected clients (0: no limit); one more is
	// refused with CONNACK "server busy".
	MaxClients int
	// MaxPendingWrites bounds each client's queue of outbound messages
	// (default DefaultMaxPendingWrites).
	MaxPendingWrites int
	// MaxInflight bounds each client's unacknowledged QoS 1/2 messages in
	// each direction (default DefaultMaxInflight): it is the Receive
	// Maximum announced to clients, and the most messages sent to a client
	// unacknowledged. Budget.MaxSessionQueue bounds the messages in
	// flight to or queued for a client. See limits.go for what is enforced
	// how.
	MaxInflight int
	// MaxKeepalive is the longest keep-alive a client may use (default
	// DefaultMaxKeepalive; whole seconds, 1s to 65535s). A client asking
	// for none or for more is told this one (MQTT 5 Server Keep Alive) and
	// is disconnected after 1.5 times it without a packet.
	MaxKeepalive time.Duration
	// Budget bounds the memory clients can make the broker hold: before
	// CONNECT, retained messages, subscriptions, sessions and their
	// queues; zero fields take the defaults (see Budget).
	Budget Budget

	// LoginLimit blocks addresses that fail to log in too often.
	LoginLimit LoginLimit
	// Audit receives connects, disconnects, authentication failures,
	// blocked logins and ACL denials; nil: none are recorded.
	Audit Auditor

	// SessionPath is the bbolt file for sessions, subscriptions, retained
	// and in-flight messages; "" keeps them in memory only. It is written
	// without fsync; see guardSessions for what a power cut does to it.
	SessionPath string
	// BootID identifies the running boot of the machine (Linux:
	// /proc/sys/kernel/random/boot_id); "" if unknown. It tells a power
	// cut or OS crash (a new boot) from a killed process (see
	// guardSessions).
	BootID string
	// Keys, when set, seals the message payloads the session store writes
	// (retained, queued and in-flight messages, wills); see sessionStore.
	Keys   *keyring.Ring
	Routes []Route

	// Logger receives the broker's and mochi's lines. Clients can cause
	// them at any rate (refused publishes, bad packets, failed
	// handshakes), so it should rate-limit repeats, as the gateway's
	// logger (internal/logging) does; the broker does not limit them
	// itself, so that there is one limit, with one summary line.
	Logger *slog.Logger
	Now    func() time.Time
	Rand   io.Reader // event ID randomness; nil: crypto/rand
}

// DefaultMaxPendingWrites is each client's outbound queue by default.
const DefaultMaxPendingWrites = 256

// Broker is the embedded MQTT broker plus the ingest hook.
type Broker struct {
	cfg    Config
	logger *slog.Logger
	server *mqtt.Server
	sink   EventSink
	tls    *tlsReloader // nil without a TLS listener
	// sessions marks the session store clean after a clean stop (nil
	// without one).
	sessions *sessionGuard

	// stopAppends ends the context of the appends the publish hook makes:
	// mochi's hooks carry no context, so the broker makes this one in New
	// and Run cancels it on shutdown, so that a publish waiting for room
	// in the log gives up.
	appendCtx   context.Context
	stopAppends context.CancelFunc

	auth   *authHook
	budget *budget
	routes atomic.Pointer[[]Route] // replaced by Reconfigure
	authStats

	ingested atomic.Uint64
	refused  atomic.Uint64
	ignored  atomic.Uint64
}

// Errors of the broker.
var (
	// ErrRestartRequired is returned by Reconfigure and CheckReconfigure
	// for a change only a new broker can make.
	ErrRestartRequired = errors.New("broker: a restart is needed")
	// ErrListen is returned by New when a listener's address cannot be
	// bound (taken, or not an address of this machine). The error names
	// the gateway's config key (broker.listen, broker.tls.listen or
	// broker.websocket) and the address; see listenError.
	ErrListen = errors.New("broker: cannot listen")
)

// listenError is New's error for a listener whose address cannot be
// bound. It wraps ErrListen and the cause but reads, like the gateway's
// error for the status listener, "<key> <address>: <cause>", plus what to
// do when another program has the address: the key's "broker." says
// where it comes from, and the gateway prefixes its own ErrListen.
type listenError struct {
	key, addr string
	err       error
}

func (e *listenError) Error() string {
	msg := e.key + " " + e.addr + ": " + e.err.Error()
	if errors.Is(e.err, syscall.EADDRINUSE) {
		msg += " (another program, or another ferry, has it: stop that or change " + e.key + ")"
	}
	return msg
}

func (e *listenError) Unwrap() []error { return []error{ErrListen, e.err} }

// Auditor records security events; *audit.Log satisfies it. Record must
// not block: hooks call it in a client's read loop.
type Auditor interface {
	Record(audit.Entry)
}

type nopAuditor struct{}

func (nopAuditor) Record(audit.Entry) {}

// Stats counts what the ingest and auth hooks did.
type Stats struct {
	Ingested     uint64 `json:"ingested"`      // events appended to the log
	Refused      uint64 `json:"refused"`       // PUBLISHes the log refused
	Ignored      uint64 `json:"ignored"`       // PUBLISHes matching no route
	Clients      int64  `json:"clients"`       // connected clients
	AuthFailures uint64 `json:"auth_failures"` // logins refused after checking their credentials
	LoginBlocked uint64 `json:"login_blocked"` // logins refused unchecked: too many failures from the address
	ACLDenied    uint64 `json:"acl_denied"`    // publishes and subscriptions the ACL denied

	Budget BudgetStats `json:"budget"` // the memory budget: what it holds and refused
}

// New configures the broker and its listeners; Run serves them.
func New(cfg Config, sink EventSink) (*Broker, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		// crypto/rand costs a getrandom syscall per event; a ChaCha8
		// stream seeded from it is as unpredictable for IDs and costs none.
		var seed [32]byte
		if _, err := crand.Read(seed[:]); err != nil {
			return nil, fmt.Errorf("broker: seed event ids: %w", err)
		}
		cfg.Rand = &lockedReader{r: mrand.NewChaCha8(seed)}
	}
	if cfg.Listen == "" && cfg.Websocket == "" && cfg.TLS == nil {
		return nil, errors.New("broker: no listener: set a TCP, TLS or websocket address")
	}
	lim, err := resolveLimits(cfg)
	if err != nil {
		return nil, err
	}
	b := &Broker{cfg: cfg, logger: cfg.Logger, sink: sink}
	if b.budget, err = newBudget(cfg.Budget, cfg.Audit, cfg.Now); err != nil {
		return nil, err
	}
	if cfg.TLS != nil {
		tc := *cfg.TLS // defaults are filled into a copy, not the caller's
		if err := tc.check(); err != nil {
			return nil, err
		}
		if b.tls, err = newTLSReloader(tc, cfg.Logger); err != nil {
			return nil, err
		}
		b.cfg.TLS = &tc
	}
	b.appendCtx, b.stopAppends = context.WithCancel(context.Background())

	// mochi narrates hook and listener set-up at INFO; a board's flash
	// wants only its warnings.
	mochiLog := slog.New(minLevel{cfg.Logger.With("lib", "mochi").Handler(), slog.LevelWarn})
	opts := &mqtt.Options{
		InlineClient: true,
		Logger:       mochiLog,
		// $SYS topics are refreshed rarely: each refresh is work (and,
		// with a session store, a write) on a board that idles.
		SysTopicResendInterval: 60,
		// Smaller per-client socket buffers than mochi's defaults: sensor
		// messages are small, and there may be a thousand sensors.
		ClientNetWriteBufferSize: 1024,
		ClientNetReadBufferSize:  1024,
		Budget:                   b.budget.mochi,
	}
	caps := mqtt.NewDefaultServerCapabilities()
	lim.apply(caps, cfg)
	// mochi's default outbound queue is 8,192 pointers (64 KiB) per
	// client: with 1,000 sensors that alone is 64 MB on a 512 MB board.
	// Sensors receive little; a local subscriber that falls this far
	// behind has its messages counted as dropped by mochi.
	caps.MaximumClientWritesPending = int32(cfg.MaxPendingWrites)
	if caps.MaximumClientWritesPending <= 0 {
		caps.MaximumClientWritesPending = DefaultMaxPendingWrites
	}
	caps.MaximumSessionExpiryInterval = uint32(b.budget.MaxSessionExpiry / time.Second)
	// A message keeps the expiry its publisher set, and one without has
	// none: mochi's default 24 h maximum was given to every message (an
	// expiry the publisher never set, and queued messages lost after a
	// day). Queues are bounded by the session expiry and budget instead.
	caps.MaximumMessageExpiryInterval = 0
	// Acks carry none of the client's own properties back (mochi copied
	// them, with a reason code PUBACK does not have: MQTT.js and Python
	// paho dropped the connection); see mochi patch 9.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	opts.Capabilities = caps
	b.server = mqtt.New(opts)
	// fail releases what was set up so far (the session file, bound
	// addresses), so a retry, or a test, can have them again.
	fail := func(err error) (*Broker, error) {
		_ = b.server.Close()
		b.stopAppends()
		return nil, err
	}

	ah, err := newAuthHook(b.cfg, &b.authStats)
	if err != nil {
		return nil, err
	}
	b.auth = ah
	routes := b.cfg.Routes
	b.routes.Store(&routes)
	if err := b.server.AddHook(ah, nil); err != nil {
		return nil, fmt.Errorf("broker: auth hook: %w", err)
	}
	if err := b.server.AddHook(&limitHook{b: b, lim: lim}, nil); err != nil {
		return nil, fmt.Errorf("broker: limit hook: %w", err)
	}
	// Before the ingest hook: a retained message the budget refuses is not
	// stored either.
	if err := b.server.AddHook(&budgetHook{bg: b.budget}, nil); err != nil {
		return nil, fmt.Errorf("broker: budget hook: %w", err)
	}
	if cfg.SessionPath != "" {
		b.sessions = guardSessions(cfg.SessionPath, cfg.BootID, cfg.Now(), cfg.Logger)
		h := &sessionStore{Hook: new(bolt.Hook), log: cfg.Logger, keys: cfg.Keys, budget: b.budget}
		err := b.server.AddHook(h, &bolt.Options{
			Path: cfg.SessionPath,
			// Sessions are not the durability contract (the event log is);
			// not syncing them keeps broker bookkeeping off the SD card's
			// critical path. A power cut may lose recent session changes.
			Options: &bbolt.Options{Timeout: time.Second, NoSync: true},
		})
		if err != nil {
			return fail(fmt.Errorf("broker: session store %s: %w", cfg.SessionPath, err))
		}
	}
	if err := b.server.AddHook(&ingestHook{b: b}, nil); err != nil {
		return fail(fmt.Errorf("broker: ingest hook: %w", err))
	}
	// Each listener binds its address in AddListener (Init), so a taken
	// address fails New, before Run announces anything.
	if cfg.Listen != "" {
		ln := newListener("tcp", cfg.Listen, nil, mochiLog)
		ln.budget = b.budget
		if err := b.server.AddListener(ln); err != nil {
			return fail(&listenError{"broker.listen", cfg.Listen, err})
		}
	}
	if b.tls != nil {
		ln := newListener("tls", b.cfg.TLS.Listen, b.tls.base, mochiLog)
		ln.budget = b.budget
		if cfg.Audit != nil {
			ln.audit = cfg.Audit
		}
		if err := b.server.AddListener(ln); err != nil {
			return fail(&listenError{"broker.tls.listen", b.cfg.TLS.Listen, err})
		}
	}
	if cfg.Websocket != "" {
		ws := newWSListener("ws", cfg.Websocket, mochiLog)
		ws.budget, ws.timeout = b.budget, b.budget.ConnectTimeout
		if err := b.server.AddListener(ws); err != nil {
			return fail(&listenError{"broker.websocket", cfg.Websocket, err})
		}
	}
	return b, nil
}

// Server returns the mochi server, e.g. for inline publishes.
func (b *Broker) Server() *mqtt.Server { return b.server }

// Inject publishes pk, a PUBLISH with its MQTT 5 properties, as the
// broker's inline client: delivered to local subscribers (their ACL
// applies), never ingested.
func (b *Broker) Inject(pk packets.Packet) error {
	cl, ok := b.server.Clients.Get(mqtt.InlineClientId)
	if !ok {
		return mqtt.ErrInlineClientNotEnabled
	}
	return b.server.InjectPacket(cl, pk)
}

// Addr returns the plain TCP listener's address (useful with port 0), or
// "" without one.
func (b *Broker) Addr() string {
	if l, ok := b.server.Listeners.Get("tcp"); ok {
		return l.Address()
	}
	return ""
}

// WebsocketAddr returns the websocket listener's address (useful with
// port 0), or "" without one.
func (b *Broker) WebsocketAddr() string {
	if l, ok := b.server.Listeners.Get("ws"); ok {
		return l.Address()
	}
	return ""
}

// Stats returns ingest counters.
func (b *Broker) Stats() Stats {
	return Stats{
		Ingested: b.ingested.Load(),
		Refused:  b.refused.Load(),
		Ignored:  b.ignored.Load(),
		Clients:  atomic.LoadInt64(&b.server.Info.ClientsConnected),

		AuthFailures: b.failures.Load(),
		LoginBlocked: b.blocked.Load(),
		ACLDenied:    b.denied.Load(),

		Budget: b.budget.stats(b.server),
	}
}

// Reconfigure applies the settings of cfg that can change while clients
// stay connected: users, anonymous access, the ACL, login limits, routes,
// and of the TLS listener the certificate, key and client CA files (their
// paths, and their contents, which it re-reads) and UsernameFrom. Clients
// handshaking or connecting from now on get the new TLS settings;
// connected clients keep their connections and sessions, and the new ACL
// applies to their next publish or subscription.
//
// Adding, removing or moving the TLS listener, or changing its
// RequireClientCert or MinVersion, is refused with ErrRestartRequired:
// those are policies every client should be held to, and a restart makes
// every client reconnect under them. The other listeners and the
// per-client limits stay as New set them. On any error nothing changes.
func (b *Broker) Reconfigure(cfg Config) error {
	rc, err := b.prepare(cfg)
	if err != nil {
		return err
	}
	b.auth.policy.Store(rc.policy)
	b.routes.Store(&rc.routes)
	if rc.tls != nil {
		b.tls.install(rc.tls)
	}
	return nil
}

// CheckReconfigure returns the error Reconfigure(cfg) would return (the
// new TLS files are loaded to see that they work), and changes nothing: a
// caller applying more than the broker's settings checks first, so that it
// can refuse the whole change.
func (b *Broker) CheckReconfigure(cfg Config) error {
	_, err := b.prepare(cfg)
	return err
}

// reconfig is what Reconfigure installs.
type reconfig struct {
	policy *authPolicy
	routes []Route
	tls    *tlsLoad // nil without a TLS listener
}

// prepare builds everything Reconfigure installs, or says why it cannot.
func (b *Broker) prepare(cfg Config) (*reconfig, error) {
	if cfg.Now == nil {
		cfg.Now = b.cfg.Now
	}
	if cfg.TLS != nil {
		tc := *cfg.TLS // defaults are filled into a copy, not the caller's
		if err := tc.check(); err != nil {
			return nil, err
		}
		cfg.TLS = &tc
	}
	var fixed []string
	switch old, tc := b.cfg.TLS, cfg.TLS; {
	case (old == nil) != (tc == nil):
		fixed = append(fixed, "TLS listener")
	case old != nil:
		if tc.Listen != old.Listen {
			fixed = append(fixed, "TLS.Listen")
		}
		if tc.RequireClientCert != old.RequireClientCert {
			fixed = append(fixed, "TLS.RequireClientCert")
		}
		if tc.MinVersion != old.MinVersion {
			fixed = append(fixed, "TLS.MinVersion")
		}
	}
	if len(fixed) > 0 {
		return nil, fmt.Errorf("%w to change %s", ErrRestartRequired, strings.Join(fixed, ", "))
	}
	rc := &reconfig{routes: cfg.Routes}
	if cfg.TLS != nil {
		ld, err := loadTLS(*cfg.TLS)
		if err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		rc.tls = ld
	}
	p, err := newAuthPolicy(cfg, b.auth.policy.Load())
	if err != nil {
		return nil, err
	}
	rc.policy = p
	return rc, nil
}

// Run serves until ctx ends, then closes the listeners and every client.
func (b *Broker) Run(ctx context.Context) error {
	if err := b.server.Serve(); err != nil {
		return fmt.Errorf("broker: serve: %w", err)
	}
	b.logger.Info("broker listening", "tcp", b.Addr(), "tls", b.TLSAddr(), "websocket", b.WebsocketAddr())
	<-ctx.Done()
	b.stopAppends()
	if err := b.server.Close(); err != nil {
		return fmt.Errorf("broker: close: %w", err)
	}
	b.sessions.closed()
	return nil
}

// route returns the route for topic, or nil.
func (b *Broker) route(name string) *Route {
	routes := *b.routes.Load()
	for i := range routes {
		for _, f := range routes[i].Topics {
			if topic.Match(f, name) {
				return &routes[i]
			}
		}
	}
	return nil
}

// ingestHook appends matching PUBLISHes to the log before mochi
// acknowledges them. It queues the event and defers the rest of the
// PUBLISH (mochi's Deferred, third_party/mochi-mqtt/PATCHES.md, 5) to the
// event's commit, so that the client's read loop goes on to its next
// PUBLISH, which joins the same commit.
type ingestHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *ingestHook) ID() string { return "ferry-ingest" }

func (h *ingestHook) Provides(b byte) bool { return b == mqtt.OnPublish }

func (h *ingestHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	b := h.b
	if cl.Net.Inline {
		return pk, nil
	}
	r := b.route(pk.TopicName)
	if r == nil {
		b.ignored.Add(1)
		return pk, nil
	}
	now := b.cfg.Now()
	id, err := event.NewID(now, b.cfg.Rand)
	if err != nil {
		return pk, b.refuse(cl, pk.TopicName, pk.FixedHeader.Qos, r.Stream, err)
	}
	ev := event.Event{
		ID:          id,
		Stream:      r.Stream,
		Source:      cl.ID,
		Topic:       pk.TopicName,
		Time:        now,
		ContentType: pk.Properties.ContentType,
		Payload:     pk.Payload,
	}
	if ev.ContentType == "" {
		ev.ContentType = r.ContentType
	}
	if n := len(pk.Properties.User); n > 0 {
		ev.Attrs = make(map[string]string, min(n, event.MaxAttrs))
		for _, u := range pk.Properties.User {
			if len(ev.Attrs) < event.MaxAttrs {
				ev.Attrs[u.Key] = u.Val
			}
		}
	}
	p, err := b.sink.Enqueue(b.appendCtx, &ev)
	if err != nil {
		return pk, b.refuse(cl, pk.TopicName, pk.FixedHeader.Qos, r.Stream, err)
	}
	w := commitWaits.Get().(*commitWait)
	*w = commitWait{b: b, p: p, cl: cl, topic: pk.TopicName, qos: pk.FixedHeader.Qos, stream: r.Stream}
	return pk, w
}

// commitWait is the ingest hook's answer to a PUBLISH whose event is
// queued: mochi calls Wait in the client's completion goroutine, in the
// order the client's PUBLISHes arrived, and acknowledges, refuses and
// delivers the PUBLISH by its result, as it would the hook's own. They are
// recycled, so that a PUBLISH costs no allocation for the deferral.
type commitWait struct {
	b      *Broker
	p      buffer.Pending
	cl     *mqtt.Client
	topic  string
	qos    byte
	stream string
}

var commitWaits = sync.Pool{New: func() any { return new(commitWait) }}

var _ mqtt.Deferred = (*commitWait)(nil)

func (w *commitWait) Error() string { return "broker: publish waits for its event's commit" }

// Wait waits for the event's commit and returns what OnPublish returned
// when it appended synchronously: nil once the event is stored, or the
// refusal.
func (w *commitWait) Wait() error {
	err := w.p.Wait()
	b, cl, topic, qos, stream := w.b, w.cl, w.topic, w.qos, w.stream
	*w = commitWait{}
	commitWaits.Put(w)
	if err != nil {
		return b.refuse(cl, topic, qos, stream, err)
	}
	b.ingested.Add(1)
	return nil
}

// refuse counts and logs a refused PUBLISH and returns the error that
// makes mochi withhold or negate the acknowledgement: on MQTT 5 a PUBACK
// (QoS 1) or PUBREC (QoS 2) with a reason code, on MQTT 3.1.1, which has
// none, no acknowledgement at all, so the client resends.
//
// The line names the stream, the client and the topic, never the payload
// (sensor data does not belong in logs). The client is "client_id", not
// the logger's identity key "client": a full stream refuses every sensor
// at once, and one line a stream (the logger lets a few a minute through
// and counts the rest) says so, where a line per client would multiply
// by the number of sensors.
func (b *Broker) refuse(cl *mqtt.Client, topic string, qos byte, stream string, err error) error {
	n := b.refused.Add(1)
	b.logger.Warn("publish refused: event not stored, not acknowledged",
		"stream", stream, "client_id", cl.ID, "topic", topic, "err", err, "refused_total", n)
	if cl.Properties.ProtocolVersion == 5 && qos > 0 {
		if errors.Is(err, context.Canceled) {
			return packets.ErrServerUnavailable
		}
		return packets.ErrQuotaExceeded
	}
	return packets.ErrRejectPacket
}

// lockedReader makes a ChaCha8 stream safe for the broker's concurrent
// client read loops.
type lockedReader struct {
	mu sync.Mutex
	r  *mrand.ChaCha8
}

func (l *lockedReader) Read(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Read(p)
}

// minLevel drops records below a level, and mochi's per-connection
// "use of closed network connection" warnings. Repeats of a record are
// left to the logger's rate limit (see Config.Logger).
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

// Handle drops mochi's per-connection "use of closed network connection"
// warnings: every client's read loop reports one when the broker shuts
// down, which is expected, not a problem. It renames mochi's "client"
// attribute to "client_id": "client" is one of the logger's identity keys,
// and mochi warns per client (bad packets, short keep-alives), so clients
// connecting under ever new IDs would each get their own allowance and
// could fill the board's flash; as "client_id" a warning is limited as one
// kind of line, whichever clients cause it.
func (h minLevel) Handle(ctx context.Context, r slog.Record) error {
	quiet, rename := false, false
	r.Attrs(func(a slog.Attr) bool {
		switch {
		case a.Key == "error" && strings.Contains(a.Value.String(), "use of closed network connection"):
			quiet = true
			return false
		case a.Key == "client":
			rename = true
		}
		return true
	})
	if quiet {
		return nil
	}
	if rename {
		nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "client" {
				a.Key = "client_id"
			}
			nr.AddAttrs(a)
			return true
		})
		r = nr
	}
	return h.Handler.Handle(ctx, r)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.min}
}
