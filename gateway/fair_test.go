package gateway_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// TestFairOverflow is issue 12's "one sensor can evict everyone's data":
// the cloud is down, the stream is bounded, and client "mallory" floods
// it with QoS 1 publishes while a legitimate sensor publishes 100
// readings. With the default overflow (drop_largest) every reading the
// sensor got a PUBACK for reaches the cloud once it returns, the drops
// are counted against mallory in /status and /metrics; with drop_oldest
// (the row that shows the attack) the sensor's readings are evicted.
func TestFairOverflow(t *testing.T) {
	for _, tt := range []struct {
		overflow string // "": the default
		fair     bool
	}{
		{"", true},
		{"drop_oldest", false},
	} {
		name := tt.overflow
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			cloud := mqtttest.StartWith(t, mqtttest.Options{Persistent: true})
			sub := subscribeCloud(t, cloud.URL(), "cloud-sub")
			cloud.Stop() // outage from the start

			const bound, flood, readings = 400, 3000, 100
			extra := fmt.Sprintf("buffer:\n  streams:\n    - name: telemetry\n      max_events: %d\n", bound)
			if tt.overflow != "" {
				extra += "      overflow: " + tt.overflow + "\n"
			}
			statusAddr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
			yaml, addr := testConfig(t, t.TempDir(), cloud.URL(), extra)
			yaml = strings.Replace(yaml, `listen: ""`, "listen: "+statusAddr, 1)
			g := runGateway(t, loadConfig(t, yaml))

			var wg sync.WaitGroup
			wg.Go(func() { floodFrom(t, addr, "mallory", flood) })
			publishAll(t, addr, 1, readings) // client sensor-0, P 0
			wg.Wait()

			st := g.Status().Streams[0]
			if st.Events != bound {
				t.Fatalf("telemetry holds %d events, want its bound %d", st.Events, bound)
			}
			if !tt.fair {
				if d := st.SourceDrops["sensor-0"]; d == 0 {
					t.Fatalf("drop_oldest evicted none of the sensor's readings (%v): the row shows nothing", st.SourceDrops)
				}
				t.Logf("drop_oldest evicted %d of the sensor's %d acknowledged readings", st.SourceDrops["sensor-0"], readings)
				return
			}
			dropped := uint64(flood + readings - bound)
			if len(st.SourceDrops) != 1 || st.SourceDrops["mallory"] != dropped {
				t.Fatalf("drops by source %v, want mallory %d only", st.SourceDrops, dropped)
			}
			m := scrape(t, statusAddr)
			if got := m.value(t, "ferry_buffer_overflow_dropped_events_total", "stream", "telemetry", "source", "mallory"); got != float64(dropped) {
				t.Fatalf("metrics: mallory's overflow drops %v, want %d", got, dropped)
			}

			cloud.StartAgain()
			waitUntil(t, 2*time.Minute, "every acknowledged reading of the sensor at the cloud", func() bool {
				for s := range readings {
					if !sub.has(reading{P: 0, S: s}) {
						return false
					}
				}
				return true
			})
			sub.checkOrder(t)
			waitUntil(t, 30*time.Second, "backlog drained", func() bool { return g.Status().Streams[0].Events == 0 })
		})
	}
}

// floodFrom publishes n QoS 1 readings (P 99) as client id, 16 in
// flight, and fails unless each is acknowledged.
func floodFrom(t *testing.T, addr, id string, n int) {
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Errorf("%s: connect: %v", id, tok.Error())
		return
	}
	defer c.Disconnect(50)
	window := make(chan paho.Token, 16)
	wait := func(tok paho.Token) bool {
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Errorf("%s: publish not acknowledged: %v", id, tok.Error())
			return false
		}
		return true
	}
	for s := range n {
		if len(window) == cap(window) && !wait(<-window) {
			return
		}
		b, _ := json.Marshal(reading{P: 99, S: s})
		window <- c.Publish("sensors/"+id, 1, false, b)
	}
	close(window)
	for tok := range window {
		if !wait(tok) {
			return
		}
	}
}
