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
	// Listener is the status listener's connections and refusals.
	Listener ListenerStats `json:"status_listener"`
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
		Listener:    g.web.snapshot(),
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
	// Size is the original payload's size in bytes; Payload holds at most
	// DeadLetterShowMax bytes of it, and only as much as the pipeline kept
	// (dead_letters.max_payload).
	Size      int  `json:"size"`
	Truncated bool `json:"truncated,omitempty"` // Payload is not the whole original
}

// Paging of GET /deadletters: a page holds at most DeadLettersMax dead
// letters and stops once its encoded size passes DeadLettersPageBytes, so
// a response, and what the gateway holds to write it, stays small however
// large the dead letters are (an older gateway kept whole payloads).
const (
	// DeadLettersMax caps n of GET /deadletters.
	DeadLettersMax = 100
	// DeadLettersPageBytes caps the encoded dead letters of one page.
	DeadLettersPageBytes = 256 << 10
	// DeadLetterShowMax is how much of each payload a page shows.
	DeadLetterShowMax = 4 << 10
	// DeadLettersNextHeader names the offset the next page starts at
	// ("from"), when the page stopped before the stream's end.
	DeadLettersNextHeader = "Ferry-Next-From"
)

// DeadLetters returns the newest n (default 20, at most DeadLettersMax)
// dead letters, oldest first; see DeadLetterPage.
func (g *Gateway) DeadLetters(n int) []DeadLetter {
	out, _ := g.DeadLetterPage(-1, n)
	return out
}

// DeadLetterPage returns up to n (default 20, at most DeadLettersMax) dead
// letters, oldest first, from offset from on, or the newest n when from is
// negative. A page also ends once it holds DeadLettersPageBytes of
// encoded dead letters; next is then the offset to ask for next, and 0
// when the page reached the stream's end.
func (g *Gateway) DeadLetterPage(from int64, n int) (page []DeadLetter, next uint64) {
	if n <= 0 {
		n = 20
	}
	n = min(n, DeadLettersMax)
	cfg, _ := g.current()
	stream := cfg.DeadLetters.Stream
	var start, end uint64
	for _, s := range g.buf.Stats() {
		if s.Name == stream {
			end = s.Next
			if from < 0 && s.Next > uint64(n) {
				start = s.Next - uint64(n)
			}
		}
	}
	if from >= 0 {
		start = uint64(from)
	}
	page = []DeadLetter{}
	size := 0
	_, _ = g.buf.Read(stream, start, n, func(off uint64, ev *event.Event) error {
		if off >= end {
			return errExportEnd
		}
		d := deadLetter(off, ev)
		b, _ := json.Marshal(&d)
		if len(page) > 0 && size+len(b) > DeadLettersPageBytes {
			next = off
			return errPageFull
		}
		size += len(b)
		page = append(page, d)
		if len(page) == n && off+1 < end {
			next = off + 1
		}
		return nil
	})
	return page, next
}

// deadLetter copies what a page shows of ev (Read's ev is reused after fn).
func deadLetter(off uint64, ev *event.Event) DeadLetter {
	d := DeadLetter{Offset: off, ID: ev.Attrs["original_id"], Pipeline: ev.Attrs["pipeline"],
		Reason: ev.Attrs["reason"], Source: ev.Source, Topic: ev.Topic, Time: ev.Time,
		Size: len(ev.Payload), Truncated: ev.Attrs["truncated"] == "true"}
	if s, err := strconv.Atoi(ev.Attrs["original_size"]); err == nil && s > d.Size {
		d.Size = s
	}
	p := ev.Payload
	if len(p) > DeadLetterShowMax {
		p, d.Truncated = p[:DeadLetterShowMax], true
	}
	d.Payload = strings.ToValidUTF8(string(p), "\uFFFD")
	return d
}

func (g *Gateway) serveStatus(ctx context.Context) error {
	mux := http.NewServeMux()
	g.registerOps(mux) // ferry buffer …, ferry reload: ops.go
	// Every endpoint that returns data is behind hostGuard (a page whose
	// DNS name was re-pointed at 127.0.0.1 must not read it), the status
	// page included: its script calls the endpoints with the page's own
	// Host. /healthz is left open: it answers "ok" and nothing else,
	// which tells a rebinding page no more than the connection itself.
	mux.Handle("GET /status", hostGuard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, g.Status())
	})))
	mux.Handle("GET /deadletters", hostGuard(http.HandlerFunc(g.handleDeadLetters)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	g.registerMonitoring(ctx, mux) // GET /metrics, GET /readyz
	if g.cfg.Status.Pprof {
		registerPprof(mux)
	}
	mux.Handle("/", g.statusPage(ctx))
	srv, ln := g.newStatusServer(g.statusLn, mux) // statusLn: bound by New
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

// handleDeadLetters answers GET /deadletters: a page of dead letters
// (n, and from as in /buffer/export; without from, the newest n), with
// DeadLettersNextHeader naming where the next page starts when there is
// more.
func (g *Gateway) handleDeadLetters(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n := 20
	if s := q.Get("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			badRequest("n %q: must be a positive integer (at most %d are returned)", s, DeadLettersMax).write(w)
			return
		}
		n = v
	}
	from := int64(-1)
	if s := q.Get("from"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			badRequest("from %q: not an offset (a non-negative integer)", s).write(w)
			return
		}
		from = v
	}
	page, next := g.DeadLetterPage(from, n)
	if next > 0 {
		w.Header().Set(DeadLettersNextHeader, strconv.FormatUint(next, 10))
	}
	writeJSON(w, http.StatusOK, page)
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
