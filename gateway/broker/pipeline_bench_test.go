package broker_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/mochi-mqtt/server/v2/packets"
)

// BenchmarkPipelinedPublish has one MQTT 3.1.1 client publish QoS 1
// messages keeping N unacknowledged (a new one as soon as a PUBACK
// arrives), into a real buffer.Log on disk with sync durability (each
// PUBACK follows its event's fsync), through the broker as start
// configures it, with the session store (the gateway's default; mochi
// writes each QoS 1 flow into it) or without. It reports events/s and
// events per commit; with N = 1 each message has a commit to itself, which
// is also what any N got before pipelined acknowledgements (mochi
// patch 5).
//
//	go test -run '^$' -bench PipelinedPublish -benchtime 3s ./gateway/broker/
func BenchmarkPipelinedPublish(b *testing.B) {
	for _, sessions := range []bool{true, false} {
		for _, inflight := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("sessions=%v/inflight=%d", sessions, inflight), func(b *testing.B) {
				benchPublish(b, sessions, inflight)
			})
		}
	}
}

func benchPublish(b *testing.B, sessions bool, inflight int) {
	l := buffertest.MustOpen(b, buffer.Options{Durability: buffer.DurabilitySync})
	br := start(b, l, func(c *broker.Config) {
		if !sessions {
			c.SessionPath = ""
		}
	})
	conn, err := net.DialTimeout("tcp", br.Addr(), 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	write := func(pk packets.Packet) {
		var buf bytes.Buffer
		pk.ProtocolVersion = 4
		var err error
		if pk.FixedHeader.Type == packets.Connect {
			err = pk.ConnectEncode(&buf)
		} else {
			err = pk.PublishEncode(&buf)
		}
		if err == nil {
			_, err = conn.Write(buf.Bytes())
		}
		if err != nil {
			b.Error(err)
		}
	}
	r := bufio.NewReader(conn)
	write(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect:         packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: "bench"},
	})
	var connack [4]byte
	if _, err := io.ReadFull(r, connack[:]); err != nil || connack[0] != 0x20 || connack[3] != 0 {
		b.Fatalf("CONNACK % x: %v", connack, err)
	}

	id := func(i int) uint16 { return uint16(i%65000 + 1) }
	slots := make(chan struct{}, inflight)
	done := make(chan error, 1)
	commits, _ := l.CommitStats()
	b.ResetTimer()
	began := time.Now()
	go func() { // the PUBACKs, each freeing a slot
		var ack [4]byte
		for i := 0; i < b.N; i++ {
			_ = conn.SetReadDeadline(time.Now().Add(hangDeadline))
			if _, err := io.ReadFull(r, ack[:]); err != nil {
				done <- fmt.Errorf("PUBACK %d: %w", i, err)
				return
			}
			if ack[0] != 0x40 || uint16(ack[2])<<8|uint16(ack[3]) != id(i) {
				done <- fmt.Errorf("PUBACK %d: % x, want packet id %d (in publish order)", i, ack, id(i))
				return
			}
			<-slots
		}
		done <- nil
	}()
	payload := []byte(`{"t":21.5,"rh":40}`)
	for i := 0; i < b.N; i++ {
		select {
		case slots <- struct{}{}:
		case err := <-done:
			b.Fatal(err)
		}
		write(publish("sensors/bench", 1, id(i), payload))
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	took := time.Since(began)
	b.StopTimer()
	after, _ := l.CommitStats()
	b.ReportMetric(float64(b.N)/took.Seconds(), "events/s")
	b.ReportMetric(float64(b.N)/float64(after-commits), "events/commit")
}
