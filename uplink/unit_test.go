package uplink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/ferrygw/ferry/event"
)

// seqRand returns the values in turn, then the last one forever.
func seqRand(vs ...float64) func() float64 {
	return func() float64 {
		v := vs[0]
		if len(vs) > 1 {
			vs = vs[1:]
		}
		return v
	}
}

// TestReconnectSchedule checks which failures back off and which probe,
// the jitter ranges and the caps, with probe 2 s, stable after 10 s and
// backoff 1 s..8 s.
func TestReconnectSchedule(t *testing.T) {
	const ms = time.Millisecond
	unreachable := fmt.Errorf("%w: tcp://h:1: %w", ErrConnect, fmt.Errorf("%w: dial", ErrUnreachable))
	refused := fmt.Errorf("%w: %w", ErrConnect, errors.Join(
		fmt.Errorf("tcp://a:1: %w", fmt.Errorf("%w: dial", ErrUnreachable)),
		fmt.Errorf("tcp://b:1: %w", fmt.Errorf("%w: not Authorized", ErrRefused))))
	type step struct {
		fail   error         // a failed connection round, or nil for a lost connection...
		up     time.Duration // ...that was up this long
		lo, hi time.Duration // the pause must be in [lo, hi)
	}
	tests := []struct {
		name  string
		rand  func() float64
		steps []step
	}{
		{"unreachable probes in [probe/2, probe), never growing", seqRand(0, 0.999999, 0.5, 0.999999), []step{
			{fail: unreachable, lo: 1000 * ms, hi: 1001 * ms},
			{fail: unreachable, lo: 1999 * ms, hi: 2000 * ms},
			{fail: unreachable, lo: 1500 * ms, hi: 1501 * ms},
			{fail: unreachable, lo: 1999 * ms, hi: 2000 * ms},
			{fail: unreachable, lo: 1999 * ms, hi: 2000 * ms},
		}},
		{"refused backs off up to the cap; probes do not reset it", seqRand(0.999999), []step{
			{fail: refused, lo: 999 * ms, hi: 1000 * ms},
			{fail: refused, lo: 1999 * ms, hi: 2000 * ms},
			{fail: unreachable, lo: 1999 * ms, hi: 2000 * ms},
			{fail: refused, lo: 3999 * ms, hi: 4000 * ms},
			{fail: refused, lo: 7999 * ms, hi: 8000 * ms},
			{fail: refused, lo: 7999 * ms, hi: 8000 * ms},
		}},
		{"refusal with full jitter", seqRand(0), []step{
			{fail: refused, lo: 0, hi: 1 * ms},
			{fail: refused, lo: 0, hi: 1 * ms},
		}},
		{"lost right after it was accepted: backs off", seqRand(0.999999), []step{
			{up: 50 * ms, lo: 999 * ms, hi: 1000 * ms},
			{up: 9999 * ms, lo: 1999 * ms, hi: 2000 * ms},
			{up: 0, lo: 3999 * ms, hi: 4000 * ms},
		}},
		{"lost after stable: reset, first attempt in [0, probe)", seqRand(0.999999, 0.999999, 0.999999, 0, 0.999999), []step{
			{fail: refused, lo: 999 * ms, hi: 1000 * ms},
			{fail: refused, lo: 1999 * ms, hi: 2000 * ms},
			{fail: refused, lo: 3999 * ms, hi: 4000 * ms},
			{up: 10 * time.Second, lo: 0, hi: 1 * ms},
			{fail: refused, lo: 999 * ms, hi: 1000 * ms}, // the backoff started over
		}},
		{"first attempt after a stable connection, high draw", seqRand(0.999999), []step{
			{up: time.Hour, lo: 1999 * ms, hi: 2000 * ms},
			{fail: unreachable, lo: 1999 * ms, hi: 2000 * ms},
		}},
		{"broken source: the middle of each range", seqRand(7, -1, 7), []step{
			{fail: unreachable, lo: 1500 * ms, hi: 1501 * ms},
			{up: time.Hour, lo: 1000 * ms, hi: 1001 * ms},
			{fail: refused, lo: 500 * ms, hi: 501 * ms},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReconnect(Config{BackoffMin: time.Second, BackoffMax: 8 * time.Second,
				ProbeInterval: 2 * time.Second, StableAfter: 10 * time.Second, Rand: tt.rand})
			for i, s := range tt.steps {
				var got time.Duration
				if s.fail != nil {
					got = rc.afterConnectFailure(s.fail)
				} else {
					got = rc.afterSession(s.up)
				}
				if got < s.lo || got >= s.hi {
					t.Fatalf("step %d: pause %v, want in [%v, %v)", i, got, s.lo, s.hi)
				}
			}
		})
	}
}

// TestReconnectSpreadsAFleet: boards that lost the cloud at one instant
// make their first attempts spread over the probe interval, and keep
// probing out of step, rather than reconnecting together.
func TestReconnectSpreadsAFleet(t *testing.T) {
	const boards, probe = 1000, 2 * time.Second
	rng := mathrand.New(mathrand.NewPCG(1, 2))
	var buckets [10]int // first-attempt times, in tenths of the probe interval
	for range boards {
		rc := newReconnect(Config{BackoffMin: time.Second, BackoffMax: time.Minute,
			ProbeInterval: probe, StableAfter: 10 * time.Second, Rand: rng.Float64})
		at := rc.afterSession(time.Hour)
		buckets[int(at*10/probe)]++
		for range 20 {
			if d := rc.afterConnectFailure(ErrUnreachable); d < probe/2 || d >= probe {
				t.Fatalf("probe pause %v outside [%v, %v)", d, probe/2, probe)
			}
		}
	}
	for i, n := range buckets {
		// 100 expected per tenth; 60 is over 4 standard deviations away.
		if n < 60 {
			t.Errorf("first attempts in [%v, %v): %d of %d boards, want about %d: %v",
				probe*time.Duration(i)/10, probe*time.Duration(i+1)/10, n, boards, boards/10, buckets)
		}
	}
}

// TestClassifyConnectError: a failed dial is unreachable (probe), anything
// after the dial (handshake, CONNACK) is a refusal (back off).
func TestClassifyConnectError(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"dial refused, as paho wraps it", fmt.Errorf("%w : %w", packets.ErrorNetworkError, dial), ErrUnreachable},
		{"dial timed out", &net.OpError{Op: "dial", Net: "tcp", Err: context.DeadlineExceeded}, ErrUnreachable},
		{"name not resolved", &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "cloud.invalid"}}, ErrUnreachable},
		{"not authorized", packets.ErrorRefusedNotAuthorised, ErrRefused},
		{"bad credentials", packets.ErrorRefusedBadUsernameOrPassword, ErrRefused},
		{"server unavailable", packets.ErrorRefusedServerUnavailable, ErrRefused},
		{"closed before CONNACK", fmt.Errorf("%w : %w", packets.ErrorNetworkError, io.EOF), ErrRefused},
		{"no CONNACK in time", fmt.Errorf("%w : %w", packets.ErrorNetworkError, &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}), ErrRefused},
		{"TLS handshake", &tls.CertificateVerificationError{Err: errors.New("unknown authority")}, ErrRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := classifyConnectError(tt.err)
			other := ErrRefused
			if tt.want == ErrRefused {
				other = ErrUnreachable
			}
			if !errors.Is(got, tt.want) || errors.Is(got, other) {
				t.Errorf("classify(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestPacer(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	ms := time.Millisecond
	tests := []struct {
		name     string
		mps, bps float64
		maxMsg   int
		steps    []struct {
			at    time.Duration
			bytes int
			want  time.Duration
		}
	}{
		{name: "no caps", maxMsg: 100, steps: []struct {
			at    time.Duration
			bytes int
			want  time.Duration
		}{{0, 100, 0}, {0, 100, 0}}},
		{name: "10 msg/s, no burst", mps: 10, maxMsg: 100, steps: []struct {
			at    time.Duration
			bytes int
			want  time.Duration
		}{{0, 1, 0}, {0, 1, 100 * ms}, {0, 1, 200 * ms}, {1000 * ms, 1, 0}, {1000 * ms, 1, 100 * ms}}},
		{name: "1000 B/s, burst of one max message", bps: 1000, maxMsg: 500, steps: []struct {
			at    time.Duration
			bytes int
			want  time.Duration
		}{{0, 500, 0}, {0, 500, 500 * ms}, {0, 100, 600 * ms}, {2000 * ms, 2000, 0}}},
		{name: "both: the slower wins", mps: 100, bps: 1000, maxMsg: 200, steps: []struct {
			at    time.Duration
			bytes int
			want  time.Duration
		}{{0, 200, 0}, {0, 10, 10 * ms}, {0, 100, 110 * ms}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPacer(tt.mps, tt.bps, tt.maxMsg)
			for i, s := range tt.steps {
				got := p.reserve(t0.Add(s.at), s.bytes)
				if d := got - s.want; d < -ms || d > ms {
					t.Fatalf("step %d: delay %v, want %v", i, got, s.want)
				}
			}
		})
	}
}

func TestTopicTemplate(t *testing.T) {
	id, _ := event.ParseID("01ARZ3NDEKTSV4RRFFQ69G5FAV")
	ev := &event.Event{ID: id, Stream: "telemetry", Source: "dev+1", Topic: "a/#/b", Time: time.Now()}
	tests := []struct {
		tmpl, gw, want string
		err            bool
	}{
		{tmpl: DefaultTopic, gw: "gw1", want: "gw1/telemetry/dev_1"},
		{tmpl: "x/{topic}/{id}", gw: "gw1", want: "x/a/_/b/01ARZ3NDEKTSV4RRFFQ69G5FAV"},
		{tmpl: "$aws/rules/ingest/{gateway_id}", gw: "g#w", want: "$aws/rules/ingest/g_w"},
		{tmpl: "{stream}{source}", gw: "", want: "telemetrydev_1"},
		{tmpl: "fixed", want: "fixed"},
		{tmpl: "a/{nope}", err: true},
		{tmpl: "a/{stream", err: true},
		{tmpl: "a/+/b", err: true},
		{tmpl: "a/#", err: true},
		{tmpl: "a}", err: true},
	}
	for _, tt := range tests {
		tmpl, err := compileTopic(tt.tmpl, tt.gw, DefaultMaxTopicBytes)
		if tt.err {
			if err == nil {
				t.Errorf("%q: no error", tt.tmpl)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tt.tmpl, err)
		}
		if got := string(tmpl.appendTopic(nil, ev)); got != tt.want {
			t.Errorf("%q: %q, want %q", tt.tmpl, got, tt.want)
		}
	}
	tmpl, _ := compileTopic("{source}", "", DefaultMaxTopicBytes)
	if got := string(tmpl.appendTopic(nil, &event.Event{})); got != "_" {
		t.Errorf("empty topic rendered as %q", got)
	}
	if n := testing.AllocsPerRun(100, func() { _ = tmpl.appendTopic(make([]byte, 0, 64), ev) }); n > 1 {
		t.Errorf("appendTopic allocates %v times", n)
	}
}

func TestRateMeter(t *testing.T) {
	var m rateMeter
	t0 := time.Unix(1_700_000_000, 0)
	for s := range 10 {
		m.add(t0.Add(time.Duration(s)*time.Second), 100)
	}
	if got := m.rate(t0.Add(10 * time.Second)); got != 100 {
		t.Errorf("rate = %v, want 100", got)
	}
	if got := m.rate(t0.Add(15 * time.Second)); got != 50 {
		t.Errorf("rate 5 s later = %v, want 50", got)
	}
	if got := m.rate(t0.Add(time.Hour)); got != 0 {
		t.Errorf("rate after an idle hour = %v", got)
	}
}

func TestStatusRateUsesInjectedClock(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	cfg := testConfig(t, "tcp://127.0.0.1:1")
	cfg.Now = func() time.Time { return now }
	f, err := New(newMemQueue(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.meter.add(now, 500)
	now = now.Add(time.Second)
	if got := f.Status().EventsPerSecond; got != 50 {
		t.Errorf("EventsPerSecond = %v, want 50", got)
	}
}

func TestConfigValidation(t *testing.T) {
	ok := func() Config { return Config{Endpoints: []Endpoint{{URL: "tcp://h:1883"}}, GatewayID: "gw", QoS: 1} }
	tests := []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"defaults", func(*Config) {}, true},
		{"no endpoints", func(c *Config) { c.Endpoints = nil }, false},
		{"bad scheme", func(c *Config) { c.Endpoints[0].URL = "http://h" }, false},
		{"no host", func(c *Config) { c.Endpoints[0].URL = "tcp://" }, false},
		{"no ids", func(c *Config) { c.GatewayID = "" }, false},
		{"qos 2", func(c *Config) { c.QoS = 2 }, false},
		{"format", func(c *Config) { c.Format = "xml" }, false},
		{"inflight", func(c *Config) { c.Inflight = 70000 }, false},
		{"backoff", func(c *Config) { c.BackoffMin, c.BackoffMax = time.Minute, time.Second }, false},
		{"probe above backoff max", func(c *Config) { c.ProbeInterval = 2 * time.Minute }, false},
		{"negative probe", func(c *Config) { c.ProbeInterval = -time.Second }, false},
		{"probe at backoff max", func(c *Config) { c.ProbeInterval = time.Minute }, true},
		{"negative stable after", func(c *Config) { c.StableAfter = -time.Second }, false},
		{"template", func(c *Config) { c.Topic = "{bad}" }, false},
		{"batch", func(c *Config) { c.BatchMaxEvents = -1 }, false},
		{"rate", func(c *Config) { c.BytesPerSecond = -1 }, false},
		{"topic bound too small", func(c *Config) { c.MaxTopicBytes = 16 }, false},
		{"topic bound above MQTT's", func(c *Config) { c.MaxTopicBytes = 70000 }, false},
		{"one poison attempt", func(c *Config) { c.PoisonAttempts = 1 }, false},
		{"two poison attempts", func(c *Config) { c.PoisonAttempts = 2 }, true},
		{"control character in the template", func(c *Config) { c.Topic = "a\x01/{source}" }, false},
		{"tls url", func(c *Config) { c.Endpoints[0].URL = "mqtts://h:8883" }, true},
		{"tls config on a plain url", func(c *Config) { c.Endpoints[0].TLS = &tls.Config{MinVersion: tls.VersionTLS12} }, false},
		{"tls config on a wss url", func(c *Config) {
			c.Endpoints[0] = Endpoint{URL: "wss://h:443/mqtt", TLS: &tls.Config{MinVersion: tls.VersionTLS12}}
		}, true},
	}
	for _, tt := range tests {
		c := ok()
		tt.mod(&c)
		_, err := New(newMemQueue(), c)
		if tt.ok && err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
		if !tt.ok && !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err = %v, want ErrConfig", tt.name, err)
		}
	}
	if _, err := New(nil, ok()); !errors.Is(err, ErrConfig) {
		t.Errorf("nil queue: %v", err)
	}
	f, _ := New(newMemQueue(), ok())
	if c := f.cfg; c.Inflight != 100 || c.ClientID != "ferry-gw" || c.Topic != DefaultTopic || c.Format != FormatJSON ||
		c.BatchMaxEvents != 1 || c.BatchMaxBytes != DefaultMaxMessageBytes ||
		c.ProbeInterval != 2*time.Second || c.StableAfter != 10*time.Second {
		t.Errorf("defaults: %+v", c)
	}
	short := ok()
	short.BackoffMin, short.BackoffMax = 10*time.Millisecond, 300*time.Millisecond
	if f, err := New(newMemQueue(), short); err != nil || f.cfg.ProbeInterval != 300*time.Millisecond {
		t.Errorf("probe interval with backoff max 300ms: %v, %v; want 300ms", f.cfg.ProbeInterval, err)
	}
}
