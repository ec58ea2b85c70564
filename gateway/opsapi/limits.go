package opsapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Limits of the status listener. It is loopback-only and unauthenticated,
// so anything on the board can open connections to it; these bound what
// that costs a 512 MB board (each connection is a goroutine and a few KB
// of buffers) and how long a client that stops reading holds a slot.
const (
	// StatusMaxConns caps the status listener's open connections. One
	// more is answered 503 and closed at once, without a goroutine. 32
	// leaves room for the 8 status page streams, a Prometheus scraper and
	// several `ferry` commands.
	StatusMaxConns = 32
	// StatusIdleTimeout closes a kept-alive connection that sends no new
	// request for this long.
	StatusIdleTimeout = 30 * time.Second
	// StatusReadHeaderTimeout bounds how long a connection may take to
	// send a request's header, its first one included: a connection that
	// sends nothing is closed after this long.
	StatusReadHeaderTimeout = 5 * time.Second
	// StatusReadTimeout bounds reading a whole request (no endpoint takes
	// a body).
	StatusReadTimeout = 10 * time.Second
	// StatusMaxHeaderBytes caps a request's header.
	StatusMaxHeaderBytes = 16 << 10
	// SSEMaxLifetime ends a status page event stream after this long;
	// the page's EventSource reconnects by itself 3 s later. A client
	// that stops reading cannot be told from one that reads for minutes
	// (its writes land in kernel buffers that a snapshot a second takes
	// that long, or hours, to fill), so this is what bounds how long it
	// holds one of the 8 stream slots (about 1.5 h in the issue).
	SSEMaxLifetime = time.Minute

	// sseWriteBuffer is the kernel send buffer of an event stream. Left
	// alone Linux grows it to 4 MB; 8 KB makes the stream's write
	// deadline fire sooner for a client that stalls under a fast stream.
	sseWriteBuffer = 8 << 10
)

// ListenerStats counts the status listener's connections and refusals,
// reported in Status and /metrics.
type ListenerStats struct {
	Conns    int64  `json:"conns"`     // open connections
	MaxConns int    `json:"max_conns"` // StatusMaxConns
	Refused  uint64 `json:"refused"`   // connections refused at the cap
	// StreamsRefused counts status page streams refused (503) because
	// all 8 slots were taken; StreamsExpired those ended at
	// SSEMaxLifetime.
	StreamsRefused uint64 `json:"streams_refused"`
	StreamsExpired uint64 `json:"streams_expired"`
}

// webStats are the status listener's counters; the zero value is ready.
type webStats struct {
	conns          atomic.Int64
	refused        atomic.Uint64
	streamsRefused atomic.Uint64
	streamsExpired atomic.Uint64
}

func (s *webStats) snapshot() ListenerStats {
	return ListenerStats{Conns: s.conns.Load(), MaxConns: StatusMaxConns, Refused: s.refused.Load(),
		StreamsRefused: s.streamsRefused.Load(), StreamsExpired: s.streamsExpired.Load()}
}

// capListener hands out at most cap(slots) connections at a time. Beyond
// that it answers 503 itself and closes the connection, rather than leave
// it in the kernel's accept queue (where a client waits for nothing) or
// start a server goroutine for it.
type capListener struct {
	net.Listener
	slots chan struct{}
	stats *webStats
}

// refused503 is the whole answer to a connection over the cap.
const refused503 = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n" +
	"Retry-After: 5\r\nConnection: close\r\nContent-Length: 53\r\n\r\n" +
	"ferry: too many connections to the status listener\r\n\r\n"

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			l.stats.conns.Add(1)
			return &capConn{Conn: c, l: l}, nil
		default:
		}
		l.stats.refused.Add(1)
		// A new connection's send buffer is empty: the write does not
		// block, the deadline is only a guard.
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write([]byte(refused503))
		_ = c.Close()
	}
}

// capConn gives its slot back when closed (once: net/http may close twice).
type capConn struct {
	net.Conn
	l    *capListener
	once sync.Once
}

func (c *capConn) Close() error {
	c.once.Do(func() {
		c.l.stats.conns.Add(-1)
		<-c.l.slots
	})
	return c.Conn.Close()
}

// connKey carries a request's connection in its context (ConnContext),
// for serveStream.
type connKey struct{}

// newHTTPServer returns the status listener's server with its limits, and
// ln wrapped in the connection cap.
func (s *Server) newHTTPServer(ln net.Listener, h http.Handler) (*http.Server, net.Listener) {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: StatusReadHeaderTimeout,
		ReadTimeout:       StatusReadTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    StatusMaxHeaderBytes,
		// No WriteTimeout: exports and event streams last; their writes
		// have their own deadlines.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
	}
	return srv, &capListener{Listener: ln, slots: make(chan struct{}, StatusMaxConns), stats: &s.web}
}

// serveStream serves a status page event stream (GET /events) through
// page, ending it after Config.StreamLifetime, and counts the streams refused
// for want of a slot and those ended.
func (s *Server) serveStream(page http.Handler, w http.ResponseWriter, r *http.Request) {
	if c, ok := r.Context().Value(connKey{}).(*capConn); ok {
		if tc, ok := c.Conn.(*net.TCPConn); ok {
			_ = tc.SetWriteBuffer(sseWriteBuffer)
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.StreamLifetime)
	defer cancel()
	sw := &statusWriter{ResponseWriter: w}
	page.ServeHTTP(sw, r.WithContext(ctx))
	switch {
	case sw.status == http.StatusServiceUnavailable:
		s.web.streamsRefused.Add(1)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		s.web.streamsExpired.Add(1)
	}
}

// statusWriter records the status code written through it. Unwrap lets
// http.ResponseController reach the connection (flush, write deadline).
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
