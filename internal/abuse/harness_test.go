package abuse

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// rssLimit is issue 12's bound on ferry's peak resident memory with the
// default budget, applied to its anonymous part (see checkInvariants).
const rssLimit = 64 << 20 // bytes: 64 MiB

// marker is in every payload an attacker sends where the ACL denies it:
// a watcher or the cloud seeing it is an ACL bypass.
const marker = "FORGED"

var (
	setupOnce sync.Once
	setupErr  error
	setupDir  string
	ferryBin  string // built once, on first use
	usersFile string // sensor1, dash, mallory, actuator (ferry passwd)
)

// users and their passwords; made with `ferry passwd` on first use.
var users = map[string]string{"sensor1": "pw-sensor1", "dash": "pw-dash", "mallory": "pw-mallory", "actuator": "pw-actuator"}

// TestMain removes what setup made.
func TestMain(m *testing.M) {
	code := m.Run()
	if setupDir != "" {
		_ = os.RemoveAll(setupDir)
	}
	os.Exit(code)
}

// setup builds ferry and the users file once, when a test first needs
// them (not at all under -short or when every test is skipped).
func setup(t *testing.T) {
	t.Helper()
	setupOnce.Do(func() {
		setupDir, setupErr = os.MkdirTemp("", "ferry-abuse-")
		if setupErr != nil {
			return
		}
		// FERRY_ABUSE_BIN attacks another build (say, of an older commit,
		// to see the suite fail without a fix) instead of this tree's.
		if ferryBin = os.Getenv("FERRY_ABUSE_BIN"); ferryBin == "" {
			ferryBin = filepath.Join(setupDir, "ferry")
			if out, err := exec.Command("go", "build", "-o", ferryBin, "github.com/ferrygw/ferry/cmd/ferry").CombinedOutput(); err != nil {
				setupErr = fmt.Errorf("go build: %v\n%s", err, out)
				return
			}
		}
		usersFile = filepath.Join(setupDir, "users")
		for u, pw := range users {
			if out, err := passwd(usersFile, u, pw); err != nil {
				setupErr = fmt.Errorf("ferry passwd %s: %v\n%s", u, err, out)
				return
			}
		}
	})
	if setupErr != nil {
		t.Fatal(setupErr)
	}
}

// passwd runs `ferry passwd -f file user` with the password on stdin.
func passwd(file, user, pw string) ([]byte, error) {
	cmd := exec.Command(ferryBin, "passwd", "-f", file, user)
	cmd.Stdin = strings.NewReader(pw + "\n")
	return cmd.CombinedOutput()
}

// options change one subtest's gateway config; the rest is the issue's
// setup with default limits.
type options struct {
	// buffer replaces the default buffer section (YAML, indented 2).
	buffer string
	// cloudDown: the cloud is stopped before ferry starts.
	cloudDown bool
}

// env is one gateway under attack.
type env struct {
	t                      *testing.T
	dir, cfgPath, logPath  string
	brokerAddr, statusAddr string
	yaml                   string
	cloud                  *mqtttest.Broker
	cloudRec               *recorder
	actuator, dash         *recorder
	sensor                 *sensor

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	hwm  int64 // highest VmHWM of the ferry processes so far
	// Peaks of RssAnon and RssFile, sampled every 50 ms: whether a high
	// VmHWM is heap or mapped file pages (bbolt's mmap), for the report.
	peakAnon, peakFile int64
}

// newEnv starts the cloud, ferry, the watchers and the sensor.
func newEnv(t *testing.T, o options) *env {
	t.Helper()
	mqtttest.RequireMosquitto(t)
	setup(t)
	e := &env{t: t, dir: t.TempDir()}
	e.cloud = mqtttest.StartWith(t, mqtttest.Options{Persistent: true})
	e.cloudRec = newRecorder(t, e.cloud.URL(), "abuse-cloud", "", "", "#")
	if o.cloudDown {
		e.cloud.Stop()
	}
	e.brokerAddr = fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	e.statusAddr = fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	buffer := o.buffer
	if buffer == "" {
		buffer = "  min_free_disk: 1MiB\n"
	}
	e.yaml = fmt.Sprintf(`gateway_id: gw1
data_dir: %s
log: {level: info, format: json}
broker:
  listen: %s
  users_file: %s
  acl:
    - user: dash
      subscribe: ["sensors/#"]
    - user: "*"
      publish: ["sensors/%%u/#"]
      subscribe: ["cmd/%%c", "sensors/%%u/#"]
ingest:
  routes:
    - topics: ["sensors/+/json/#"]
      stream: jsonin
    - topics: ["sensors/#"]
      stream: telemetry
buffer:
%spipelines:
  - name: jsonpipe
    input: {stream: jsonin, format: json}
    stages:
      - filter: "seq >= 0"
    outputs:
      - stream: jsonout
uplink:
  endpoints:
    - url: %s
  topic: "{gateway_id}/{stream}/{source}"
  backoff: {min: 100ms, max: 1s, probe_interval: 500ms}
  connect_timeout: 2s
status:
  listen: %s
`, filepath.Join(e.dir, "data"), e.brokerAddr, usersFile, buffer, e.cloud.URL(), e.statusAddr)
	e.cfgPath, e.logPath = filepath.Join(e.dir, "ferry.yaml"), filepath.Join(e.dir, "ferry.log")
	if err := os.WriteFile(e.cfgPath, []byte(e.yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.stop()
		if t.Failed() {
			b, _ := os.ReadFile(e.logPath)
			if len(b) > 16<<10 {
				b = append(b[:8<<10:8<<10], append([]byte("\n…\n"), b[len(b)-8<<10:]...)...)
			}
			t.Logf("ferry output:\n%s", b)
		}
	})
	e.start()
	e.actuator = newRecorder(t, "tcp://"+e.brokerAddr, "actuator-1", "actuator", users["actuator"], "cmd/actuator-1")
	e.dash = newRecorder(t, "tcp://"+e.brokerAddr, "dash-live", "dash", users["dash"], "sensors/sensor1/#")
	e.sensor = startSensor(t, e.brokerAddr)
	e.sensor.waitAcked(t, 3, 15*time.Second)
	return e
}

// start runs ferry and waits until its broker and status listener answer.
func (e *env) start() {
	t := e.t
	t.Helper()
	logf, err := os.OpenFile(e.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ferryBin, "run", "-c", e.cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	go e.sample(cmd.Process.Pid, done)
	e.mu.Lock()
	e.cmd, e.done = cmd, done
	e.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for _, addr := range []string{e.brokerAddr, e.statusAddr} {
		for {
			c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-done:
				t.Fatalf("ferry exited at start: %v", cmd.ProcessState)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("ferry did not listen on %s within 20 s", addr)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// stop ends ferry (SIGTERM, then SIGKILL), noting its peak RSS first.
func (e *env) stop() {
	e.mu.Lock()
	cmd, done := e.cmd, e.done
	e.cmd = nil
	e.mu.Unlock()
	if cmd == nil {
		return
	}
	e.noteHWM(cmd)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// restart stops and starts ferry on the same config and data.
func (e *env) restart() {
	e.t.Helper()
	e.stop()
	e.start()
}

func (e *env) pid() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cmd.Process.Pid
}

// noteHWM records the process's VmHWM (peak RSS).
func (e *env) noteHWM(cmd *exec.Cmd) int64 {
	hwm := vmHWM(cmd.Process.Pid)
	e.mu.Lock()
	defer e.mu.Unlock()
	if hwm > e.hwm {
		e.hwm = hwm
	}
	return e.hwm
}

// sample records the peaks of pid's RssAnon and RssFile until done.
func (e *env) sample(pid int, done <-chan struct{}) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		anon, file := procStatus(pid, "RssAnon:"), procStatus(pid, "RssFile:")
		e.mu.Lock()
		e.peakAnon, e.peakFile = max(e.peakAnon, anon), max(e.peakFile, file)
		e.mu.Unlock()
	}
}

// rssReport is the peak RSS with its sampled anonymous and file parts.
func (e *env) rssReport() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return fmt.Sprintf("peak RSS %.1f MiB (sampled peaks: anon %.1f MiB, file-backed %.1f MiB)", mib(e.hwm), mib(e.peakAnon), mib(e.peakFile))
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// dataSizes lists the files in data_dir with their sizes.
func (e *env) dataSizes() string {
	var out []string
	files, _ := filepath.Glob(filepath.Join(e.dir, "data", "*"))
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil && fi.Mode().IsRegular() {
			out = append(out, fmt.Sprintf("%s %.1f MiB", filepath.Base(f), mib(fi.Size())))
		}
	}
	return strings.Join(out, ", ")
}

// vmHWM reads a process's peak resident set size in bytes (0 if gone).
func vmHWM(pid int) int64 { return procStatus(pid, "VmHWM:") }

// procStatus reads a kB field of /proc/PID/status in bytes (0 if gone).
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// alive fails the test if ferry has exited.
func (e *env) alive() {
	e.t.Helper()
	e.mu.Lock()
	done := e.done
	cmd := e.cmd
	e.mu.Unlock()
	if cmd == nil {
		e.t.Fatal("ferry is not running")
	}
	select {
	case <-done:
		e.t.Fatalf("ferry died: %v", cmd.ProcessState)
	default:
	}
}

// checkInvariants asserts what every attack must leave true.
func (e *env) checkInvariants() {
	t := e.t
	t.Helper()
	e.alive()
	// The sensor is still served after the attack.
	e.sensor.waitAcked(t, e.sensor.ackedCount()+3, 20*time.Second)
	acked := e.sensor.stop()
	e.alive()
	e.mu.Lock()
	cmd := e.cmd
	e.mu.Unlock()
	// The bound is on anonymous memory (heap, stacks: what the gateway
	// cannot give back). bbolt's mapped file pages (buffer.db,
	// sessions.db) also count in VmHWM, but they are page cache the
	// kernel reclaims under pressure, and bounding them would bound the
	// disk buffer to 64 MiB; they are reported beside it.
	e.noteHWM(cmd)
	e.mu.Lock()
	anon := e.peakAnon
	e.mu.Unlock()
	if anon > rssLimit {
		t.Errorf("%s: anonymous memory over %d MiB; data_dir: %s", e.rssReport(), rssLimit>>20, e.dataSizes())
	} else {
		t.Logf("%s; data_dir: %s", e.rssReport(), e.dataSizes())
	}
	// Every acknowledged reading reaches the cloud, first arrivals in order.
	want := map[int]bool{}
	for _, s := range acked {
		want[s] = true
	}
	var got []int
	deadline := time.Now().Add(45 * time.Second)
	for {
		got = e.cloudRec.sensorSeqs()
		missing := 0
		seen := map[int]bool{}
		for _, s := range got {
			seen[s] = true
		}
		for s := range want {
			if !seen[s] {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d of the sensor's %d acknowledged readings did not reach the cloud within 45 s", missing, len(acked))
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	last, seen := -1, map[int]bool{}
	for _, s := range got {
		if seen[s] {
			continue // a resend
		}
		seen[s] = true
		if s < last {
			t.Errorf("cloud got reading %d after %d: out of order", s, last)
			break
		}
		last = s
	}
	// Nothing the ACL denies was delivered anywhere.
	for _, r := range []*recorder{e.actuator, e.dash, e.cloudRec} {
		if bad := r.forged(); len(bad) > 0 {
			t.Errorf("%s received %d message(s) the ACL denies, first: %s", r.name, len(bad), bad[0])
		}
	}
	if n := e.actuator.count(); n > 0 {
		t.Errorf("the actuator received %d command(s); nobody may publish to cmd/actuator-1", n)
	}
}

// logLines returns ferry's output.
func (e *env) logBytes() []byte {
	b, _ := os.ReadFile(e.logPath)
	return b
}

// getBody does an HTTP GET on the status listener (host as Host if
// set), keeping up to max bytes of the body; size is the full length read.
func (e *env) getBody(path, host string, max int) (code int, body []byte, size int64, err error) {
	req, err := http.NewRequest("GET", "http://"+e.statusAddr+path, nil)
	if err != nil {
		return 0, nil, 0, err
	}
	if host != "" {
		req.Host = host
	}
	req.Close = true
	c := &http.Client{Timeout: 20 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, 0, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	size, err = io.Copy(&buf, io.LimitReader(resp.Body, 1<<29))
	b := buf.Bytes()
	if len(b) > max {
		b = b[:max]
	}
	return resp.StatusCode, b, size, err
}

// recorder is a paho subscriber recording what it receives.
type recorder struct {
	name string
	c    paho.Client
	mu   sync.Mutex
	msgs []paho.Message
}

// newRecorder connects a persistent-session subscriber to filter.
func newRecorder(t *testing.T, url, clientID, user, pw, filter string) *recorder {
	t.Helper()
	r := &recorder{name: clientID}
	o := paho.NewClientOptions().AddBroker(url).SetClientID(clientID).SetCleanSession(false).
		SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).SetConnectRetry(true).
		SetConnectRetryInterval(200 * time.Millisecond).SetOrderMatters(true)
	if user != "" {
		o.SetUsername(user).SetPassword(pw)
	}
	o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
		r.mu.Lock()
		r.msgs = append(r.msgs, m)
		r.mu.Unlock()
	})
	o.SetOnConnectHandler(func(c paho.Client) {
		c.Subscribe(filter, 1, nil)
	})
	r.c = paho.NewClient(o)
	if tok := r.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: connect: %v", clientID, tok.Error())
	}
	// The subscription is made in the connect handler; wait for its SUBACK
	// by subscribing once more synchronously.
	if tok := r.c.Subscribe(filter, 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: subscribe %s: %v", clientID, filter, tok.Error())
	}
	t.Cleanup(func() { r.c.Disconnect(0) })
	return r
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

// cloudPayload returns a cloud message's original payload (JSON payload
// or payload_b64), or the raw message for anything else.
func cloudPayloads(raw []byte) [][]byte {
	var one struct {
		Payload    json.RawMessage `json:"payload"`
		PayloadB64 string          `json:"payload_b64"`
	}
	var many []json.RawMessage
	if err := json.Unmarshal(raw, &many); err != nil {
		many = []json.RawMessage{raw}
	}
	var out [][]byte
	for _, m := range many {
		if json.Unmarshal(m, &one) != nil {
			out = append(out, m)
			continue
		}
		out = append(out, one.Payload)
		if one.PayloadB64 != "" {
			b, _ := base64.StdEncoding.DecodeString(one.PayloadB64)
			out = append(out, b)
		}
	}
	return out
}

// forged returns what this recorder received that carries the marker.
func (r *recorder) forged() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var bad []string
	for _, m := range r.msgs {
		for _, p := range append(cloudPayloads(m.Payload()), m.Payload()) {
			if bytes.Contains(p, []byte(marker)) {
				s := m.Topic() + " " + string(p)
				if len(s) > 120 {
					s = s[:120]
				}
				bad = append(bad, s)
				break
			}
		}
	}
	return bad
}

// sensorSeqs returns the sequence numbers of the sensor's readings in the
// order the cloud received them.
func (r *recorder) sensorSeqs() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var seqs []int
	for _, m := range r.msgs {
		if !strings.HasSuffix(m.Topic(), "/telemetry/sensor1") {
			continue
		}
		var evs []struct {
			Topic   string `json:"topic"`
			Payload struct {
				Seq *int `json:"seq"`
			} `json:"payload"`
		}
		if json.Unmarshal(m.Payload(), &evs) != nil {
			evs = evs[:0]
			var one struct {
				Topic   string `json:"topic"`
				Payload struct {
					Seq *int `json:"seq"`
				} `json:"payload"`
			}
			if json.Unmarshal(m.Payload(), &one) != nil {
				continue
			}
			evs = append(evs, one)
		}
		for _, ev := range evs {
			if ev.Topic == "sensors/sensor1/seq" && ev.Payload.Seq != nil {
				seqs = append(seqs, *ev.Payload.Seq)
			}
		}
	}
	return seqs
}

// sensor is the legitimate sensor: user sensor1, client ID sensor1,
// publishing {"seq":N} at QoS 1 to sensors/sensor1/seq, one at a time,
// reconnecting and resending on any failure as a real sensor would.
type sensor struct {
	mu     sync.Mutex
	acked  []int
	lost   int // connections lost (kicked, refused, timed out)
	stopCh chan struct{}
	done   chan struct{}
}

func startSensor(t *testing.T, addr string) *sensor {
	s := &sensor{stopCh: make(chan struct{}), done: make(chan struct{})}
	go s.run(addr)
	t.Cleanup(func() { s.stop() })
	return s
}

func (s *sensor) run(addr string) {
	defer close(s.done)
	var c paho.Client
	defer func() {
		if c != nil {
			c.Disconnect(0)
		}
	}()
	for seq := 0; ; {
		select {
		case <-s.stopCh:
			return
		case <-time.After(20 * time.Millisecond):
		}
		if c == nil || !c.IsConnectionOpen() {
			if c != nil {
				c.Disconnect(0)
			}
			c = paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("sensor1").
				SetUsername("sensor1").SetPassword(users["sensor1"]).SetAutoReconnect(false).
				SetConnectTimeout(2 * time.Second).SetConnectionLostHandler(func(paho.Client, error) {
				s.mu.Lock()
				s.lost++
				s.mu.Unlock()
			}))
			if tok := c.Connect(); !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
				c = nil
				continue
			}
		}
		tok := c.Publish("sensors/sensor1/seq", 1, false, fmt.Sprintf(`{"seq":%d}`, seq))
		if tok.WaitTimeout(3*time.Second) && tok.Error() == nil {
			s.mu.Lock()
			s.acked = append(s.acked, seq)
			s.mu.Unlock()
			seq++
			continue
		}
		c.Disconnect(0)
		c = nil
	}
}

func (s *sensor) ackedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.acked)
}

func (s *sensor) lostCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}

// waitAcked waits until n readings have been acknowledged.
func (s *sensor) waitAcked(t *testing.T, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for s.ackedCount() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the sensor has %d readings acknowledged, want %d within %v", s.ackedCount(), n, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop stops publishing and returns the acknowledged sequence numbers.
func (s *sensor) stop() []int {
	select {
	case <-s.stopCh:
	default:
		close(s.stopCh)
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.acked...)
}

// waitUntil polls cond until it holds or d passes.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// maxLineLen is the longest line in b.
func maxLineLen(b []byte) int {
	m := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	for sc.Scan() {
		if n := len(sc.Bytes()); n > m {
			m = n
		}
	}
	return m
}

// metric returns the sum of the samples of a Prometheus metric family
// (name without labels) from /metrics, and whether it was present.
func (e *env) metric(name string) (float64, bool) {
	code, body, _, err := e.getBody("/metrics", "", 8<<20)
	if err != nil || code != 200 {
		return 0, false
	}
	var sum float64
	found := false
	for _, l := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(l, name) || strings.HasPrefix(l, "#") {
			continue
		}
		rest := l[len(name):]
		if rest != "" && rest[0] != '{' && rest[0] != ' ' {
			continue
		}
		f := strings.Fields(rest[strings.LastIndex(rest, "}")+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err == nil {
			sum += v
			found = true
		}
	}
	return sum, found
}

// statusNumber sums every number under key anywhere in GET /status's JSON
// (the budget's counters, wherever the status nests them); found is false
// when no such key is there.
func (e *env) statusNumber(key string) (sum float64, found bool) {
	code, body, _, err := e.getBody("/status", "", 16<<20)
	if err != nil || code != 200 {
		return 0, false
	}
	var v any
	if json.Unmarshal(body, &v) != nil {
		return 0, false
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if f, ok := x.(float64); ok && k == key {
					sum += f
					found = true
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(v)
	return sum, found
}

// requireCounted fails unless one of keys in GET /status is above zero:
// a limit that refused must be counted and visible in `ferry status`.
func (e *env) requireCounted(t *testing.T, keys ...string) {
	t.Helper()
	var seen []string
	for _, k := range keys {
		v, ok := e.statusNumber(k)
		if ok && v > 0 {
			t.Logf("status %s = %v", k, v)
			return
		}
		seen = append(seen, fmt.Sprintf("%s=%v(present %v)", k, v, ok))
	}
	t.Errorf("the refusal is not counted in GET /status: %s", strings.Join(seen, " "))
}

// metricWith sums the samples of metric name whose labels contain label
// (such as source="mallory-flood").
func (e *env) metricWith(name, label string) float64 {
	_, body, _, err := e.getBody("/metrics", "", 8<<20)
	if err != nil {
		return 0
	}
	var sum float64
	for _, l := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(l, name+"{") || !strings.Contains(l, label) {
			continue
		}
		f := strings.Fields(l[strings.LastIndex(l, "}")+1:])
		if len(f) > 0 {
			v, _ := strconv.ParseFloat(f[0], 64)
			sum += v
		}
	}
	return sum
}

// originalTopic returns the ingest topic of the first cloud event whose
// message contains substr, or "".
func (r *recorder) originalTopic(substr string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.msgs {
		if !bytes.Contains(m.Payload(), []byte(substr)) {
			continue
		}
		var ev struct {
			Topic string `json:"topic"`
		}
		if json.Unmarshal(m.Payload(), &ev) == nil {
			return ev.Topic
		}
	}
	return ""
}

// countContaining counts the messages whose payload contains substr.
func (r *recorder) countContaining(substr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		n += bytes.Count(m.Payload(), []byte(substr))
	}
	return n
}
