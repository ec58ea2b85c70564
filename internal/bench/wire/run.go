package wire

import (
	"bytes"
	"compress/flate"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferrygw/ferry/uplink"
)

// Case is one way of sending the stream.
type Case struct {
	Name        string
	Format      uplink.Format
	Batch       int // uplink BatchMaxEvents; 1: one event a message
	Compression uplink.Compression
}

// Cases are the forms `make bench-wire` measures: JSON single, JSON
// batched, CBOR batched and SenML-CBOR batched, each plain and compressed.
var Cases = []Case{
	{"JSON single", uplink.FormatJSON, 1, uplink.CompressionNone},
	{"JSON single + zstd", uplink.FormatJSON, 1, uplink.CompressionZstd},
	{"JSON batched", uplink.FormatJSON, maxBatch, uplink.CompressionNone},
	{"JSON batched + zstd", uplink.FormatJSON, maxBatch, uplink.CompressionZstd},
	{"CBOR batched", uplink.FormatCBOR, maxBatch, uplink.CompressionNone},
	{"CBOR batched + zstd", uplink.FormatCBOR, maxBatch, uplink.CompressionZstd},
	{"SenML-CBOR batched", uplink.FormatSenMLCBOR, maxBatch, uplink.CompressionNone},
	{"SenML-CBOR batched + zstd", uplink.FormatSenMLCBOR, maxBatch, uplink.CompressionZstd},
}

// maxBatch bounds a batch above one period's events: a batch is a period.
const maxBatch = 100

// Config is a run's setting.
type Config struct {
	// Broker is the host:port of the broker's plain TCP listener; the
	// subscriber that checks delivery uses it too.
	Broker string
	// TLSBroker is the host:port of its TLS listener, and TLS the client
	// configuration for it (its CA, a server name).
	TLSBroker string
	TLS       *tls.Config
	// Periods of readings to send (360: an hour of 10 s periods).
	Periods int
	// Sensors, each one event of Quantities readings a period (10).
	Sensors int
	// Period between a sensor's readings (10 s); simulated.
	Period time.Duration
	// Window is how many periods a batch spans (1: a message per period,
	// as uplink.batch.max_delay of one period makes it for a live stream).
	Window int
	// Seed fixes the stream.
	Seed uint64
	// Start is the simulated time of the first period.
	Start time.Time
	// GatewayID and Topic as the uplink is configured (the topic must not
	// split a period's events: no {source}).
	GatewayID, Topic string
	Logger           *slog.Logger
	// Budget runs the uplink with a data budget too large to hold
	// anything, to compare its count with the proxy's (Result.Budget).
	Budget bool
}

// Result is what one case put on the wire.
type Result struct {
	Case      Case
	Transport string // "tcp" or "tls"
	Window    int    // periods per batch
	Readings  int
	Messages  int
	// Up and Down are the bytes the proxy carried while the readings were
	// sent, connection set-up excluded; Handshake is the set-up (TCP is
	// not counted: TLS handshake, CONNECT, CONNACK).
	Up, Down, Handshake int64
	// Payload is the messages' payload bytes as sent, Raw the same
	// uncompressed; Zstd and Deflate are Raw compressed message by message
	// (zstd as the uplink does, deflate at level 9), for comparison.
	Payload, Raw, Zstd, Deflate int64
	// Budget is what the uplink's data budget counted while the readings
	// were sent (Config.Budget), to compare with Up + Down.
	Budget int64
}

// PerReading is the bytes on the wire per reading, both directions.
func (r Result) PerReading() float64 { return float64(r.Up+r.Down) / float64(r.Readings) }

// Run sends the stream through the uplink to the broker for case c over
// transport ("tcp" or "tls") and measures the bytes.
func Run(ctx context.Context, cfg Config, c Case, transport string) (Result, error) {
	res := Result{Case: c, Transport: transport, Window: max(cfg.Window, 1)}
	target, scheme := cfg.Broker, "tcp"
	var tlsCfg *tls.Config
	if transport == "tls" {
		target, scheme, tlsCfg = cfg.TLSBroker, "ssl", cfg.TLS
	}
	p, err := NewProxy(target)
	if err != nil {
		return res, err
	}
	defer p.Close()
	sub, err := subscribe(cfg.Broker, cfg.GatewayID+"/#")
	if err != nil {
		return res, err
	}
	defer sub.close()

	const stream = "telemetry"
	q := newQueue("5e1f0c0ffee0babe")
	var budget uplink.Budget
	if cfg.Budget {
		budget.Bytes = 1 << 50
	}
	f, err := uplink.New(q, uplink.Config{
		Budget:         budget,
		Endpoints:      []uplink.Endpoint{{URL: scheme + "://" + p.Addr(), TLS: tlsCfg}},
		GatewayID:      cfg.GatewayID,
		Topic:          cfg.Topic,
		Format:         c.Format,
		Compression:    c.Compression,
		BatchMaxEvents: batchFor(c, cfg),
		QoS:            1,
		Logger:         cfg.Logger,
	})
	if err != nil {
		return res, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() { cancel(); <-done }()

	if err := waitUntil(ctx, 10*time.Second, func() bool { return f.Status().Connected }); err != nil {
		return res, fmt.Errorf("uplink did not connect: %w", err)
	}
	up0, down0 := p.Counts()
	res.Handshake = up0 + down0
	used := func() int64 {
		if b := f.Status().Budget; b != nil {
			return int64(b.Used)
		}
		return 0
	}
	used0 := used()
	s := NewStream(cfg.Seed, cfg.Sensors, cfg.Period, cfg.Start)
	window := max(cfg.Window, 1)
	for p := 0; p < cfg.Periods; p += window {
		var last uint64
		for range min(window, cfg.Periods-p) {
			last = q.append(stream, s.Next(stream)...)
		}
		for {
			acked, ch := q.ackedCh(stream)
			if acked >= last {
				break
			}
			select {
			case <-ch:
			case <-time.After(10 * time.Second):
				return res, fmt.Errorf("no ack of offset %d within 10 s (acked %d)", last, acked)
			case <-ctx.Done():
				return res, ctx.Err()
			}
		}
	}
	up1, down1 := p.Counts()
	res.Up, res.Down = up1-up0, down1-down0
	res.Budget = used() - used0
	res.Readings = cfg.Periods * cfg.Sensors * Quantities

	want := cfg.Periods * cfg.Sensors
	if err := waitUntil(ctx, 10*time.Second, func() bool { return sub.events() >= want }); err != nil {
		return res, fmt.Errorf("subscriber got %d of %d events: %w", sub.events(), want, err)
	}
	comp, err := uplink.NewCompressor()
	if err != nil {
		return res, err
	}
	for _, m := range sub.payloads() {
		raw, err := uplink.Decompress(m)
		if err != nil {
			return res, err
		}
		res.Messages++
		res.Payload += int64(len(m))
		res.Raw += int64(len(raw))
		res.Zstd += int64(len(comp.Append(nil, raw)))
		var d bytes.Buffer
		fw, _ := flate.NewWriter(&d, flate.BestCompression)
		_, _ = fw.Write(raw)
		_ = fw.Close()
		res.Deflate += int64(d.Len())
	}
	if sub.err != nil {
		return res, sub.err
	}
	return res, nil
}

// batchFor is the uplink's BatchMaxEvents for c: 1, or a window's events.
func batchFor(c Case, cfg Config) int {
	if c.Batch <= 1 {
		return 1
	}
	return max(c.Batch, max(cfg.Window, 1)*cfg.Sensors)
}

// waitUntil polls cond every few milliseconds until it holds, ctx ends
// or d passes.
func waitUntil(ctx context.Context, d time.Duration, cond func() bool) error {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			return errors.New("timed out")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// subscriber collects the messages at the broker and checks they decode.
type subscriber struct {
	c    mqtt.Client
	mu   sync.Mutex
	msgs [][]byte
	seqs map[uint64]bool
	err  error
}

func subscribe(broker, filter string) (*subscriber, error) {
	s := &subscriber{seqs: map[uint64]bool{}}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + broker).SetClientID(fmt.Sprintf("wire-sub-%d", time.Now().UnixNano())).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	s.c = mqtt.NewClient(opts)
	if tok := s.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("subscriber: connect: %v", tok.Error())
	}
	tok := s.c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
		envs, err := uplink.DecodeEnvelopes(m.Payload())
		s.mu.Lock()
		defer s.mu.Unlock()
		if err != nil {
			s.err = errors.Join(s.err, fmt.Errorf("undecodable message on %s: %w", m.Topic(), err))
			return
		}
		s.msgs = append(s.msgs, append([]byte(nil), m.Payload()...))
		for _, e := range envs {
			s.seqs[e.Seq] = true
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		s.c.Disconnect(0)
		return nil, fmt.Errorf("subscriber: subscribe: %v", tok.Error())
	}
	return s, nil
}

func (s *subscriber) close() { s.c.Disconnect(100) }

// events is how many distinct events (by seq) arrived.
func (s *subscriber) events() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seqs)
}

func (s *subscriber) payloads() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.msgs...)
}
