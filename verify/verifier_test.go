package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferrygw/ferry/internal/mqtttest"
)

// publisher plays the gateways: it publishes envelopes, QoS 1, each
// acknowledged before the next, so the broker delivers them in order.
type publisher struct {
	t testing.TB
	c mqtt.Client
}

var clientN atomic.Int64

func newPublisher(t testing.TB, url string) *publisher {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("test-pub-%d", clientN.Add(1))).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	p := &publisher{t: t, c: mqtt.NewClient(opts)}
	if tok := p.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	t.Cleanup(func() { p.c.Disconnect(100) })
	return p
}

func (p *publisher) send(topic string, payload []byte) {
	p.t.Helper()
	if tok := p.c.Publish(topic, 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		p.t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// topic is the uplink's default topic of e: {gateway_id}/{stream}/{source}.
func topic(e *Envelope) string { return e.Gateway + "/" + e.Event.Stream + "/" + e.Event.Source }

// singles publishes each envelope as its own message and returns how many
// messages it sent.
func (p *publisher) singles(envs ...Envelope) int {
	for i := range envs {
		p.send(topic(&envs[i]), encodeJSON(&envs[i]))
	}
	return len(envs)
}

// batches publishes envs in JSON batches of n.
func (p *publisher) batches(n int, envs ...Envelope) int {
	msgs := 0
	for i := 0; i < len(envs); i += n {
		b := envs[i:min(i+n, len(envs))]
		p.send(topic(&b[0]), encodeBatch(b...))
		msgs++
	}
	return msgs
}

// running is a Verifier running in the background.
type running struct {
	v      *Verifier
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// startVerifier runs a Verifier on cfg until stop (or the test's end).
func startVerifier(t testing.TB, cfg Config) *running {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.ClientID == "" {
		cfg.ClientID = fmt.Sprintf("test-verify-%d", clientN.Add(1))
	}
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{v: v, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- v.Run(ctx) }()
	deadline := time.After(15 * time.Second)
	for !v.subscribed.Load() {
		select {
		case err := <-r.done:
			t.Fatalf("verifier ended: %v", err)
		case <-deadline:
			t.Fatal("verifier did not subscribe within 15 s")
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Cleanup(func() { _ = r.stop() })
	return r
}

// stop ends Run and returns its error; the report is then final.
func (r *running) stop() error {
	r.once.Do(func() {
		r.cancel()
		r.err = <-r.done
	})
	return r.err
}

// TestFleetReport publishes a synthetic fleet through a real Mosquitto,
// with holes (messages deleted), announced drops, duplicates, reordering,
// replays, a new epoch, an unsequenced stream and an undecodable message;
// the final report is exact.
func TestFleetReport(t *testing.T) {
	b := mqtttest.Start(t)
	var progress lockedBuffer
	r := startVerifier(t, Config{URLs: []string{b.URL()}, Settle: time.Minute, ReportEvery: 20 * time.Millisecond, Progress: &progress})
	p := newPublisher(t, b.URL())
	const (
		ea = "a1a1a1a1a1a1a1a1"
		eb = "b1b1b1b1b1b1b1b1"
		ec = "c1c1c1c1c1c1c1c1"
		ed = "c2c2c2c2c2c2c2c2"
	)
	msgs := 0
	// gw-a/telemetry: 40 events in batches of 10, complete.
	msgs += p.batches(10, seqs("gw-a", "telemetry", ea, 1, 40)...)
	// gw-a/alerts: 1..20 with 8..10 deleted at the cloud.
	msgs += p.singles(seqs("gw-a", "alerts", ea, 1, 7)...)
	msgs += p.singles(seqs("gw-a", "alerts", ea, 11, 20)...)
	// gw-b/telemetry: 11..15 dropped by the buffer (overflow 3, ttl 2) and
	// announced on 16.
	msgs += p.batches(5, seqs("gw-b", "telemetry", eb, 1, 10)...)
	msgs += p.singles(ev("gw-b", "telemetry", eb, 16, gap(5, "overflow", 3, "ttl", 2)))
	msgs += p.batches(7, seqs("gw-b", "telemetry", eb, 17, 30)...)
	// gw-b/alerts: 1..10, 4 and 5 again (a resend), then 11, 13, 12, 14.
	msgs += p.singles(seqs("gw-b", "alerts", eb, 1, 10)...)
	msgs += p.singles(ev("gw-b", "alerts", eb, 4), ev("gw-b", "alerts", eb, 5))
	msgs += p.singles(ev("gw-b", "alerts", eb, 11), ev("gw-b", "alerts", eb, 13), ev("gw-b", "alerts", eb, 12), ev("gw-b", "alerts", eb, 14))
	// gw-c/telemetry: 1..10, replayed 3..5, then a new buffer file: 1..5.
	msgs += p.batches(10, seqs("gw-c", "telemetry", ec, 1, 10)...)
	msgs += p.batches(3, seqs("gw-c", "telemetry", ec, 3, 5, replay)...)
	msgs += p.singles(seqs("gw-c", "telemetry", ed, 1, 5)...)
	// gw-c/legacy: a gateway without sequence numbers; one ID twice.
	l1, l2 := ev("gw-c", "legacy", "", 1, noSeq), ev("gw-c", "legacy", "", 2, noSeq)
	msgs += p.singles(l1, l2, l1)
	// Garbage on a fleet topic.
	p.send("gw-c/telemetry/x", []byte("not a cloud message"))
	msgs++

	waitFor(t, 20*time.Second, "every message checked", func() bool { return r.v.Report().Messages == uint64(msgs) })
	waitFor(t, 10*time.Second, "a progress report", func() bool { return strings.Contains(progress.String(), "totals: ") })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	rep := r.v.Report()
	if !rep.Final || rep.OK() || rep.Undecodable != 1 || rep.Gateways != 3 || rep.Streams != 6 || rep.NewEpochs != 1 || rep.Pending != 0 {
		t.Fatalf("report: final %v ok %v undecodable %d gateways %d streams %d new epochs %d pending %d",
			rep.Final, rep.OK(), rep.Undecodable, rep.Gateways, rep.Streams, rep.NewEpochs, rep.Pending)
	}
	want := map[string]Counts{
		"gw-a/telemetry": {Received: 40},
		"gw-a/alerts":    {Received: 17, UnexplainedGaps: 1, Unexplained: 3, Missing: 3},
		"gw-b/telemetry": {Received: 25, Dropped: 5, DroppedBy: map[string]uint64{"overflow": 3, "ttl": 2}},
		"gw-b/alerts":    {Received: 14, Duplicates: 2, Reordered: 1},
		"gw-c/telemetry": {Received: 15, Replays: 3},
		"gw-c/legacy":    {Received: 2, Duplicates: 1, Unsequenced: 3},
	}
	for k, w := range want {
		gw, s, _ := strings.Cut(k, "/")
		if got := row(t, rep, gw, s).Counts; !reflect.DeepEqual(got, w) {
			t.Errorf("%s:\n got %+v\nwant %+v", k, got, w)
		}
	}
	wantTotals := Counts{Received: 113, Duplicates: 3, Replays: 3, Reordered: 1, Dropped: 5,
		DroppedBy: map[string]uint64{"overflow": 3, "ttl": 2}, UnexplainedGaps: 1, Unexplained: 3, Missing: 3, Unsequenced: 3}
	if !reflect.DeepEqual(rep.Totals, wantTotals) {
		t.Errorf("totals:\n got %+v\nwant %+v", rep.Totals, wantTotals)
	}
	if got := row(t, rep, "gw-a", "alerts").Epochs[0].MissingRanges; !reflect.DeepEqual(got, []Range{{8, 10}}) {
		t.Errorf("gw-a/alerts missing %v", got)
	}
	if st := row(t, rep, "gw-c", "telemetry"); len(st.Epochs) != 2 || st.NewEpochs != 1 || st.Epochs[1].Epoch != ed || st.Epochs[1].LastSeq != 5 {
		t.Errorf("gw-c/telemetry epochs %+v", st.Epochs)
	}

	var text bytes.Buffer
	if err := rep.WriteText(&text, TextOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"missing: gw-a/alerts epoch " + ea + ": 8-10\n",
		"totals: 3 gateways, 6 streams, " + fmt.Sprint(msgs) + " messages (1 undecodable), received 113, duplicates 3, replays 3, reordered 1, dropped 5 (overflow 3, ttl 2), unexplained gaps 1 (3 events), missing 3, repaired 0, new epochs 1, pending 0",
		"result: FAIL: 3 events missing in unexplained gaps\n",
	} {
		if !strings.Contains(text.String(), line) {
			t.Errorf("text report lacks %q:\n%s", line, text.String())
		}
	}
	var back Report
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || !reflect.DeepEqual(back.Totals, rep.Totals) {
		t.Errorf("JSON report does not round-trip: %v", err)
	}
}

// TestOutageOfTheCheckersBroker: the broker restarts (persistent) while
// gateways publish; the checker's persistent session gets what was
// published while it reconnected, and reports no hole.
func TestOutageOfTheCheckersBroker(t *testing.T) {
	b := mqtttest.StartWith(t, mqtttest.Options{Persistent: true})
	r := startVerifier(t, Config{URLs: []string{b.URL()}, Settle: time.Minute})
	p := newPublisher(t, b.URL())
	p.singles(seqs("gw", "s", e1, 1, 50)...)
	waitFor(t, 20*time.Second, "50 events", func() bool { return r.v.Report().Totals.Received == 50 })
	b.Stop()
	p.c.Disconnect(0)
	b.StartAgain()
	// Published before the checker is back: the broker queues them.
	p = newPublisher(t, b.URL())
	p.singles(seqs("gw", "s", e1, 51, 100)...)
	waitFor(t, 30*time.Second, "100 events", func() bool { return r.v.Report().Totals.Received == 100 })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	rep := r.v.Report()
	if !rep.OK() || rep.Totals.Received != 100 || rep.Totals.UnexplainedGaps != 0 || r.v.connects.Load() < 2 {
		t.Fatalf("after the broker's restart: ok %v received %d gaps %d connects %d",
			rep.OK(), rep.Totals.Received, rep.Totals.UnexplainedGaps, r.v.connects.Load())
	}
}

// TestRepair: the test plays the gateways' side of resend requests: gw-r
// resends what was deleted at the cloud, gw-x refuses (no longer
// retained). Only gw-x's hole is left.
func TestRepair(t *testing.T) {
	b := mqtttest.Start(t)
	r := startVerifier(t, Config{URLs: []string{b.URL()}, Settle: 300 * time.Millisecond, Repair: true})
	p := newPublisher(t, b.URL())
	var mu sync.Mutex
	var asked []ResendRequest
	gwSide := newPublisher(t, b.URL())
	tok := gwSide.c.Subscribe("+/cmd/ferry/resend", 1, func(c mqtt.Client, m mqtt.Message) {
		var req ResendRequest
		if err := json.Unmarshal(m.Payload(), &req); err != nil {
			t.Errorf("resend request %q: %v", m.Payload(), err)
			return
		}
		mu.Lock()
		asked = append(asked, req)
		mu.Unlock()
		reply := ResendReply{ID: req.ID, Gateway: req.Gateway, Stream: req.Stream, Epoch: req.Epoch,
			FromSeq: req.FromSeq, ToSeq: req.ToSeq, Status: ReplyOK}
		if req.Gateway == "gw-x" {
			reply.Status, reply.FirstSeq, reply.Error = ReplyRefused, 40, "older than the first retained event"
		}
		rb, _ := json.Marshal(reply)
		// From paho's callback: publish without waiting (the router
		// goroutine delivers the PUBACK).
		c.Publish(req.ReplyTo, 1, false, rb)
		if reply.Status == ReplyOK {
			resent := seqs(req.Gateway, req.Stream, req.Epoch, req.FromSeq, req.ToSeq, replay)
			c.Publish(topic(&resent[0]), 1, false, encodeBatch(resent...))
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	p.singles(seqs("gw-r", "s", e1, 1, 9)...)
	p.singles(seqs("gw-r", "s", e1, 15, 20)...) // 10..14 deleted at the cloud
	p.singles(seqs("gw-x", "s", e1, 1, 3)...)
	p.singles(seqs("gw-x", "s", e1, 6, 8)...) // 4..5 deleted, and gone at the gateway

	waitFor(t, 20*time.Second, "gw-r repaired and gw-x refused", func() bool {
		rep := r.v.Report()
		return len(rep.Rows) == 2 && rep.Rows[0].Repaired == 5 && rep.Rows[1].RepairRefused == 1
	})
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	rep := r.v.Report()
	wantR := Counts{Received: 20, Replays: 5, UnexplainedGaps: 1, Unexplained: 5, Repaired: 5, RepairRequests: 1}
	wantX := Counts{Received: 6, UnexplainedGaps: 1, Unexplained: 2, Missing: 2, RepairRequests: 1, RepairRefused: 1}
	if got := row(t, rep, "gw-r", "s").Counts; !reflect.DeepEqual(got, wantR) {
		t.Errorf("gw-r:\n got %+v\nwant %+v", got, wantR)
	}
	if got := row(t, rep, "gw-x", "s").Counts; !reflect.DeepEqual(got, wantX) {
		t.Errorf("gw-x:\n got %+v\nwant %+v", got, wantX)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 2 {
		t.Fatalf("requests %+v", asked)
	}
	for _, q := range asked {
		wantQ := ResendRequest{ID: q.ID, Gateway: q.Gateway, Stream: "s", Epoch: e1, FromSeq: 10, ToSeq: 14, ReplyTo: r.v.ClientID() + "/resend-reply"}
		if q.Gateway == "gw-x" {
			wantQ.FromSeq, wantQ.ToSeq = 4, 5
		}
		if q != wantQ || len(q.ID) != 16 {
			t.Errorf("request %+v, want %+v", q, wantQ)
		}
	}
}

// TestPartitions: two instances on one (non-shared) subscription split
// the fleet by gateway; together they see every stream once.
func TestPartitions(t *testing.T) {
	b := mqtttest.Start(t)
	r0 := startVerifier(t, Config{URLs: []string{b.URL()}, Partition: Partition{0, 2}})
	r1 := startVerifier(t, Config{URLs: []string{b.URL()}, Partition: Partition{1, 2}})
	p := newPublisher(t, b.URL())
	for g := range 8 {
		p.batches(5, seqs(fmt.Sprintf("gw-%d", g), "s", e1, 1, 5)...)
	}
	waitFor(t, 20*time.Second, "8 messages each", func() bool {
		return r0.v.Report().Messages == 8 && r1.v.Report().Messages == 8
	})
	a, c := r0.v.Report(), r1.v.Report()
	if a.Streams+c.Streams != 8 || a.Totals.Received+c.Totals.Received != 40 || a.Skipped+c.Skipped != 40 || a.Streams == 0 || c.Streams == 0 {
		t.Fatalf("partitions: streams %d+%d, received %d+%d, skipped %d+%d",
			a.Streams, c.Streams, a.Totals.Received, c.Totals.Received, a.Skipped, c.Skipped)
	}
}

// TestSharedSubscription shows the caveat: Mosquitto's shared
// subscription hands each message to one member, round-robin, so each
// member sees a part of one stream and reports holes another member
// filled. Together they received everything exactly once.
func TestSharedSubscription(t *testing.T) {
	mqtttest.RequireMosquitto(t)
	b := mqtttest.Start(t)
	cfg := Config{URLs: []string{b.URL()}, Share: "fleet", Settle: time.Minute}
	r0, r1 := startVerifier(t, cfg), startVerifier(t, cfg)
	p := newPublisher(t, b.URL())
	p.singles(seqs("gw", "s", e1, 1, 20)...)
	waitFor(t, 20*time.Second, "20 messages in all", func() bool {
		return r0.v.Report().Messages+r1.v.Report().Messages == 20
	})
	_, _ = r0.stop(), r1.stop()
	a, c := r0.v.Report(), r1.v.Report()
	if a.Totals.Received+c.Totals.Received != 20 || a.Totals.Duplicates+c.Totals.Duplicates != 0 {
		t.Fatalf("received %d+%d", a.Totals.Received, c.Totals.Received)
	}
	if a.Messages == 0 || c.Messages == 0 || (a.OK() && c.OK()) {
		t.Fatalf("a round-robin share should split the stream and show holes: messages %d+%d, missing %d+%d",
			a.Messages, c.Messages, a.Totals.Missing, c.Totals.Missing)
	}
}

// TestMetrics scrapes a running verifier.
func TestMetrics(t *testing.T) {
	b := mqtttest.Start(t)
	port := mqtttest.FreePort(t)
	r := startVerifier(t, Config{URLs: []string{b.URL()}, Listen: fmt.Sprintf("127.0.0.1:%d", port), Settle: 50 * time.Millisecond})
	p := newPublisher(t, b.URL())
	now := at(time.Now())
	p.singles(ev("gw", "s", e1, 1, now), ev("gw", "s", e1, 3, now), ev("gw", "s", e1, 6, now, gap(2, "overflow", 2)))
	p.singles(ev("gw", `we"ird`, e1, 1, now))
	waitFor(t, 20*time.Second, "the hole judged", func() bool { return r.v.Report().Totals.Missing == 1 })
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("content type %q", ct)
	}
	for _, line := range []string{
		"# TYPE ferry_verify_events_total counter\n",
		`ferry_verify_events_total{gateway="gw",stream="s"} 3` + "\n",
		`ferry_verify_events_total{gateway="gw",stream="we\"ird"} 1` + "\n",
		`ferry_verify_unexplained_gaps_total{gateway="gw",stream="s"} 1` + "\n",
		`ferry_verify_missing_events{gateway="gw",stream="s"} 1` + "\n",
		`ferry_verify_dropped_events_total{gateway="gw",stream="s",reason="overflow"} 2` + "\n",
		"ferry_verify_connected 1\n",
		"ferry_verify_messages_total 4\n",
		"ferry_verify_lag_seconds_count 4\n",
		`ferry_verify_lag_seconds_bucket{le="+Inf"} 4` + "\n",
		"# TYPE ferry_verify_lag_seconds histogram\n",
		"process_resident_memory_bytes ",
	} {
		if !bytes.Contains(body, []byte(line)) {
			t.Errorf("metrics lack %q:\n%s", line, body)
		}
	}
	var gw bytes.Buffer
	if err := r.v.Checker().WritePrometheus(&gw, LabelsGateway); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(gw.String(), `ferry_verify_events_total{gateway="gw"} 4`+"\n") {
		t.Errorf("gateway labels:\n%s", gw.String())
	}
}

func TestConnectError(t *testing.T) {
	port := mqtttest.FreePort(t) // nothing listens
	v, err := New(Config{URLs: []string{fmt.Sprintf("tcp://127.0.0.1:%d", port)}, ConnectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Run(context.Background()); !errors.Is(err, ErrConnect) {
		t.Fatalf("Run: %v, want ErrConnect", err)
	}
	if err := v.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Run: %v, want ErrRunning", err)
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
