package gateway_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	firmwareconfig "github.com/ferrygw/ferry/firmware-config"
	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// TestDemoWatcherSeesReplays runs the demo as `make run` does (faster, on
// free ports) and the README's command for watching the cloud. The command
// must keep watching across the stand-in cloud's outages and see the
// readings ferry replays after each one: every reading of a demo sensor,
// in order, none missing.
func TestDemoWatcherSeesReplays(t *testing.T) {
	sub := mqtttest.RequireClient(t, "mosquitto_sub")
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^(mosquitto_sub -p 1884 .*?) {2,}# `).FindSubmatch(readme)
	if m == nil {
		t.Fatal("README has no `mosquitto_sub -p 1884 …` command for watching the demo cloud")
	}
	brokerAddr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	cloudPort := mqtttest.FreePort(t)
	yaml := strings.NewReplacer(
		"127.0.0.1:1883", brokerAddr,
		"127.0.0.1:1884", fmt.Sprintf("127.0.0.1:%d", cloudPort),
		"listen: 127.0.0.1:8080", `listen: ""`,
		"./.ferry-data", t.TempDir(),
		"sensors: 3", "sensors: 1",
		"interval: 1s", "interval: 100ms",
		"up_for: 20s", "up_for: 3s",
		"down_for: 10s", "down_for: 1500ms",
	).Replace(string(firmwareconfig.Default()))
	cfg := loadConfig(t, yaml)
	logs := newLogWatch()
	g, err := gateway.New(cfg, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	runGatewayInstance(t, g)
	logs.waitLine(t, 30*time.Second, "stand-in cloud UP")

	cmdline := strings.Replace(string(m[1]), "-p 1884", fmt.Sprintf("-p %d", cloudPort), 1)
	cmdline = strings.Replace(cmdline, "mosquitto_sub", sub, 1)
	var out lockedOutput
	cmd := exec.Command("sh", "-c", "exec "+cmdline)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	// The watcher's view of sensor 1: sequence numbers in arrival order.
	seqs := func() []int {
		var s []int
		for _, line := range strings.Split(out.String(), "\n") {
			_, body, ok := strings.Cut(line, " ")
			if !ok || !strings.Contains(line, "/demo-sensor-1 ") {
				continue
			}
			var msg struct {
				Payload struct{ Seq int } `json:"payload"`
			}
			if json.Unmarshal([]byte(body), &msg) == nil {
				s = append(s, msg.Payload.Seq)
			}
		}
		return s
	}
	last := func() int {
		s := seqs()
		if len(s) == 0 {
			return 0
		}
		return s[len(s)-1]
	}
	// Two outages: the watcher is cut off with the gateway each time.
	for outage := 1; outage <= 2; outage++ {
		deadline := time.Now().Add(60 * time.Second)
		for len(logs.find("stand-in cloud DOWN")) < outage {
			select {
			case <-exited:
				t.Fatalf("the README's watcher exited (%v) before outage %d:\n%s", waitErr, outage, out.String())
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("no outage %d within 60s", outage)
			}
		}
		before := last()
		// Readings published during the outage (15 at 100 ms) reach the
		// watcher only if it is still there and got the replay.
		waitUntil(t, 60*time.Second, fmt.Sprintf("sensor 1's readings after outage %d (had %d)", outage, before), func() bool {
			select {
			case <-exited:
				t.Fatalf("the README's watcher exited (%v) at outage %d:\n%s", waitErr, outage, out.String())
			default:
			}
			return last() >= before+25
		})
	}
	// Every reading, none missing; repeats are allowed (at least once: a
	// QoS 1 message in flight at an outage comes again). Not necessarily
	// in order: what ferry
	// replayed while the watcher was still away waits in its session at
	// the stand-in cloud, and mochi resends a session's queued messages
	// in map order (issue 13).
	s := slices.Compact(slices.Sorted(slices.Values(seqs())))
	for i := 1; i < len(s); i++ {
		if s[i] != s[i-1]+1 {
			t.Fatalf("the watcher missed sensor 1's readings %d to %d across the outages\n%v", s[i-1]+1, s[i]-1, seqs())
		}
	}
	t.Logf("watcher saw readings %d..%d of sensor 1 across 2 outages", s[0], s[len(s)-1])
}

// lockedOutput collects a subprocess's output while the test reads it.
type lockedOutput struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedOutput) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedOutput) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
