package conformance

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// largePayload is issue 13's 200 KB payload (ferry's default
// max_packet_size is 256 KiB).
const largePayload = 200 * 1024

// roundtripper publishes size bytes at qos to a topic it subscribed to and
// fails the test unless the publish was confirmed and the message arrived.
type roundtripper struct {
	name string
	run  func(t *testing.T, tg *target, qos, size int, topic string)
}

func mosquittoClients(v string) roundtripper {
	return roundtripper{"mosquitto_pub-sub-V" + v, func(t *testing.T, tg *target, qos, size int, topic string) {
		q := strconv.Itoa(qos)
		s := startSub(t, tg, v, "-q", q, "-t", topic, "-C", "1")
		f := filepath.Join(t.TempDir(), "payload")
		if err := os.WriteFile(f, []byte(strings.Repeat("x", size)), 0o600); err != nil {
			t.Fatal(err)
		}
		args := []string{"-q", q, "-t", topic, "-f", f}
		if v == "5" {
			args = append(args, "-D", "publish", "user-property", "k", "v")
		}
		pub(t, tg, v, args...)
		got := strings.Fields(s.next())
		if len(got) < 4 || got[1] != q || got[2] != topic || got[3] != strconv.Itoa(size) {
			t.Fatalf("%s: got %.60q, want MSG %s %s %d", tg.name, got, q, topic, size)
		}
	}}
}

// scriptResult is what the paho and MQTT.js scripts print.
type scriptResult struct {
	Subscribed bool     `json:"subscribed"`
	Published  bool     `json:"published"`
	Received   int      `json:"received"`
	QoS        int      `json:"qos"`
	Errors     []string `json:"errors"`
}

func checkScript(t *testing.T, tg *target, client string, out string, err error, qos, size int) {
	t.Helper()
	var r scriptResult
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &r); jerr != nil {
		t.Fatalf("%s: %s printed no result (%v): %v\n%s", tg.name, client, err, jerr, out)
	}
	if err != nil || !r.Published || r.Received != size || r.QoS != qos {
		t.Fatalf("%s: %s: exit %v, %+v; want published, %d bytes received at QoS %d\n%s", tg.name, client, err, r, size, qos, out)
	}
}

func pahoPython(v string) roundtripper {
	return roundtripper{"paho-python-v" + v, func(t *testing.T, tg *target, qos, size int, topic string) {
		py := debianPython(t)
		out, err := runTool(t, py, filepath.Join("testdata", "paho_client.py"), "roundtrip", tg.host, strconv.Itoa(tg.port), v, strconv.Itoa(qos), strconv.Itoa(size), topic)
		checkScript(t, tg, "paho-python", out, err, qos, size)
	}}
}

func mqttJS(v string, ws bool) roundtripper {
	name := "mqttjs-tcp-v" + v
	if ws {
		name = "mqttjs-ws-v" + v
	}
	return roundtripper{name, func(t *testing.T, tg *target, qos, size int, topic string) {
		url := "mqtt://" + tg.addr
		if ws {
			if tg.ws == "" {
				t.Skipf("%s: no websocket listener (see startMosquitto)", tg.name)
			}
			url = tg.ws
		}
		dir := mqttjs(t)
		out, err := runTool(t, "node", filepath.Join(dir, "client.js"), "roundtrip", url, v, strconv.Itoa(qos), strconv.Itoa(size), topic)
		checkScript(t, tg, "MQTT.js", out, err, qos, size)
	}}
}

// TestClients: each real client publishes to its own subscription at QoS
// 0, 1 and 2 and with a 200 KB payload, on ferry and on Mosquitto. MQTT 5
// publishes carry a user property: issue 13 item 1, where paho-python's
// network thread died on ferry's PUBACK and MQTT.js dropped the
// connection ("Invalid puback reason code"). Item 6: QoS 0/1/2, 200 KB.
func TestClients(t *testing.T) {
	clients := []roundtripper{
		mosquittoClients("mqttv311"), mosquittoClients("mqttv5"),
		pahoPython("311"), pahoPython("5"),
		mqttJS("311", false), mqttJS("5", false), mqttJS("5", true),
	}
	type size struct {
		qos, bytes int
	}
	sizes := []size{{0, 16}, {1, 16}, {2, 16}, {1, largePayload}}
	for _, bk := range brokers {
		t.Run(bk.name, func(t *testing.T) {
			tg := bk.start(t, opts{})
			for _, c := range clients {
				t.Run(c.name, func(t *testing.T) {
					for _, s := range sizes {
						t.Run(fmt.Sprintf("qos%d-%dB", s.qos, s.bytes), func(t *testing.T) {
							c.run(t, tg, s.qos, s.bytes, "conf/"+uniq(t))
						})
					}
				})
			}
		})
	}
}
