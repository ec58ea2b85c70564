package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

const (
	connectTimeout = 10 * time.Second
	// writeTimeout bounds both a network write and paho's hand-off of a
	// publish to its writer goroutine, which otherwise blocks for 30 s when
	// the connection drops underneath a Publish call.
	writeTimeout    = 5 * time.Second
	reconnectMin    = 50 * time.Millisecond
	reconnectMax    = 2 * time.Second
	disconnectQuiet = 250 // ms
)

// clientOptions returns paho options shared by publishers and subscriber.
func clientOptions(cfg *Config, broker, clientID string) *mqtt.ClientOptions {
	o := mqtt.NewClientOptions().
		AddBroker(broker).
		SetClientID(clientID).
		SetProtocolVersion(4).
		SetConnectTimeout(connectTimeout).
		SetWriteTimeout(writeTimeout).
		SetKeepAlive(30 * time.Second).
		SetOrderMatters(true)
	if cfg.Username != "" {
		o.SetUsername(cfg.Username)
		o.SetPassword(cfg.Password)
	}
	return o
}

// connect connects c, giving up when ctx ends.
func connect(ctx context.Context, c mqtt.Client, broker string) error {
	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		c.Disconnect(0)
		return fmt.Errorf("connect %s: %w", broker, ctx.Err())
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("connect %s: %w", broker, err)
	}
	return nil
}

// flight is one publish awaiting its acknowledgement.
type flight struct {
	tok  mqtt.Token
	seq  uint32
	sent time.Time
	buf  []byte
}

// publisher is one MQTT connection publishing Messages messages. run owns
// client; the ack goroutine owns acked, latency and lastAck until run
// returns.
type publisher struct {
	cfg      *Config
	idx      int
	run      RunID
	topic    string
	clientID string
	logf     func(format string, args ...any)

	client mqtt.Client

	acked   bitset
	latency histogram
	lastAck time.Time

	published  atomic.Int64
	ackedN     atomic.Int64
	errors     atomic.Int64
	reconnects atomic.Int64

	errMu    sync.Mutex
	firstErr error
}

func newPublisher(cfg *Config, idx int, run RunID, logf func(string, ...any)) *publisher {
	return &publisher{
		cfg:      cfg,
		idx:      idx,
		run:      run,
		topic:    cfg.Topic + "/" + strconv.Itoa(idx),
		clientID: fmt.Sprintf("%s-%s-p%d", cfg.ClientPrefix, run.String()[:8], idx),
		logf:     logf,
		acked:    newBitset(cfg.Messages),
	}
}

// dial creates and connects a fresh client. Automatic reconnection is off:
// on connection loss paho fails the in-flight tokens and run reconnects
// itself, continuing with the next sequence number.
func (p *publisher) dial(ctx context.Context) error {
	o := clientOptions(p.cfg, p.cfg.Broker, p.clientID).
		SetCleanSession(true).
		SetAutoReconnect(false)
	c := mqtt.NewClient(o)
	if err := connect(ctx, c, p.cfg.Broker); err != nil {
		return fmt.Errorf("publisher %d: %w", p.idx, err)
	}
	p.client = c
	return nil
}

// redial replaces a lost connection, retrying with backoff until ctx ends.
func (p *publisher) redial(ctx context.Context) error {
	if p.client != nil {
		p.client.Disconnect(0)
		p.client = nil
	}
	wait := reconnectMin
	for attempt := 0; ; attempt++ {
		err := p.dial(ctx)
		if err == nil {
			p.reconnects.Add(1)
			p.logf("publisher %d: reconnected after %d failed attempts", p.idx, attempt)
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		if attempt == 0 {
			p.logf("%v; retrying", err)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return fmt.Errorf("publisher %d: reconnect: %w", p.idx, ctx.Err())
		}
		wait = min(wait*2, reconnectMax)
	}
}

func (p *publisher) noteErr(err error) {
	p.errors.Add(1)
	p.errMu.Lock()
	if p.firstErr == nil {
		p.firstErr = err
	}
	p.errMu.Unlock()
}

// publish sends the publisher's messages and returns when all have been
// acknowledged or failed, or ctx ends, leaving the connection open for Run
// to hold and close. p.client must be connected.
func (p *publisher) publish(ctx context.Context) {
	w := p.cfg.Inflight
	// free holds the payload buffers not referenced by paho: taking one is
	// taking a slot in the window, so pending never blocks.
	free := make(chan []byte, w)
	for range w {
		free <- newPayload(p.cfg.PayloadSize)
	}
	pending := make(chan flight, w)
	acksDone := make(chan struct{})
	go p.collectAcks(ctx, pending, free, acksDone)
	defer func() {
		close(pending)
		<-acksDone
	}()

	h := header{run: p.run, pub: uint32(p.idx)}
	for seq := 0; seq < p.cfg.Messages; seq++ {
		var buf []byte
		select {
		case buf = <-free:
		case <-ctx.Done():
			return
		}
		if p.client == nil || !p.client.IsConnectionOpen() {
			if err := p.redial(ctx); err != nil {
				return
			}
		}
		now := p.cfg.Now()
		h.seq, h.sent = uint32(seq), now.UnixNano()
		putHeader(buf, h)
		tok := p.client.Publish(p.topic, p.cfg.QoS, false, buf)
		p.published.Add(1)
		pending <- flight{tok: tok, seq: uint32(seq), sent: now, buf: buf}
	}
}

// collectAcks waits for the tokens in publish order. A buffer goes back to
// free only when its token succeeded: after a PUBACK paho has dropped the
// packet from its store, and a QoS 0 token completes after the write. After
// a failure paho may still hold the packet, so a fresh buffer replaces it.
func (p *publisher) collectAcks(ctx context.Context, pending <-chan flight, free chan<- []byte, done chan<- struct{}) {
	defer close(done)
	for f := range pending {
		select {
		case <-f.tok.Done():
		case <-ctx.Done():
		}
		select {
		case <-f.tok.Done():
		default:
			continue // gave up: sent but not acknowledged
		}
		if err := f.tok.Error(); err != nil {
			p.noteErr(fmt.Errorf("publisher %d: seq %d: %w", p.idx, f.seq, err))
			free <- newPayload(p.cfg.PayloadSize)
			continue
		}
		now := p.cfg.Now()
		if p.cfg.QoS > 0 {
			p.latency.add(now.Sub(f.sent))
		}
		p.acked.set(f.seq)
		p.ackedN.Add(1)
		p.lastAck = now
		free <- f.buf
	}
}

// open reports whether the publisher's connection is still up; only call it
// once publish has returned.
func (p *publisher) open() bool { return p.client != nil && p.client.IsConnectionOpen() }

// disconnectAll closes every publisher's connection, concurrently: each
// Disconnect waits up to disconnectQuiet for paho's outgoing work.
func disconnectAll(pubs []*publisher) {
	var wg sync.WaitGroup
	for _, p := range pubs {
		if p.client != nil {
			wg.Go(func() { p.client.Disconnect(disconnectQuiet) })
		}
	}
	wg.Wait()
}

// errNotAllConnected reports publishers that could not connect initially.
var errNotAllConnected = errors.New("not all publishers connected")
