package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/drivers"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/ferrygw/ferry/gateway/rules"
	"github.com/ferrygw/ferry/uplink"
)

// Status is the gateway's health at one moment: what `ferry status` prints
// and GET /status returns.
type Status struct {
	GatewayID string                `json:"gateway_id"`
	Uptime    Duration              `json:"uptime"`
	Link      *uplink.Status        `json:"link,omitempty"` // nil when the uplink is disabled
	Ingest    broker.Stats          `json:"ingest"`
	Streams   []StreamStatus        `json:"streams"`
	Pipelines []rules.RunnerStats   `json:"pipelines,omitempty"`
	Alerts    []Alert               `json:"alerts,omitempty"` // newest pipeline outputs first
	Drivers   []drivers.DriverStats `json:"drivers,omitempty"`
	Commits   uint64                `json:"commits"`
	CommitAvg Duration              `json:"commit_avg"`
	DiskFull  bool                  `json:"disk_full"`
	// Quarantined is where a corrupt buffer file was moved at start-up.
	Quarantined string `json:"quarantined,omitempty"`
}

// StreamStatus is one stream's backlog.
type StreamStatus struct {
	buffer.StreamStats
	OldestAge Duration `json:"oldest_age"` // age of the oldest unforwarded event
}

// Duration marshals as a Go duration string ("1m30s").
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// Status reports the gateway's state.
func (g *Gateway) Status() Status {
	now := g.now()
	cfg, p := g.current()
	st := Status{
		GatewayID:   cfg.GatewayID,
		Ingest:      g.broker.Stats(),
		DiskFull:    g.buf.DiskFull(),
		Quarantined: g.buf.Quarantined(),
	}
	if started := g.started.Load(); started != 0 {
		st.Uptime = Duration(now.Sub(time.Unix(0, started)).Round(time.Second))
	}
	if p.fwd != nil {
		ls := p.fwd.Status()
		st.Link = &ls
	}
	var total time.Duration
	st.Commits, total = g.buf.CommitStats()
	if st.Commits > 0 {
		st.CommitAvg = Duration(total / time.Duration(st.Commits))
	}
	for _, r := range p.runners {
		st.Pipelines = append(st.Pipelines, r.Stats())
	}
	st.Alerts = g.alerts.list()
	if p.sched != nil {
		st.Drivers = p.sched.Stats()
	}
	for _, s := range g.buf.Stats() {
		ss := StreamStatus{StreamStats: s}
		if !s.Oldest.IsZero() && s.Events > 0 {
			ss.OldestAge = Duration(now.Sub(s.Oldest).Round(time.Millisecond))
		}
		st.Streams = append(st.Streams, ss)
	}
	return st
}

// DeadLetter is one event a pipeline could not process, and why.
type DeadLetter struct {
	Offset   uint64    `json:"offset"`
	ID       string    `json:"id"`
	Pipeline string    `json:"pipeline,omitempty"`
	Reason   string    `json:"reason"`
	Source   string    `json:"source"`
	Topic    string    `json:"topic"`
	Time     time.Time `json:"time"`
	Payload  string    `json:"payload"` // as text, invalid UTF-8 replaced
}

// DeadLetters returns the newest n (default 20, at most 1000) dead letters.
func (g *Gateway) DeadLetters(n int) []DeadLetter {
	if n <= 0 {
		n = 20
	}
	n = min(n, 1000)
	cfg, _ := g.current()
	stream := cfg.DeadLetters.Stream
	var from uint64
	for _, s := range g.buf.Stats() {
		if s.Name == stream && s.Next > uint64(n) {
			from = s.Next - uint64(n)
		}
	}
	out := []DeadLetter{}
	_, _ = g.buf.Read(stream, from, n, func(off uint64, ev *event.Event) error {
		out = append(out, DeadLetter{Offset: off, ID: ev.Attrs["original_id"], Pipeline: ev.Attrs["pipeline"],
			Reason: ev.Attrs["reason"], Source: ev.Source, Topic: ev.Topic, Time: ev.Time,
			Payload: strings.ToValidUTF8(string(ev.Payload), "\uFFFD")})
		return nil
	})
	return out
}

func (g *Gateway) serveStatus(ctx context.Context) error {
	mux := http.NewServeMux()
	g.registerOps(mux) // ferry buffer …, ferry reload: ops.go
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(g.Status())
	})
	mux.HandleFunc("GET /deadletters", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(g.DeadLetters(n))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	g.registerMonitoring(ctx, mux) // GET /metrics, GET /readyz
	if g.cfg.Status.Pprof {
		registerPprof(mux)
	}
	mux.Handle("/", g.statusPage(ctx))
	ln := g.statusLn // bound by New
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	g.log.Info("status page listening", "url", "http://"+ln.Addr().String()+"/", "metrics", "http://"+ln.Addr().String()+"/metrics")
	select {
	case err := <-done:
		return fmt.Errorf("gateway: status server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// logHealth writes one line per interval: link state, backlog and rates.
// One line per interval, whatever happens, is the rate limit: a flapping
// link cannot fill the SD card with it.
func (g *Gateway) logHealth(ctx context.Context) error {
	cfg, _ := g.current()
	t := time.NewTicker(cfg.Status.LogInterval)
	defer t.Stop()
	var lastIngested, lastForwarded uint64
	last := g.now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		st := g.Status()
		now := g.now()
		secs := now.Sub(last).Seconds()
		last = now
		var events, bytes int64
		var oldest Duration
		var drops uint64
		for _, s := range st.Streams {
			events += s.Events
			bytes += s.Bytes
			oldest = max(oldest, s.OldestAge)
			for _, n := range s.Drops {
				drops += n
			}
		}
		attrs := []any{
			"backlog_events", events, "backlog_bytes", bytes, "oldest", time.Duration(oldest).String(),
			"ingest_per_s", rate(st.Ingest.Ingested, &lastIngested, secs),
			"clients", st.Ingest.Clients, "refused", st.Ingest.Refused, "dropped", drops,
		}
		if st.Link != nil {
			state := "down"
			if st.Link.Connected {
				state = "up"
			}
			attrs = append(attrs, "link", state, "endpoint", st.Link.Endpoint,
				"forward_per_s", rate(st.Link.ForwardedEvents, &lastForwarded, secs),
				"reconnects", st.Link.Reconnects)
			if !st.Link.Connected && st.Link.LastError != "" {
				attrs = append(attrs, "last_error", st.Link.LastError)
			}
		}
		g.log.Info("health", attrs...)
	}
}

func rate(total uint64, last *uint64, secs float64) float64 {
	d := total - *last
	*last = total
	if secs <= 0 {
		return 0
	}
	return float64(int(float64(d)/secs*10)) / 10
}

// registerPprof serves Go's profiler under /debug/pprof/ (status.pprof):
// CPU and heap profiles, goroutines, so figures come from ferry running on
// the board itself. Loopback only like the rest of the listener, and behind
// hostGuard: a profile names no payloads, but a web page has no business
// reading it through DNS rebinding.
func registerPprof(mux *http.ServeMux) {
	mux.Handle("/debug/pprof/", hostGuard(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/cmdline", hostGuard(http.HandlerFunc(pprof.Cmdline)))
	mux.Handle("/debug/pprof/profile", hostGuard(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/symbol", hostGuard(http.HandlerFunc(pprof.Symbol)))
	mux.Handle("/debug/pprof/trace", hostGuard(http.HandlerFunc(pprof.Trace)))
}
