package gateway_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/gateway/opsapi"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// statusGateway runs a gateway with its status listener on a free port and
// extra config appended; it returns the gateway, the broker's and the
// listener's addresses.
func statusGateway(t *testing.T, extra string) (g *gateway.Gateway, brokerAddr, statusAddr string) {
	t.Helper()
	cloud := mqtttest.Start(t)
	statusAddr = fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	yaml, brokerAddr := testConfig(t, t.TempDir(), cloud.URL(), extra)
	yaml = strings.Replace(yaml, `listen: ""`, "listen: "+statusAddr, 1)
	g = runGateway(t, loadConfig(t, yaml))
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	waitUntil(t, 10*time.Second, "status listener", func() bool {
		resp, err := c.Get("http://" + statusAddr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return g, brokerAddr, statusAddr
}

// rawGet sends a GET for path with the given Host on a new connection and
// returns the connection and the response's status line and headers.
func rawGet(t *testing.T, addr, host, path string) (net.Conn, *http.Response) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s (Host %s): %v", path, host, err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, resp
}

// TestStatusHostGuard: a page whose DNS name was re-pointed at 127.0.0.1
// (DNS rebinding) gets no data from any endpoint that returns some; the
// probes that answer only ok/not-ok stay open.
func TestStatusHostGuard(t *testing.T) {
	_, _, addr := statusGateway(t, "")
	for _, tc := range []struct {
		path string
		open bool // answers a foreign Host too
	}{
		{"/status", false},
		{"/deadletters", false},
		{"/metrics", false},
		{"/events", false},
		{"/", false},
		{"/buffer/stats", false},
		{"/healthz", true},
		{"/readyz", true},
	} {
		t.Run("GET "+tc.path, func(t *testing.T) {
			c, resp := rawGet(t, addr, "rebind.evil.example", tc.path)
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			c.Close()
			if tc.open {
				if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
					t.Fatalf("%s with a foreign Host: %s", tc.path, resp.Status)
				}
				if len(body) > 64 {
					t.Fatalf("%s returns more than ok/not-ok: %q", tc.path, body)
				}
				return
			}
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("%s with Host rebind.evil.example: %s %q, want 403", tc.path, resp.Status, body)
			}
			// The same request by address is answered.
			c, resp = rawGet(t, addr, addr, tc.path)
			c.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s with Host %s: %s, want 200", tc.path, addr, resp.Status)
			}
		})
	}
}

// TestStatusConnectionCap: connections beyond StatusMaxConns are refused
// at once and counted, they cost no goroutine, and the slots come back
// when the connections go.
func TestStatusConnectionCap(t *testing.T) {
	g, _, addr := statusGateway(t, "")
	before := runtime.NumGoroutine()
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// Idle connections that have sent nothing yet: each holds a slot.
	for range opsapi.StatusMaxConns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	waitUntil(t, 5*time.Second, "every slot taken", func() bool {
		return g.Status().Listener.Conns == opsapi.StatusMaxConns
	})
	const extra = 200
	for i := range extra {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		// A refusal is written as soon as the listener's accept loop gets
		// the connection; a loaded CI machine once took over 5 s to run it.
		// A connection taken into a slot instead would get no 503 and
		// not be counted below.
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		// The 503 may be lost to the reset of a socket closed with our
		// request unread; a hang until the deadline is the failure.
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection %d over the cap: no answer within 30s", i)
		}
		if err == nil && !strings.Contains(line, "503") {
			t.Fatalf("connection %d over the cap: %q, want 503", i, line)
		}
	}
	waitUntil(t, 5*time.Second, "the refusals counted", func() bool {
		return g.Status().Listener.Refused >= extra
	})
	// 232 connections, 32 goroutines at most (plus a little slack for
	// the gateway's own ticking work).
	if grew := runtime.NumGoroutine() - before; grew > opsapi.StatusMaxConns+16 {
		t.Fatalf("goroutines grew by %d for %d connections; want at most %d", grew, opsapi.StatusMaxConns+extra, opsapi.StatusMaxConns+16)
	}
	for _, c := range held {
		c.Close()
	}
	held = nil
	waitUntil(t, 5*time.Second, "the slots freed", func() bool { return g.Status().Listener.Conns == 0 })
	_, resp := rawGet(t, addr, addr, "/metrics")
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		"ferry_status_max_connections " + strconv.Itoa(opsapi.StatusMaxConns),
		"ferry_status_refused_connections_total ",
		"ferry_status_connections 1",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestStatusIdleConnectionsClosed: a connection that sends nothing is
// closed after StatusReadHeaderTimeout, a kept-alive one after the idle
// timeout, so idle connections cannot pile up.
func TestStatusIdleConnectionsClosed(t *testing.T) {
	defer gateway.SetStatusIdleTimeout(time.Second)()
	g, _, addr := statusGateway(t, "")
	for _, tc := range []struct {
		name    string
		request bool
		within  time.Duration
	}{
		{"silent", false, opsapi.StatusReadHeaderTimeout + 3*time.Second},
		{"kept alive", true, 4 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			r := bufio.NewReader(c)
			if tc.request {
				fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
				resp, err := http.ReadResponse(r, nil)
				if err != nil || resp.StatusCode != http.StatusOK || resp.Close {
					t.Fatalf("kept-alive request: %v %v", resp, err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
			}
			_ = c.SetReadDeadline(time.Now().Add(tc.within))
			start := time.Now()
			_, err = r.ReadByte()
			if !errors.Is(err, io.EOF) {
				t.Fatalf("after %s the connection is still open (%v); want it closed by the server", time.Since(start).Round(time.Millisecond), err)
			}
		})
	}
	waitUntil(t, 5*time.Second, "no connection left", func() bool { return g.Status().Listener.Conns == 0 })
}

// sseOpen opens GET /events on a raw connection and returns it with the
// status code, having read no more than the status line's buffer; the
// caller reads the rest or does not.
func sseOpen(t *testing.T, addr string) (net.Conn, *bufio.Reader, int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	r := bufio.NewReaderSize(c, 512)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("GET /events: %v", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	code, _ := strconv.Atoi(strings.Fields(line + " x x")[1])
	return c, r, code
}

// TestSSEStalledClientFreesSlot: status page streams whose clients stop
// reading give their slots back (the issue: a stalled client held one of
// the 8 slots for about an hour and a half, its writes landing in kernel
// buffers), and a refused stream is counted.
func TestSSEStalledClientFreesSlot(t *testing.T) {
	const lifetime = 2 * time.Second
	defer gateway.SetSSEMaxLifetime(lifetime)()
	g, _, addr := statusGateway(t, "")
	// Eight clients that read nothing after the status line: all slots.
	opened := time.Now()
	for i := range 8 {
		if _, _, code := sseOpen(t, addr); code != http.StatusOK {
			t.Fatalf("stalled client %d: %d", i, code)
		}
	}
	if _, _, code := sseOpen(t, addr); code != http.StatusServiceUnavailable {
		t.Fatalf("a ninth stream: %d, want 503 (8 slots)", code)
	}
	waitUntil(t, lifetime+5*time.Second, "the 8 stalled streams ended", func() bool {
		return g.Status().Listener.StreamsExpired == 8
	})
	if took := time.Since(opened); took < lifetime {
		t.Fatalf("streams ended after %s, before their lifetime %s", took, lifetime)
	}
	c, r, code := sseOpen(t, addr)
	defer c.Close()
	if code != http.StatusOK {
		t.Fatalf("a new stream after the stalled ones ended: %d, want 200", code)
	}
	// The new stream is served: its first status event arrives.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("new stream: %v", err)
		}
		if strings.HasPrefix(line, "event: status") {
			break
		}
	}
	if st := g.Status().Listener; st.StreamsRefused != 1 {
		t.Fatalf("streams refused: %d, want 1", st.StreamsRefused)
	}
}

// TestDeadLettersPaged: 300 undecodable payloads of 10 KB into a JSON
// pipeline keep 4 KiB each (with their size and a truncated flag), and
// GET /deadletters answers in bounded pages, n capped, with a cursor that
// reaches every one of them.
func TestDeadLettersPaged(t *testing.T) {
	g, brokerAddr, addr := statusGateway(t, `
pipelines:
  - name: decode
    input: {format: json}
    stages: [{filter: "true"}]
    outputs: [{stream: results}]
`)
	pub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + brokerAddr).SetClientID("junk-1"))
	if tok := pub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer pub.Disconnect(50)
	const n, size = 300, 10_000
	junk := strings.Repeat("\x01not json ", size/10)
	for i := range n {
		if tok := pub.Publish("sensors/junk-1/x", 1, false, fmt.Sprintf("%05d", i)+junk[5:]); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	waitUntil(t, 20*time.Second, "every payload dead-lettered", func() bool {
		st := g.Status()
		return len(st.Pipelines) == 1 && st.Pipelines[0].DeadLetters == n
	})
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(q string) ([]opsapi.DeadLetter, string, int) {
		t.Helper()
		resp, err := c.Get("http://" + addr + "/deadletters?" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if len(body) > opsapi.DeadLettersPageBytes+16<<10 {
			t.Fatalf("/deadletters?%s: %d bytes, want at most a page (%d)", q, len(body), opsapi.DeadLettersPageBytes)
		}
		var page []opsapi.DeadLetter
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(body, &page); err != nil {
				t.Fatal(err)
			}
		}
		return page, resp.Header.Get(opsapi.DeadLettersNextHeader), resp.StatusCode
	}
	t.Run("bad n", func(t *testing.T) {
		for _, q := range []string{"n=0", "n=x", "from=-1", "from=x"} {
			if _, _, code := get(q); code != http.StatusBadRequest {
				t.Errorf("%s: %d, want 400", q, code)
			}
		}
	})
	t.Run("newest, n capped", func(t *testing.T) {
		page, _, code := get("n=1000")
		if code != http.StatusOK || len(page) == 0 || len(page) > opsapi.DeadLettersMax {
			t.Fatalf("n=1000: %d, %d dead letters; want 1 to %d", code, len(page), opsapi.DeadLettersMax)
		}
	})
	t.Run("all pages", func(t *testing.T) {
		seen := map[uint64]bool{}
		next, pages := "0", 0
		for next != "" {
			page, nx, code := get("n=1000&from=" + next)
			if code != http.StatusOK {
				t.Fatalf("from=%s: %d", next, code)
			}
			pages++
			for _, d := range page {
				if seen[d.Offset] {
					t.Fatalf("offset %d twice", d.Offset)
				}
				seen[d.Offset] = true
				if d.Size != size || !d.Truncated || len(d.Payload) != int(config.DefaultDeadLetterMaxPayload) || d.Reason == "" {
					t.Fatalf("dead letter %d: size %d, truncated %v, %d payload bytes, reason %q; want %d, true, %d, a reason",
						d.Offset, d.Size, d.Truncated, len(d.Payload), d.Reason, size, config.DefaultDeadLetterMaxPayload)
				}
			}
			next = nx
		}
		if len(seen) != n || pages < 3 {
			t.Fatalf("%d dead letters in %d pages, want %d in 3 or more", len(seen), pages, n)
		}
	})
	t.Run("stored bounded", func(t *testing.T) {
		// What the buffer holds, not only what a page shows, read
		// through /buffer/peek, itself paged by size.
		stored, pages := 0, 0
		for from := uint64(1); from != 0; pages++ {
			resp, err := c.Get(fmt.Sprintf("http://%s/buffer/peek?stream=deadletter&n=1000&from=%d", addr, from))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if len(body) > opsapi.PeekPageBytes+16<<10 {
				t.Fatalf("peek from %d: %d bytes, want at most a page (%d)", from, len(body), opsapi.PeekPageBytes)
			}
			var p opsapi.Peek
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatal(err)
			}
			for _, e := range p.Events {
				if e.Size != int(config.DefaultDeadLetterMaxPayload) || e.Attrs["original_size"] != strconv.Itoa(size) || e.Attrs["truncated"] != "true" {
					t.Fatalf("stored dead letter %d: %d payload bytes, attrs %v; want %d bytes, original_size %d, truncated",
						e.Offset, e.Size, e.Attrs, config.DefaultDeadLetterMaxPayload, size)
				}
			}
			stored += len(p.Events)
			from = p.NextFrom
		}
		if stored != n || pages < 2 {
			t.Fatalf("%d dead letters stored in %d peek pages, want %d in 2 or more", stored, pages, n)
		}
	})
	t.Run("host guard", func(t *testing.T) {
		c, resp := rawGet(t, addr, "rebind.evil.example", "/deadletters")
		c.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("%s", resp.Status)
		}
	})
}

// TestReloadTooLargeConfig: POST /reload of a config file over
// config.MaxFileSize is refused with the file's size, reads no more than
// the cap, and the gateway goes on with its configuration.
func TestReloadTooLargeConfig(t *testing.T) {
	cloud := mqtttest.Start(t)
	dir := t.TempDir()
	statusAddr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	yaml, _ := testConfig(t, filepath.Join(dir, "data"), cloud.URL(), "")
	yaml = strings.Replace(yaml, `listen: ""`, "listen: "+statusAddr, 1)
	path := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(cfg, nil, gateway.WithReload(func() (*config.Config, error) { return config.Load(path) }))
	if err != nil {
		t.Fatal(err)
	}
	runGatewayInstance(t, g)
	// 26 MB: the reload that left the gateway at 1.69 GB.
	big := []byte(yaml + "\n#" + strings.Repeat("x", 26<<20) + "\n")
	if err := os.WriteFile(path, big, 0o600); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	waitUntil(t, 10*time.Second, "status listener", func() bool {
		resp, err := c.Get("http://" + statusAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	allocBefore := ms.TotalAlloc
	resp, err := c.Post("http://"+statusAddr+"/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var res opsapi.OpResult
	_ = json.NewDecoder(resp.Body).Decode(&res)
	resp.Body.Close()
	runtime.ReadMemStats(&ms)
	if resp.StatusCode != http.StatusConflict || res.OK || !strings.Contains(res.Error, path) || !strings.Contains(res.Error, strconv.Itoa(len(big))) {
		t.Fatalf("reload of a %d-byte config: %d %+v; want 409 naming the file and its size", len(big), resp.StatusCode, res)
	}
	if alloc := ms.TotalAlloc - allocBefore; alloc > 4<<20 {
		t.Fatalf("the refused reload allocated %d bytes; want under 4 MiB", alloc)
	}
	if err := g.Ready(); err != nil {
		t.Fatalf("gateway after the refused reload: %v", err)
	}
}
