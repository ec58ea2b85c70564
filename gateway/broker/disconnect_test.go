package broker_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// TestStopKeepsMQTT311ClientsReconnecting stops the broker (a gateway
// shutting down or restarting) under a connected MQTT 3.1.1 client.
// MQTT 3.1.1 has no server DISCONNECT: a broker that sends one makes
// clients such as mosquitto_sub quit with a protocol error instead of
// reconnecting when ferry is back.
func TestStopKeepsMQTT311ClientsReconnecting(t *testing.T) {
	subBin := mqtttest.RequireClient(t, "mosquitto_sub")
	l := buffertest.MustOpen(t, buffer.Options{})
	addr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	var current *broker.Broker
	run := func() (stop func()) {
		b, err := broker.New(broker.Config{Listen: addr, AllowAnonymous: true, SessionPath: t.TempDir() + "/sessions.db"}, l)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- b.Run(ctx) }()
		current = b
		var once sync.Once
		stop = func() {
			once.Do(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("broker run: %v", err)
				}
			})
		}
		t.Cleanup(stop)
		return stop
	}
	stop := run()

	var out syncBuffer
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	cmd := exec.Command(subBin, "-V", "311", "-p", port, "-t", "cmd/#", "-i", "watcher")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	connected := func() bool { return current.Stats().Clients == 1 }
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			select {
			case <-exited:
				t.Fatalf("mosquitto_sub exited while waiting for %s:\n%s", what, out.String())
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s within 30s:\n%s", what, out.String())
			}
		}
	}
	wait("the client connected", connected)
	stop()
	run()
	wait("the client back after the broker restarted", connected)
}
