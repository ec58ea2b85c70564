package gateway_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// Debian's chromium and chromium-driver packages; .ci/run installs them.
const (
	chromiumPath     = "/usr/bin/chromium"
	chromedriverPath = "/usr/bin/chromedriver"
)

// requireChromium fails the test under CI=true when Chromium or
// ChromeDriver is missing (CI installs them) and skips it otherwise, as
// mqtttest.RequireMosquitto does for Mosquitto.
func requireChromium(t *testing.T) {
	t.Helper()
	for _, p := range []string{chromiumPath, chromedriverPath} {
		if _, err := os.Stat(p); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing; .ci/run must apt-get install chromium chromium-driver", p)
			}
			t.Skipf("%s is missing (apt-get install chromium chromium-driver); this test drives the status page in Chromium", p)
		}
	}
}

// webDriver speaks the W3C WebDriver protocol to one ChromeDriver, with
// plain HTTP and JSON: no client library to depend on.
type webDriver struct {
	base    string // http://127.0.0.1:PORT
	session string
	client  *http.Client
}

// call sends one WebDriver command and decodes its "value" into out.
func (d *webDriver) call(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, d.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := d.client.Do(req)
	if err != nil {
		return fmt.Errorf("webdriver %s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	var env struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.NewDecoder(res.Body).Decode(&env); err != nil {
		return fmt.Errorf("webdriver %s %s: %s: %w", method, path, res.Status, err)
	}
	if res.StatusCode != http.StatusOK {
		var e struct{ Error, Message string }
		_ = json.Unmarshal(env.Value, &e)
		return fmt.Errorf("webdriver %s %s: %s: %s: %s", method, path, res.Status, e.Error, e.Message)
	}
	if out != nil {
		return json.Unmarshal(env.Value, out)
	}
	return nil
}

// startBrowser starts ChromeDriver on a free port and a headless Chromium
// session through it. Cleanup deletes the session (ChromeDriver then
// closes Chromium), kills ChromeDriver's process group, and fails the
// test if any process using the session's profile directory is left.
func startBrowser(t *testing.T) *webDriver {
	t.Helper()
	requireChromium(t)
	// Created first, so removed last: after every process using it is gone.
	profile := t.TempDir()
	port := mqtttest.FreePort(t)
	cmd := exec.Command(chromedriverPath, fmt.Sprintf("--port=%d", port))
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	// A process group of its own: cleanup can kill ChromeDriver and any
	// browser process it leaves behind, and nothing else.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("chromedriver: %v", err)
	}
	d := &webDriver{base: fmt.Sprintf("http://127.0.0.1:%d", port),
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		d.client.CloseIdleConnections()
		if t.Failed() {
			t.Logf("chromedriver output:\n%s", logs.String())
		}
		if left := processesUsing(profile); len(left) > 0 {
			t.Errorf("browser processes left after cleanup: %v", left)
			for _, pid := range left {
				_ = syscall.Kill(pid, syscall.SIGKILL) // started by this test
			}
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		var st struct{ Ready bool }
		if d.call("GET", "/status", nil, &st) == nil && st.Ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("chromedriver not ready after 10s:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName": "chrome",
		"goog:chromeOptions": map[string]any{
			"binary": chromiumPath,
			"args": []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
				"--disable-background-networking", "--disable-component-update", "--disable-sync",
				"--user-data-dir=" + profile, "--window-size=1280,1200", "--hide-scrollbars"},
		},
	}}}
	var sess struct {
		SessionID string `json:"sessionId"`
	}
	if err := d.call("POST", "/session", caps, &sess); err != nil {
		t.Fatal(err)
	}
	d.session = sess.SessionID
	t.Cleanup(func() {
		if err := d.call("DELETE", "/session/"+d.session, nil, nil); err != nil {
			t.Errorf("delete session: %v", err)
		}
	})
	return d
}

// processesUsing lists the processes whose command line mentions dir.
func processesUsing(dir string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(dir)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pageState is what the status page shows, read from the DOM: the data-
// attributes its script keeps on <body> and on each chart.
type pageState struct {
	Title, Link, LinkText, Feed  string
	Updates, Ingested, Forwarded float64
	Backlog, DeadLetters         float64
	IngestPoints, IngestMax      float64
	ForwardMax, BacklogMax       float64
	StreamRows, DriverRows       float64
	DeadLetterRows, AlertRows    float64
}

const pageStateScript = `
const b = document.body.dataset, c = (id) => document.getElementById(id).dataset;
const n = (v) => Number(v || 0), rows = (id) => document.querySelectorAll('#' + id + ' tr').length;
return {Title: document.title, Link: b.link || '', LinkText: document.getElementById('link-state').textContent,
  Feed: document.getElementById('feed').textContent, Updates: n(b.updates), Ingested: n(b.ingested),
  Forwarded: n(b.forwarded), Backlog: n(b.backlog), DeadLetters: n(b.deadletters),
  IngestPoints: n(c('chart-ingest').points), IngestMax: n(c('chart-ingest').max),
  ForwardMax: n(c('chart-forward').max), BacklogMax: n(c('chart-backlog').max),
  StreamRows: rows('streams'), DriverRows: rows('drivers'), DeadLetterRows: rows('deadletters'),
  AlertRows: rows('alerts')};`

func (d *webDriver) state(t *testing.T) pageState {
	t.Helper()
	var st pageState
	if err := d.call("POST", "/session/"+d.session+"/execute/sync",
		map[string]any{"script": pageStateScript, "args": []any{}}, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// waitPage polls the page until cond holds.
func (d *webDriver) waitPage(t *testing.T, what string, cond func(pageState) bool) pageState {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := d.state(t)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status page: timed out waiting for %s; page: %+v", what, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestStatusPageBrowser loads the status page of a running gateway in
// headless Chromium and checks that its live charts follow the gateway
// through an outage: backlog up while the cloud is down, forwarded and
// drained when it returns, the dead letter of a bad payload listed.
func TestStatusPageBrowser(t *testing.T) {
	requireChromium(t) // before starting anything
	cloud := mqtttest.Start(t)
	statusAddr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	// A pipeline (for dead letters), a simulated sensor and a BME280 that
	// is not there (failing), so every section of the page has something.
	extra := `
pipelines:
  - name: hot
    input: {stream: telemetry, topics: ["sensors/#"], format: json}
    time: processing
    stages:
      - detect: {kind: threshold, field: p, raise_above: 0.5, clear_below: 0.2}
    outputs:
      - stream: alerts
drivers:
  - {name: wave, kind: sim, interval: 250ms, options: {signal: sine, min: 10, max: 20, period: 1m, quantity: temperature, unit: Cel}}
  - {name: air, kind: bme280, bus: "1", address: 0x76, interval: 1s}
`
	yaml, addr := testConfig(t, t.TempDir(), cloud.URL(), extra)
	yaml = strings.Replace(yaml, `listen: ""`, "listen: "+statusAddr, 1)
	// The pipeline reads telemetry; forward it raw as well.
	yaml = strings.Replace(yaml, "      stream: telemetry\n", "      stream: telemetry\n      forward: true\n", 1)
	runGateway(t, loadConfig(t, yaml))

	start := time.Now()
	d := startBrowser(t)
	t.Logf("chromium session up in %s", time.Since(start).Round(time.Millisecond))
	if err := d.call("POST", "/session/"+d.session+"/url", map[string]string{"url": "http://" + statusAddr + "/"}, nil); err != nil {
		t.Fatal(err)
	}
	s0 := d.waitPage(t, "the page live with the link up", func(s pageState) bool {
		return s.Link == "connected" && s.LinkText == "connected" && s.Feed == "live" && s.Updates >= 2
	})
	if s0.Title != "ferry status" || s0.DriverRows != 2 {
		t.Fatalf("page: %+v", s0)
	}

	cloud.Stop()
	d.waitPage(t, "the link down", func(s pageState) bool { return s.Link == "down" && s.LinkText == "down" })
	const pubs, each = 2, 100
	publishAll(t, addr, pubs, each)
	publishRaw(t, addr, "sensors/bad", "not json") // a dead letter
	d.waitPage(t, "ingest and backlog charts showing the events", func(s pageState) bool {
		return s.Ingested >= s0.Ingested+pubs*each+1 && s.Backlog >= pubs*each && s.BacklogMax >= pubs*each &&
			s.IngestPoints > s0.IngestPoints && s.IngestMax > 0
	})

	cloud.StartAgain()
	s1 := d.waitPage(t, "the events forwarded, the backlog drained, the dead letter and the alerts listed", func(s pageState) bool {
		return s.Link == "connected" && s.Forwarded >= s0.Forwarded+pubs*each+1 && s.ForwardMax > 0 &&
			s.Backlog < pubs*each && s.DeadLetters >= 1 && s.DeadLetterRows >= 1 && s.AlertRows >= 1
	})
	t.Logf("page after the outage: %+v", s1)

	var shot string
	if err := d.call("GET", "/session/"+d.session+"/screenshot", nil, &shot); err != nil {
		t.Fatal(err)
	}
	b, err := base64.StdEncoding.DecodeString(shot)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	// A blank or error page compresses to almost nothing and has a few
	// colours; the status page has text, badges and charts.
	colours := map[[4]uint32]bool{}
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y += 3 {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x += 3 {
			r, g, b, a := img.At(x, y).RGBA()
			colours[[4]uint32{r, g, b, a}] = true
		}
	}
	if sz := img.Bounds().Size(); len(b) < 20<<10 || sz.X < 800 || sz.Y < 600 || len(colours) < 50 {
		t.Fatalf("screenshot: %d bytes, %v, %d colours: not the page", len(b), sz, len(colours))
	}
	dirs := []string{t.TempDir()}
	if dir := os.Getenv("FERRY_SCREENSHOT_DIR"); dir != "" {
		dirs = append(dirs, dir)
	}
	for _, dir := range dirs {
		if err := os.WriteFile(filepath.Join(dir, "status-page.png"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshot %v, %d bytes, in %v", img.Bounds().Size(), len(b), dirs)
}

// publishRaw publishes one QoS 1 message and waits for its PUBACK.
func publishRaw(t *testing.T, addr, topic, payload string) {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("raw-publisher").SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(50)
	if tok := c.Publish(topic, 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}
