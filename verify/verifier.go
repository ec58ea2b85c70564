package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Verifier subscribes to a cloud broker and feeds every message to a
// Checker; it serves the metrics, writes the progress report and, with
// Config.Repair, sends resend requests. Create one with New and start it
// with Run, once.
type Verifier struct {
	cfg     Config
	checker *Checker
	log     *slog.Logger
	ran     atomic.Bool

	connected    atomic.Bool
	connects     atomic.Uint64
	badReplies   atomic.Uint64
	requestsLost atomic.Uint64
	subscribed   atomic.Bool   // the first subscription is done: a reconnect subscribes again
	resubscribe  chan struct{} // a reconnect happened: the loop subscribes again
}

// New validates cfg (errors wrap ErrConfig), applies the defaults and
// returns a Verifier.
func New(cfg Config) (*Verifier, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	if len(cfg.URLs) == 0 {
		return nil, fmt.Errorf("%w: no cloud broker URL", ErrConfig)
	}
	if cfg.ClientID == "" {
		host, _ := os.Hostname()
		cfg.ClientID = DefaultClientIDPrefix + "-" + topicSafe(host)
		if p := cfg.Partition; p.Count > 1 {
			cfg.ClientID += fmt.Sprintf("-p%dof%d", p.Index, p.Count)
		}
	}
	if cfg.ReplyTopic == "" {
		cfg.ReplyTopic = topicSafe(cfg.ClientID) + "/resend-reply"
	}
	if strings.ContainsAny(cfg.ReplyTopic, "+#") {
		return nil, fmt.Errorf("%w: reply topic %q has a wildcard", ErrConfig, cfg.ReplyTopic)
	}
	c, err := NewChecker(cfg)
	if err != nil {
		return nil, err
	}
	return &Verifier{cfg: cfg, checker: c, log: cfg.Logger, resubscribe: make(chan struct{}, 1)}, nil
}

// topicSafe replaces the characters a topic level cannot hold.
func topicSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '+' || r == '#' || r == 0 {
			return '_'
		}
		return r
	}, s)
}

// Checker returns the Verifier's Checker.
func (v *Verifier) Checker() *Checker { return v.checker }

// Report returns the checker's report; after Run returned it is final.
func (v *Verifier) Report() *Report { return v.checker.Report() }

// ClientID returns the MQTT client ID in use.
func (v *Verifier) ClientID() string { return v.cfg.ClientID }

// Run connects, subscribes and checks until ctx is done; then it
// disconnects, judges every open hole (Checker.Finish) and returns nil.
// It returns an error, having started nothing, when the metrics listener
// cannot be opened (ErrListen), the first connection fails (ErrConnect) or
// the first subscription is refused (ErrSubscribe). After the first
// connection, a lost one is retried over every URL, in order, for as long
// as Run runs; with a persistent session (the default) the broker keeps
// what is published meanwhile.
func (v *Verifier) Run(ctx context.Context) error {
	if !v.ran.CompareAndSwap(false, true) {
		return ErrRunning
	}
	cfg := &v.cfg
	var ln net.Listener
	if cfg.Listen != "" {
		var err error
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("%w: %w", ErrListen, err)
		}
	}
	client := mqtt.NewClient(v.clientOptions())
	tok := client.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		// The dial is bounded by ConnectTimeout per URL.
		<-tok.Done()
	}
	if err := tok.Error(); err != nil || ctx.Err() != nil {
		client.Disconnect(0)
		if ln != nil {
			ln.Close()
		}
		if err == nil {
			err = ctx.Err()
		}
		return fmt.Errorf("%w: %s: %w", ErrConnect, strings.Join(cfg.URLs, ", "), err)
	}
	if err := v.subscribe(client); err != nil {
		client.Disconnect(0)
		if ln != nil {
			ln.Close()
		}
		return err
	}
	v.subscribed.Store(true)
	v.log.Info("subscribed", "filter", cfg.filter(), "client_id", cfg.ClientID, "settle", cfg.Settle,
		"partition", cfg.Partition.String(), "repair", cfg.Repair)

	var wg sync.WaitGroup
	var srv *http.Server
	if ln != nil {
		srv = &http.Server{Handler: v.metricsHandler(), ReadHeaderTimeout: 5 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				v.log.Error("metrics listener failed", "err", err)
			}
		}()
	}
	v.loop(ctx, client)
	client.Disconnect(250)
	v.connected.Store(false)
	v.checker.Finish()
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
		cancel()
	}
	wg.Wait()
	return nil
}

// loop ticks the checker, sends the resend requests and writes the
// progress report until ctx is done.
func (v *Verifier) loop(ctx context.Context, client mqtt.Client) {
	// A reconnect before the first subscription needs no second one.
	select {
	case <-v.resubscribe:
	default:
	}
	cfg := &v.cfg
	tick := time.NewTicker(min(max(cfg.Settle/10, 50*time.Millisecond), time.Second))
	defer tick.Stop()
	var report <-chan time.Time
	if cfg.ReportEvery > 0 && cfg.Progress != nil {
		t := time.NewTicker(cfg.ReportEvery)
		defer t.Stop()
		report = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-v.resubscribe:
			// A persistent session kept the subscription; a clean one
			// (or a broker that lost the session) needs it again.
			if err := v.subscribe(client); err != nil {
				v.log.Error("subscription failed after reconnect", "err", err)
			}
		case <-tick.C:
			if reqs := v.checker.Tick(); len(reqs) > 0 {
				v.sendRepairs(client, reqs)
			}
		case <-report:
			r := v.checker.Report()
			fmt.Fprintf(cfg.Progress, "-- %s\n", cfg.Now().UTC().Format(time.RFC3339))
			_ = r.WriteText(cfg.Progress, TextOptions{ProblemsOnly: true, MaxRows: 20})
		}
	}
}

// sendRepairs publishes the resend requests, QoS 1, and waits for their
// acknowledgements (bounded by ConnectTimeout). A request that could not
// be sent is counted; the hole is asked for again a settle window later.
func (v *Verifier) sendRepairs(client mqtt.Client, reqs []ResendRequest) {
	toks := make([]mqtt.Token, 0, len(reqs))
	for i := range reqs {
		r := &reqs[i]
		r.ID = v.requestID()
		r.ReplyTo = v.cfg.ReplyTopic
		b, err := json.Marshal(r)
		if err != nil { // a struct of strings and numbers: cannot fail
			continue
		}
		v.log.Info("resend requested", "gateway", r.Gateway, "stream", r.Stream, "epoch", r.Epoch,
			"from_seq", r.FromSeq, "to_seq", r.ToSeq)
		toks = append(toks, client.Publish(r.Topic(), 1, false, b))
	}
	deadline := time.Now().Add(v.cfg.ConnectTimeout)
	for _, t := range toks {
		if !t.WaitTimeout(time.Until(deadline)) || t.Error() != nil {
			v.requestsLost.Add(1)
		}
	}
}

// requestID is 16 hex digits from Config.Rand.
func (v *Verifier) requestID() string {
	return fmt.Sprintf("%08x%08x", uint32(v.cfg.Rand()*(1<<32)), uint32(v.cfg.Rand()*(1<<32)))
}

func (v *Verifier) clientOptions() *mqtt.ClientOptions {
	cfg := &v.cfg
	opts := mqtt.NewClientOptions().
		SetClientID(cfg.ClientID).
		SetUsername(cfg.Username).
		SetPassword(cfg.Password).
		SetCleanSession(cfg.CleanSession).
		SetProtocolVersion(4).
		SetKeepAlive(cfg.Keepalive).
		SetPingTimeout(min(cfg.Keepalive, 10*time.Second)).
		SetConnectTimeout(cfg.ConnectTimeout).
		SetWriteTimeout(cfg.ConnectTimeout).
		SetConnectRetry(false).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(5 * time.Second).
		SetOrderMatters(true).
		SetDefaultPublishHandler(v.onMessage).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			v.connected.Store(false)
			v.log.Warn("connection lost; reconnecting", "err", err)
		}).
		SetOnConnectHandler(func(c mqtt.Client) {
			v.connected.Store(true)
			if v.connects.Add(1) > 1 {
				v.log.Info("reconnected")
			}
			if v.subscribed.Load() {
				select {
				case v.resubscribe <- struct{}{}:
				default:
				}
			}
		})
	for _, u := range cfg.URLs {
		opts.AddBroker(u)
	}
	if cfg.TLS != nil {
		opts.SetTLSConfig(cfg.TLS)
	}
	return opts
}

// subscribe subscribes to the fleet's filter and, with Repair, to the
// reply topic, and waits for the SUBACK.
func (v *Verifier) subscribe(c mqtt.Client) error {
	filters := map[string]byte{v.cfg.filter(): 1}
	if v.cfg.Repair {
		filters[v.cfg.ReplyTopic] = 1
	}
	tok := c.SubscribeMultiple(filters, v.onMessage)
	if !tok.WaitTimeout(v.cfg.ConnectTimeout) {
		return fmt.Errorf("%w: %s: no SUBACK within %v", ErrSubscribe, v.cfg.filter(), v.cfg.ConnectTimeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrSubscribe, v.cfg.filter(), err)
	}
	st, ok := tok.(*mqtt.SubscribeToken)
	if ok {
		for f, code := range st.Result() {
			if code > 1 {
				return fmt.Errorf("%w: %s: refused (SUBACK %#02x)", ErrSubscribe, f, code)
			}
		}
	}
	return nil
}

// onMessage routes a message: a reply to a resend request, or a fleet
// message for the checker. paho calls it on one goroutine, in order, and
// acknowledges the message after it returns.
func (v *Verifier) onMessage(_ mqtt.Client, m mqtt.Message) {
	if v.cfg.Repair && m.Topic() == v.cfg.ReplyTopic {
		r, err := DecodeReply(m.Payload())
		if err != nil {
			v.badReplies.Add(1)
			return
		}
		if r.Status == ReplyRefused {
			v.log.Warn("resend refused", "gateway", r.Gateway, "stream", r.Stream, "epoch", r.Epoch,
				"from_seq", r.FromSeq, "to_seq", r.ToSeq, "first_seq", r.FirstSeq)
		}
		v.checker.Reply(r)
		return
	}
	v.checker.Handle(m.Payload())
}

// metricsHandler serves GET /metrics.
func (v *Verifier) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		v.WritePrometheus(w)
	})
	return mux
}

// WritePrometheus writes every series of the Verifier (see metrics.go),
// Go runtime and process series included.
func (v *Verifier) WritePrometheus(w io.Writer) {
	e := &expo{}
	c := 0.0
	if v.connected.Load() {
		c = 1
	}
	e.gauge("ferry_verify_connected", "1 while connected to the cloud broker.", c)
	e.counter("ferry_verify_connects_total", "Connections to the cloud broker (the first one included).", v.connects.Load())
	if v.cfg.Repair {
		e.counter("ferry_verify_repair_requests_unsent_total", "Resend requests not acknowledged by the cloud broker (asked again later).", v.requestsLost.Load())
		e.counter("ferry_verify_undecodable_replies_total", "Messages on the reply topic that are not resend replies.", v.badReplies.Load())
	}
	_, _ = w.Write(e.B)
	_ = v.checker.WritePrometheus(w, v.cfg.MetricsLabels)
	metrics.WriteProcessMetrics(w)
}
