package opsapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/event"
)

// Reporter gives the snapshots the API serves: GET /status, /metrics and
// the status page (Status), GET /buffer/stats (BufferStats) and GET
// /deadletters (DeadLetterPage, see ReadDeadLetters). They are called
// concurrently, from any number of requests.
type Reporter interface {
	Status() Status
	BufferStats() []BufferStream
	DeadLetterPage(from int64, n int) (page []DeadLetter, next uint64)
}

// Operator changes the running gateway: POST /reload and POST
// /buffer/replay. ctx is the request's.
type Operator interface {
	Reload(ctx context.Context) error
	Replay(ctx context.Context, stream string, from uint64) error
}

// Readiness answers GET /readyz: nil when the gateway takes events safely,
// or why not.
type Readiness interface {
	Ready() error
}

// Log is the durable log as the peek and export endpoints read it.
type Log interface {
	Stats() []buffer.StreamStats
	Read(stream string, from uint64, max int, fn func(off uint64, ev *event.Event) error) (uint64, error)
}

var _ Log = (*buffer.Log)(nil)

// Config is what a Server serves. Every field but the overrides is
// required.
type Config struct {
	// Listener is the status listener, bound by the caller (so that a
	// taken address fails the start before anything runs); Run closes it.
	Listener  net.Listener
	Log       Log
	Reporter  Reporter
	Operator  Operator
	Readiness Readiness
	// Metrics are the series updated as things happen (the commit
	// histogram); nil serves only those computed from Status.
	Metrics *Metrics
	// Pprof serves Go's profiler under /debug/pprof/ (status.pprof).
	Pprof  bool
	Logger *slog.Logger

	// IdleTimeout and StreamLifetime replace StatusIdleTimeout and
	// SSEMaxLifetime when set (tests shorten them).
	IdleTimeout    time.Duration
	StreamLifetime time.Duration
}

// Server is the status listener's HTTP server: the operator API, metrics,
// probes and the status page.
type Server struct {
	cfg Config
	web webStats // the listener's counters (limits.go)
}

// New returns the server of cfg; Run serves it.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = StatusIdleTimeout
	}
	if cfg.StreamLifetime <= 0 {
		cfg.StreamLifetime = SSEMaxLifetime
	}
	return &Server{cfg: cfg}
}

// ListenerStats reports the listener's connections and refusals. It is
// safe to call concurrently with Run, and before it.
func (s *Server) ListenerStats() ListenerStats { return s.web.snapshot() }

// Run serves until ctx ends, then shuts the server down (2 s at most for
// the requests under way) and returns nil; it returns an error only when
// the server failed. Streams of the status page end with ctx, so an open
// browser tab does not hold the shutdown to its timeout; GET /readyz
// answers "not ready" from the moment ctx ends.
func (s *Server) Run(ctx context.Context) error {
	mux := http.NewServeMux()
	s.registerOps(mux) // ferry buffer …, ferry reload: ops.go
	// Every endpoint that returns data is behind hostGuard (a page whose
	// DNS name was re-pointed at 127.0.0.1 must not read it), the status
	// page included: its script calls the endpoints with the page's own
	// Host. /healthz is left open: it answers "ok" and nothing else,
	// which tells a rebinding page no more than the connection itself.
	mux.Handle("GET /status", hostGuard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.cfg.Reporter.Status())
	})))
	mux.Handle("GET /deadletters", hostGuard(http.HandlerFunc(s.handleDeadLetters)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	s.registerMonitoring(ctx, mux) // GET /metrics, GET /readyz
	if s.cfg.Pprof {
		registerPprof(mux)
	}
	mux.Handle("/", s.statusPage(ctx))
	srv, ln := s.newHTTPServer(s.cfg.Listener, mux)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	s.cfg.Logger.Info("status page listening", "url", "http://"+ln.Addr().String()+"/", "metrics", "http://"+ln.Addr().String()+"/metrics")
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

// registerMonitoring adds GET /metrics (metrics.go) and GET /readyz to the
// mux; ctx ends when the gateway starts stopping.
func (s *Server) registerMonitoring(ctx context.Context, mux *http.ServeMux) {
	// /metrics names streams, pipelines and counts: behind hostGuard like
	// every endpoint that returns data (ops.go). /readyz stays open for
	// probes that address the board by name: it answers "ready" or a
	// fixed reason, nothing a rebinding page could not learn by timing.
	mux.Handle("GET /metrics", hostGuard(http.HandlerFunc(s.serveMetrics)))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { s.serveReady(ctx, w) })
}

// serveReady answers GET /readyz: 200 "ready", or 503 with the reason.
// ctx ends when the gateway starts stopping, which makes it unready at
// once, before the broker's listeners close.
func (s *Server) serveReady(ctx context.Context, w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	err := ctx.Err()
	if err != nil {
		err = errors.New("gateway: stopping")
	} else {
		err = s.cfg.Readiness.Ready()
	}
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: %v\n", err)
		return
	}
	fmt.Fprintln(w, "ready")
}
