package broker

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// wsListener is the websocket listener. It replaces mochi's
// listeners.Websocket, which binds its address only in Serve (after the
// broker has started) and, when it cannot, merely logs: a taken address
// did not fail the start. This one binds in Init, so New fails instead,
// and serves the bound listener with http.Server.Serve.
//
// The upgrade and the connection (MQTT packets in binary websocket
// messages) are mochi's; see wsConn. Like listener, it gives each upgraded
// connection connectTimeout to send CONNECT (the HTTP request itself gets
// as long), and on Close drops the connections mochi has not taken over.
type wsListener struct {
	id, address string
	log         *slog.Logger
	timeout     time.Duration // connectTimeout when made

	ln        net.Listener
	srv       *http.Server
	upgrader  websocket.Upgrader
	establish listeners.EstablishFn // set by Serve

	connSet // the upgraded connections
}

var _ listeners.Listener = (*wsListener)(nil)

func newWSListener(id, address string, log *slog.Logger) *wsListener {
	return &wsListener{
		id: id, address: address, log: log, timeout: connectTimeout,
		upgrader: websocket.Upgrader{
			Subprotocols: []string{"mqtt"},
			// As mochi: any page may connect; authentication is MQTT's.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
}

func (l *wsListener) ID() string { return l.id }

func (l *wsListener) Protocol() string { return "ws" }

// Address returns the bound address once Init has run.
func (l *wsListener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

// Init binds the address.
func (l *wsListener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return err
	}
	l.ln = ln
	mux := http.NewServeMux()
	mux.HandleFunc("/", l.handle)
	l.srv = &http.Server{
		Handler:      mux,
		ReadTimeout:  l.timeout,
		WriteTimeout: l.timeout,
		ErrorLog:     slog.NewLogLogger(l.log.With("listener", l.id).Handler(), slog.LevelWarn),
	}
	return nil
}

// Serve serves HTTP until Close. http.Server retries failed accepts (out
// of file descriptors, typically) with a backoff.
func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.establish = establish // read by handlers, which start after Serve does
	if !l.start() {
		return
	}
	defer l.wg.Done()
	if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !l.isClosed() {
		l.log.Error("websocket listener failed", "listener", l.id, "error", err)
	}
}

// handle upgrades a request and hands the connection to mochi, which owns
// it until it returns.
func (l *wsListener) handle(w http.ResponseWriter, r *http.Request) {
	c, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered with an HTTP error
	}
	raw := c.NetConn()
	if !l.track(raw) {
		_ = raw.Close()
		return
	}
	defer l.wg.Done()
	defer l.untrack(raw)
	// The hijacked connection has no deadline left from the HTTP server.
	_ = raw.SetDeadline(time.Now().Add(l.timeout))
	if err := l.establish(l.id, &wsConn{Conn: raw, c: c}); err != nil && !l.isClosed() {
		l.log.Warn("client connection ended", "listener", l.id, "remote", r.RemoteAddr, "error", err)
	}
}

// Close stops accepting and drops requests not upgraded yet, lets mochi
// disconnect the connected clients, then closes the connections left
// (before CONNECT) and waits for their handlers.
func (l *wsListener) Close(closeClients listeners.CloseFn) {
	if !l.markClosed() {
		return
	}
	if l.srv != nil {
		_ = l.srv.Close() // closes neither upgraded connections nor, before Serve, l.ln
	}
	if l.ln != nil {
		_ = l.ln.Close()
	}
	closeClients(l.id)
	l.dropAndWait()
}

// wsConn is a websocket connection as the net.Conn mochi reads packets
// from and writes them to, each packet a binary message (mochi's own,
// listeners/websocket.go, which is unexported; MIT, mochi-mqtt).
type wsConn struct {
	net.Conn // the underlying connection: deadlines, addresses, Close
	c        *websocket.Conn
	r        io.Reader // the message being read, or nil
}

// Read reads from the current binary message, or the next one.
func (ws *wsConn) Read(p []byte) (int, error) {
	if ws.r == nil {
		op, r, err := ws.c.NextReader()
		if err != nil {
			return 0, err
		}
		if op != websocket.BinaryMessage {
			return 0, listeners.ErrInvalidMessage
		}
		ws.r = r
	}
	var n int
	for n < len(p) {
		m, err := ws.r.Read(p[n:])
		n += m
		if err != nil {
			// The message ended, or reading it failed: either way the
			// next Read starts on the next message.
			ws.r = nil
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return n, err
		}
	}
	return n, nil
}

// Write writes p as one binary message.
func (ws *wsConn) Write(p []byte) (int, error) {
	if err := ws.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
