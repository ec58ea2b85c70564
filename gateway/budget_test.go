package gateway_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/ferrygw/ferry/uplink"
)

// TestDataBudgetAcrossKill9 runs the real ferry binary with a small
// monthly budget into Mosquitto: telemetry (priority 1, reserve 50%) is
// held once half the budget is spent while alerts (priority 0) still
// reach the cloud; after a SIGKILL the restarted gateway goes on from the
// usage kept in the buffer file, so telemetry stays held.
func TestDataBudgetAcrossKill9(t *testing.T) {
	bin := buildFerry(t)
	cloud := mqtttest.Start(t)
	sub := subscribeCloud(t, cloud.URL(), "budget-cloud-sub")
	dir := t.TempDir()
	brokerAddr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	statusAddr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	const budget = 20_000
	yaml := fmt.Sprintf(`
gateway_id: gw1
data_dir: %s
log: {level: info}
broker:
  listen: %s
  allow_anonymous: true
ingest:
  routes:
    - topics: ["alerts/#"]
      stream: alerts
    - topics: ["sensors/#"]
      stream: telemetry
buffer:
  streams:
    - name: alerts
    - name: telemetry
uplink:
  endpoints:
    - url: %s
  topic: "{gateway_id}/{stream}/{source}"
  backoff: {min: 20ms, max: 300ms}
  connect_timeout: 2s
  priorities: {alerts: 0}
  budget:
    monthly: %d
    reserve: [0, 0.5]
status:
  listen: %s
  log_interval: 0s
`, filepath.Join(dir, "data"), brokerAddr, cloud.URL(), budget, statusAddr)
	cfgPath, logPath := ferryFiles(t, dir, yaml)
	cmd := startFerry(t, bin, cfgPath, logPath)
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	})

	status := func() *uplink.Status {
		resp, err := http.Get("http://" + statusAddr + "/status")
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var st struct {
			Link *uplink.Status `json:"link"`
		}
		if json.Unmarshal(b, &st) != nil {
			return nil
		}
		return st.Link
	}
	waitUntil(t, 60*time.Second, "the gateway's status", func() bool { return status() != nil })

	pub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + brokerAddr).SetClientID("budget-sensor").
		SetConnectTimeout(5 * time.Second).SetAutoReconnect(false))
	if tok := pub.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("connect to the gateway: %v", tok.Error())
	}
	publish := func(topic string, r reading) {
		t.Helper()
		b, _ := json.Marshal(r)
		if tok := pub.Publish(topic, 1, false, b); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", topic, tok.Error())
		}
	}
	const nTelemetry = 200 // about 50 kB on the wire: more than the budget
	for s := range nTelemetry {
		publish("sensors/t1", reading{P: 1, S: s})
	}
	var held *uplink.BudgetStatus
	waitUntil(t, 60*time.Second, "telemetry held by the budget", func() bool {
		st := status()
		if st == nil || st.Budget == nil || st.Inflight != 0 || !slices.Equal(st.Budget.HeldStreams, []string{"telemetry"}) {
			return false
		}
		held = st.Budget
		return true
	})
	sent := len(sub.seqsOf(1))
	t.Logf("telemetry held after %d of %d readings: %d of %d bytes used, priorities held %v",
		sent, nTelemetry, held.Used, held.Bytes, held.Held)
	if sent == 0 || sent >= nTelemetry || held.Used < budget/2 || !slices.Equal(held.Held, []int{1}) {
		t.Fatalf("budget status %+v with %d readings at the cloud", held, sent)
	}

	// Alerts go while telemetry waits; the commit of their ingest also
	// writes the usage saved before it.
	for s := range 5 {
		publish("alerts/door", reading{P: 2, S: s})
	}
	waitUntil(t, 60*time.Second, "alerts at the cloud", func() bool { return len(sub.seqsOf(2)) == 5 })
	if got := len(sub.seqsOf(1)); got != sent {
		t.Fatalf("%d telemetry readings at the cloud while held at %d", got, sent)
	}
	pub.Disconnect(50)

	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	cmd = startFerry(t, bin, cfgPath, logPath)
	var after *uplink.BudgetStatus
	waitUntil(t, 60*time.Second, "the restarted gateway's budget", func() bool {
		st := status()
		if st == nil || st.Budget == nil || len(st.Budget.HeldStreams) == 0 {
			return false
		}
		after = st.Budget
		return true
	})
	t.Logf("after SIGKILL: %d bytes used (%d before the alerts), held %v %v", after.Used, held.Used, after.Held, after.HeldStreams)
	if after.Used < held.Used || !slices.Equal(after.HeldStreams, []string{"telemetry"}) {
		t.Fatalf("after SIGKILL: budget %+v, want at least %d used and telemetry held", after, held.Used)
	}
	if got := len(sub.seqsOf(1)); got != sent {
		t.Fatalf("%d telemetry readings at the cloud after the restart, %d before", got, sent)
	}
}

// seqsOf returns publisher p's sequence numbers as they arrived.
func (s *cloudSub) seqsOf(p int) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seqs[p])
}
