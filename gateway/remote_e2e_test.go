package gateway_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/ferrygw/ferry/gateway/remoteconfig"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// ferryCLI runs the ferry binary with args and returns its stdout.
func ferryCLI(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("ferry %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

// TestRemoteConfigEndToEnd: configurations pushed from the cloud through
// the downlink to the ferry binary, signed with `ferry config sign`: one
// is applied (and survives a restart), one signed with another key, an
// older version, a broken document and one that cuts the uplink are each
// refused or rolled back, and each outcome is on the status topic.
func TestRemoteConfigEndToEnd(t *testing.T) {
	bin := buildFerry(t)
	// The cloud lets in only client IDs of gw1 (its uplink, gw1-cmd, and
	// the test's gw1-ops).
	cloud := mqtttest.StartWith(t, mqtttest.Options{Extra: "clientid_prefixes gw1\n"})
	dir := t.TempDir()
	pub := strings.TrimSpace(ferryCLI(t, bin, "config", "keygen", "-out", filepath.Join(dir, "fleet.key")))
	ferryCLI(t, bin, "config", "keygen", "-out", filepath.Join(dir, "other.key"))

	data := filepath.Join(dir, "data")
	base, addr := testConfig(t, data, cloud.URL(), downlinkYAML)
	remote := fmt.Sprintf("remote_config:\n  enabled: true\n  trusted_keys: [%q]\n  rollback_after: 3s\n", pub)
	cfgPath, logPath := ferryFiles(t, dir, base+remote)
	// A pushed document is a whole configuration: the local one with the
	// uplink topic changed (what the test can see), or worse.
	doc := func(name string, edit func(string) string) string {
		p := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(p, []byte(edit(base)), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sign := func(key string, version int, yamlPath string, extra ...string) []byte {
		out := filepath.Join(dir, fmt.Sprintf("v%d-%s.conf", version, filepath.Base(key)))
		args := append([]string{"config", "sign", "-key", filepath.Join(dir, key), "-version", fmt.Sprint(version),
			"-gateway", "gw1", "-o", out}, extra...)
		ferryCLI(t, bin, append(args, yamlPath)...)
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	v1Topic := func(s string) string {
		return strings.Replace(s, `topic: "{gateway_id}/{stream}/{source}"`, `topic: "{gateway_id}/v1/{stream}/{source}"`, 1)
	}
	v1 := sign("fleet.key", 1, doc("v1", v1Topic))

	svc := dial5(t, cloud.URL(), "gw1-ops", nil)
	svc.subscribe("gw1/config/status", 1)
	svc.subscribe("gw1/presence", 1)
	svc.subscribe("gw1/+/+/+", 1) // telemetry under v1's topic
	status := func(version uint64, want string) remoteconfig.Status {
		t.Helper()
		for {
			m := svc.next("gw1/config/status", 60*time.Second)
			var st remoteconfig.Status
			if err := json.Unmarshal(m.Payload, &st); err != nil {
				t.Fatalf("status %q: %v", m.Payload, err)
			}
			if st.Version == version {
				if st.Status != want {
					t.Fatalf("version %d: status %s, want %s: %+v", version, st.Status, want, st)
				}
				return st
			}
		}
	}
	push := func(b []byte) {
		svc.publish(&paho.Publish{Topic: "gw1/config", QoS: 1, Retain: true, Payload: b})
	}
	telemetryOnV1 := func(marker string) {
		t.Helper()
		dev := dial5(t, addr, "sensor-"+marker, nil)
		dev.publish(&paho.Publish{Topic: "sensors/t", QoS: 1, Payload: []byte(marker)})
		for {
			m := svc.next("gw1/+/+/+", 60*time.Second)
			if strings.HasPrefix(m.Topic, "gw1/v1/telemetry/") && strings.Contains(string(m.Payload), marker) {
				break
			}
		}
		dev.close()
	}

	rolledBack := func(version uint64) {
		t.Helper()
		for {
			m := svc.next("gw1/config/status", 60*time.Second)
			var s remoteconfig.Status
			_ = json.Unmarshal(m.Payload, &s)
			if s.Version == version && s.Status == remoteconfig.StatusRolledBack {
				if s.Running != 1 {
					t.Errorf("rolled back to %d, want 1", s.Running)
				}
				return
			}
		}
	}

	cmd := startFerry(t, bin, cfgPath, logPath)
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	// Applied.
	push(v1)
	if st := status(1, remoteconfig.StatusApplied); st.Running != 1 {
		t.Errorf("applied: running %d", st.Running)
	}
	telemetryOnV1("after-v1")
	for presenceOf(t, svc.next("gw1/presence", 30*time.Second)).ConfigVersion != 1 {
	}

	// Another key: refused.
	push(sign("other.key", 2, doc("v2", v1Topic)))
	if st := status(2, remoteconfig.StatusRefused); len(st.Errors) == 0 || st.Running != 1 {
		t.Errorf("other key: %+v", st)
	}
	// Not newer than what runs: refused.
	push(sign("fleet.key", 1, doc("v1b", func(s string) string { return v1Topic(s) + "# another document\n" })))
	if st := status(1, remoteconfig.StatusRefused); st.Running != 1 {
		t.Errorf("old version: %+v", st)
	}
	// A broken document: refused, each error with its line.
	push(sign("fleet.key", 3, doc("v3", func(s string) string {
		return v1Topic(s) + "ingest:\n  max_batch: lots\n"
	}), "-force"))
	st := status(3, remoteconfig.StatusRefused)
	if len(st.Errors) == 0 || st.Errors[0].Line == 0 || st.Errors[0].Key == "" {
		t.Errorf("broken document: errors without key and line: %+v", st.Errors)
	}
	// One that cuts the uplink: applied, then rolled back to v1, which
	// the board reports once it is back.
	dead := fmt.Sprintf("tcp://127.0.0.1:%d", mqtttest.FreePort(t))
	push(sign("fleet.key", 4, doc("v4", func(s string) string { return strings.Replace(v1Topic(s), cloud.URL(), dead, 1) })))
	rolledBack(4)
	telemetryOnV1("after-rollback")
	// One under which the uplink connects but the downlink, the way
	// configurations come, does not (the cloud refuses its client ID):
	// rolled back too.
	push(sign("fleet.key", 5, doc("v5", func(s string) string {
		return strings.Replace(v1Topic(s), "downlink:\n", "downlink:\n  client_id: other-cmd\n", 1)
	})))
	rolledBack(5)
	telemetryOnV1("after-rollback-5")

	// A restart keeps v1 (and does not take the retained v4 again).
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	for presenceOf(t, svc.next("gw1/presence", 30*time.Second)).State != "offline" {
	}
	cmd = startFerry(t, bin, cfgPath, logPath)
	p := presenceOf(t, svc.next("gw1/presence", 60*time.Second))
	if p.State != "online" || p.ConfigVersion != 1 {
		t.Errorf("presence after the restart: %+v, want online with config version 1", p)
	}
	telemetryOnV1("after-restart")
}
