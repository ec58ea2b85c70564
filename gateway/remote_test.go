package gateway_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/gateway/config/signed"
	"github.com/ferrygw/ferry/gateway/remoteconfig"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/ferrygw/ferry/uplink"
)

// statusSink stands in for the downlink: it keeps the statuses.
type statusSink struct {
	mu  sync.Mutex
	got []remoteconfig.Status
}

func (s *statusSink) SetRetained(topic string, payload []byte) {
	var st remoteconfig.Status
	if topic != "gw1/config/status" || json.Unmarshal(payload, &st) != nil {
		st.Status = "bad status on " + topic + ": " + string(payload)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, st)
}

func (s *statusSink) last() remoteconfig.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.got) == 0 {
		return remoteconfig.Status{}
	}
	return s.got[len(s.got)-1]
}

// TestRemoteConfig pushes configurations straight into a running
// gateway's remote configuration manager (what the downlink does with
// what arrives from the cloud), against a real cloud broker: one that
// changes the uplink topic is applied and kept; one that points the
// uplink at a dead port is rolled back after rollback_after; the result
// survives a restart and a reload.
func TestRemoteConfig(t *testing.T) {
	cloud := mqtttest.Start(t)
	got := make(chan string, 1000) // "topic value"
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(cloud.URL()).SetClientID("remote-sub").
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			var r struct{ V float64 }
			if evs, err := uplink.DecodeMessage(m.Payload()); err == nil {
				for _, e := range evs {
					_ = json.Unmarshal(e.Payload, &r)
					got <- fmt.Sprintf("%s %v", m.Topic(), r.V)
				}
			}
		}))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(50)
	if tok := sub.Subscribe("#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}

	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	dir := t.TempDir()
	base, addr := testConfig(t, dir, cloud.URL(), "")
	localYAML := base + fmt.Sprintf("remote_config:\n  enabled: true\n  trusted_keys: [%s]\n  rollback_after: 2s\n",
		signed.EncodePublicKey(key.Public().(ed25519.PublicKey)))
	path := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(path, []byte(localYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func() (*config.Config, error) { return config.Load(path) }
	sink := &statusSink{}
	start := func() (*gateway.Gateway, func()) {
		t.Helper()
		cfg, err := load()
		if err != nil {
			t.Fatal(err)
		}
		g, err := gateway.New(cfg, nil, gateway.WithReload(load), gateway.WithRemoteStatus(sink), gateway.WithRemotePoll(20*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- g.Run(ctx) }()
		var once sync.Once
		stop := func() {
			once.Do(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("gateway: %v", err)
				}
			})
		}
		t.Cleanup(stop)
		return g, stop
	}
	g, stop := start()
	if g.RemoteConfig() == nil {
		t.Fatal("no remote configuration manager with remote_config enabled")
	}

	sensor := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("probe").
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(50 * time.Millisecond))
	if tok := sensor.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sensor.Disconnect(50)
	value := 0
	// publish sends the next value and waits until the cloud has it under
	// topic (earlier values may arrive first, under any topic).
	publish := func(topic string) {
		t.Helper()
		value++
		tok := sensor.Publish("sensors/probe", 1, false, fmt.Sprintf(`{"v":%d}`, value))
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", value, tok.Error())
		}
		want := fmt.Sprintf("%s %d", topic, value)
		timeout := time.After(15 * time.Second)
		for {
			select {
			case m := <-got:
				if m == want {
					return
				}
			case <-timeout:
				t.Fatalf("the cloud did not get %q; remote status %+v", want, sink.last())
			}
		}
	}
	offer := func(doc string, v uint64) {
		t.Helper()
		env, err := signed.Sign([]byte(doc), v, "gw1", key)
		if err != nil {
			t.Fatal(err)
		}
		if err := g.RemoteConfig().Offer(context.Background(), env); err != nil {
			t.Fatalf("Offer version %d: %v", v, err)
		}
	}
	waitStatus := func(v uint64, status string) remoteconfig.Status {
		t.Helper()
		waitUntil(t, 15*time.Second, fmt.Sprintf("status %s of version %d", status, v), func() bool {
			s := sink.last()
			return s.Version == v && s.Status == status
		})
		return sink.last()
	}

	publish("gw1/telemetry/probe")

	// Version 1: a new topic. The uplink connects under it: kept.
	v1 := strings.Replace(base, `topic: "{gateway_id}/{stream}/{source}"`, `topic: "v1/{stream}/{source}"`, 1)
	offer(v1, 1)
	waitStatus(1, remoteconfig.StatusApplied)
	publish("v1/telemetry/probe")
	good := filepath.Join(dir, "remote-config", "good.conf")
	waitUntil(t, 10*time.Second, "version 1 kept", func() bool { _, err := os.Stat(good); return err == nil })

	// Version 2 points the uplink at a port nobody listens on.
	dead := fmt.Sprintf("tcp://127.0.0.1:%d", mqtttest.FreePort(t))
	v2 := strings.Replace(strings.Replace(v1, cloud.URL(), dead, 1), `topic: "v1/`, `topic: "v2/`, 1)
	offer(v2, 2)
	waitStatus(2, remoteconfig.StatusApplied)
	if link := g.Status().Link; link == nil || link.Endpoint != "" && link.Endpoint != dead {
		t.Fatalf("uplink after version 2: %+v", link)
	}
	s := waitStatus(2, remoteconfig.StatusRolledBack)
	if s.Running != 1 || len(s.Errors) != 1 || !strings.Contains(s.Errors[0].Message, "did not connect") {
		t.Fatalf("rolled back: %+v", s)
	}
	publish("v1/telemetry/probe")
	if v := g.RemoteConfig().Version(); v != 1 {
		t.Fatalf("version in force %d", v)
	}
	// The rolled-back version offered again (a retained message on the
	// next connect) is refused.
	env2, _ := signed.Sign([]byte(v2), 2, "gw1", key)
	if err := g.RemoteConfig().Offer(context.Background(), env2); err == nil {
		t.Fatal("the rolled-back version was taken again")
	}

	// A reload re-reads the local file and keeps version 1 in force.
	if err := g.Reload(context.Background()); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	publish("v1/telemetry/probe")

	// So does a restart, which publishes the last status again.
	stop()
	g, _ = start()
	if v := g.RemoteConfig().Version(); v != 1 {
		t.Fatalf("version after a restart %d", v)
	}
	publish("v1/telemetry/probe")
	waitStatus(2, remoteconfig.StatusRolledBack)
}
