package gateway_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/ferrygw/ferry/uplink"
)

// TestKillAfterAcks kills the real ferry right after the cloud
// acknowledged a burst, before the uplink's position was committed
// (buffer.ack_interval defers it so acks cost the SD card no commit of
// their own), and shows the price stays within its bound: the burst is
// forwarded again after the restart (duplicates, at most the events acked
// within ack_interval), nothing is lost; and once the position is
// committed (seen in `ferry buffer stats`) a kill resends nothing.
func TestKillAfterAcks(t *testing.T) {
	bin := buildFerry(t)
	cloud := mqtttest.StartWith(t, mqtttest.Options{Persistent: true})
	sub := subscribeCloud(t, cloud.URL(), "ackbound-sub")
	dir := t.TempDir()
	status := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	// A long ack_interval: the kill surely comes before it.
	yaml, addr := testConfig(t, filepath.Join(dir, "data"), cloud.URL(), "buffer: {ack_interval: 1h}\n")
	yaml = strings.Replace(yaml, `listen: ""`, "listen: "+status, 1)
	cfgPath, logPath := ferryFiles(t, dir, yaml)
	kill := func(cmd interface {
		Signal(os.Signal) error
		Wait() (*os.ProcessState, error)
	}) {
		_ = cmd.Signal(syscall.SIGKILL)
		_, _ = cmd.Wait()
	}

	const burst = 200
	cmd := startFerry(t, bin, cfgPath, logPath)
	waitUntil(t, 30*time.Second, "ferry listening", func() bool { return uplinkPosition(status) >= 0 })
	publishAll(t, addr, 2, burst/2)
	waitUntil(t, 60*time.Second, "the burst at the cloud", func() bool { return sub.distinct() >= burst })
	// Acks of earlier events rode the commits of later ones; those after
	// the last commit wait for ack_interval.
	atKill := uplinkPosition(status)
	if atKill < 0 || atKill >= burst {
		t.Fatalf("uplink position %d committed with no commit after the last acks: acks did not wait", atKill)
	}
	kill(cmd.Process)
	sub.mu.Lock()
	before := sub.dups
	sub.mu.Unlock()

	cmd = startFerry(t, bin, cfgPath, logPath)
	defer func() { kill(cmd.Process) }()
	// The restarted uplink forwards again from the committed position.
	tail := int(burst - atKill)
	waitUntil(t, 60*time.Second, "the uncommitted tail resent", func() bool {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		return sub.dups-before >= tail
	})
	// A reading's commit carries the acks pending by then; the tail's
	// last acks may still be on their way from the cloud.
	extra := 0
	waitUntil(t, 30*time.Second, "the uplink's position committed with the next readings", func() bool {
		publishOne(t, addr, reading{P: 99, S: extra})
		extra++
		return uplinkPosition(status) >= burst
	})
	sub.mu.Lock()
	resent := sub.dups - before
	sub.mu.Unlock()
	if resent > tail {
		t.Fatalf("%d events resent after the kill, more than the %d acked after the last commit", resent, tail)
	}
	committed := uplinkPosition(status)
	kill(cmd.Process)

	// Committed: a kill now resends only what was acked after that
	// commit (here at most the one reading that carried it).
	sub.mu.Lock()
	before = sub.dups
	sub.mu.Unlock()
	cmd = startFerry(t, bin, cfgPath, logPath)
	waitUntil(t, 30*time.Second, "ferry listening again", func() bool { return uplinkPosition(status) >= 0 })
	publishOne(t, addr, reading{P: 99, S: extra}) // proof the new uplink runs: it reaches the cloud
	waitUntil(t, 30*time.Second, "the last reading at the cloud", func() bool { return sub.distinct() >= burst+extra+1 })
	sub.mu.Lock()
	again := sub.dups - before
	sub.mu.Unlock()
	if bound := int64(burst+extra) - committed; int64(again) > bound {
		t.Fatalf("%d events resent after a kill with the position at %d: more than the %d acked after it", again, committed, bound)
	}
	t.Logf("kill within ack_interval: %d of %d acked events resent (position committed at %d), none lost; kill after the position commit (%d): %d resent", resent, burst, atKill, committed, again)
}

// uplinkPosition is the uplink's committed position on stream telemetry
// from the status listener's /buffer/stats, or -1 while it cannot be read.
func uplinkPosition(status string) int64 {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + status + "/buffer/stats")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var stats []struct {
		Name      string            `json:"name"`
		Consumers map[string]uint64 `json:"consumers"`
	}
	if json.NewDecoder(resp.Body).Decode(&stats) != nil {
		return -1
	}
	for _, s := range stats {
		if s.Name == "telemetry" {
			return int64(s.Consumers[uplink.Consumer])
		}
	}
	return 0
}

// publishOne publishes one reading at QoS 1 and waits for its PUBACK.
func publishOne(t *testing.T, addr string, r reading) {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("one-shot").SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(50)
	b, _ := json.Marshal(r)
	if tok := c.Publish(fmt.Sprintf("sensors/%d", r.P), 1, false, b); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %+v: %v", r, tok.Error())
	}
}
