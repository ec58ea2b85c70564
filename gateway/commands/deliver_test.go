package commands

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/downlink"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/ferrygw/ferry/gateway/outbox"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// TestDeliverLocally: commands reach a real MQTT 5 subscriber (Mosquitto's
// mosquitto_sub) on the embedded broker with their properties, the expired
// one not at all.
func TestDeliverLocally(t *testing.T) {
	sub := mqtttest.RequireClient(t, "mosquitto_sub")
	log := buffertest.MustOpen(t, buffer.Options{})
	b, err := broker.New(broker.Config{Listen: "127.0.0.1:0", AllowAnonymous: true, SessionPath: t.TempDir() + "/sessions.db"}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("broker: %v", err)
		}
	})

	host, port, _ := strings.Cut(b.Addr(), ":")
	cmd := exec.Command(sub, "-V", "5", "-h", host, "-p", port, "-q", "1", "-t", "cmd/#", "-C", "2",
		"-F", "%t|%p|%R|%D|%E|%C|%P", "-W", "60")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// mosquitto_sub prints nothing when subscribed: wait for the broker
	// to have its subscription.
	deadline := time.Now().Add(30 * time.Second)
	for len(b.Server().Topics.Subscribers("cmd/x").Subscriptions) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("mosquitto_sub did not subscribe")
		}
		time.Sleep(10 * time.Millisecond)
	}

	s := &Sink{Store: log, Stream: "commands", Now: fixedNow, Log: slog.Default()}
	for _, c := range []downlink.Command{
		{LocalTopic: "cmd/expired", Payload: []byte("late"), QoS: 1, Expires: t0.Add(time.Second)},
		{LocalTopic: "cmd/valve", Payload: []byte("on"), QoS: 1, ResponseTopic: "svc/r", CorrelationData: []byte("abc"),
			ContentType: "text/plain", Expires: t0.Add(time.Minute), UserProperties: [][2]string{{"k", "v"}}},
		{LocalTopic: "cmd/plain", Payload: []byte("off"), QoS: 0},
	} {
		if err := s.AcceptCommand(ctx, &c); err != nil {
			t.Fatal(err)
		}
	}
	d := &Deliverer{Pub: b, Now: func() time.Time { return t0.Add(2 * time.Second) }, Log: slog.Default()}
	var offs []uint64
	_, err = log.Read("commands", 1, 10, func(off uint64, _ *event.Event) error { offs = append(offs, off); return nil })
	if err != nil || len(offs) != 3 {
		t.Fatalf("stored %d commands: %v", len(offs), err)
	}
	dctx, dcancel := context.WithCancel(ctx)
	drained := make(chan error, 1)
	go func() { drained <- outbox.DrainAs(dctx, log, "commands", Consumer, slog.Default(), d.Deliver) }()
	t.Cleanup(func() { dcancel(); <-drained })

	lines := bufio.NewScanner(io.Reader(out))
	var got []string
	for len(got) < 2 && lines.Scan() {
		got = append(got, lines.Text())
	}
	if len(got) < 2 {
		t.Fatalf("subscriber got %q (err %v)", got, lines.Err())
	}
	// The command ID is random; the rest is exact. Expiry: 60 s after t0,
	// delivered at t0+2s: 58 s remain.
	id := ""
	_, _ = log.Read("commands", offs[1], 1, func(_ uint64, ev *event.Event) error { id = ev.ID.String(); return nil })
	want := []string{
		"cmd/valve|on|" + ReplyTopic(offs[1]) + "|abc|58|text/plain|" + CommandIDProperty + ":" + id + " k:v",
		"cmd/plain|off|||||" + CommandIDProperty + ":",
	}
	if got[0] != want[0] {
		t.Errorf("first command\n got  %q\n want %q", got[0], want[0])
	}
	if !strings.HasPrefix(got[1], want[1]) {
		t.Errorf("second command\n got  %q\n want prefix %q", got[1], want[1])
	}
	if st := d.Stats(); st.Delivered != 2 || st.Expired != 1 {
		t.Errorf("stats %+v, want 2 delivered, 1 expired", st)
	}
}
