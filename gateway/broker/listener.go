package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/ferrygw/ferry/internal/audit"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// connectTimeout bounds how long an accepted connection may take to
// finish its TLS handshake and send CONNECT. mochi sets no deadline of its
// own before CONNECT, so without this a connection that never speaks would
// hold a goroutine and its buffers forever, and would block shutdown
// (mochi waits for every client, but only disconnects those past CONNECT).
// A variable so tests can shorten it.
var connectTimeout = DefaultConnectTimeout

// listener is a TCP listener, optionally TLS, for mochi. It replaces
// mochi's listeners.TCP, which performs the TLS handshake lazily inside the
// client's first read, without a deadline, and stops accepting for good on
// the first Accept error (EMFILE under a connection flood, say).
//
// Each accepted connection gets a deadline of connectTimeout; for TLS the
// handshake completes here, under that deadline, before mochi sees the
// connection, so cl.Net.Conn is a *tls.Conn whose ConnectionState (the
// verified client certificate) is final when the auth hook runs. mochi
// replaces the deadline with the keep-alive one once CONNECT is read.
type listener struct {
	id, address string
	tlsConf     *tls.Config // nil: plain TCP
	log         *slog.Logger
	audit       Auditor // TLS handshake refusals

	ln net.Listener
	connSet
}

var _ listeners.Listener = (*listener)(nil)

func newListener(id, address string, tlsConf *tls.Config, log *slog.Logger) *listener {
	return &listener{id: id, address: address, tlsConf: tlsConf, log: log, audit: nopAuditor{}}
}

func (l *listener) ID() string { return l.id }

func (l *listener) Protocol() string {
	if l.tlsConf != nil {
		return "tls"
	}
	return "tcp"
}

// Address returns the bound address once Init has run.
func (l *listener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

// Init binds the address.
func (l *listener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return err
	}
	l.ln = ln
	return nil
}

// Serve accepts connections until Close. Accept errors other than the
// listener being closed (out of file descriptors, typically) are retried
// with a backoff of up to a second, so a flood does not end the listener.
func (l *listener) Serve(establish listeners.EstablishFn) {
	if !l.start() {
		return
	}
	defer l.wg.Done()
	var backoff time.Duration
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if l.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.warn("accept failed; retrying", "error", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !l.track(conn) {
			conn.Close()
			if l.isClosed() {
				return
			}
			// Refused by the budget: closing at once, unread, is the
			// cheapest answer to a flood of connections.
			continue
		}
		go l.handle(conn, establish)
	}
}

// handle completes the TLS handshake (if any) under connectTimeout and
// hands the connection to mochi, which owns it until it returns.
func (l *listener) handle(raw net.Conn, establish listeners.EstablishFn) {
	defer l.wg.Done()
	defer l.untrack(raw)
	conn := raw
	timeout := l.timeout()
	_ = raw.SetDeadline(time.Now().Add(timeout))
	if l.tlsConf != nil {
		tc := tls.Server(raw, l.tlsConf)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			_ = tc.Close()
			// A bare connect-and-close (a port probe) is not worth a line;
			// a client refused over its certificate or TLS version is.
			if !errors.Is(err, io.EOF) && !l.isClosed() {
				l.warn("tls handshake failed", "remote", raw.RemoteAddr().String(), "error", err)
				l.audit.Record(audit.Entry{Event: "tls_refused", Remote: raw.RemoteAddr().String(), Listener: l.id, Reason: err.Error()})
			}
			return
		}
		conn = tc
	}
	err := establish(l.id, conn)
	if l.budget != nil {
		l.budget.ended(raw, err) // counts a CONNECT too large or too late
	}
	if err != nil && !l.isClosed() {
		l.warn("client connection ended", "remote", raw.RemoteAddr().String(), "error", err)
	}
}

// timeout is the budget's ConnectTimeout, or connectTimeout without one.
func (l *listener) timeout() time.Duration {
	if l.budget != nil {
		return l.budget.ConnectTimeout
	}
	return connectTimeout
}

// Close stops accepting, lets mochi disconnect the connected clients, then
// closes whatever is left (handshakes, connections before CONNECT) and
// waits for every connection goroutine.
func (l *listener) Close(closeClients listeners.CloseFn) {
	if !l.markClosed() {
		return
	}
	closeClients(l.id)
	if l.ln != nil {
		_ = l.ln.Close()
	}
	l.dropAndWait()
}

// warn logs a line about a connection. Each is a client's doing, so a
// misbehaving or hostile client could write them at any rate: the logger
// limits them (see Config.Logger).
func (l *listener) warn(msg string, args ...any) {
	l.log.Warn(msg, append([]any{"listener", l.id}, args...)...)
}
