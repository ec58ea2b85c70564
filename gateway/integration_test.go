package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/gateway/opsapi"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/ferrygw/ferry/uplink"
)

// testConfig returns the YAML of a gateway on free loopback ports that
// forwards to cloudURL, and its broker address.
func testConfig(t *testing.T, dataDir, cloudURL, extra string) (yaml, brokerAddr string) {
	t.Helper()
	brokerAddr = fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	yaml = fmt.Sprintf(`
gateway_id: gw1
data_dir: %s
log: {level: warn}
broker:
  listen: %s
  allow_anonymous: true
ingest:
  routes:
    - topics: ["sensors/#"]
      stream: telemetry
uplink:
  endpoints:
    - url: %s
  topic: "{gateway_id}/{stream}/{source}"
  backoff: {min: 20ms, max: 300ms}
  connect_timeout: 2s
status:
  listen: ""
  log_interval: 0s
%s`, dataDir, brokerAddr, cloudURL, extra)
	return yaml, brokerAddr
}

func loadConfig(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.LoadBytes([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	return cfg
}

// runGateway runs a gateway in this process until the test ends.
func runGateway(t *testing.T, cfg *config.Config) *gateway.Gateway {
	t.Helper()
	g, err := gateway.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return runGatewayInstance(t, g)
}

// runGatewayInstance runs g until the test ends.
func runGatewayInstance(t *testing.T, g *gateway.Gateway) *gateway.Gateway {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	return g
}

// reading is what the test publishers send.
type reading struct {
	P int `json:"p"`
	S int `json:"s"`
}

// cloudSub is a subscriber at the cloud with a persistent session: it
// records, per publisher, every sequence number in arrival order.
type cloudSub struct {
	mu      sync.Mutex
	seqs    map[int][]int
	seen    map[reading]bool
	dups    int
	total   int
	badMsgs int
	c       paho.Client
}

func subscribeCloud(t *testing.T, url, id string) *cloudSub {
	t.Helper()
	s := &cloudSub{seqs: map[int][]int{}, seen: map[reading]bool{}}
	opts := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(false).
		SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).SetConnectRetry(true).
		SetConnectRetryInterval(100 * time.Millisecond).SetOrderMatters(true).
		// Messages queued in the persistent session arrive right after
		// CONNACK, before a Subscribe could register its handler.
		SetDefaultPublishHandler(s.handle)
	subscribed := make(chan error, 1)
	opts.SetOnConnectHandler(func(c paho.Client) {
		tok := c.Subscribe("#", 1, s.handle)
		go func() {
			tok.Wait()
			select {
			case subscribed <- tok.Error():
			default:
			}
		}()
	})
	s.c = paho.NewClient(opts)
	if tok := s.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("cloud subscriber: %v", tok.Error())
	}
	// The SUBACK must be in before a test takes the cloud down, or the
	// persistent session would not hold the subscription.
	select {
	case err := <-subscribed:
		if err != nil {
			t.Fatalf("cloud subscribe: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cloud subscribe: no SUBACK")
	}
	t.Cleanup(func() { s.c.Disconnect(50) })
	return s
}

func (s *cloudSub) handle(_ paho.Client, m paho.Message) {
	evs, err := uplink.DecodeMessage(m.Payload())
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.badMsgs++
		return
	}
	for _, e := range evs {
		var r reading
		if json.Unmarshal(e.Payload, &r) != nil {
			s.badMsgs++
			continue
		}
		s.total++
		if s.seen[r] {
			s.dups++
			continue
		}
		s.seen[r] = true
		s.seqs[r.P] = append(s.seqs[r.P], r.S)
	}
}

func (s *cloudSub) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

func (s *cloudSub) has(r reading) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[r]
}

// checkOrder fails if any publisher's first arrivals are out of order.
func (s *cloudSub) checkOrder(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for p, seqs := range s.seqs {
		for i := 1; i < len(seqs); i++ {
			if seqs[i] <= seqs[i-1] {
				t.Fatalf("publisher %d: seq %d arrived after %d", p, seqs[i], seqs[i-1])
			}
		}
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// publishAll publishes n readings from each of pubs publishers at QoS 1
// with a window of 8 unacknowledged messages per publisher, and fails
// unless every one is acknowledged.
func publishAll(t *testing.T, addr string, pubs, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for p := 0; p < pubs; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).
				SetClientID(fmt.Sprintf("sensor-%d", p)).SetAutoReconnect(false))
			if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Errorf("publisher %d: connect: %v", p, tok.Error())
				return
			}
			defer c.Disconnect(50)
			window := make(chan paho.Token, 8)
			wait := func(tok paho.Token) bool {
				if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
					t.Errorf("publisher %d: publish not acknowledged: %v", p, tok.Error())
					return false
				}
				return true
			}
			for s := 0; s < n; s++ {
				if len(window) == cap(window) && !wait(<-window) {
					return
				}
				b, _ := json.Marshal(reading{P: p, S: s})
				window <- c.Publish(fmt.Sprintf("sensors/%d", p), 1, false, b)
			}
			close(window)
			for tok := range window {
				if !wait(tok) {
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestOutage: the cloud is down while 20 publishers send 20,000 QoS 1
// events; when it returns, every event arrives, in order per publisher,
// with no duplicate that a lost PUBACK does not explain.
func TestOutage(t *testing.T) {
	cloud := mqtttest.StartWith(t, mqtttest.Options{Persistent: true})
	sub := subscribeCloud(t, cloud.URL(), "cloud-sub")
	cloud.Stop() // outage from the start

	yaml, addr := testConfig(t, t.TempDir(), cloud.URL(), "")
	g := runGateway(t, loadConfig(t, yaml))
	const pubs, each = 20, 1000
	publishAll(t, addr, pubs, each)

	st := g.Status()
	if len(st.Streams) != 1 || st.Streams[0].Events != pubs*each {
		t.Fatalf("backlog during outage: %+v", st.Streams)
	}
	if st.Link.Connected || st.Link.ForwardedEvents != 0 {
		t.Fatalf("link during outage: %+v", st.Link)
	}

	cloud.StartAgain()
	last := time.Now()
	// A deadline, not a duration: ARMv6 emulation on a loaded machine
	// drains 20,000 events in minutes.
	waitUntil(t, 5*time.Minute, "all events at the cloud", func() bool {
		if sub.distinct() == pubs*each {
			return true
		}
		if time.Since(last) > 5*time.Second {
			last = time.Now()
			t.Logf("cloud has %d distinct events; gateway: %+v", sub.distinct(), g.Status())
			sub.mu.Lock()
			for p := 0; p < 3; p++ {
				sq := sub.seqs[p]
				if len(sq) > 0 {
					t.Logf("publisher %d: %d seqs, first %d last %d", p, len(sq), sq[0], sq[len(sq)-1])
				}
			}
			sub.mu.Unlock()
			t.Log(cloud.Logs())
		}
		return false
	})
	sub.checkOrder(t)
	waitUntil(t, 10*time.Second, "backlog drained", func() bool { return g.Status().Streams[0].Events == 0 })
	st = g.Status()
	sub.mu.Lock()
	dups, bad := sub.dups, sub.badMsgs
	sub.mu.Unlock()
	if bad != 0 {
		t.Fatalf("%d undecodable messages at the cloud", bad)
	}
	if uint64(dups) > st.Link.Resent {
		t.Fatalf("%d duplicates at the cloud but only %d resends after lost PUBACKs", dups, st.Link.Resent)
	}
	t.Logf("20,000 events delivered after the outage; duplicates %d (resent %d); reconnects %d", dups, st.Link.Resent, st.Link.Reconnects)
}

// TestStatusEndpoint checks the JSON status endpoint reports link state
// and backlog, as `ferry status` reads it.
func TestStatusEndpoint(t *testing.T) {
	cloud := mqtttest.Start(t)
	statusAddr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	yaml, addr := testConfig(t, t.TempDir(), cloud.URL(), "")
	yaml = strings.Replace(yaml, `listen: ""`, "listen: "+statusAddr, 1)
	runGateway(t, loadConfig(t, yaml))
	publishAll(t, addr, 2, 10)
	var st opsapi.Status
	waitUntil(t, 10*time.Second, "status shows link up and forwarded events", func() bool {
		c, err := net.Dial("tcp", statusAddr)
		if err != nil {
			return false
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /status HTTP/1.0\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		var buf strings.Builder
		b := make([]byte, 4096)
		for {
			n, err := c.Read(b)
			buf.Write(b[:n])
			if err != nil {
				break
			}
		}
		_, body, _ := strings.Cut(buf.String(), "\r\n\r\n")
		if json.Unmarshal([]byte(body), &st) != nil || st.Link == nil {
			return false
		}
		return st.Link.Connected && st.Link.ForwardedEvents == 20
	})
	if st.GatewayID != "gw1" || st.Ingest.Ingested != 20 {
		t.Fatalf("status: %+v", st)
	}
}
