package broker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/gorilla/websocket"
)

// TestListenTaken starts a broker one of whose addresses another program
// holds: New fails, naming the config key and the address, and releases
// the addresses it had bound already.
func TestListenTaken(t *testing.T) {
	tls := newTLSFiles(t)
	tests := []struct {
		key string
		mod func(c *broker.Config, addr string)
	}{
		{"broker.listen", func(c *broker.Config, addr string) { c.Listen = addr }},
		{"broker.tls.listen", func(c *broker.Config, addr string) {
			c.TLS = tls.tlsConfig()
			c.TLS.Listen = addr
		}},
		{"broker.websocket", func(c *broker.Config, addr string) { c.Websocket = addr }},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			taken, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer taken.Close()
			addr := taken.Addr().String()
			// A TCP listener bound before the taken one (unless it is
			// the taken one), which the failure must release.
			other := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
			var logs bytes.Buffer
			cfg := broker.Config{Listen: other, AllowAnonymous: true, SessionPath: t.TempDir() + "/sessions.db",
				Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			tc.mod(&cfg, addr)
			b, err := broker.New(cfg, buffertest.MustOpen(t, buffer.Options{}))
			if err == nil {
				// Failing later, in Run, is what this test is against.
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				err = b.Run(ctx)
				t.Errorf("New succeeded; Run then returned %v", err)
			}
			if !errors.Is(err, broker.ErrListen) || !strings.Contains(err.Error(), tc.key+" "+addr+": ") ||
				!strings.Contains(err.Error(), "address already in use") ||
				!strings.Contains(err.Error(), "change "+tc.key) {
				t.Errorf("error %v, want ErrListen naming %s %s, why and what to do", err, tc.key, addr)
			}
			if strings.Contains(logs.String(), "broker listening") {
				t.Errorf("logged before failing:\n%s", logs.String())
			}
			if cfg.Listen != addr {
				ln, err := net.Listen("tcp", other)
				if err != nil {
					t.Fatalf("broker.listen not released: %v", err)
				}
				ln.Close()
			}
		})
	}
}

// dialWS opens a websocket to b's websocket listener, as an MQTT client
// would (subprotocol "mqtt").
func dialWS(t *testing.T, b *broker.Broker) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}
	c, _, err := d.Dial("ws://"+b.WebsocketAddr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestWebsocketConnectTimeout: a websocket client that never sends
// CONNECT is dropped after the CONNECT deadline, and one still waiting
// does not hold up the broker's shutdown.
func TestWebsocketConnectTimeout(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	t.Run("dropped", func(t *testing.T) {
		t.Cleanup(broker.SetConnectTimeout(200 * time.Millisecond)) // after the broker stops
		b := start(t, l, func(c *broker.Config) { c.Listen = ""; c.Websocket = "127.0.0.1:0" })
		c := dialWS(t, b)
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(hangDeadline))
		start := time.Now()
		if _, _, err := c.ReadMessage(); err == nil {
			t.Fatal("read a message; want the connection closed")
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("not dropped within %v", hangDeadline)
		}
		if d := time.Since(start); d < 100*time.Millisecond {
			t.Errorf("dropped after %v, before the CONNECT deadline", d)
		}
	})
	t.Run("shutdown", func(t *testing.T) {
		b, err := broker.New(broker.Config{Websocket: "127.0.0.1:0", AllowAnonymous: true}, l)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- b.Run(ctx) }()
		c := dialWS(t, b)
		defer c.Close()
		// A connected client too, to be disconnected by the shutdown.
		mc := dialWS(t, b)
		defer mc.Close()
		if err := mc.WriteMessage(websocket.BinaryMessage, connectPacket(t, "ws-1")); err != nil {
			t.Fatal(err)
		}
		_ = mc.SetReadDeadline(time.Now().Add(hangDeadline))
		if _, p, err := mc.ReadMessage(); err != nil || len(p) < 4 || p[0] != 0x20 {
			t.Fatalf("CONNACK: % x, %v", p, err)
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(hangDeadline):
			failHung(t, "Run")
		}
	})
}
