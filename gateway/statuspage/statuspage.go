// Package statuspage serves ferry's local status page: one HTML page, a
// style sheet and a small script, embedded in the binary (no build step, no
// CDN, no framework), and a server-sent event stream the script draws its
// live charts from.
//
// Routes (relative to where the handler is mounted, normally "/"):
//
//	GET /            the page
//	GET /static/NAME its script and style sheet
//	GET /events      text/event-stream: "event: status" with the JSON
//	                 snapshot on connect and every Options.Interval, and a
//	                 comment line every Options.Heartbeat
//
// Rates and the five-minute history are computed and kept by the browser
// from the snapshots' counters, so the gateway holds no history for it.
//
// Concurrency: the handler is safe for concurrent use. It starts no
// goroutine of its own: each event stream runs in its request's goroutine,
// so snapshot is called from several goroutines at once when several
// clients are connected and must be safe for that. At most
// Options.MaxClients streams are open at a time; another request gets 503
// at once, so forgotten browser tabs cannot pile up goroutines on a small
// board. A stream ends, and its goroutine returns, when the client goes
// away, when a write stalls for longer than writeTimeout, or when the
// context given to Handler ends; the server's Shutdown then finds the
// connection idle instead of waiting out its deadline.
package statuspage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"time"
)

//go:embed static
var static embed.FS

// Options tune the handler; the zero value gives the defaults.
type Options struct {
	// Interval is the time between status events; default 1 s.
	Interval time.Duration
	// Heartbeat is the time between comment lines, which keep proxies
	// and idle timers from closing a stream when Interval is long;
	// default 15 s.
	Heartbeat time.Duration
	// MaxClients bounds the concurrent event streams; default 8.
	MaxClients int
}

// writeTimeout bounds each write to an event stream: a client that stops
// reading (a suspended laptop with the page open) frees its slot after
// this long instead of holding it for the TCP timeout.
const writeTimeout = 10 * time.Second

// csp allows the page's own files only: no inline script or style, no
// third-party origin, no framing.
const csp = "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// asset is one embedded file, ready to serve.
type asset struct {
	name  string
	ctype string
	etag  string
	body  []byte
}

type handler struct {
	ctx      context.Context
	snapshot func() any
	o        Options
	slots    chan struct{} // one token per open event stream
	assets   map[string]*asset
	mux      *http.ServeMux
}

// Handler returns the status page handler. snapshot returns the value
// each status event carries, marshalled as JSON: opsapi.Status, whose
// field names the page's script reads. Event streams end when ctx ends,
// so cancel it before shutting the server down.
func Handler(ctx context.Context, snapshot func() any, o Options) http.Handler {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 15 * time.Second
	}
	if o.MaxClients <= 0 {
		o.MaxClients = 8
	}
	h := &handler{ctx: ctx, snapshot: snapshot, o: o, slots: make(chan struct{}, o.MaxClients),
		assets: loadAssets(), mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { h.serveAsset(w, r, "index.html") })
	h.mux.HandleFunc("GET /static/{name}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("name") == "index.html" { // the page lives at "/" only
			http.NotFound(w, r)
			return
		}
		h.serveAsset(w, r, r.PathValue("name"))
	})
	h.mux.HandleFunc("GET /events", h.serveEvents)
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", csp)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	h.mux.ServeHTTP(w, r)
}

// loadAssets reads the embedded files once and gives each a content hash
// as its ETag: embedded files have no modification time, and a hash lets a
// browser revalidate cheaply yet see a new version after an upgrade.
func loadAssets() map[string]*asset {
	m := map[string]*asset{}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		name := path.Base(p)
		ctype := mime.TypeByExtension(path.Ext(name))
		if ctype == "" {
			ctype = http.DetectContentType(b)
		}
		m[name] = &asset{name: name, ctype: ctype, body: b,
			etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		panic("statuspage: embedded files: " + err.Error()) // a build defect, not a runtime condition
	}
	return m
}

func (h *handler) serveAsset(w http.ResponseWriter, r *http.Request, name string) {
	a, ok := h.assets[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", a.ctype)
	w.Header().Set("ETag", a.etag)
	// Revalidate every time: a 304 costs little on a LAN and the page
	// never runs a stale script against a newer gateway.
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.body))
}

func (h *handler) serveEvents(w http.ResponseWriter, r *http.Request) {
	select {
	case h.slots <- struct{}{}:
		defer func() { <-h.slots }()
	default:
		w.Header().Set("Retry-After", "10")
		http.Error(w, fmt.Sprintf("statuspage: %d status streams are open already; close a tab", cap(h.slots)),
			http.StatusServiceUnavailable)
		return
	}
	rc := http.NewResponseController(w)
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no") // a reverse proxy must not buffer the stream
	w.WriteHeader(http.StatusOK)

	// send writes one chunk and flushes it; false: the stream is over.
	send := func(b []byte) bool {
		// Not every ResponseWriter supports deadlines (httptest's
		// recorder does not); without one the write simply may block.
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	status := func() bool {
		js, err := json.Marshal(h.snapshot())
		if err != nil {
			// The snapshot type is fixed at build time: this is a
			// defect; say so in the stream and end it.
			send(fmt.Appendf(nil, ": snapshot: %q\n\n", err.Error())) // quoted: one comment line
			return false
		}
		// json.Marshal escapes newlines inside strings, so the document
		// is one data line.
		return send(fmt.Appendf(nil, "event: status\ndata: %s\n\n", js))
	}
	// retry: the browser's reconnect delay after the stream breaks.
	if !send([]byte("retry: 3000\n\n")) || !status() {
		return
	}
	tick := time.NewTicker(h.o.Interval)
	defer tick.Stop()
	beat := time.NewTicker(h.o.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-h.ctx.Done():
			return
		case <-tick.C:
			if !status() {
				return
			}
		case <-beat.C:
			if !send([]byte(": ping\n\n")) {
				return
			}
		}
	}
}
