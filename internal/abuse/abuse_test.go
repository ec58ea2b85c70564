package abuse

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestAbuse is issue 12's black-box attack, one subtest per attack. Each
// runs its own cloud and ferry (peak RSS is per process) and, after the
// attack, checks the invariants (env.checkInvariants) besides the
// attack's own refusal.
func TestAbuse(t *testing.T) {
	if testing.Short() {
		t.Skip("black-box attacks on the real binary; make test-abuse")
	}
	for _, tc := range []struct {
		name   string
		opts   options
		attack func(t *testing.T, e *env)
	}{
		// Past the ACL.
		{"will to a forbidden topic", options{}, attackWill},
		{"topic alias of a denied publish", options{}, attackAlias},
		{"client ID takeover of a live session", options{}, attackTakeoverLive},
		{"client ID takeover of an offline session", options{}, attackTakeoverOffline},
		{"queued messages after the ACL changed", options{}, attackQueuedAfterReload},
		{"user named %c", options{}, attackPercentUser},
		{"20 concurrent correct logins", options{}, attackConcurrentLogins},
		{"subscribe #, $SYS and $share", options{}, attackDenials},
		{"denied subscriptions after a restart", options{}, attackDeniedSubsRestart},
		// Stopping the uplink.
		{"poison client IDs", options{}, attackPoisonClientIDs},
		// Memory and disk.
		{"CONNECT declaring 262143 bytes", options{}, attackPreConnect},
		{"offline persistent sessions flood", options{}, attackSessions},
		{"subscriptions flood", options{}, attackSubscriptions},
		{"retained flood", options{}, attackRetained},
		{"dead-letter flood", options{}, attackDeadLetters},
		{"ACL-denied big publishes log", options{}, attackDeniedLog},
		{"big config", options{}, attackBigConfig},
		{"idle HTTP and stalled SSE", options{}, attackHTTPIdle},
		{"shared stream flood while the cloud is down", options{
			cloudDown: true,
			buffer:    "  min_free_disk: 1MiB\n  streams:\n    - name: telemetry\n      max_bytes: 4MiB\n",
		}, attackSharedStream},
		{"Host rebind on every data endpoint", options{}, attackHostRebind},
		// What held on main; kept so it keeps holding.
		{"fuzzed and malformed packets", options{}, attackFuzz},
		{"brute force from one address", options{}, attackBruteForce},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			e := newEnv(t, tc.opts)
			tc.attack(t, e)
			e.checkInvariants()
			t.Logf("took %v", time.Since(start).Round(100*time.Millisecond))
		})
	}
}

// mallory connects as mallory with client ID id (MQTT 5).
func mallory(t *testing.T, e *env, id string, o connectOpts) (*rawClient, bool, byte) {
	t.Helper()
	c, err := dialRaw(e.brokerAddr, "")
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(c.drop)
	o.v5, o.clientID, o.user, o.pass = true, id, "mallory", users["mallory"]
	present, code, err := c.connect(o)
	if err != nil {
		// A connection closed before CONNACK is a refusal too.
		return c, false, 0xff
	}
	return c, present, code
}

// connectMallory is mallory with a fresh clean session that must succeed.
func connectMallory(t *testing.T, e *env, id string) *rawClient {
	t.Helper()
	c, _, code := mallory(t, e, id, connectOpts{clean: true})
	if code != 0 {
		t.Fatalf("mallory (%q) could not connect: reason 0x%02x", id, code)
	}
	return c
}

func attackWill(t *testing.T, e *env) {
	for _, tc := range []struct {
		name, topic string
		retain      bool
		v5          bool
	}{
		{"command v5", "cmd/actuator-1", false, true},
		{"command v3", "cmd/actuator-1", false, false},
		{"retained status of another sensor", "sensors/sensor1/status", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dialRaw(e.brokerAddr, "")
			if err != nil {
				t.Fatal(err)
			}
			defer c.drop()
			_, code, err := c.connect(connectOpts{v5: tc.v5, clientID: "mallory-will", user: "mallory", pass: users["mallory"],
				clean: true, willTopic: tc.topic, willPayload: []byte(marker + " by mallory: OPEN VALVE"), willQoS: 1, willRetain: tc.retain})
			if err == nil && code == 0 {
				t.Errorf("CONNECT with a will on %s (mallory may not publish there) accepted; want refused (0x87 / v3 5)", tc.topic)
			}
			c.drop() // no DISCONNECT: the will would fire now
		})
	}
	// Showing that something does NOT happen needs a wait.
	time.Sleep(1500 * time.Millisecond)
	late, err := dialRaw(e.brokerAddr, "")
	if err != nil {
		t.Fatal(err)
	}
	defer late.drop()
	if _, code, err := late.connect(connectOpts{v5: true, clientID: "dash-late", user: "dash", pass: users["dash"], clean: true}); err != nil || code != 0 {
		t.Fatalf("dash: %v 0x%02x", err, code)
	}
	if _, err := late.subscribe(1, "sensors/sensor1/status"); err != nil {
		t.Fatal(err)
	}
	for _, p := range late.drain(time.Second) {
		if bytes.Contains(p.payload, []byte(marker)) {
			t.Errorf("a later subscriber got mallory's retained will on %s", p.topic)
		}
	}
}

func attackAlias(t *testing.T, e *env) {
	c := connectMallory(t, e, "mallory-alias")
	forged := []byte(marker + " via alias")
	// Alias 1 set by a denied publish, then used with an empty topic.
	if code, err := c.publishQoS1("cmd/actuator-1", forged, false, 1, 1); err == nil && code < 0x80 {
		t.Errorf("publish to cmd/actuator-1: reason 0x%02x, want ≥ 0x80", code)
	}
	if code, err := c.publishQoS1("", forged, false, 2, 1); err == nil && code < 0x80 {
		t.Errorf("publish by alias 1 (set on cmd/actuator-1): reason 0x%02x, want ≥ 0x80 or disconnect", code)
	}
	// Alias 2 set on an allowed topic, re-pointed by a denied publish.
	c = connectMallory(t, e, "mallory-alias2")
	if code, err := c.publishQoS1("sensors/mallory/a", []byte(`{"ok":1}`), false, 1, 2); err != nil || code >= 0x80 {
		t.Fatalf("allowed publish with alias: %v 0x%02x", err, code)
	}
	if code, err := c.publishQoS1("sensors/sensor1/seq", forged, false, 2, 2); err == nil && code < 0x80 {
		t.Errorf("publish to sensors/sensor1/seq: reason 0x%02x, want ≥ 0x80", code)
	}
	// Allowed only if alias 2 still means sensors/mallory/a: the probe
	// (no marker: mallory may publish there) must arrive from that topic.
	if code, err := c.publishQoS1("", []byte(`{"probe":"alias2"}`), false, 3, 2); err == nil && code < 0x80 {
		var topic string
		if !waitUntil(20*time.Second, func() bool { topic = e.cloudRec.originalTopic(`"probe":"alias2"`); return topic != "" }) {
			t.Errorf("publish by alias 2 acknowledged (0x%02x) but never reached the cloud", code)
		} else if topic != "sensors/mallory/a" {
			t.Errorf("publish by alias 2 after a denied re-point went to %s; want sensors/mallory/a or refused", topic)
		}
	}
}

func attackTakeoverLive(t *testing.T, e *env) {
	lost := e.sensor.lostCount()
	took := 0
	for i := 0; i < 30; i++ {
		c, _, code := mallory(t, e, "sensor1", connectOpts{clean: true})
		if code == 0 {
			took++
		}
		c.drop()
	}
	if took > 0 {
		t.Errorf("mallory logged in as client ID sensor1 (sensor1's session) %d of 30 times; want refused", took)
	}
	if n := e.sensor.lostCount() - lost; n > 0 {
		t.Errorf("the sensor was disconnected %d times during the takeover attempts", n)
	}
}

func attackTakeoverOffline(t *testing.T, e *env) {
	d, err := dialRaw(e.brokerAddr, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, code, err := d.connect(connectOpts{v5: true, clientID: "dash-1", user: "dash", pass: users["dash"], expiry: 3600}); err != nil || code != 0 {
		t.Fatalf("dash: %v 0x%02x", err, code)
	}
	if codes, err := d.subscribe(1, "sensors/sensor1/#"); err != nil || len(codes) != 1 || codes[0] >= 0x80 {
		t.Fatalf("dash subscribe: %v %x", err, codes)
	}
	d.disconnect()
	// 32 readings queue up for dash's offline session.
	e.sensor.waitAcked(t, e.sensor.ackedCount()+32, 20*time.Second)
	c, present, code := mallory(t, e, "dash-1", connectOpts{expiry: 3600})
	if code == 0 {
		if present {
			t.Errorf("mallory resumed dash's session (session present)")
		}
		if pubs := c.drain(1500 * time.Millisecond); len(pubs) > 0 {
			t.Errorf("mallory got %d of dash's messages (first on %s)", len(pubs), pubs[0].topic)
		}
	}
	c.drop()
	// dash still owns her session.
	d, err = dialRaw(e.brokerAddr, "")
	if err != nil {
		t.Fatal(err)
	}
	defer d.drop()
	present, code, err = d.connect(connectOpts{v5: true, clientID: "dash-1", user: "dash", pass: users["dash"], expiry: 3600})
	if err != nil || code != 0 {
		t.Fatalf("dash back: %v 0x%02x", err, code)
	}
	if !present {
		t.Errorf("dash's session is gone after mallory's attempt")
	}
}

func attackQueuedAfterReload(t *testing.T, e *env) {
	d, err := dialRaw(e.brokerAddr, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, code, err := d.connect(connectOpts{v5: true, clientID: "dash-q", user: "dash", pass: users["dash"], expiry: 3600}); err != nil || code != 0 {
		t.Fatalf("dash: %v 0x%02x", err, code)
	}
	if codes, err := d.subscribe(1, "sensors/sensor1/#"); err != nil || len(codes) != 1 || codes[0] >= 0x80 {
		t.Fatalf("dash subscribe: %v %x", err, codes)
	}
	d.disconnect()
	e.sensor.waitAcked(t, e.sensor.ackedCount()+10, 20*time.Second)
	// mallory's will is allowed at CONNECT, denied by the time it is sent.
	w, err := dialRaw(e.brokerAddr, "")
	if err != nil {
		t.Fatal(err)
	}
	defer w.drop()
	if _, code, err := w.connect(connectOpts{v5: true, clientID: "mallory-w", user: "mallory", pass: users["mallory"], clean: true,
		willTopic: "sensors/mallory/will", willPayload: []byte(marker + " will after the ACL changed"), willQoS: 1}); err != nil || code != 0 {
		t.Fatalf("mallory with an allowed will: %v 0x%02x", err, code)
	}
	// mallory may still read her own topics after the change: she would
	// see the will if it were sent.
	watch := connectMallory(t, e, "mallory-watch")
	if codes, err := watch.subscribe(1, "sensors/mallory/will"); err != nil || len(codes) != 1 || codes[0] >= 0x80 {
		t.Fatalf("mallory subscribe: %v %x", err, codes)
	}
	// dash loses sensors/#: the "*" rule applies to her now; mallory may
	// publish nothing.
	reload := func(yaml string) {
		t.Helper()
		if err := os.WriteFile(e.cfgPath, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		resp, err := http.Post("http://"+e.statusAddr+"/reload", "", nil)
		if err != nil {
			t.Fatalf("POST /reload: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST /reload: %s", resp.Status)
		}
	}
	reload(strings.Replace(e.yaml, "    - user: dash\n      subscribe: [\"sensors/#\"]\n",
		"    - user: mallory\n      subscribe: [\"sensors/mallory/#\"]\n", 1))
	defer reload(e.yaml)
	w.drop() // the will would be sent now
	d, err = dialRaw(e.brokerAddr, "")
	if err != nil {
		t.Fatal(err)
	}
	defer d.drop()
	if _, code, err := d.connect(connectOpts{v5: true, clientID: "dash-q", user: "dash", pass: users["dash"], expiry: 3600}); err != nil || code != 0 {
		t.Fatalf("dash back: %v 0x%02x", err, code)
	}
	if pubs := d.drain(1500 * time.Millisecond); len(pubs) > 0 {
		t.Errorf("dash got %d queued messages on %s that the ACL no longer allows her", len(pubs), pubs[0].topic)
	}
	for _, p := range watch.drain(100 * time.Millisecond) {
		if bytes.Contains(p.payload, []byte(marker)) {
			t.Errorf("mallory's will was sent on %s after the ACL stopped allowing it", p.topic)
		}
	}
}

func attackPercentUser(t *testing.T, e *env) {
	dir := t.TempDir()
	for _, name := range []string{"%c", "%u", "x%c", "a+b", "a#", "a/b"} {
		f := filepath.Join(dir, "users")
		if out, err := passwd(f, name, "pw"); err == nil {
			t.Errorf("ferry passwd accepted user %q; want refused (ACL pattern characters)\n%s", name, out)
		}
	}
	// A users file edited by hand: refused at load (ferry check loads it as
	// ferry run does).
	b, err := os.ReadFile(usersFile)
	if err != nil {
		t.Fatal(err)
	}
	var hash string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "mallory:") {
			hash = strings.TrimPrefix(l, "mallory:")
		}
	}
	bad := filepath.Join(dir, "users-bad")
	if err := os.WriteFile(bad, []byte(string(b)+"%c:"+hash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(cfg, []byte(strings.Replace(e.yaml, usersFile, bad, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(ferryBin, "check", "-c", cfg).CombinedOutput()
	if err == nil {
		t.Errorf("ferry check accepted a users file with user %%c:\n%s", out)
	} else if !strings.Contains(string(out), "users_file") {
		t.Errorf("ferry check refused, but not naming broker.users_file:\n%s", out)
	}
}

func attackConcurrentLogins(t *testing.T, e *env) {
	var wg sync.WaitGroup
	codes := make([]int, 20)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialRaw(e.brokerAddr, "")
			if err != nil {
				codes[i] = -1
				return
			}
			defer c.drop()
			_, code, err := c.connect(connectOpts{v5: true, clientID: fmt.Sprintf("mallory-c%d", i), user: "mallory", pass: users["mallory"], clean: true})
			if err != nil {
				codes[i] = -1
				return
			}
			codes[i] = int(code)
		}()
	}
	wg.Wait()
	refused := 0
	for _, c := range codes {
		if c != 0 {
			refused++
		}
	}
	if refused > 0 {
		t.Errorf("%d of 20 concurrent correct logins refused: %v", refused, codes)
	}
	c, _, code := mallory(t, e, "mallory-after", connectOpts{clean: true})
	c.drop()
	if code != 0 {
		t.Errorf("a correct login after the burst: reason 0x%02x (address blocked?)", code)
	}
}

func attackDenials(t *testing.T, e *env) {
	c := connectMallory(t, e, "mallory-sub")
	for i, f := range []string{"#", "+/#", "$SYS/#", "$share/g/sensors/#", "$share/g/#", "sensors/#", "sensors/+/seq", "sensors/sensor1/#", "cmd/actuator-1"} {
		codes, err := c.subscribe(uint16(i+1), f)
		if err != nil {
			t.Fatalf("subscribe %s: %v", f, err)
		}
		if len(codes) != 1 || codes[0] < 0x80 {
			t.Errorf("mallory's subscription to %q granted (%x); want 0x87", f, codes)
		}
	}
	// The sensor publishes every 20 ms: a leak would show within a second.
	if pubs := c.drain(1500 * time.Millisecond); len(pubs) > 0 {
		t.Errorf("mallory received %d messages, first on %s", len(pubs), pubs[0].topic)
	}
}

func attackDeniedSubsRestart(t *testing.T, e *env) {
	// A persistent session asks for what it may not have; the session is
	// stored and loaded again at start.
	c, _, code := mallory(t, e, "mallory-persist", connectOpts{expiry: 3600})
	if code != 0 {
		t.Fatalf("mallory: 0x%02x", code)
	}
	for i, f := range []string{"#", "sensors/sensor1/#", "cmd/actuator-1"} {
		if codes, err := c.subscribe(uint16(i+1), f); err != nil || len(codes) != 1 || codes[0] < 0x80 {
			t.Errorf("subscription to %q: %v %x; want refused", f, err, codes)
		}
	}
	c.disconnect()
	e.restart()
	c, _, code = mallory(t, e, "mallory-persist", connectOpts{expiry: 3600})
	if code != 0 {
		t.Fatalf("mallory back: 0x%02x", code)
	}
	// The sensor publishes every 20 ms.
	if pubs := c.drain(1500 * time.Millisecond); len(pubs) > 0 {
		t.Errorf("after a restart mallory's session received %d messages (first on %s) from subscriptions that were refused", len(pubs), pubs[0].topic)
	}
}

func attackPoisonClientIDs(t *testing.T, e *env) {
	accepted := 0
	for _, id := range []string{"evil\x01", "evil\uFFFF", "evil\x7f", "evil/+/#", strings.Repeat("B", 4000), strings.Repeat("A", 65530)} {
		c, _, code := mallory(t, e, id, connectOpts{clean: true})
		if code != 0 {
			t.Logf("client ID %q… (%d bytes) refused at CONNECT: 0x%02x", id[:min(len(id), 8)], len(id), code)
			c.drop()
			continue
		}
		if rc, err := c.publishQoS1("sensors/mallory/poison", []byte(`{"poison":true}`), false, 1, 0); err != nil {
			t.Errorf("poison publish from %q…: %v", id[:min(len(id), 8)], err)
		} else if rc < 0x80 {
			accepted++
		}
		c.disconnect()
	}
	// Each accepted one reaches the cloud under a valid topic, or is
	// isolated as poison and counted; none is lost silently.
	var atCloud, poison float64
	if !waitUntil(30*time.Second, func() bool {
		atCloud = float64(e.cloudRec.countContaining(`"poison":true`))
		poison = e.metricWith("ferry_uplink_dropped_events_total", `reason="poison"`)
		return atCloud+poison >= float64(accepted)
	}) {
		t.Errorf("of %d poison events acknowledged, %v reached the cloud and %v were counted as poison", accepted, atCloud, poison)
	}
	t.Logf("%d poison events: %v at the cloud, %v dead-lettered as poison", accepted, atCloud, poison)
	// Poison costs a bounded number of reconnects, not one per resend.
	if n, _ := e.metric("ferry_uplink_reconnects_total"); n > 3*float64(accepted) {
		t.Errorf("the uplink reconnected %v times for %d poison events", n, accepted)
	}
	// The stream must go on: checkInvariants waits for every reading the
	// sensor got acknowledged after these. Error lines stay short.
	e.sensor.waitAcked(t, e.sensor.ackedCount()+20, 20*time.Second)
	if n := maxLineLen(e.logBytes()); n > 16<<10 {
		t.Errorf("longest log line %d bytes; want ≤ 16 KiB", n)
	}
}

func attackPreConnect(t *testing.T, e *env) {
	const conns, send, declared = 1500, 250 << 10, 262143
	hdr := appendVarint([]byte{ptConnect << 4}, declared)
	chunk := make([]byte, 16<<10)
	var mu sync.Mutex
	var open []net.Conn
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var sent atomic.Int64
	for i := 0; i < conns; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", e.brokerAddr, 5*time.Second)
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			_ = c.SetWriteDeadline(time.Now().Add(3 * time.Second))
			if _, err := c.Write(hdr); err != nil {
				return
			}
			for n := 0; n < send; n += len(chunk) {
				m, err := c.Write(chunk)
				sent.Add(int64(m))
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d connections, %d MiB sent of declared CONNECTs", len(open), sent.Load()>>20)
	e.alive()
	if hwm := e.noteHWM(e.cmdNow()); hwm > rssLimit {
		t.Errorf("peak RSS %.1f MiB while %d connections held partial CONNECTs; want ≤ 64 MiB", mib(hwm), len(open))
	}
	// A CONNECT declaring 262,143 bytes is over any sane CONNECT maximum:
	// every such connection is closed, promptly.
	stillOpen := 0
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 512)
	for _, c := range open {
		_ = c.SetReadDeadline(deadline)
		for {
			if _, err := c.Read(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					stillOpen++
				}
				break
			}
		}
		c.Close()
	}
	if stillOpen > 0 {
		t.Errorf("%d of %d connections with a 262,143-byte CONNECT still open after 10 s; want closed", stillOpen, len(open))
	}
	e.requireCounted(t, "connect_too_large", "connect_refused")
}

// cmdNow is the running ferry process.
func (e *env) cmdNow() *exec.Cmd {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cmd
}

// pipelinePublish publishes n QoS 1 messages keeping up to 16 in flight
// and returns how many PUBACKs carried a refusal (≥ 0x80).
func pipelinePublish(t *testing.T, c *rawClient, n int, topic func(i int) string, payload []byte, retain bool) (refused int, err error) {
	t.Helper()
	inflight := 0
	pid := uint16(0)
	for i := 0; i < n || inflight > 0; {
		if i < n && inflight < 16 {
			pid++
			if pid == 0 {
				pid = 1
			}
			if err := c.write(publishPacket(c.v5, topic(i), payload, 1, retain, pid, 0)); err != nil {
				return refused, err
			}
			inflight++
			i++
			continue
		}
		body, err := c.waitFor(ptPuback, 20*time.Second)
		if err != nil {
			return refused, err
		}
		inflight--
		if len(body) > 2 && body[2] >= 0x80 {
			refused++
		}
	}
	return refused, nil
}

func attackSessions(t *testing.T, e *env) {
	// More offline sessions than the default budget keeps (256), each
	// asking never to expire, 32 queued messages of 8 KiB for each.
	const sessions, msgs = 300, 32
	var wg sync.WaitGroup
	var refused, made, forever atomic.Int32
	sem := make(chan struct{}, 8)
	for i := 0; i < sessions; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dialRaw(e.brokerAddr, "")
			if err != nil {
				return
			}
			defer c.drop()
			_, code, err := c.connect(connectOpts{v5: true, clientID: fmt.Sprintf("mallory-s%d", i), user: "mallory", pass: users["mallory"], expiry: 0xFFFFFFFF})
			if err != nil || code != 0 {
				refused.Add(1)
				return
			}
			if exp, ok := c.connackProps[0x11]; !ok || exp == 0xFFFFFFFF {
				forever.Add(1) // the server did not lower "never expires"
			}
			if codes, err := c.subscribe(1, "sensors/mallory/flood"); err != nil || len(codes) != 1 || codes[0] >= 0x80 {
				refused.Add(1)
				return
			}
			made.Add(1)
			c.disconnect()
		}()
	}
	wg.Wait()
	t.Logf("%d offline sessions made, %d refused", made.Load(), refused.Load())
	if n := forever.Load(); n > 0 {
		t.Errorf("%d sessions asking never to expire were not given a session expiry (CONNACK property 0x11)", n)
	}
	// An online subscriber tells when the fan-out is done.
	live := connectMallory(t, e, "mallory-live")
	if _, err := live.subscribe(1, "sensors/mallory/flood"); err != nil {
		t.Fatal(err)
	}
	pub := connectMallory(t, e, "mallory-pub")
	if _, err := pipelinePublish(t, pub, msgs, func(int) string { return "sensors/mallory/flood" }, bytes.Repeat([]byte("s"), 8<<10), false); err != nil {
		t.Fatalf("flood: %v", err)
	}
	// The fan-out happens before each PUBACK; the live subscriber gets
	// what the budget left room for.
	t.Logf("a live subscriber got %d of %d", len(live.drain(500*time.Millisecond)), msgs)
	live.drop()
	e.requireCounted(t, "queue_dropped")
	e.requireCounted(t, "sessions_refused")
	before := e.noteHWM(e.cmdNow())
	e.restart()
	e.sensor.waitAcked(t, e.sensor.ackedCount()+3, 20*time.Second)
	t.Logf("peak RSS before restart %.1f MiB, after %.1f MiB", mib(before), mib(vmHWM(e.pid())))
	if fi, err := os.Stat(filepath.Join(e.dir, "data", "sessions.db")); err == nil && fi.Size() > 64<<20 {
		t.Errorf("sessions.db is %d MiB; want ≤ 64 MiB", fi.Size()>>20)
	}
}

func attackSubscriptions(t *testing.T, e *env) {
	const clients, perClient, perPacket = 3, 10000, 100
	pad := strings.Repeat("p", 150)
	refused, closed := 0, 0
	for k := 0; k < clients; k++ {
		c, _, code := mallory(t, e, fmt.Sprintf("mallory-subs%d", k), connectOpts{expiry: 0xFFFFFFFF})
		if code != 0 {
			refused += perClient
			continue
		}
		for i := 0; i < perClient; i += perPacket {
			fs := make([]string, perPacket)
			for j := range fs {
				fs[j] = fmt.Sprintf("sensors/mallory/%s/%d/%d", pad, k, i+j)
			}
			codes, err := c.subscribe(uint16(i/perPacket+1), fs...)
			if err != nil {
				closed++
				break
			}
			for _, cd := range codes {
				if cd >= 0x80 {
					refused++
				}
			}
		}
		c.drop()
	}
	t.Logf("%d subscriptions refused, %d clients disconnected", refused, closed)
	if refused == 0 && closed == 0 {
		t.Errorf("all %d subscriptions granted; want refusals (0x97) beyond the per-client and total limits", clients*perClient)
	}
	e.requireCounted(t, "subscriptions_refused")
	e.restart()
}

func attackRetained(t *testing.T, e *env) {
	const n = 10000
	c := connectMallory(t, e, "mallory-ret")
	payload := bytes.Repeat([]byte("r"), 1<<10)
	refused, err := pipelinePublish(t, c, n, func(i int) string { return fmt.Sprintf("sensors/mallory/r/%d", i) }, payload, true)
	if err != nil {
		t.Logf("retained flood ended: %v", err)
	}
	c.drop()
	late := connectMallory(t, e, "mallory-ret-late")
	if _, err := late.subscribe(1, "sensors/mallory/r/#"); err != nil {
		t.Fatal(err)
	}
	got := 0
	waitUntil(30*time.Second, func() bool {
		before := len(late.pubs)
		late.drain(500 * time.Millisecond)
		got = len(late.pubs)
		return got == before && got > 0
	})
	late.drop()
	t.Logf("%d retained publishes refused; a later subscriber got %d retained", refused, got)
	if refused == 0 && got >= n {
		t.Errorf("all %d retained messages kept; want a retained budget", n)
	}
	e.requireCounted(t, "retained_refused")
	e.restart()
}

func attackDeadLetters(t *testing.T, e *env) {
	const n = 200
	c := connectMallory(t, e, "mallory-dl")
	undecodable := bytes.Repeat([]byte("{"), 250<<10)
	if _, err := pipelinePublish(t, c, n, func(int) string { return "sensors/mallory/json/x" }, undecodable, false); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if !waitUntil(60*time.Second, func() bool {
		v, _ := e.metric("ferry_pipeline_dead_letters_total")
		return v >= n
	}) {
		v, ok := e.metric("ferry_pipeline_dead_letters_total")
		t.Errorf("dead letters counted: %v (present %v), want ≥ %d", v, ok, n)
	}
	code, _, size, err := e.getBody("/deadletters?n=1000", "", 1<<10)
	if err != nil {
		t.Fatalf("GET /deadletters: %v", err)
	}
	t.Logf("GET /deadletters?n=1000: %d, %d bytes", code, size)
	if code >= 500 {
		t.Errorf("GET /deadletters?n=1000: %d", code)
	}
	if size > 8<<20 {
		t.Errorf("GET /deadletters?n=1000 answered %d MiB; want a bounded page (≤ 8 MiB)", size>>20)
	}
}

func attackDeniedLog(t *testing.T, e *env) {
	const n = 80
	before := int64(len(e.logBytes()))
	payload := bytes.Repeat([]byte(marker+"-PAYLOAD-"), (250<<10)/15)
	denied := 0
	for i := 0; i < n; i++ {
		// MQTT 5 gets PUBACK 0x87; 3.1.1 is disconnected: both paths.
		c, err := dialRaw(e.brokerAddr, "")
		if err != nil {
			t.Fatal(err)
		}
		_, code, err := c.connect(connectOpts{v5: i%2 == 0, clientID: fmt.Sprintf("mallory-d%d", i), user: "mallory", pass: users["mallory"], clean: true})
		if err != nil || code != 0 {
			t.Fatalf("mallory: %v 0x%02x", err, code)
		}
		if rc, err := c.publishQoS1("cmd/actuator-1", payload, false, 1, 0); err != nil || rc >= 0x80 {
			denied++
		}
		c.drop()
	}
	if denied != n {
		t.Errorf("%d of %d publishes to cmd/actuator-1 denied", denied, n)
	}
	// Let log lines be written before measuring.
	e.sensor.waitAcked(t, e.sensor.ackedCount()+5, 10*time.Second)
	logs := e.logBytes()
	if grew := int64(len(logs)) - before; grew > 1<<20 {
		t.Errorf("the log grew %d KB for %d denied publishes; want ≤ 1 MiB", grew>>10, n)
	}
	if bytes.Contains(logs, []byte(marker+"-PAYLOAD-")) {
		t.Errorf("a payload is in the log")
	}
	if n := maxLineLen(logs); n > 16<<10 {
		t.Errorf("longest log line %d bytes; want ≤ 16 KiB", n)
	}
	var audit int64
	files, _ := filepath.Glob(filepath.Join(e.dir, "data", "audit.log*"))
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			audit += fi.Size()
		}
		if b, _ := os.ReadFile(f); bytes.Contains(b, []byte(marker+"-PAYLOAD-")) {
			t.Errorf("a payload is in %s", filepath.Base(f))
		}
	}
	if audit > 4<<20 {
		t.Errorf("audit log files hold %d KB; want ≤ 4 MiB", audit>>10)
	}
}

// bigConfig is the gateway's config with an ACL of ~size bytes in front.
func bigConfig(yaml string, size int) string {
	var b strings.Builder
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "    - user: u%d\n      subscribe: [\"sensors/#\"]\n", i)
	}
	return strings.Replace(yaml, "  acl:\n", "  acl:\n"+b.String(), 1)
}

func attackBigConfig(t *testing.T, e *env) {
	big := bigConfig(e.yaml, 10<<20)
	dir := t.TempDir()
	f := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(f, []byte(big), 0o600); err != nil {
		t.Fatal(err)
	}
	// Its peak RSS is polled from /proc: the rusage of a child started
	// by Go counts the test process's own memory (vfork shares it until
	// exec, and exec keeps that high-water mark).
	cmd := exec.Command(ferryBin, "check", "-c", f)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var peak int64
	var err error
poll:
	for {
		select {
		case err = <-exited:
			break poll
		case <-time.After(2 * time.Millisecond):
			peak = max(peak, vmHWM(cmd.Process.Pid))
		}
	}
	msg := bytes.TrimSpace(out.Bytes())
	if len(msg) > 2000 {
		msg = msg[:2000]
	}
	if err == nil {
		t.Errorf("ferry check accepted a %d MiB config; want refused (too large)", len(big)>>20)
	}
	t.Logf("ferry check: peak RSS %.1f MiB: %s", mib(peak), msg)
	if peak > rssLimit {
		t.Errorf("ferry check on a %d MiB config: peak RSS %.1f MiB; want ≤ 64 MiB", len(big)>>20, mib(peak))
	}
	// The same through POST /reload of the running gateway.
	if err := os.WriteFile(e.cfgPath, []byte(big), 0o600); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+e.statusAddr+"/reload", "", nil)
	if err := os.WriteFile(e.cfgPath, []byte(e.yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatalf("POST /reload: %v", err)
	}
	resp.Body.Close()
	t.Logf("POST /reload of a %d MiB config: %s", len(big)>>20, resp.Status)
	if resp.StatusCode < 400 {
		t.Errorf("POST /reload of a %d MiB config: %s; want refused", len(big)>>20, resp.Status)
	}
}

func attackHTTPIdle(t *testing.T, e *env) {
	const idle, silent, sse = 150, 150, 12
	var conns, stalled []net.Conn
	defer func() {
		for _, c := range append(conns, stalled...) {
			c.Close()
		}
	}()
	// SSE clients that never read, with the smallest receive buffer: they
	// take the stream slots first.
	for i := 0; i < sse; i++ {
		c, err := net.DialTimeout("tcp", e.statusAddr, 5*time.Second)
		if err != nil {
			continue
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(1)
		}
		stalled = append(stalled, c)
		fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: %s\r\n\r\n", e.statusAddr)
	}
	// Keep-alive connections after one request, and connections that
	// never send one.
	for i := 0; i < idle+silent; i++ {
		c, err := net.DialTimeout("tcp", e.statusAddr, 5*time.Second)
		if err != nil {
			continue // refused at the cap: fine
		}
		conns = append(conns, c)
		if i < idle {
			fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", e.statusAddr)
		}
	}
	start := time.Now()
	// A browser still gets live updates: stalled SSE clients lose their
	// slots (write timeout, stream lifetime).
	sseOK := make(chan time.Duration, 1)
	go func() {
		ok := waitUntil(75*time.Second, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+e.statusAddr+"/events", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
		if !ok {
			sseOK <- -1
			return
		}
		sseOK <- time.Since(start)
	}()
	isOpen := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		buf := make([]byte, 4096)
		for {
			_, err := c.Read(buf)
			if err == nil {
				continue
			}
			ne, ok := err.(net.Error)
			return ok && ne.Timeout()
		}
	}
	countOpen := func() int {
		n := 0
		for _, c := range conns {
			if isOpen(c) {
				n++
			}
		}
		return n
	}
	// The connection cap: beyond it connections are closed at once.
	open := 0
	if !waitUntil(3*time.Second, func() bool { open = countOpen(); return open <= 64 }) {
		t.Errorf("%d of %d idle HTTP connections held; want a connection cap", open, len(conns))
	}
	// The idle and header timeouts close the rest.
	if !waitUntil(40*time.Second, func() bool { open = countOpen(); return open == 0 }) {
		t.Errorf("%d of %d idle HTTP connections still open after 40 s; want closed by an idle timeout", open, len(conns))
	}
	if d := <-sseOK; d < 0 {
		t.Errorf("GET /events still refused 75 s after %d SSE clients stopped reading", len(stalled))
	} else {
		t.Logf("a new status page stream was served %v after the stalled ones", d.Round(time.Second))
	}
	e.requireCounted(t, "refused", "streams_refused")
}

func attackSharedStream(t *testing.T, e *env) {
	// The sensor's readings are buffered while the cloud is down; then
	// mallory floods 3× the stream's 4 MiB.
	e.sensor.waitAcked(t, e.sensor.ackedCount()+20, 20*time.Second)
	c := connectMallory(t, e, "mallory-flood")
	if _, err := pipelinePublish(t, c, 1536, func(int) string { return "sensors/mallory/flood" }, bytes.Repeat([]byte("f"), 8<<10), false); err != nil {
		t.Logf("flood ended: %v", err)
	}
	c.drop()
	e.sensor.waitAcked(t, e.sensor.ackedCount()+20, 20*time.Second)
	// Drops are counted per source: mallory's, not the sensor's.
	if v := e.metricWith("ferry_buffer_overflow_dropped_events_total", `source="mallory-flood"`); v == 0 {
		t.Errorf("no overflow drops counted for source mallory-flood (ferry_buffer_overflow_dropped_events_total)")
	}
	if v := e.metricWith("ferry_buffer_overflow_dropped_events_total", `source="sensor1"`); v > 0 {
		t.Errorf("%v of sensor1's events dropped to make room for mallory's flood", v)
	}
	e.cloud.StartAgain()
}

func attackHostRebind(t *testing.T, e *env) {
	for _, path := range []string{"/status", "/deadletters", "/events", "/metrics", "/buffer/stats", "/buffer/peek?stream=telemetry", "/buffer/export?stream=telemetry", "/"} {
		for _, host := range []string{"rebind.evil.example", "rebind.evil.example:80"} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+e.statusAddr+path, nil)
			req.Host = host
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				cancel()
				t.Errorf("GET %s Host %s: %v", path, host, err)
				continue
			}
			resp.Body.Close()
			cancel()
			if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusMisdirectedRequest && resp.StatusCode != http.StatusBadRequest {
				t.Errorf("GET %s with Host %s: %d; want 403", path, host, resp.StatusCode)
			}
		}
	}
	// The guard is not a blanket refusal.
	if code, _, _, err := e.getBody("/status", "", 1<<10); err != nil || code != 200 {
		t.Errorf("GET /status with Host %s: %d %v", e.statusAddr, code, err)
	}
}

func attackFuzz(t *testing.T, e *env) {
	r := rand.New(rand.NewPCG(12, 2026))
	valid := connectPacket(connectOpts{v5: true, clientID: "mallory-fz", user: "mallory", pass: users["mallory"], clean: true})
	pub := publishPacket(true, "sensors/mallory/fz", []byte(`{"a":1}`), 1, false, 1, 0)
	sub := subscribePacket(true, 1, "sensors/mallory/#")
	malformed := [][]byte{
		{0x10, 0xff, 0xff, 0xff, 0xff, 0x7f}, // five-byte remaining length
		{0x10, 0x00},                         // empty CONNECT
		{0x00, 0x00}, {0xf0, 0x00},           // reserved types
		append([]byte{0x30, 0x05, 0x00, 0x09}, 'a'),                                                         // PUBLISH before CONNECT, topic past the end
		append(append([]byte{}, valid...), valid...),                                                        // two CONNECTs
		packet(ptConnect<<4, append(appendStr(nil, "MQTX"), 5, 2, 0, 60, 0, 0, 0)),                          // wrong protocol
		packet(ptConnect<<4, append(appendStr(nil, "MQTT"), 9, 2, 0, 60, 0, 0, 0)),                          // level 9
		packet(ptConnect<<4, append(appendStr(nil, "MQTT"), 5, 3, 0, 60, 0, 0, 0)),                          // reserved flag
		append(append([]byte{}, valid...), packet(ptPublish<<4|6, appendStr(nil, "sensors/mallory/q3"))...), // QoS 3
		append(append([]byte{}, valid...), packet(ptSubscribe<<4, []byte{0, 1, 0})...),                      // SUBSCRIBE without filters, bad flags
	}
	var cases [][]byte
	cases = append(cases, malformed...)
	for i := 0; i < 500; i++ {
		var b []byte
		switch i % 3 {
		case 0:
			b = make([]byte, 1+r.IntN(512))
			for j := range b {
				b[j] = byte(r.UintN(256))
			}
		case 1:
			b = append(append(append([]byte{}, valid...), pub...), sub...)
			for k := 1 + r.IntN(4); k > 0; k-- {
				b[r.IntN(len(b))] = byte(r.UintN(256))
			}
		default:
			b = append(append([]byte{}, valid...), pub...)
			for k := 1 + r.IntN(4); k > 0; k-- {
				j := len(valid) + r.IntN(len(pub))
				b[j] = byte(r.UintN(256))
			}
		}
		cases = append(cases, b)
	}
	var wg sync.WaitGroup
	work := make(chan []byte)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for b := range work {
				c, err := net.DialTimeout("tcp", e.brokerAddr, 5*time.Second)
				if err != nil {
					continue
				}
				_ = c.SetDeadline(time.Now().Add(150 * time.Millisecond))
				_, _ = c.Write(b)
				for {
					if _, err := c.Read(buf); err != nil {
						break
					}
				}
				c.Close()
			}
		}()
	}
	for _, b := range cases {
		work <- b
	}
	close(work)
	wg.Wait()
	t.Logf("%d mutated and malformed connections", len(cases))
}

func attackBruteForce(t *testing.T, e *env) {
	start := time.Now()
	accepted := 0
	for i := 0; i < 30; i++ {
		c, err := dialRaw(e.brokerAddr, "127.0.0.2")
		if err != nil {
			t.Fatalf("dial from 127.0.0.2: %v", err)
		}
		_, code, err := c.connect(connectOpts{v5: true, clientID: fmt.Sprintf("guess%d", i), user: "sensor1", pass: fmt.Sprintf("guess-%d", i), clean: true})
		if err == nil && code == 0 {
			accepted++
		}
		c.drop()
	}
	if accepted > 0 {
		t.Errorf("%d wrong passwords accepted", accepted)
	}
	t.Logf("30 guesses from 127.0.0.2 in %v", time.Since(start).Round(time.Millisecond))
	// The address is blocked now, even with the right password.
	c, err := dialRaw(e.brokerAddr, "127.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	defer c.drop()
	if _, code, err := c.connect(connectOpts{v5: true, clientID: "guess-ok", user: "sensor1", pass: users["sensor1"], clean: true}); err == nil && code == 0 {
		t.Errorf("127.0.0.2 not blocked after 30 failures")
	}
}
