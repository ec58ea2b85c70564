package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/ferrygw/ferry/uplink"
)

// TestUplinkPoisonLandsInDeadLetters: with the real buffer as the queue
// and the gateway's dead-letter sink, a message a real Mosquitto refuses
// (larger than its max_packet_size) ends in the dead-letter stream with its
// reason, and the stream's other events are forwarded and acked.
func TestUplinkPoisonLandsInDeadLetters(t *testing.T) {
	bin := mqtttest.RequireMosquitto(t)
	addr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	if err := os.WriteFile(conf, []byte("listener "+port+" 127.0.0.1\nallow_anonymous true\npersistence false\nmax_packet_size 2048\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	buf, err := buffer.Open(filepath.Join(t.TempDir(), "buffer.db"), buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	bufDone := make(chan error, 1)
	go func() { bufDone <- buf.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-bufDone; err != nil {
			t.Error(err)
		}
		_ = buf.Close()
	})
	const n, poison = 10, 5
	var ids []event.ID
	var poisonPayload []byte
	for i := 1; i <= n; i++ {
		payload := fmt.Appendf(nil, `{"seq":%d}`, i)
		if i == poison {
			payload = fmt.Appendf(nil, `{"seq":%d,"pad":"%s"}`, i, strings.Repeat("x", 4000))
			poisonPayload = payload
		}
		id, _ := event.NewID(time.Now(), nil)
		ids = append(ids, id)
		if err := buf.Append(ctx, &event.Event{ID: id, Stream: "telemetry", Source: "s1", Topic: "t", Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &config.Config{DeadLetters: config.DeadLetters{Stream: "deadletter", MaxPayload: 1024}}
	sink := newUplinkDeadLetters(buf, cfg)
	fwd, err := uplink.New(buf, uplink.Config{
		Endpoints: []uplink.Endpoint{{URL: "tcp://" + addr}}, GatewayID: "gw", QoS: 1,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
		Streams: []string{"telemetry"}, DeadLetters: sink,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	fctx, stop := context.WithCancel(ctx)
	fdone := make(chan error, 1)
	go func() { fdone <- fwd.Run(fctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for buf.Acked("telemetry", uplink.Consumer) != n {
		if time.Now().After(deadline) {
			t.Fatalf("acked %d of %d; status %+v", buf.Acked("telemetry", uplink.Consumer), n, fwd.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if err := <-fdone; err != nil {
		t.Fatal(err)
	}
	st := fwd.Status()
	if st.ForwardedEvents != n-1 || st.Dropped["poison"] != 1 {
		t.Errorf("forwarded %d, dropped %v; want %d forwarded, 1 poison", st.ForwardedEvents, st.Dropped, n-1)
	}
	var dead []event.Event
	if _, err := buf.Read("deadletter", 0, 10, func(_ uint64, ev *event.Event) error {
		e := *ev
		e.Payload = append([]byte(nil), ev.Payload...)
		dead = append(dead, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dead))
	}
	d := dead[0]
	if d.Attrs["original_id"] != ids[poison-1].String() || d.Attrs["original_stream"] != "telemetry" ||
		!strings.Contains(d.Attrs["reason"], uplink.ErrPoison.Error()) {
		t.Errorf("dead letter attrs %v", d.Attrs)
	}
	// An acknowledged event: kept whole, dead_letters.max_payload (1024
	// here) applies to the pipelines' undecodable input only.
	if !bytes.Equal(d.Payload, poisonPayload) || d.Attrs["truncated"] != "" || d.Attrs["original_size"] != fmt.Sprint(len(poisonPayload)) {
		t.Errorf("dead letter payload %d bytes, attrs %v: want the whole %d-byte payload", len(d.Payload), d.Attrs, len(poisonPayload))
	}

	// A dead letter that is itself poison (dead_letters.forward) is not
	// stored again: it would come back to the uplink forever.
	if err := sink.DeadLetter(ctx, &d, "again"); !errors.Is(err, uplink.ErrDeadLetterLoop) {
		t.Errorf("dead-lettering a dead letter: %v, want ErrDeadLetterLoop", err)
	}
}
