package gateway_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/gateway/outbox"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/ferrygw/ferry/uplink"
)

// TestPipelineEndToEnd publishes readings over MQTT to a running gateway
// with a threshold pipeline, and checks the alert reaches all three
// outputs: the cloud (Mosquitto) through the uplink, a local MQTT
// subscriber, and a webhook (signed, retried after a failure) — while the
// raw readings, read by the pipeline, are not forwarded.
func TestPipelineEndToEnd(t *testing.T) {
	cloud := mqtttest.Start(t)
	cloudMsgs := make(chan []byte, 100)
	csub := paho.NewClient(paho.NewClientOptions().AddBroker(cloud.URL()).SetClientID("e2e-cloud"))
	if tok := csub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer csub.Disconnect(50)
	csub.Subscribe("#", 1, func(_ paho.Client, m paho.Message) { cloudMsgs <- m.Payload() }).Wait()

	secret := []byte("s3cret")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hook.key"), secret, 0o600); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var calls int
	hooked := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		calls++
		first := calls == 1
		mu.Unlock()
		if first { // the first attempt fails: delivery must retry
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if r.Header.Get("X-Ferry-Signature") != outbox.Signature(secret, body) || r.Header.Get("Idempotency-Key") == "" {
			t.Errorf("webhook: bad signature or no idempotency key: %v", r.Header)
		}
		hooked <- string(body)
	}))
	defer srv.Close()

	pipes := fmt.Sprintf(`
pipelines:
  - name: hot
    stages:
      - detect: {kind: threshold, field: temp_c, raise_above: 30, clear_below: 25}
    outputs:
      - stream: alerts
      - mqtt: "local/alerts/{source}"
      - webhook: {url: %s, secret_file: %s, timeout: 2s}
`, srv.URL, filepath.Join(dir, "hook.key"))
	yaml, addr := testConfig(t, filepath.Join(dir, "data"), cloud.URL(), pipes)
	g := runGateway(t, loadConfig(t, yaml))

	local := make(chan string, 10)
	lsub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("siren"))
	if tok := lsub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer lsub.Disconnect(50)
	lsub.Subscribe("local/alerts/#", 1, func(_ paho.Client, m paho.Message) { local <- m.Topic() + " " + string(m.Payload()) }).Wait()

	pub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("oven-1"))
	if tok := pub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer pub.Disconnect(50)
	for _, temp := range []float64{20, 28, 31, 33, 29} { // one raise, no clear
		if tok := pub.Publish("sensors/oven-1/temp", 1, false, fmt.Sprintf(`{"temp_c":%v}`, temp)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}

	select {
	case m := <-cloudMsgs:
		evs, err := uplink.DecodeMessage(m)
		if err != nil || len(evs) != 1 || !strings.Contains(string(evs[0].Payload), `"state":"raise"`) {
			t.Fatalf("cloud got %s (%v): want exactly the alert, not raw readings", m, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no alert at the cloud")
	}
	select {
	case m := <-local:
		if !strings.HasPrefix(m, "local/alerts/oven-1 ") || !strings.Contains(m, `"value":31`) {
			t.Fatalf("local alert %q", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no alert on the local topic")
	}
	select {
	case body := <-hooked:
		var f map[string]any
		if json.Unmarshal([]byte(body), &f) != nil || f["state"] != "raise" {
			t.Fatalf("webhook body %s", body)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("webhook not delivered after a failed first attempt")
	}
	// A payload that does not decode is a visible dead letter, with its
	// reason; the pipeline goes on.
	if tok := pub.Publish("sensors/oven-1/temp", 1, false, `{"temp_c":`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	waitUntil(t, 10*time.Second, "the dead letter", func() bool {
		dl := g.DeadLetters(10)
		return len(dl) == 1 && dl[0].Pipeline == "hot" && strings.Contains(dl[0].Reason, "malformed") && dl[0].Payload == `{"temp_c":`
	})
	// The counters follow the commit that stored the dead letter.
	waitUntil(t, 10*time.Second, "the pipeline's counters to count it", func() bool {
		st := g.Status()
		return len(st.Pipelines) == 1 && st.Pipelines[0].DeadLetters == 1
	})
	if st := g.Status(); len(st.Pipelines) != 1 || st.Pipelines[0].DeadLetters != 1 || st.Pipelines[0].In != 6 {
		t.Fatalf("pipeline status %+v", st.Pipelines)
	}
	select {
	case m := <-cloudMsgs:
		t.Fatalf("a second message reached the cloud (raw readings must not be forwarded): %s", m)
	case <-time.After(300 * time.Millisecond):
	}
}
