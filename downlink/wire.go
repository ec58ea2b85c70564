package downlink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// packetOverhead is what a PUBLISH may add to its payload: a topic of up
// to 64 KiB and the properties. The client announces MaxPayload plus this
// as its Maximum Packet Size.
const packetOverhead = 128 << 10

// dial opens a network connection to ep (TCP, TLS or WebSocket) within
// timeout, and returns it wrapped for paho (see wireConn).
func dial(ctx context.Context, ep Endpoint, timeout time.Duration, maxPacket int) (*wireConn, error) {
	u, err := url.Parse(ep.URL)
	if err != nil {
		return nil, err // normalize checked it
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nd := &net.Dialer{KeepAlive: 30 * time.Second}
	var c net.Conn
	switch u.Scheme {
	case "tcp", "mqtt":
		c, err = nd.DialContext(ctx, "tcp", u.Host)
	case "ssl", "tls", "mqtts":
		raw, derr := nd.DialContext(ctx, "tcp", u.Host)
		if derr != nil {
			return nil, derr
		}
		tc := tls.Client(raw, tlsConfig(ep.TLS, u))
		if err = tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		c = tc
	case "ws", "wss":
		c, err = dialWebSocket(ctx, nd, ep, u)
	default:
		return nil, fmt.Errorf("unsupported scheme %q", u.Scheme)
	}
	if err != nil {
		return nil, err
	}
	return &wireConn{Conn: c, writeTimeout: timeout, limit: frameLimit{max: maxPacket}}, nil
}

// tlsConfig returns cfg with ServerName set to the URL's host when empty.
func tlsConfig(cfg *tls.Config, u *url.URL) *tls.Config {
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	} else {
		cfg = cfg.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = u.Hostname()
	}
	return cfg
}

// dialWebSocket opens MQTT over a WebSocket (subprotocol "mqtt").
func dialWebSocket(ctx context.Context, nd *net.Dialer, ep Endpoint, u *url.URL) (net.Conn, error) {
	d := websocket.Dialer{
		NetDialContext:   nd.DialContext,
		Subprotocols:     []string{"mqtt"},
		HandshakeTimeout: 0, // bounded by ctx
	}
	if u.Scheme == "wss" {
		d.TLSClientConfig = tlsConfig(ep.TLS, u)
	}
	ws, resp, err := d.DialContext(ctx, u.String(), http.Header{})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, err // unreachable, not refused
		}
		return nil, fmt.Errorf("WebSocket handshake: %w", err)
	}
	return &wsConn{Conn: ws}, nil
}

// wsConn is a WebSocket as a byte stream: each Write is one binary
// message, Read reads the messages' bytes in order.
type wsConn struct {
	*websocket.Conn
	r io.Reader // the message being read
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			_, r, err := c.NextReader()
			if err != nil {
				return 0, err
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	if err := c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// wireConn is the connection paho uses. Its mutex (paho locks a
// sync.Locker connection around each packet) keeps packets written by
// different goroutines whole; each Write must finish within writeTimeout,
// so that a cloud that stopped reading cannot block a goroutine forever;
// and reads pass through a frameLimit, so that no packet above the
// announced Maximum Packet Size is ever buffered.
type wireConn struct {
	net.Conn
	sync.Mutex
	writeTimeout time.Duration
	limit        frameLimit // read side: used by paho's one reading goroutine

	// onDone is called once, with the reason, when a read fails or the
	// connection is closed by anyone. paho reports a lost connection only
	// after its handlers returned, and a handler may be waiting in a sink
	// for a context that must end with the connection.
	onDone   func(error)
	doneOnce sync.Once
}

func (c *wireConn) done(err error) {
	c.doneOnce.Do(func() {
		if c.onDone != nil {
			c.onDone(err)
		}
	})
}

// Close closes the connection.
func (c *wireConn) Close() error {
	err := c.Conn.Close()
	if r := c.limit.disconnect.Load(); r != 0 {
		// paho closes the connection after the cloud's DISCONNECT: its
		// reason code says why.
		c.done(fmt.Errorf("the cloud sent DISCONNECT %#02x", r-1))
	} else {
		c.done(net.ErrClosed)
	}
	return err
}

func (c *wireConn) Write(p []byte) (int, error) {
	if c.writeTimeout > 0 {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	return c.Conn.Write(p)
}

func (c *wireConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if lerr := c.limit.scan(p[:n]); lerr != nil {
		c.Conn.Close()
		c.done(lerr)
		return 0, lerr
	}
	if err != nil {
		c.done(err)
	}
	return n, err
}

// frameLimit follows the MQTT packet framing of a byte stream (a fixed
// header byte, a variable byte integer giving the remaining length, that
// many bytes) and fails on a packet whose remaining length exceeds max or
// whose length is malformed, before paho allocates a buffer for it.
type frameLimit struct {
	max int

	state     uint8 // 0: fixed header byte next; 1: in the length; 2: in the body
	typ       byte  // packet type being read
	length    int   // remaining length being decoded
	shift     uint  // of the next length byte
	lenBytes  int   // length bytes read
	remaining int   // body bytes still to skip

	// disconnect is 1 + the reason code of a DISCONNECT the cloud sent
	// (0: none); read by other goroutines.
	disconnect atomic.Int32
}

// packetDisconnect is the DISCONNECT packet type.
const packetDisconnect = 14

// scan consumes the next bytes of the stream.
func (f *frameLimit) scan(p []byte) error {
	for len(p) > 0 {
		switch f.state {
		case 0:
			f.typ = p[0] >> 4
			p = p[1:]
			f.state, f.length, f.shift, f.lenBytes = 1, 0, 0, 0
		case 1:
			b := p[0]
			p = p[1:]
			f.length |= int(b&0x7f) << f.shift
			f.shift += 7
			f.lenBytes++
			if b&0x80 != 0 {
				if f.lenBytes == 4 {
					return fmt.Errorf("%w: malformed remaining length", ErrPacketTooLarge)
				}
				continue
			}
			if f.length > f.max {
				return fmt.Errorf("%w: %d bytes, at most %d", ErrPacketTooLarge, f.length, f.max)
			}
			f.remaining = f.length
			f.state = 2
			if f.remaining == 0 {
				f.state = 0
				if f.typ == packetDisconnect {
					f.disconnect.Store(1) // no reason code: 0x00
				}
			}
		case 2:
			if f.typ == packetDisconnect && f.remaining == f.length {
				f.disconnect.Store(int32(p[0]) + 1)
			}
			k := min(f.remaining, len(p))
			p = p[k:]
			f.remaining -= k
			if f.remaining == 0 {
				f.state = 0
			}
		}
	}
	return nil
}
