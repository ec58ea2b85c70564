package gateway_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/ferrygw/ferry/uplink"
)

// relay stands between the gateway's uplink topics and what ferry verify
// reads: it republishes each cloud message from gw1/... to verified/gw1/...
// except the first copies (not replays) of the events it is told to lose,
// as a cloud that lost messages would.
type relay struct {
	t    *testing.T
	c    mqtt.Client
	mu   sync.Mutex
	lose map[string]bool // stream/seq
	lost map[string]bool
	seen map[string]int // stream → non-replay envelopes seen
	rep  map[string]int // stream → replay envelopes passed
}

func startRelay(t *testing.T, url string, lose map[string]bool) *relay {
	t.Helper()
	r := &relay{t: t, lose: lose, lost: map[string]bool{}, seen: map[string]int{}, rep: map[string]int{}}
	r.c = mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("gw1-relay").SetCleanSession(true).SetOrderMatters(true))
	if tok := r.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("relay connect: %v", tok.Error())
	}
	t.Cleanup(func() { r.c.Disconnect(100) })
	tok := r.c.SubscribeMultiple(map[string]byte{"gw1/telemetry/#": 1, "gw1/fast/#": 1}, func(c mqtt.Client, m mqtt.Message) {
		envs, err := uplink.DecodeEnvelopes(m.Payload())
		if err != nil {
			t.Errorf("relay: undecodable message on %s: %v", m.Topic(), err)
			return
		}
		r.mu.Lock()
		drop := false
		for _, e := range envs {
			k := fmt.Sprintf("%s/%d", e.Event.Stream, e.Seq)
			switch {
			case e.Replay:
				r.rep[e.Event.Stream]++
			case r.lose[k] && !r.lost[k]:
				r.lost[k], drop = true, true
				r.seen[e.Event.Stream]++
			default:
				r.seen[e.Event.Stream]++
			}
		}
		r.mu.Unlock()
		if drop {
			if len(envs) != 1 {
				t.Errorf("relay: a message to lose carries %d events", len(envs))
			}
			return
		}
		c.Publish("verified/"+m.Topic(), 1, false, m.Payload()) // its token completes on the client's goroutines
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("relay subscribe: %v", tok.Error())
	}
	return r
}

func (r *relay) counts(stream string) (seen, replayed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[stream], r.rep[stream]
}

// verifyProc is a `ferry verify` subprocess.
type verifyProc struct {
	cmd      *exec.Cmd
	out, err bytes.Buffer
	port     int
}

func startVerify(t *testing.T, bin string, args ...string) *verifyProc {
	t.Helper()
	v := &verifyProc{port: mqtttest.FreePort(t)}
	v.cmd = exec.Command(bin, append([]string{"verify", "-listen", fmt.Sprintf("127.0.0.1:%d", v.port), "-json",
		"-report-every", "0"}, args...)...)
	v.cmd.Stdout, v.cmd.Stderr = &v.out, &v.err
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if v.cmd.ProcessState == nil {
			_ = v.cmd.Process.Kill()
			_ = v.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("ferry verify %v stderr:\n%s", args, v.err.String())
		}
	})
	waitUntil(t, 60*time.Second, "ferry verify connected", func() bool { return v.metric("ferry_verify_connected") == 1 })
	return v
}

// metric returns the sum of a metric's series (-1: not served).
func (v *verifyProc) metric(name string) float64 {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", v.port))
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, m := range regexp.MustCompile(`(?m)^`+name+`(?:\{[^}]*\})? (\S+)$`).FindAllSubmatch(b, -1) {
		f, _ := strconv.ParseFloat(string(m[1]), 64)
		sum += f
	}
	return sum
}

// stop interrupts verify and returns its exit code and its JSON report's totals.
func (v *verifyProc) stop(t *testing.T) (int, map[string]uint64) {
	t.Helper()
	_ = v.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- v.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("ferry verify did not stop")
	}
	var rep struct {
		Totals map[string]any `json:"totals"`
	}
	if err := json.Unmarshal(v.out.Bytes(), &rep); err != nil {
		t.Fatalf("verify report %q: %v", v.out.String(), err)
	}
	totals := map[string]uint64{}
	for k, x := range rep.Totals {
		if f, ok := x.(float64); ok {
			totals[k] = uint64(f)
		}
	}
	return v.cmd.ProcessState.ExitCode(), totals
}

// waitSubscribed5 waits until Mosquitto logged clientID's SUBSCRIBE to
// filter ("<time>: <client> <qos> <filter>").
func waitSubscribed5(t *testing.T, b *mqtttest.Broker, clientID, filter string) {
	t.Helper()
	waitUntil(t, 60*time.Second, clientID+" subscribed to "+filter, func() bool {
		for _, line := range strings.Split(b.Logs(), "\n") {
			if f := strings.Fields(line); len(f) == 4 && f[1] == clientID && f[3] == filter {
				return true
			}
		}
		return false
	})
}

// TestResendEndToEnd: the cloud loses messages on purpose (a relay
// between the gateway's topics and ferry verify's drops chosen events),
// and `ferry verify -repair` finds each hole and asks the ferry binary,
// through its downlink session, to resend it. The telemetry stream
// retains its events (retain: 1h): they come again, marked replay, verify
// reports them repaired and exits 0. The fast stream keeps nothing once
// sent: the gateway refuses with its first retained sequence, verify
// reports the refusal and the events missing, and exits 1.
func TestResendEndToEnd(t *testing.T) {
	bin := buildFerry(t)
	cloud := mqtttest.Start(t)
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	yaml := fmt.Sprintf(`
gateway_id: gw1
data_dir: %s
log: {level: info}
broker: {listen: "%s", allow_anonymous: true}
ingest:
  routes:
    - {topics: ["sensors/#"], stream: telemetry}
    - {topics: ["fast/#"], stream: fast}
buffer:
  streams:
    - {name: telemetry, retain: 1h}
    - {name: fast}
uplink:
  endpoints: [{url: "%s"}]
  topic: "{gateway_id}/{stream}/{source}"
  backoff: {min: 20ms, max: 300ms}
  connect_timeout: 2s
downlink:
  resend: true
status: {listen: "", log_interval: 0s}
`, filepath.Join(dir, "data"), addr, cloud.URL())
	cfgPath, logPath := ferryFiles(t, dir, yaml)

	const n = 20
	lose := map[string]bool{"telemetry/5": true, "telemetry/6": true, "telemetry/7": true, "fast/3": true, "fast/4": true}
	rl := startRelay(t, cloud.URL(), lose)
	vTel := startVerify(t, bin, "-url", cloud.URL(), "-topic", "verified/gw1/telemetry/#", "-client-id", "verify-tel",
		"-settle", "2s", "-repair")
	vFast := startVerify(t, bin, "-url", cloud.URL(), "-topic", "verified/gw1/fast/#", "-client-id", "verify-fast",
		"-settle", "2s", "-repair")
	// The verifiers' replies, as the gateway sends them.
	replies := dial5(t, cloud.URL(), "reply-watch", nil)
	replies.subscribe("verify-tel/resend-reply", 1)
	replies.subscribe("verify-fast/resend-reply", 1)

	cmd := startFerry(t, bin, cfgPath, logPath)
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	waitSubscribed5(t, cloud, "gw1-cmd", "gw1/cmd/ferry/resend")

	dev := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("sensor-1"))
	waitUntil(t, 60*time.Second, "the gateway's broker", func() bool {
		tok := dev.Connect()
		return tok.WaitTimeout(5*time.Second) && tok.Error() == nil
	})
	defer dev.Disconnect(100)
	// One event at a time, each its own message, so that the relay loses
	// exactly the chosen ones.
	for i := 1; i <= n; i++ {
		for _, s := range []string{"telemetry", "fast"} {
			topic := "sensors/a"
			if s == "fast" {
				topic = "fast/a"
			}
			if tok := dev.Publish(topic, 1, false, fmt.Sprintf(`{"n":%d}`, i)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publish: %v", tok.Error())
			}
			waitUntil(t, 60*time.Second, fmt.Sprintf("%s event %d at the cloud", s, i), func() bool {
				seen, _ := rl.counts(s)
				return seen >= i
			})
		}
	}

	// Verify finds the holes after its settle window, asks, and the
	// gateway resends what it retains.
	published := time.Now()
	waitUntil(t, 120*time.Second, "the telemetry hole repaired", func() bool {
		return vTel.metric("ferry_verify_repaired_events_total") >= 3
	})
	t.Logf("telemetry repaired %v after the last event was published (settle 2s)", time.Since(published).Round(time.Millisecond))
	waitUntil(t, 120*time.Second, "the fast stream's request refused", func() bool {
		return vFast.metric("ferry_verify_repair_refused_total") >= 1
	})
	for range 2 {
		m := replies.next("+/resend-reply", 60*time.Second)
		var r uplink.ResendReply
		if err := json.Unmarshal(m.Payload, &r); err != nil {
			t.Fatalf("reply %q: %v", m.Payload, err)
		}
		got := fmt.Sprintf("%s %s %d-%d %s %q %d", m.Topic, r.Stream, r.FromSeq, r.ToSeq, r.Status, r.Error, r.FirstSeq)
		switch m.Topic {
		case "verify-tel/resend-reply":
			if r.Stream != "telemetry" || r.FromSeq != 5 || r.ToSeq != 7 || r.Status != "ok" || r.Error != "" || r.FirstSeq != 0 {
				t.Errorf("reply %s, want telemetry 5-7 ok", got)
			}
		case "verify-fast/resend-reply":
			// first_seq: the next event sent when verify asked.
			if r.Stream != "fast" || r.FromSeq != 3 || r.ToSeq != 4 || r.Status != "refused" || r.Error != "retained" || r.FirstSeq <= 4 || r.FirstSeq > n+1 {
				t.Errorf("reply %s, want fast 3-4 refused, retained from after 4", got)
			}
		default:
			t.Errorf("reply %s", got)
		}
		t.Logf("reply %s", got)
	}

	code, tel := vTel.stop(t)
	if code != 0 || tel["received"] != n || tel["missing"] != 0 || tel["repaired"] != 3 || tel["unexplained_gaps"] != 1 || tel["repair_requests"] < 1 {
		t.Errorf("telemetry: exit %d, totals %v; want exit 0, received %d, repaired 3, missing 0", code, tel, n)
	}
	code, fast := vFast.stop(t)
	if code != 1 || fast["received"] != n-2 || fast["missing"] != 2 || fast["repaired"] != 0 || fast["repair_refused"] < 1 {
		t.Errorf("fast: exit %d, totals %v; want exit 1, received %d, missing 2, refused", code, fast, n-2)
	}
	if _, rep := rl.counts("fast"); rep != 0 {
		t.Errorf("%d fast events resent; it retains none", rep)
	}
	if _, rep := rl.counts("telemetry"); rep != 3 {
		t.Errorf("%d telemetry events resent, want 3", rep)
	}
	t.Logf("telemetry totals %v; fast totals %v", tel, fast)
}

// The configuration's resend topic is the one the cloud's side (uplink,
// verify) publishes requests to.
func TestResendTopicAgrees(t *testing.T) {
	c := &config.Config{GatewayID: "gw-7"}
	if got, want := c.ResendTopic(), (&uplink.ResendRequest{Gateway: "gw-7"}).Topic(); got != want {
		t.Errorf("config resend topic %q, uplink's %q", got, want)
	}
}
