package broker

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrygw/ferry/internal/audit"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Memory budget defaults. Together they keep what clients can make the
// broker hold to a few tens of MB, so the whole gateway stays within
// 64 MB on a 512 MB Raspberry Pi Zero whatever clients send (issue 12):
//
//   - before CONNECT: 64 connections × (8 KiB CONNECT + ~20 KiB of
//     buffers and goroutines) ≈ 2 MB;
//   - retained: 1,000 messages, 1 MiB of topics and payloads;
//   - subscriptions: 2,000 in all, 64 per client: each costs about 2.5 KB
//     in mochi's topic index and as much again in the session store's
//     writes (10,000 took the gateway to 68 MB RSS);
//   - sessions: 256 kept offline, for at most 7 days; queued or in-flight
//     QoS 1/2 payloads 256 KiB per session (one maximum-size message) and
//     4 MiB in all (each subscriber holds its own copy, and the session
//     store writes it again, base64 in JSON, into pages that count in
//     RSS: 1,000 sessions × 32 × 8 KiB peaked at 56 MB RSS with 8 MiB);
//     and at most 1,000 of them per session, as Mosquitto's
//     max_queued_messages: a message queued costs about 1 KB besides its
//     payload (mochi's packet, the store's record), so 256 sessions full
//     of empty messages hold about 256 MB at most in theory, but the byte
//     limits come first for any payload of 256 bytes or more.
const (
	DefaultMaxConnectSize       = 8 << 10
	DefaultMaxConnecting        = 64
	DefaultConnectTimeout       = 10 * time.Second
	DefaultMaxRetained          = 1000
	DefaultMaxRetainedBytes     = 1 << 20
	DefaultMaxClientSubs        = 64
	DefaultMaxSubscriptions     = 2000
	DefaultMaxOfflineSessions   = 256
	DefaultMaxSessionExpiry     = 7 * 24 * time.Hour
	DefaultMaxSessionQueueBytes = 256 << 10
	DefaultMaxQueueBytes        = 4 << 20
	DefaultMaxSessionQueue      = 1000
)

// Budget is the broker's memory budget (Config.Budget). A zero field takes
// its default; none can be turned off.
type Budget struct {
	// MaxConnectSize bounds the CONNECT packet; a connection declaring a
	// larger one is closed before its bytes are read.
	MaxConnectSize uint32
	// MaxConnecting bounds the connections accepted that have not yet
	// completed CONNECT (authentication included) on all listeners; one
	// more is closed at once.
	MaxConnecting int
	// ConnectTimeout is how long a connection has for its TLS handshake
	// and CONNECT.
	ConnectTimeout time.Duration
	// MaxRetained and MaxRetainedBytes (topics plus payloads) bound the
	// retained messages; a new one beyond them is refused (MQTT 5 QoS 1/2:
	// PUBACK/PUBREC 0x97) or, where the client cannot be told, delivered
	// but not retained. Replacing or clearing a retained message is never
	// refused.
	MaxRetained      int
	MaxRetainedBytes int64
	// MaxClientSubscriptions and MaxSubscriptions bound subscriptions per
	// client and in all; a filter beyond them gets SUBACK 0x97 (MQTT
	// 3.1.1: 0x80).
	MaxClientSubscriptions int
	MaxSubscriptions       int
	// MaxOfflineSessions bounds the persistent sessions kept while their
	// clients are away; beyond it a new persistent session is refused
	// (CONNACK 0x97, MQTT 3.1.1 0x03) and existing ones are kept: evicting
	// would let any client push out the sessions of others.
	MaxOfflineSessions int
	// MaxSessionExpiry is the longest a disconnected session is kept
	// (MQTT 5 clients are told; 3.1.1 clean_session=false ones too).
	MaxSessionExpiry time.Duration
	// MaxSessionQueueBytes and MaxQueueBytes bound the payload bytes of
	// QoS 1/2 messages in flight to or queued for one client, and for all;
	// a message beyond them is dropped for that client, counted and
	// audited. (Config.MaxInflight bounds the count per client.)
	MaxSessionQueueBytes int64
	MaxQueueBytes        int64
	// MaxSessionQueue bounds the number of QoS 1/2 messages in flight to
	// or queued for one client (broker.max_queued); a message beyond it is
	// dropped for that client, counted and audited (reason
	// session_count). It is apart from Config.MaxInflight, the window of
	// messages sent unacknowledged, so a session offline keeps up to this
	// many messages, in publish order (PATCHES.md, 10).
	MaxSessionQueue int
}

// withDefaults returns b with every zero field set to its default, or an
// error naming a negative one.
func (b Budget) withDefaults() (Budget, error) {
	ints := []struct {
		name string
		v    *int
		def  int
	}{
		{"max connecting", &b.MaxConnecting, DefaultMaxConnecting},
		{"max retained", &b.MaxRetained, DefaultMaxRetained},
		{"max subscriptions per client", &b.MaxClientSubscriptions, DefaultMaxClientSubs},
		{"max subscriptions", &b.MaxSubscriptions, DefaultMaxSubscriptions},
		{"max offline sessions", &b.MaxOfflineSessions, DefaultMaxOfflineSessions},
		{"max queued", &b.MaxSessionQueue, DefaultMaxSessionQueue},
	}
	for _, f := range ints {
		switch {
		case *f.v < 0:
			return b, fmt.Errorf("broker: %s %d: want 1 or more", f.name, *f.v)
		case *f.v == 0:
			*f.v = f.def
		}
	}
	i64s := []struct {
		name string
		v    *int64
		def  int64
	}{
		{"max retained bytes", &b.MaxRetainedBytes, DefaultMaxRetainedBytes},
		{"max session queue bytes", &b.MaxSessionQueueBytes, DefaultMaxSessionQueueBytes},
		{"max queue bytes", &b.MaxQueueBytes, DefaultMaxQueueBytes},
		{"connect timeout", (*int64)(&b.ConnectTimeout), int64(connectTimeout)},
		{"max session expiry", (*int64)(&b.MaxSessionExpiry), int64(DefaultMaxSessionExpiry)},
	}
	for _, f := range i64s {
		switch {
		case *f.v < 0:
			return b, fmt.Errorf("broker: %s %d: want more than 0", f.name, *f.v)
		case *f.v == 0:
			*f.v = f.def
		}
	}
	if b.MaxConnectSize == 0 {
		b.MaxConnectSize = DefaultMaxConnectSize
	}
	if b.MaxSessionQueue > 65535 {
		return b, fmt.Errorf("broker: max queued %d: want at most 65535 (each queued message holds a packet ID)", b.MaxSessionQueue)
	}
	if b.MaxSessionExpiry/time.Second > 1<<32-1 {
		return b, fmt.Errorf("broker: max session expiry %v: want at most %v (MQTT's limit)", b.MaxSessionExpiry, (1<<32-1)*time.Second)
	}
	return b, nil
}

// BudgetStats is what the memory budget holds and has refused.
type BudgetStats struct {
	Connecting           int64  `json:"connecting"`             // connections that have not completed CONNECT
	ConnectRefused       uint64 `json:"connect_refused"`        // closed at accept: max_connecting reached
	ConnectTooLarge      uint64 `json:"connect_too_large"`      // closed: CONNECT above max_connect_size
	ConnectTimeouts      uint64 `json:"connect_timeouts"`       // closed: no CONNECT within connect_timeout
	Retained             int64  `json:"retained"`               // retained messages held
	RetainedBytes        int64  `json:"retained_bytes"`         // their topics and payloads
	RetainedRefused      uint64 `json:"retained_refused"`       // new retained messages refused or not retained
	Subscriptions        int64  `json:"subscriptions"`          // subscriptions held
	SubscriptionsRefused uint64 `json:"subscriptions_refused"`  // filters refused (SUBACK 0x97/0x80)
	OfflineSessions      int64  `json:"offline_sessions"`       // persistent sessions kept while their clients are away
	SessionsRefused      uint64 `json:"sessions_refused"`       // new persistent sessions refused (CONNACK 0x97/0x03)
	QueuedBytes          int64  `json:"queued_bytes"`           // QoS 1/2 payload bytes in flight or queued
	QueueDropped         uint64 `json:"queue_dropped"`          // messages dropped for a client: its queue was full
	QueueFullCount       uint64 `json:"queue_full_count"`       // of which: the session held max_queued messages
	QueueFullBytes       uint64 `json:"queue_full_bytes"`       // of which: over max_session_queue_bytes
	QueueFullTotal       uint64 `json:"queue_full_total"`       // of which: over max_queue_bytes (all sessions)
	WriteBufferFull      uint64 `json:"write_buffer_full"`      // of which: QoS 0 to a connected client not reading (write buffer full)
	StoreDropped         uint64 `json:"store_dropped_at_start"` // stored sessions and messages left out at start to fit the budget
}

// budget enforces Budget: the connections before CONNECT (with the
// listeners' connSet), the retained messages (limitHook), and, through
// mochi's Options.Budget (third_party/mochi-mqtt/PATCHES.md, 7), the
// CONNECT size, subscriptions, sessions and queues.
type budget struct {
	Budget
	mochi *mqtt.Budget
	audit Auditor
	now   func() time.Time

	mu         sync.Mutex
	connecting map[net.Conn]struct{} // raw connections before CONNECT

	retainedMu    sync.Mutex
	retained      map[string]int64       // topic → topic and payload bytes
	retainedBytes int64                  // their sum
	reserved      map[string]reservation // allowed, not yet retained
	reservedBytes int64                  // their sum

	dropMu      sync.Mutex
	dropAudited map[string]time.Time // client ID → last queue_drop entry

	connectRefused, connectTooLarge, connectTimeouts atomic.Uint64
	retainedRefused, storeDropped                    atomic.Uint64
}

func newBudget(b Budget, a Auditor, now func() time.Time) (*budget, error) {
	b, err := b.withDefaults()
	if err != nil {
		return nil, err
	}
	if a == nil {
		a = nopAuditor{}
	}
	bg := &budget{
		Budget: b, audit: a, now: now,
		connecting:  map[net.Conn]struct{}{},
		retained:    map[string]int64{},
		reserved:    map[string]reservation{},
		dropAudited: map[string]time.Time{},
	}
	bg.mochi = &mqtt.Budget{
		MaxConnectSize:         b.MaxConnectSize,
		MaxClientSubscriptions: b.MaxClientSubscriptions,
		MaxSubscriptions:       int64(b.MaxSubscriptions),
		MaxOfflineSessions:     b.MaxOfflineSessions,
		MaxSessionQueueBytes:   b.MaxSessionQueueBytes,
		MaxQueueBytes:          b.MaxQueueBytes,
		MaxSessionQueue:        b.MaxSessionQueue,
		OnQueueDrop:            bg.queueDropped,
	}
	return bg, nil
}

// admit counts c as connecting; false (c must be closed) when
// MaxConnecting connections are already.
func (bg *budget) admit(c net.Conn) bool {
	bg.mu.Lock()
	defer bg.mu.Unlock()
	if len(bg.connecting) >= bg.MaxConnecting {
		bg.connectRefused.Add(1)
		return false
	}
	bg.connecting[c] = struct{}{}
	return true
}

// connected stops counting c, if it was; it reports whether it was.
func (bg *budget) connected(c net.Conn) bool {
	bg.mu.Lock()
	defer bg.mu.Unlock()
	_, ok := bg.connecting[c]
	delete(bg.connecting, c)
	return ok
}

// ended counts why a connection that never completed CONNECT ended.
func (bg *budget) ended(c net.Conn, err error) {
	if !bg.connected(c) || err == nil {
		return
	}
	switch {
	case errors.Is(err, packets.ErrPacketTooLarge):
		bg.connectTooLarge.Add(1)
	case errors.Is(err, os.ErrDeadlineExceeded):
		bg.connectTimeouts.Add(1)
	}
}

// rawConn returns the accepted connection under mochi's cl.Net.Conn, which
// is what the listeners count.
func rawConn(c net.Conn) net.Conn {
	switch t := c.(type) {
	case *tls.Conn:
		return t.NetConn()
	case *wsConn:
		return t.Conn
	}
	return c
}

// retainedSize is what a retained message counts against MaxRetainedBytes.
func retainedSize(topic string, payload []byte) int64 { return int64(len(topic) + len(payload)) }

// reservation is a retained message allowed by OnPublish that mochi has
// not retained yet: the ingest hook defers a PUBLISH to its event's
// commit (PATCHES.md, 5), so a client's next PUBLISHes (up to its Receive
// Maximum) are checked before the first is retained; they are counted as
// reserved so that they cannot all pass the limit.
type reservation struct {
	n  int64
	at time.Time
}

// reservationTTL bounds how long a reservation counts: a PUBLISH the log
// then refuses is never retained, and its reservation must not hold a
// place for good. A commit takes milliseconds; a minute is ample.
const reservationTTL = time.Minute

// retainAllowed reports whether a retained PUBLISH may be kept, and if so
// reserves its place: a new topic must fit both limits, a replacement the
// byte limit; a deletion (empty payload) always may. Reservations count
// as retained (a replacement's at its new size on top of the old:
// conservative for the moment it is pending).
func (bg *budget) retainAllowed(topic string, payload []byte) bool {
	if len(payload) == 0 {
		return true
	}
	bg.retainedMu.Lock()
	defer bg.retainedMu.Unlock()
	now := bg.now()
	for t, r := range bg.reserved {
		if now.Sub(r.at) > reservationTTL {
			bg.unreserve(t)
		}
	}
	old, held := bg.retained[topic]
	prev, pending := bg.reserved[topic]
	if !held && !pending && len(bg.retained)+len(bg.reserved) >= bg.MaxRetained {
		return false
	}
	n := retainedSize(topic, payload)
	if bg.retainedBytes-old+bg.reservedBytes-prev.n+n > bg.MaxRetainedBytes {
		return false
	}
	bg.reserved[topic] = reservation{n: n, at: now}
	bg.reservedBytes += n - prev.n
	return true
}

// unreserve drops topic's reservation; the caller holds retainedMu.
func (bg *budget) unreserve(topic string) {
	bg.reservedBytes -= bg.reserved[topic].n
	delete(bg.reserved, topic)
}

// retainedSet records that topic's retained message is now payload
// (empty: none), ending its reservation.
func (bg *budget) retainedSet(topic string, payload []byte) {
	bg.retainedMu.Lock()
	defer bg.retainedMu.Unlock()
	bg.unreserve(topic)
	bg.retainedBytes -= bg.retained[topic]
	delete(bg.retained, topic)
	if len(payload) > 0 {
		n := retainedSize(topic, payload)
		bg.retained[topic] = n
		bg.retainedBytes += n
	}
}

// queueDropped is mochi's OnQueueDrop: it writes an audit entry per client
// at most once a minute (a publisher feeding a full queue would otherwise
// write one per message); the counter has every drop.
func (bg *budget) queueDropped(cl *mqtt.Client, pk packets.Packet, reason string) {
	now := bg.now()
	bg.dropMu.Lock()
	last, ok := bg.dropAudited[cl.ID]
	if ok && now.Sub(last) < time.Minute {
		bg.dropMu.Unlock()
		return
	}
	if len(bg.dropAudited) >= 1024 { // bound the map: forget the old entries
		for id, t := range bg.dropAudited {
			if now.Sub(t) >= time.Minute {
				delete(bg.dropAudited, id)
			}
		}
	}
	bg.dropAudited[cl.ID] = now
	bg.dropMu.Unlock()
	bg.audit.Record(audit.Entry{Event: "queue_drop", ClientID: cl.ID, Username: string(cl.Properties.Username),
		Listener: cl.Net.Listener, Topic: pk.TopicName, Reason: reason,
		Detail: "queued message dropped for this client; further drops in the next minute are counted, not recorded"})
}

// stats returns the budget's counters; server gives mochi's.
func (bg *budget) stats(s *mqtt.Server) BudgetStats {
	bg.mu.Lock()
	connecting := int64(len(bg.connecting))
	bg.mu.Unlock()
	bg.retainedMu.Lock()
	retained, retainedBytes := int64(len(bg.retained)), bg.retainedBytes
	bg.retainedMu.Unlock()
	return BudgetStats{
		Connecting:           connecting,
		ConnectRefused:       bg.connectRefused.Load(),
		ConnectTooLarge:      bg.connectTooLarge.Load(),
		ConnectTimeouts:      bg.connectTimeouts.Load(),
		Retained:             retained,
		RetainedBytes:        retainedBytes,
		RetainedRefused:      bg.retainedRefused.Load(),
		Subscriptions:        atomic.LoadInt64(&s.Info.Subscriptions),
		SubscriptionsRefused: bg.mochi.SubscriptionsRefused.Load(),
		OfflineSessions:      s.OfflineSessions(),
		SessionsRefused:      bg.mochi.SessionsRefused.Load(),
		QueuedBytes:          bg.mochi.QueuedBytes(),
		QueueDropped:         bg.mochi.QueueDropped.Load(),
		QueueFullCount:       bg.mochi.QueueDroppedCount.Load(),
		QueueFullBytes:       bg.mochi.QueueDroppedSessionBytes.Load(),
		QueueFullTotal:       bg.mochi.QueueDroppedTotalBytes.Load(),
		WriteBufferFull:      bg.mochi.QueueDroppedWriteBuffer.Load(),
		StoreDropped:         bg.storeDropped.Load(),
	}
}

// budgetHook applies the retained-message budget and ends a connection's
// count as connecting once it is authenticated.
type budgetHook struct {
	mqtt.HookBase
	bg *budget
}

func (h *budgetHook) ID() string { return "ferry-budget" }

func (h *budgetHook) Provides(b byte) bool {
	return bytes.IndexByte([]byte{mqtt.OnSessionEstablish, mqtt.OnPublish, mqtt.OnRetainMessage, mqtt.OnRetainedExpired}, b) >= 0
}

// OnSessionEstablish runs once the client is authenticated: it no longer
// counts against MaxConnecting.
func (h *budgetHook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Conn != nil {
		h.bg.connected(rawConn(cl.Net.Conn))
	}
}

// OnPublish refuses a new retained message beyond the budget: an MQTT 5
// QoS 1/2 publisher gets 0x97; any other (which has no reason codes, or
// no acknowledgement) has its message delivered but not retained. The
// hook runs before the ingest hook, so a refused message is not stored
// either, and the publisher may retry.
func (h *budgetHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !pk.FixedHeader.Retain || h.bg.retainAllowed(pk.TopicName, pk.Payload) {
		return pk, nil
	}
	h.bg.retainedRefused.Add(1)
	if !cl.Net.Inline && cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos > 0 {
		return pk, packets.ErrQuotaExceeded
	}
	pk.FixedHeader.Retain = false
	return pk, nil
}

// OnRetainMessage keeps the retained accounting exact: mochi calls it once
// it has stored (or, for an empty payload, removed) the message.
func (h *budgetHook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	h.bg.retainedSet(pk.TopicName, pk.Payload)
}

func (h *budgetHook) OnRetainedExpired(topic string) {
	h.bg.retainedSet(topic, nil)
}
