package uplink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

const (
	// shutdownDrain is how long Run, when cancelled, waits for PUBACKs of
	// publishes already in flight before it disconnects, so they are not
	// sent again after a restart.
	shutdownDrain = time.Second
	// disconnectQuiesce is the paho Disconnect quiesce, in milliseconds.
	disconnectQuiesce = 250
	// tokenDrainTimeout bounds the wait for paho to complete the tokens of
	// a connection that is gone (it normally does so at once, see waiter).
	tokenDrainTimeout = 2 * time.Second
	// queueRetry is the pause after a failed queue read.
	queueRetry = time.Second
)

// Forwarder drains a Queue to a cloud MQTT broker. Create one with New and
// start it with Run; Status may be called from any goroutine.
type Forwarder struct {
	q       Queue
	cfg     Config
	topic   topicTemplate
	log     *slog.Logger // Config.Logger: it rate-limits, the forwarder does not
	pacer   *pacer
	slots   chan *record // free window slots, each with a reusable buffer
	running atomic.Bool

	seq  Sequenced    // the Queue's sequence support; nil when it has none
	drec DropRecorder // the Queue's record of the uplink's drops; nil when it has none
	comp *Compressor  // nil: CompressionNone

	// Owned by the goroutine running Run (the publisher).
	epoch     string // the Queue's epoch, read at the start of each session
	fields    [senmlMaxFields]senmlField
	firstPack senmlPack // encodes an event as a pack's first (Forwarder.encode)
	streams   map[string]*streamState
	active    []*streamState
	rr        int
	sessionID uint64
	scratch   []byte
	topicBuf  []byte
	suspects  map[*streamState]*suspect // messages suspected of poisoning the connection (poison.go)
	lingerT   *time.Timer               // fires when a lingering stream's batch is due (linger.go)
	heldUntil time.Time                 // isolation failed: when to try it again
	budgetT   *time.Timer               // fires when the budget may hold no more (budget.go)
	// budgetRecheck bounds the wait for a budget-held stream (budget.go).
	budgetRecheck time.Duration

	budget *budget // nil: no data budget (budget.go)

	mu      sync.Mutex // guards status, meter, pubacks, good and streamState.acked*
	status  Status
	meter   rateMeter
	pubacks uint64                  // PUBACKs received, probes included: evidence the cloud accepts messages (poison.go)
	good    goodCopy                // the last small message the cloud acknowledged: a probe (poison.go)
	resends map[string]*resendRange // pending resends by stream (resend.go)
	// requeues counts, per stream, the connections lost with resent
	// messages in flight since its last request (resend.go).
	requeues map[string]requeueCount

	resendWake chan struct{} // signalled by Resend, wakes the publisher
}

// streamState is the forwarder's position in one stream.
type streamState struct {
	name string
	prio int // priority, 0 the highest (budget.go)

	// Publisher only.
	next           uint64 // next offset to read
	sentNext       uint64 // offset after the last event ever published
	dirty          bool   // may have unread events
	lastTopic      string // cache: the string of lastTopicBytes
	lastTopicBytes []byte
	prev           uint64            // offset of the last event published this session, or the acked one before it
	drops          map[string]uint64 // events after prev not sent, by reason: announced with the next one
	replayed       uint64            // events through this offset are replays (Sequenced.ReplayedThrough)
	lingerUntil    time.Time         // waiting for a batch to fill until then (linger.go); zero: not waiting
	backlog        bool              // the last read filled its share of the window: more were waiting

	// Waiter only.
	failedIn uint64 // session in which a publish of this stream failed

	// Guarded by Forwarder.mu.
	ackedNext   uint64 // offset after the last acked event (0: none acked)
	unannounced dropRun
}

// dropRun is a run of events the forwarder acked without sending them
// (oversize, unencodable, poison) whose announcement, in the gap of the
// stream's next event, the cloud has not yet acknowledged: every new
// session of this Forwarder announces it again. Used only when the Queue
// is not a DropRecorder, which keeps them durably instead.
type dropRun struct {
	from, through uint64
	reasons       map[string]uint64
}

// add merges the events from..through, dropped for reason, into d.
func (d *dropRun) add(from, through uint64, reason string) {
	if len(d.reasons) == 0 || from > d.through+1 {
		*d = dropRun{from: from, reasons: map[string]uint64{}}
	}
	d.through = max(d.through, through)
	d.reasons[reason] += through - from + 1
}

// New validates cfg, applies defaults and returns a Forwarder for q.
func New(q Queue, cfg Config) (*Forwarder, error) {
	if q == nil {
		return nil, fmt.Errorf("%w: nil queue", ErrConfig)
	}
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	tmpl, err := compileTopic(cfg.Topic, cfg.GatewayID, cfg.MaxTopicBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	f := &Forwarder{
		q:          q,
		cfg:        cfg,
		topic:      tmpl,
		log:        cfg.Logger,
		pacer:      newPacer(cfg.MessagesPerSecond, cfg.BytesPerSecond, cfg.MaxMessageBytes),
		slots:      make(chan *record, cfg.Inflight),
		streams:    map[string]*streamState{},
		suspects:   map[*streamState]*suspect{},
		resendWake: make(chan struct{}, 1),
		status:     Status{Acked: map[string]uint64{}, Dropped: map[string]uint64{}},
	}
	for range cfg.Inflight {
		f.slots <- &record{}
	}
	f.budgetRecheck = budgetRecheck
	if cfg.Budget.Bytes > 0 {
		lowest := cfg.DefaultPriority
		for _, p := range cfg.Priorities {
			lowest = max(lowest, p)
		}
		f.budget = &budget{cfg: cfg.Budget, store: cfg.Budget.Store, held: make([]bool, lowest+1)}
		if f.budget.store == nil {
			f.budget.store, _ = q.(BudgetStore)
		}
	}
	f.seq, _ = q.(Sequenced)
	if f.seq != nil {
		f.drec, _ = q.(DropRecorder)
	}
	if cfg.Compression == CompressionZstd {
		if f.comp, err = NewCompressor(); err != nil {
			return nil, err
		}
	}
	if cfg.QoS == 0 {
		f.log.Warn("uplink uses QoS 0: events are acked when written and are lost if the connection drops")
	}
	return f, nil
}

// Run connects and forwards until ctx is cancelled; it then disconnects,
// waits for all of its goroutines and returns nil. It returns an error only
// when called while another Run of f is active.
func (f *Forwarder) Run(ctx context.Context) error {
	if !f.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer f.running.Store(false)
	f.loadBudget()
	rc := newReconnect(f.cfg)
	rd := newRound(0, len(f.cfg.Endpoints))
	for ctx.Err() == nil {
		c, err := f.connect(ctx, &rd)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			rd = newRound(rd.first, len(f.cfg.Endpoints)) // the next round in the same order
			f.setError(err)
			f.connectFailed()
			d := rc.afterConnectFailure(err)
			if errors.Is(err, ErrRefused) {
				f.log.Warn("cloud refused the connection; backing off", "retry_in", d.Round(time.Millisecond), "err", err)
			} else {
				f.log.Warn("no endpoint reachable; probing", "retry_in", d.Round(time.Millisecond), "err", err)
			}
			sleep(ctx, d)
			continue
		}
		up := f.cfg.Now()
		f.setConnected(c.url, up)
		f.log.Info("connected", "endpoint", c.url)
		err = f.runSession(ctx, c)
		f.setDisconnected(err)
		if ctx.Err() != nil {
			break
		}
		f.judge(c, err)
		upFor := f.cfg.Now().Sub(up)
		var d time.Duration
		if upFor < f.cfg.StableAfter && rd.left > 0 {
			// Lost soon after it was accepted, with endpoints of this
			// round not tried yet: the node may have died (or the cluster
			// moved what the connection needed elsewhere); fail over to
			// the next one now, not after a backoff step. The round goes
			// on from the endpoint after c.
			d = rc.failover()
		} else {
			d = rc.afterSession(upFor)
			// A new round, starting after the endpoint just lost: it is
			// the likeliest to be gone, and is tried last.
			rd = newRound(c.ep+1, len(f.cfg.Endpoints))
		}
		f.log.Warn("disconnected", "endpoint", c.url, "up_for", upFor.Round(time.Millisecond),
			"retry_in", d.Round(time.Millisecond), "next_endpoint", f.cfg.Endpoints[rd.next].URL, "err", err)
		sleep(ctx, d)
	}
	f.mu.Lock()
	f.status.Connected = false
	f.mu.Unlock()
	return nil
}

// isTLSURL reports whether u is dialled over TLS.
func isTLSURL(u string) bool {
	p, err := url.Parse(u)
	return err == nil && tlsSchemes[p.Scheme]
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// round is where the forwarder is in a round of connection attempts:
// every endpoint is tried once per round, in the configured order
// starting with first, wrapping around. A round ends when every endpoint
// was tried without a connection that stood StableAfter; only then does
// the backoff take a step (see Run).
type round struct {
	first int // the endpoint the round started with
	next  int // the endpoint to try next
	left  int // endpoints not tried yet in this round
}

// newRound returns a round of n endpoints starting with endpoint first (mod n).
func newRound(first, n int) round {
	first %= n
	return round{first: first, next: first, left: n}
}

// take returns the endpoint to try next and counts it as tried.
func (r *round) take(n int) int {
	i := r.next
	r.next = (i + 1) % n
	r.left--
	return i
}

// conn is one cloud connection and the session state that lives with it.
type conn struct {
	client mqtt.Client
	url    string
	tls    bool // a TLS URL: the budget counts TLS records (budget.go)
	ep     int  // index in Config.Endpoints
	id     uint64

	ctx    context.Context // cancelled when the session must end
	cancel context.CancelCauseFunc

	dead     chan struct{} // closed once the connection is gone
	deadOnce sync.Once

	pending    chan *record // published records, in order, to the waiter
	waiterDone chan struct{}

	// Set by the waiter, read by Run once waiterDone is closed.
	fails    map[*streamState]*failure // each stream's failed publishes
	soloDone chan struct{}             // a record sent alone completed (poison.go)
	acked    chan struct{}             // signalled on each PUBACK, wakes a pump awaiting evidence (poison.go)
	settled  bool                      // publisher only: stood soloSettle idle (poison.go)
	probed   bool                      // publisher only: a probe was sent (poison.go)
	// Publisher only (poison.go): the cloud acknowledged a copy of a
	// message it took before on this connection, or did not.
	preProbed, preProbeFailed bool
}

func (c *conn) markDead() { c.deadOnce.Do(func() { close(c.dead) }) }

func (c *conn) isDead() bool {
	select {
	case <-c.dead:
		return true
	default:
		return false
	}
}

// fail ends the session because of err.
func (c *conn) fail(err error) { c.cancel(err) }

// connect tries the endpoints left in round rd, in order, and returns the
// first connection; it fails once none is left.
func (f *Forwarder) connect(ctx context.Context, rd *round) (*conn, error) {
	var errs []error
	for rd.left > 0 {
		i := rd.take(len(f.cfg.Endpoints))
		ep := f.cfg.Endpoints[i]
		f.sessionID++
		c := &conn{url: ep.URL, ep: i, id: f.sessionID, dead: make(chan struct{}), tls: isTLSURL(ep.URL)}
		c.ctx, c.cancel = context.WithCancelCause(ctx)
		opts := mqtt.NewClientOptions().
			AddBroker(ep.URL).
			SetClientID(f.cfg.ClientID).
			SetUsername(f.cfg.Username).
			SetPassword(f.cfg.Password).
			SetCleanSession(true).
			SetAutoReconnect(false).
			SetConnectRetry(false).
			SetResumeSubs(false).
			SetKeepAlive(f.cfg.Keepalive).
			SetPingTimeout(min(f.cfg.Keepalive, 10*time.Second)).
			SetProtocolVersion(4). // no silent fallback to MQTT 3.1 after a refused CONNECT
			SetConnectTimeout(f.cfg.ConnectTimeout).
			// Cancel (deprecated, but paho dials without a context) aborts a
			// dial that is still pending when Run is cancelled; the MQTT
			// handshake after it is bounded by ConnectTimeout.
			//lint:ignore SA1019 paho.mqtt.golang v1.5 dials without a context; Cancel is the only way to abort its dial
			SetDialer(&net.Dialer{Timeout: f.cfg.ConnectTimeout, KeepAlive: 30 * time.Second, Cancel: ctx.Done()}).
			SetWriteTimeout(f.cfg.ConnectTimeout).
			SetConnectionLostHandler(func(_ mqtt.Client, err error) {
				c.fail(fmt.Errorf("%w: %s: %v", ErrConnectionLost, ep.URL, err))
				c.markDead()
			})
		if ep.TLS != nil {
			opts.SetTLSConfig(ep.TLS)
		}
		c.client = mqtt.NewClient(opts)
		tok := c.client.Connect()
		<-tok.Done() // bounded by ConnectTimeout and aborted with ctx (see the dialer)
		if err := tok.Error(); err != nil {
			c.cancel(nil)
			errs = append(errs, fmt.Errorf("%s: %w", ep.URL, classifyConnectError(err)))
			continue
		}
		if ctx.Err() != nil {
			c.client.Disconnect(0)
			c.cancel(nil)
			return nil, ctx.Err()
		}
		return c, nil
	}
	return nil, fmt.Errorf("%w: %w", ErrConnect, errors.Join(errs...))
}

// classifyConnectError wraps a failed paho Connect's error in
// ErrUnreachable when the dial itself failed, nothing having answered, and
// in ErrRefused otherwise: the endpoint was reached and the TLS or MQTT
// handshake failed or the CONNACK refused. Unknown errors count as refused,
// so that an unforeseen failure is retried at the slower pace.
func classifyConnectError(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		// paho wraps it in "network Error : ", which says nothing more.
		return fmt.Errorf("%w: %w", ErrUnreachable, op)
	}
	return fmt.Errorf("%w: %w", ErrRefused, err)
}

// runSession forwards over c until the connection fails or ctx is done,
// then disconnects and waits for the waiter. It returns why the session ended.
func (f *Forwarder) runSession(ctx context.Context, c *conn) error {
	defer c.cancel(nil)
	c.pending = make(chan *record, f.cfg.Inflight)
	c.waiterDone = make(chan struct{})
	c.soloDone = make(chan struct{}, 1)
	c.acked = make(chan struct{}, 1)
	go f.wait(c)

	f.pump(c)
	close(c.pending)
	if ctx.Err() != nil && !c.isDead() {
		// Shutting down: let PUBACKs of in-flight publishes arrive first.
		t := time.NewTimer(shutdownDrain)
		select {
		case <-c.waiterDone:
		case <-c.dead:
		case <-t.C:
		}
		t.Stop()
	}
	c.client.Disconnect(disconnectQuiesce)
	c.markDead()
	<-c.waiterDone
	return context.Cause(c.ctx)
}

func (f *Forwarder) setError(err error) {
	f.mu.Lock()
	f.status.LastError = err.Error()
	f.mu.Unlock()
}

func (f *Forwarder) setConnected(url string, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.status.LastConnected.IsZero() {
		f.status.Reconnects++
	}
	f.status.Connected = true
	f.status.Endpoint = url
	f.status.LastConnected = now
}

func (f *Forwarder) setDisconnected(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status.Connected = false
	f.status.LastDisconnected = f.cfg.Now()
	if err != nil && !errors.Is(err, context.Canceled) {
		f.status.LastError = err.Error()
	}
}
