package broker

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/topic"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
)

// Log is where ingested events go; *buffer.Log satisfies it.
type Log interface {
	// Append stores ev durably (per the log's durability) or says why not.
	Append(ctx context.Context, ev *event.Event) error
}

// Route sends PUBLISHes whose topic matches any of Topics to Stream.
type Route struct {
	Topics      []string
	Stream      string
	ContentType string // used when the publisher sets none (MQTT 5)
}

// Config configures a Broker.
type Config struct {
	Listen    string // TCP address
	Websocket string // websocket address, or ""
	// AllowAnonymous lets clients connect without a user name.
	AllowAnonymous bool
	// Users are the clients that may connect with a user name and
	// password; nil: none may (only anonymous clients, if allowed).
	Users Users
	// ACL limits what clients may publish and subscribe to; see ACLRule.
	// Empty: every connected client may do anything.
	ACL           []ACLRule
	MaxPacketSize uint32 // 0: mochi's default (none)
	MaxClients    int    // 0: no limit
	// MaxPendingWrites bounds each client's queue of outbound messages
	// (default DefaultMaxPendingWrites).
	MaxPendingWrites int
	// SessionPath is the bbolt file for sessions, subscriptions, retained
	// and in-flight messages; "" keeps them in memory only.
	SessionPath string
	Routes      []Route

	Logger *slog.Logger
	Now    func() time.Time
	Rand   io.Reader // event ID randomness; nil: crypto/rand
}

// DefaultMaxPendingWrites is each client's outbound queue by default.
const DefaultMaxPendingWrites = 256

// Broker is the embedded MQTT broker plus the ingest hook.
type Broker struct {
	cfg    Config
	log    *slog.Logger
	server *mqtt.Server
	store  Log

	ctx    context.Context // for appends; set by Run
	cancel context.CancelFunc

	ingested atomic.Uint64
	refused  atomic.Uint64
	ignored  atomic.Uint64
	lastWarn atomic.Int64
}

// Stats counts what the ingest hook did.
type Stats struct {
	Ingested uint64 `json:"ingested"` // events appended to the log
	Refused  uint64 `json:"refused"`  // PUBLISHes the log refused
	Ignored  uint64 `json:"ignored"`  // PUBLISHes matching no route
	Clients  int64  `json:"clients"`  // connected clients
}

// New configures the broker and its listeners; Run serves them.
func New(cfg Config, store Log) (*Broker, error) {
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
	b := &Broker{cfg: cfg, log: cfg.Logger, store: store}
	b.ctx, b.cancel = context.WithCancel(context.Background())

	opts := &mqtt.Options{
		InlineClient: true,
		// mochi narrates hook and listener set-up at INFO; a board's flash
		// wants only its warnings.
		Logger: slog.New(minLevel{cfg.Logger.With("lib", "mochi").Handler(), slog.LevelWarn}),
		// $SYS topics are refreshed rarely: each refresh is work (and,
		// with a session store, a write) on a board that idles.
		SysTopicResendInterval: 60,
		// Smaller per-client socket buffers than mochi's defaults: sensor
		// messages are small, and there may be a thousand sensors.
		ClientNetWriteBufferSize: 1024,
		ClientNetReadBufferSize:  1024,
	}
	caps := mqtt.NewDefaultServerCapabilities()
	if cfg.MaxPacketSize > 0 {
		caps.MaximumPacketSize = cfg.MaxPacketSize
	}
	// mochi's default outbound queue is 8,192 pointers (64 KiB) per
	// client: with 1,000 sensors that alone is 64 MB on a 512 MB board.
	// Sensors receive little; a local subscriber that falls this far
	// behind has its messages counted as dropped by mochi.
	caps.MaximumClientWritesPending = int32(cfg.MaxPendingWrites)
	if caps.MaximumClientWritesPending <= 0 {
		caps.MaximumClientWritesPending = DefaultMaxPendingWrites
	}
	opts.Capabilities = caps
	b.server = mqtt.New(opts)

	ah, err := newAuthHook(cfg)
	if err != nil {
		return nil, err
	}
	if err := b.server.AddHook(ah, nil); err != nil {
		return nil, fmt.Errorf("broker: auth hook: %w", err)
	}
	if err := b.server.AddHook(&limitHook{b: b}, nil); err != nil {
		return nil, fmt.Errorf("broker: limit hook: %w", err)
	}
	if cfg.SessionPath != "" {
		h := &sessionStore{Hook: new(bolt.Hook)}
		err := b.server.AddHook(h, &bolt.Options{
			Path: cfg.SessionPath,
			// Sessions are not the durability contract (the event log is);
			// not syncing them keeps broker bookkeeping off the SD card's
			// critical path. A power cut may lose recent session changes.
			Options: &bbolt.Options{Timeout: time.Second, NoSync: true},
		})
		if err != nil {
			return nil, fmt.Errorf("broker: session store %s: %w", cfg.SessionPath, err)
		}
	}
	if err := b.server.AddHook(&ingestHook{b: b}, nil); err != nil {
		return nil, fmt.Errorf("broker: ingest hook: %w", err)
	}
	if err := b.server.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: cfg.Listen})); err != nil {
		return nil, fmt.Errorf("broker: listen %s: %w", cfg.Listen, err)
	}
	if cfg.Websocket != "" {
		if err := b.server.AddListener(listeners.NewWebsocket(listeners.Config{ID: "ws", Address: cfg.Websocket})); err != nil {
			return nil, fmt.Errorf("broker: websocket %s: %w", cfg.Websocket, err)
		}
	}
	return b, nil
}

// Server returns the mochi server, e.g. for inline publishes.
func (b *Broker) Server() *mqtt.Server { return b.server }

// Addr returns the TCP listener's address (useful with port 0).
func (b *Broker) Addr() string {
	if l, ok := b.server.Listeners.Get("tcp"); ok {
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
	}
}

// Run serves until ctx ends, then closes the listeners and every client.
func (b *Broker) Run(ctx context.Context) error {
	if err := b.server.Serve(); err != nil {
		return fmt.Errorf("broker: serve: %w", err)
	}
	b.log.Info("broker listening", "tcp", b.Addr(), "websocket", b.cfg.Websocket)
	<-ctx.Done()
	b.cancel()
	if err := b.server.Close(); err != nil {
		return fmt.Errorf("broker: close: %w", err)
	}
	return nil
}

// route returns the route for topic, or nil.
func (b *Broker) route(name string) *Route {
	for i := range b.cfg.Routes {
		for _, f := range b.cfg.Routes[i].Topics {
			if topic.Match(f, name) {
				return &b.cfg.Routes[i]
			}
		}
	}
	return nil
}

// ingestHook appends matching PUBLISHes to the log before mochi
// acknowledges them.
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
		return pk, b.refuse(cl, pk, err)
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
	if err := b.store.Append(b.ctx, &ev); err != nil {
		return pk, b.refuse(cl, pk, err)
	}
	b.ingested.Add(1)
	return pk, nil
}

// refuse counts and logs (at most once a second) a refused PUBLISH and
// returns the error that makes mochi withhold or negate the acknowledgement.
func (b *Broker) refuse(cl *mqtt.Client, pk packets.Packet, err error) error {
	b.refused.Add(1)
	now := time.Now().Unix()
	if last := b.lastWarn.Load(); now != last && b.lastWarn.CompareAndSwap(last, now) {
		b.log.Warn("publish refused: event not stored, not acknowledged",
			"client", cl.ID, "topic", pk.TopicName, "err", err, "refused_total", b.refused.Load())
	}
	if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos > 0 {
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

// limitHook enforces the connection limit.
type limitHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *limitHook) ID() string { return "ferry-limits" }

func (h *limitHook) Provides(b byte) bool { return b == mqtt.OnConnect }

func (h *limitHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	max := h.b.cfg.MaxClients
	if max > 0 && atomic.LoadInt64(&h.b.server.Info.ClientsConnected) >= int64(max) {
		return packets.ErrServerBusy
	}
	return nil
}

// sessionStore is mochi's bolt storage hook minus two writes that would
// sit on the ingest path: the broker's own PUBACK to an inbound QoS 1
// publish is tracked as "in flight" for microseconds (stored, then deleted),
// and the $SYS info tick would write every interval on an idle board.
type sessionStore struct {
	*bolt.Hook
	skipped sync.Map // client+packet ID of inbound acks not stored
}

func (s *sessionStore) Provides(b byte) bool {
	return b != mqtt.OnSysInfoTick && s.Hook.Provides(b)
}

func (s *sessionStore) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if pk.FixedHeader.Type == packets.Puback { // our ack to an inbound QoS 1
		s.skipped.Store(ackKey{cl.ID, pk.PacketID}, struct{}{})
		return
	}
	s.Hook.OnQosPublish(cl, pk, sent, resends)
}

func (s *sessionStore) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if _, ok := s.skipped.LoadAndDelete(ackKey{cl.ID, pk.PacketID}); ok {
		return
	}
	s.Hook.OnQosComplete(cl, pk)
}

// StoredInflightMessages restores the packet IDs of stored in-flight
// messages: mochi's bolt hook (v2.7.9) keys them by client and packet ID but
// does not store the ID in the record, so without this every restored
// message would be resent with packet ID 0, which clients reject.
func (s *sessionStore) StoredInflightMessages() ([]storage.Message, error) {
	msgs, err := s.Hook.StoredInflightMessages()
	for i := range msgs {
		if msgs[i].PacketID != 0 {
			continue
		}
		if j := strings.LastIndexByte(msgs[i].ID, ':'); j >= 0 {
			if id, perr := strconv.ParseUint(msgs[i].ID[j+1:], 10, 16); perr == nil {
				msgs[i].PacketID = uint16(id)
			}
		}
	}
	return msgs, err
}

// StoredSysInfo returns nothing: $SYS info is not persisted (see Provides),
// and asking the hook for it would log a "key not found" error at every
// start.
func (s *sessionStore) StoredSysInfo() (storage.SystemInfo, error) {
	return storage.SystemInfo{}, nil
}

// minLevel drops records below a level.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

// Handle drops mochi's per-connection "use of closed network connection"
// warnings: every client's read loop reports one when the broker shuts
// down, which is expected, not a problem.
func (h minLevel) Handle(ctx context.Context, r slog.Record) error {
	quiet := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" && strings.Contains(a.Value.String(), "use of closed network connection") {
			quiet = true
			return false
		}
		return true
	})
	if quiet {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.min}
}

type ackKey struct {
	client string
	id     uint16
}
