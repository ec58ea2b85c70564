package fleet

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/ferrygw/ferry/gateway/opsapi"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

var (
	buildOnce sync.Once
	buildDir  string
	ferryBin  string
	buildErr  error
)

// TestMain removes the ferry binary built for the fleet and checks that
// no goroutine outlived the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if buildDir != "" {
			_ = os.RemoveAll(buildDir)
		}
		os.Exit(code)
	}))
}

// ferry builds the ferry binary once per test binary.
func ferry(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "ferry-fleet-")
		if buildErr != nil {
			return
		}
		ferryBin = filepath.Join(buildDir, "ferry")
		if out, err := exec.Command("go", "build", "-o", ferryBin, "github.com/ferrygw/ferry/cmd/ferry").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return ferryBin
}

// gateway is one ferry process of the fleet.
type gateway struct {
	idx                    int
	id                     string
	dir, cfgPath, logPath  string
	brokerAddr, statusAddr string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// startGateway writes the config of gateway idx (ID gwNN), uplinking to
// endpoints with uplink (YAML lines indented 2, under uplink:), runs
// `ferry run` on it and waits until its broker and status listener answer.
func startGateway(t *testing.T, idx int, endpoints []string, uplink string) *gateway {
	t.Helper()
	bin := ferry(t)
	g := &gateway{idx: idx, id: fmt.Sprintf("gw%02d", idx), dir: t.TempDir()}
	g.brokerAddr = fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	g.statusAddr = fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	var eps strings.Builder
	for _, u := range endpoints {
		fmt.Fprintf(&eps, "    - url: %s\n", u)
	}
	yaml := fmt.Sprintf(`gateway_id: %s
data_dir: %s
log: {level: info}
broker:
  listen: %s
  allow_anonymous: true
ingest:
  routes:
    - topics: ["sensors/#"]
      stream: telemetry
uplink:
  endpoints:
%s%sstatus:
  listen: %s
  log_interval: 0s
`, g.id, filepath.Join(g.dir, "data"), g.brokerAddr, eps.String(), uplink, g.statusAddr)
	g.cfgPath, g.logPath = filepath.Join(g.dir, "ferry.yaml"), filepath.Join(g.dir, "ferry.log")
	if err := os.WriteFile(g.cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.OpenFile(g.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "-c", g.cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	g.cmd, g.done = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(g.done)
	t.Cleanup(func() {
		g.stop()
		if t.Failed() {
			b, _ := os.ReadFile(g.logPath)
			t.Logf("%s output (end):\n%s", g.id, tailBytes(b, 6<<10))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for _, addr := range []string{g.brokerAddr, g.statusAddr} {
		for {
			c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-g.done:
				b, _ := os.ReadFile(g.logPath)
				t.Fatalf("%s exited at start:\n%s", g.id, tailBytes(b, 4<<10))
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not listen on %s within 30 s", g.id, addr)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return g
}

// stop ends the gateway (SIGTERM, then SIGKILL after 20 s).
func (g *gateway) stop() {
	g.mu.Lock()
	cmd, done := g.cmd, g.done
	g.cmd = nil
	g.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

var statusClient = &http.Client{Timeout: 3 * time.Second}

// status fetches GET /status.
func (g *gateway) status() (*opsapi.Status, error) {
	resp, err := statusClient.Get("http://" + g.statusAddr + "/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s /status: HTTP %d", g.id, resp.StatusCode)
	}
	var st opsapi.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("%s /status: %w", g.id, err)
	}
	return &st, nil
}

func tailBytes(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	return append([]byte("…"), b[len(b)-n:]...)
}

// sensor publishes readings to one gateway's broker at QoS 1, a window of
// 8 in flight, one every interval, and records which were acknowledged.
type sensor struct {
	g        int
	c        paho.Client
	interval time.Duration

	mu     sync.Mutex
	acked  []int
	failed int

	stop chan struct{}
	done chan struct{}
}

func startSensor(t *testing.T, g *gateway, interval time.Duration) *sensor {
	t.Helper()
	s := &sensor{g: g.idx, interval: interval, stop: make(chan struct{}), done: make(chan struct{})}
	s.c = paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + g.brokerAddr).
		SetClientID(fmt.Sprintf("sensor-%s", g.id)).SetCleanSession(true).SetAutoReconnect(false).
		SetConnectTimeout(10 * time.Second))
	if tok := s.c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("sensor of %s: connect: %v", g.id, tok.Error())
	}
	go s.run()
	t.Cleanup(s.halt)
	return s
}

func (s *sensor) run() {
	defer close(s.done)
	type pub struct {
		seq int
		tok paho.Token
	}
	window := make(chan pub, 8)
	settle := func(p pub) {
		ok := p.tok.WaitTimeout(30*time.Second) && p.tok.Error() == nil
		s.mu.Lock()
		if ok {
			s.acked = append(s.acked, p.seq)
		} else {
			s.failed++
		}
		s.mu.Unlock()
	}
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	for seq := 0; ; seq++ {
		select {
		case <-s.stop:
			close(window)
			for p := range window {
				settle(p)
			}
			return
		case <-tick.C:
		}
		if len(window) == cap(window) {
			settle(<-window)
		}
		b, _ := json.Marshal(reading{G: s.g, P: 0, S: seq})
		window <- pub{seq, s.c.Publish(fmt.Sprintf("sensors/%d", s.g), 1, false, b)}
	}
}

// halt stops publishing, waits for the acknowledgements in flight and
// disconnects.
func (s *sensor) halt() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.c.Disconnect(50)
}

func (s *sensor) result() (acked []int, failed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.acked...), s.failed
}
