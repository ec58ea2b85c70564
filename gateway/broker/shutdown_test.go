package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/gateway/broker"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// hangDeadline bounds what must finish in milliseconds unless it is
// deadlocked: generous, for a loaded machine and qemu.
const hangDeadline = 30 * time.Second

// failHung fails the test with every goroutine's stack. It does not wait
// for anything: what hangs stays hung (goleak reports it too).
func failHung(t *testing.T, what string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	t.Fatalf("%s did not return within %v (deadlock?); goroutines:\n%s", what, hangDeadline, buf)
}

// connectPacket encodes an MQTT 3.1.1 CONNECT of client id.
func connectPacket(t *testing.T, id string) []byte {
	t.Helper()
	var buf bytes.Buffer
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect:         packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: id},
	}
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// churn connects with connect (a CONNECT packet), reads the CONNACK and
// goes away, cleanly (DISCONNECT) or not, until stop is closed; it counts
// the connections made. It reports no errors: the broker closing under it
// is the point.
func churn(addr string, connect []byte, stop <-chan struct{}, made *atomic.Int64) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			continue // listener closed: keep trying until told to stop
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write(connect); err == nil {
			if _, err := io.ReadFull(conn, make([]byte, 4)); err == nil {
				made.Add(1)
				if i%2 == 0 {
					_, _ = conn.Write([]byte{0xe0, 0}) // DISCONNECT
				}
			}
		}
		conn.Close()
	}
}

// TestCloseWhileClientsChurn stops the broker while clients connect and
// disconnect. mochi v2.7.9 could deadlock here: Server.Close calls
// Clients.GetByListener, which held the clients' read lock and took it
// again (Clients.Len); a disconnecting client's Clients.Delete waiting for
// the write lock in between blocked the second read lock for good, and
// with it Close and every client (third_party/mochi-mqtt/PATCHES.md, 1).
// Close makes that call once, and the window is nanoseconds wide, so the
// test also makes it as Close does, many times, while the clients churn:
// against the unpatched mochi it hangs within a few rounds.
func TestCloseWhileClientsChurn(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	for round := range 5 {
		ok := t.Run(fmt.Sprint("round ", round), func(t *testing.T) {
			b, err := broker.New(broker.Config{Listen: "127.0.0.1:0", AllowAnonymous: true}, l)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- b.Run(ctx) }()

			stop := make(chan struct{})
			var wg sync.WaitGroup
			var made atomic.Int64
			for i := range 8 {
				connect := connectPacket(t, fmt.Sprintf("churn-%d-%d", round, i))
				wg.Add(1)
				go func() {
					defer wg.Done()
					churn(b.Addr(), connect, stop, &made)
				}()
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
						b.Server().Clients.GetByListener("tcp")
					}
				}
			}()

			// Close once the churn is well under way, while it goes on.
			deadline := time.Now().Add(hangDeadline)
			for made.Load() < 200 {
				if time.Now().After(deadline) {
					failHung(t, fmt.Sprintf("connecting (%d connections made)", made.Load()))
				}
				time.Sleep(time.Millisecond) // polling the counter
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(hangDeadline):
				failHung(t, "Broker.Run (closing)")
			}
			close(stop)
			finished := make(chan struct{})
			go func() { wg.Wait(); close(finished) }()
			select {
			case <-finished:
			case <-time.After(hangDeadline):
				failHung(t, "the churning clients")
			}
			t.Logf("%d connections made before and while closing", made.Load())
		})
		if !ok {
			break // hung: the next round would only hang too
		}
	}
}

// TestNoRecursiveReadLock checks mochi's lock-holding getters against a
// writer: each used to take its read lock a second time (GetByListener
// through Len, NextImmediate through GetAll), which deadlocks as soon as a
// writer queues in between (PATCHES.md, 1).
func TestNoRecursiveReadLock(t *testing.T) {
	tests := []struct {
		name   string
		setup  func() (read, write func())
		rounds int
	}{
		{"Clients.GetByListener", func() (func(), func()) {
			cs := mqtt.NewClients()
			cl := &mqtt.Client{ID: "c", Net: mqtt.ClientConnection{Listener: "tcp"}}
			return func() { cs.GetByListener("tcp") },
				func() { cs.Add(cl); cs.Delete(cl.ID) }
		}, 200_000},
		{"Inflight.NextImmediate", func() (func(), func()) {
			in := mqtt.NewInflights()
			pk := packets.Packet{PacketID: 1, Expiry: -1}
			return func() { in.NextImmediate() },
				func() { in.Set(pk); in.Delete(pk.PacketID) }
		}, 200_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			read, write := tt.setup()
			stop := make(chan struct{})
			done := make(chan struct{}, 2)
			go func() {
				defer func() { done <- struct{}{} }()
				for range tt.rounds {
					read()
				}
			}()
			go func() {
				defer func() { done <- struct{}{} }()
				for {
					select {
					case <-stop:
						return
					default:
						write()
					}
				}
			}()
			timeout := time.After(hangDeadline)
			select {
			case <-done: // the reader finished
			case <-timeout:
				failHung(t, tt.name)
			}
			close(stop)
			select {
			case <-done:
			case <-timeout:
				failHung(t, tt.name+"'s writer")
			}
		})
	}
}
