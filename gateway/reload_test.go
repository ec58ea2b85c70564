package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/ferrygw/ferry/uplink"
)

// TestReload changes the uplink topic and adds a pipeline while a sensor
// stays connected, then checks that an invalid file and a change that needs
// a restart are refused with the old configuration still forwarding.
func TestReload(t *testing.T) {
	cloud := mqtttest.Start(t)
	type msg struct {
		topic string
		value float64
	}
	got := make(chan msg, 1000)
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(cloud.URL()).SetClientID("reload-sub").
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			evs, err := uplink.DecodeMessage(m.Payload())
			if err != nil {
				t.Errorf("cloud got an undecodable message on %s: %v", m.Topic(), err)
				return
			}
			for _, e := range evs {
				var r struct{ V float64 }
				_ = json.Unmarshal(e.Payload, &r)
				got <- msg{m.Topic(), r.V}
			}
		}))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(50)
	if tok := sub.Subscribe("#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}

	dir := t.TempDir()
	yaml, addr := testConfig(t, dir, cloud.URL(), "")
	path := filepath.Join(dir, "ferry.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(yaml)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(cfg, nil, gateway.WithReload(func() (*config.Config, error) { return config.Load(path) }))
	if err != nil {
		t.Fatal(err)
	}
	runGatewayInstance(t, g)

	// One sensor, connected for the whole test: a reload must not drop it.
	var lost atomic.Bool
	sensor := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("probe").
		SetAutoReconnect(false).SetConnectionLostHandler(func(paho.Client, error) { lost.Store(true) }))
	if tok := sensor.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sensor.Disconnect(50)
	publish := func(v float64) {
		t.Helper()
		tok := sensor.Publish("sensors/probe", 1, false, []byte(`{"v":`+strings.TrimSpace(jsonNum(v))+`}`))
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %v: %v", v, tok.Error())
		}
	}
	expect := func(want ...msg) {
		t.Helper()
		for _, w := range want {
			select {
			case m := <-got:
				if m != w {
					t.Fatalf("cloud got %+v, want %+v", m, w)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("cloud did not get %+v; status %+v", w, g.Status().Link)
			}
		}
	}

	publish(1)
	expect(msg{"gw1/telemetry/probe", 1})

	// A new topic, and a pipeline that forwards only large values to its
	// own stream while the raw stream stays forwarded.
	v2 := strings.Replace(yaml, `topic: "{gateway_id}/{stream}/{source}"`, `topic: "v2/{stream}/{source}"`, 1) + `
pipelines:
  - name: big
    input: {stream: telemetry}
    stages:
      - filter: "v > 10"
    outputs:
      - stream: big
`
	v2 = strings.Replace(v2, "stream: telemetry\n", "stream: telemetry\n      forward: true\n", 1)
	write(v2)
	if err := g.Reload(context.Background()); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	publish(2)
	expect(msg{"v2/telemetry/probe", 2})
	publish(20)
	// The raw event and the pipeline's output, in either order.
	want := map[msg]bool{{"v2/telemetry/probe", 20}: true, {"v2/big/probe", 20}: true}
	for range 2 {
		select {
		case m := <-got:
			if !want[m] {
				t.Fatalf("cloud got %+v, want one of %v", m, want)
			}
			delete(want, m)
		case <-time.After(10 * time.Second):
			t.Fatalf("cloud did not get %v", want)
		}
	}

	refusals := []struct {
		name, yaml, want string
	}{
		{"invalid file", v2 + "bogus_key: 1\n", "bogus_key: unknown key"},
		{"bad expression", strings.Replace(v2, `"v > 10"`, `"v >"`, 1), "filter"},
		{"restart needed", strings.Replace(v2, "listen: "+addr, "listen: 127.0.0.1:1", 1), "broker.listen"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			write(tc.yaml)
			err := g.Reload(context.Background())
			if !errors.Is(err, gateway.ErrReloadRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Reload = %v, want ErrReloadRefused naming %q", err, tc.want)
			}
			// The running configuration still forwards, under its topic.
			publish(3)
			expect(msg{"v2/telemetry/probe", 3})
		})
	}

	// Drivers and an ACL: a simulated sensor starts reading, and a client
	// may now publish only under sensors/probe.
	v3 := v2 + `
drivers:
  - {name: sim1, kind: sim, interval: 50ms, options: {signal: sine, min: 10, max: 30, period: 1m, quantity: temperature, unit: Cel}}
`
	v3 = strings.Replace(v3, "  allow_anonymous: true\n", "  allow_anonymous: true\n  acl:\n    - {user: \"*\", publish: [sensors/probe]}\n", 1)
	write(v3)
	if err := g.Reload(context.Background()); err != nil {
		t.Fatalf("Reload with drivers and an ACL: %v", err)
	}
	waitFor := func(topic string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case m := <-got:
				if m.topic == topic {
					return
				}
			case <-timeout:
				t.Fatalf("nothing on %s after the reload", topic)
			}
		}
	}
	waitFor("v2/telemetry/sim1")
	denied := g.Status().Ingest.ACLDenied
	intruder := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("intruder").SetAutoReconnect(false))
	if tok := intruder.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	intruder.Publish("sensors/other", 1, false, []byte(`{"v":99}`)).WaitTimeout(2 * time.Second)
	intruder.Disconnect(50)
	waitUntil(t, 5*time.Second, "the publish outside the ACL denied", func() bool { return g.Status().Ingest.ACLDenied > denied })
	publish(4)
	waitFor("v2/telemetry/probe")

	if lost.Load() {
		t.Fatal("the sensor lost its connection during a reload")
	}
	if n := g.Status().Ingest.Clients; n < 1 {
		t.Fatalf("clients = %d after the reloads", n)
	}
}

func jsonNum(v float64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestReplay re-forwards a stream from an offset the buffer retained
// after forwarding it.
func TestReplay(t *testing.T) {
	cloud := mqtttest.Start(t)
	sub := subscribeCloud(t, cloud.URL(), "replay-sub")
	yaml, addr := testConfig(t, t.TempDir(), cloud.URL(), "buffer:\n  streams:\n    - {name: telemetry, retain: 1h}\n")
	g := runGateway(t, loadConfig(t, yaml))
	publishAll(t, addr, 1, 5)
	waitUntil(t, 10*time.Second, "5 events at the cloud", func() bool { return sub.distinct() == 5 })

	for _, tc := range []struct {
		stream string
		from   uint64
		want   string
	}{{"telemetry", 99, "no offset 99"}, {"nosuch", 1, "not forwarded"}} {
		if err := g.Replay(tc.stream, tc.from); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Replay(%s, %d) = %v, want an error naming %q", tc.stream, tc.from, err, tc.want)
		}
	}
	if err := g.Replay("telemetry", 2); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	waitUntil(t, 10*time.Second, "offsets 2..5 again", func() bool {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		return sub.total == 9
	})
	time.Sleep(200 * time.Millisecond) // nothing more may come
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.total != 9 || sub.dups != 4 {
		t.Fatalf("after replaying from 2: %d messages, %d repeats; want 9 and 4", sub.total, sub.dups)
	}
}
