package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/internal/natstest"
	"github.com/ferrygw/ferry/uplink"
)

// The measurements behind the README's "Running a fleet" figures: an
// in-process uplink.Forwarder draining a bbolt buffer into a real 3-node
// NATS JetStream cluster, its MQTT streams replicated 3×, while a cloud
// subscriber with a persistent QoS 1 session consumes (as in production,
// where something reads what the gateways send). They take minutes and
// report figures rather than pass or fail, so they are benchmarks; run
// them once each:
//
//	go test ./internal/fleet -run '^$' -bench 'Drain|Failover' -benchtime 1x -v

// drainEvents is the backlog each drain measurement forwards: the issue's
// 20,000 events.
const drainEvents = 20000

// BenchmarkDrainNATS measures how fast a backlog drains into the cluster,
// for one event per message and for batches, with several in-flight
// windows. The topic is {gateway_id}/{stream}, so that consecutive events
// share a topic and can share a message.
func BenchmarkDrainNATS(b *testing.B) {
	c := natstest.StartCluster(b, 3)
	sub := newCountingSub(b, c.MQTTURLs(), "fleet-drain-sub", "drain/#")
	for _, batch := range []int{1, 50, 100, 500} {
		for _, inflight := range []int{10, 100, 1000} {
			b.Run(fmt.Sprintf("batch=%d/inflight=%d", batch, inflight), func(b *testing.B) {
				gw := fmt.Sprintf("gw-b%d-i%d", batch, inflight)
				l := fillLog(b, drainEvents, 10)
				cfg := uplink.Config{
					Endpoints:      endpoints(c.MQTTURLs()),
					GatewayID:      gw,
					Topic:          "drain/{gateway_id}/{stream}",
					QoS:            1,
					Inflight:       inflight,
					BatchMaxEvents: batch,
					Logger:         quietLogger(),
				}
				start := time.Now()
				runForwarder(b, l, cfg, func(f *uplink.Forwarder) {
					waitFor(b, 10*time.Minute, "drain", func() bool {
						return l.Acked("telemetry", uplink.Consumer) >= drainEvents
					})
				})
				el := time.Since(start)
				rate := float64(drainEvents) / el.Seconds()
				b.ReportMetric(rate, "events/s")
				b.ReportMetric(0, "ns/op")
				b.Logf("batch %d, inflight %d: %d events in %v: %.0f events/s (cloud subscriber has %d)",
					batch, inflight, drainEvents, el.Round(time.Millisecond), rate, sub.count())
			})
		}
	}
}

// BenchmarkFleetDrainNATS measures the cluster's aggregate intake: n
// gateways (forwarders, one connection each) drain a backlog of
// fleetDrainEvents each at once, one event per message and batched.
func BenchmarkFleetDrainNATS(b *testing.B) {
	const fleetDrainEvents = 2000
	c := natstest.StartCluster(b, 3)
	newCountingSub(b, c.MQTTURLs(), "fleet-agg-sub", "agg/#")
	for _, batch := range []int{1, 100} {
		for _, n := range []int{1, 5, 20} {
			b.Run(fmt.Sprintf("batch=%d/gateways=%d", batch, n), func(b *testing.B) {
				logs := make([]*buffer.Log, n)
				for i := range logs {
					logs[i] = fillLog(b, fleetDrainEvents, 10)
				}
				start := time.Now()
				var wg sync.WaitGroup
				for i, l := range logs {
					urls := c.MQTTURLs()
					urls = append(urls[i%len(urls):], urls[:i%len(urls)]...) // spread the fleet over the nodes
					cfg := uplink.Config{
						Endpoints:      endpoints(urls),
						GatewayID:      fmt.Sprintf("gw-agg-b%d-n%d-%d", batch, n, i),
						Topic:          "agg/{gateway_id}/{stream}",
						QoS:            1,
						BatchMaxEvents: batch,
						Logger:         quietLogger(),
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						runForwarder(b, l, cfg, func(*uplink.Forwarder) {
							waitFor(b, 10*time.Minute, "drain", func() bool {
								return l.Acked("telemetry", uplink.Consumer) >= fleetDrainEvents
							})
						})
					}()
				}
				wg.Wait()
				el := time.Since(start)
				total := float64(n * fleetDrainEvents)
				b.ReportMetric(total/el.Seconds(), "events/s")
				b.ReportMetric(total/el.Seconds()/float64(n), "events/s/gateway")
				b.ReportMetric(0, "ns/op")
				b.Logf("batch %d, %d gateways: %d events in %v: %.0f events/s, %.0f per gateway",
					batch, n, n*fleetDrainEvents, el.Round(time.Millisecond), total/el.Seconds(), total/el.Seconds()/float64(n))
			})
		}
	}
}

// BenchmarkFailoverNATS measures failover: a forwarder sends a live
// stream (200 events a second) to the cluster with the three nodes as
// endpoints, and a node is killed (SIGKILL) once the forwarder's
// connection has been up for StableAfter (a node dying in steady state).
// The failover time runs from the kill until the cloud has acknowledged
// an event appended after it. Three scenarios take turns, the MQTT
// streams' leadership arranged beforehand with JetStream stepdowns:
//
//   - connected+leader: the node the forwarder is connected to, leading
//     $MQTT_msgs and $MQTT_sess (the cluster must elect new leaders);
//   - connected: the node the forwarder is connected to, leading neither;
//   - leader: the node leading both, the forwarder connected elsewhere
//     (its publishes stall until a new leader is elected).
//
// With FLEET_RAPID=1 each kill comes as soon as 100 events went through
// the connection instead (failures in quick succession).
//
// For each kill, clusterReady measures the floor: how long the cluster
// took to acknowledge a QoS 1 publish from a new connection.
func BenchmarkFailoverNATS(b *testing.B) {
	c := natstest.StartCluster(b, 3)
	newCountingSub(b, c.MQTTURLs(), "fleet-failover-sub", "failover/#")
	l := openLog(b)
	cfg := uplink.Config{
		Endpoints: endpoints(c.MQTTURLs()),
		GatewayID: "gw-failover",
		Topic:     "failover/{gateway_id}/{stream}",
		QoS:       1,
		Logger:    quietLogger(),
	}
	if v := os.Getenv("FLEET_BATCH"); v != "" {
		cfg.BatchMaxEvents, _ = strconv.Atoi(v)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var appended atomic.Uint64 // the offset of the last event appended
	wg.Add(1)
	go func() { // the live stream
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if err := appendEvent(ctx, l, i%10, i); err != nil {
				if ctx.Err() == nil {
					b.Errorf("append: %v", err)
				}
				return
			}
			appended.Store(uint64(i + 1))
		}
	}()
	defer func() { cancel(); wg.Wait() }()
	scenarios := []string{"connected+leader", "connected", "leader"}
	// FLEET_RAPID=1: kill as soon as 100 events went through the new
	// connection, not after StableAfter: failures in quick succession, as
	// when the cluster is in trouble.
	stable := uplink.DefaultStableAfter + time.Second
	if os.Getenv("FLEET_RAPID") != "" {
		stable = 0
	}
	times := map[string][]time.Duration{}
	floors := map[string][]time.Duration{}
	rounds := 3 * len(scenarios)
	if v := os.Getenv("FLEET_ROUNDS"); v != "" {
		rounds, _ = strconv.Atoi(v)
	}
	runForwarder(b, l, cfg, func(f *uplink.Forwarder) {
		for round := range rounds {
			sc := scenarios[round%len(scenarios)]
			// Steady state: connected for StableAfter, forwarding.
			var ep string
			before := f.Status().ForwardedEvents
			waitFor(b, 2*time.Minute, "a stable connection", func() bool {
				st := f.Status()
				ep = st.Endpoint
				return st.Connected && time.Since(st.LastConnected) > stable && st.ForwardedEvents > before+100
			})
			on := c.NodeByMQTTURL(ep)
			victim := arrangeLeaders(b, c, on, sc)
			floor := clusterReadyAfter(b, c, victim)
			at := appended.Load()
			killed := time.Now()
			c.Kill(victim)
			floorCh := floor(killed)
			waitFor(b, 2*time.Minute, "failover", func() bool { return l.Acked("telemetry", uplink.Consumer) > at })
			d := time.Since(killed)
			fl := <-floorCh
			times[sc] = append(times[sc], d)
			floors[sc] = append(floors[sc], fl)
			b.Logf("round %d (%s): killed %s, forwarder on %s: the cluster took a QoS 1 publish again after %v, the forwarder an event after %v (now via %s)",
				round, sc, c.Nodes[victim].Name, on.Name, fl.Round(time.Millisecond), d.Round(time.Millisecond), f.Status().Endpoint)
			c.Restart(victim)
			if err := c.WaitHealthy(2 * time.Minute); err != nil {
				b.Fatalf("cluster not healthy after restarting %s: %v", c.Nodes[victim].Name, err)
			}
		}
	})
	b.ReportMetric(0, "ns/op")
	for _, sc := range scenarios {
		ts, fs := times[sc], floors[sc]
		if len(ts) == 0 {
			continue
		}
		var sum, worst, fsum time.Duration
		for i, d := range ts {
			sum += d
			worst = max(worst, d)
			fsum += fs[i]
		}
		n := time.Duration(len(ts))
		b.ReportMetric(float64((sum / n).Milliseconds()), "ms-mean-"+sc)
		b.ReportMetric(float64(worst.Milliseconds()), "ms-max-"+sc)
		b.ReportMetric(float64((fsum / n).Milliseconds()), "ms-cluster-"+sc)
		b.Logf("%s: %d kills: failover mean %v, max %v, all %v; the cluster itself took %v on average, all %v",
			sc, len(ts), (sum / n).Round(time.Millisecond), worst.Round(time.Millisecond), roundAll(ts), (fsum / n).Round(time.Millisecond), roundAll(fs))
	}
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(100 * time.Millisecond)
	}
	return out
}

// arrangeLeaders moves the leadership of $MQTT_msgs and $MQTT_sess (by
// stepdowns) as scenario sc wants it and returns the index of the node to
// kill: on leading both ("connected+leader"), on leading neither
// ("connected"), or another node leading both ("leader").
func arrangeLeaders(tb testing.TB, c *natstest.Cluster, on *natstest.Node, sc string) int {
	tb.Helper()
	streams := []string{"$MQTT_msgs", "$MQTT_sess"}
	want := func(l string) bool { // whether leader l is right for sc
		switch sc {
		case "connected+leader":
			return l == on.Name
		case "connected":
			return l != on.Name
		default:
			return l != on.Name
		}
	}
	for range 50 {
		ok := true
		for _, s := range streams {
			if !want(c.StreamLeader(s)) {
				ok = false
				if err := c.StepDown(s); err != nil {
					tb.Fatal(err)
				}
			}
		}
		leaders := []string{c.StreamLeader(streams[0]), c.StreamLeader(streams[1])}
		if sc == "leader" && leaders[0] != leaders[1] {
			ok = false
			if err := c.StepDown(streams[1]); err != nil {
				tb.Fatal(err)
			}
			continue
		}
		if !ok || !want(leaders[0]) || !want(leaders[1]) {
			continue
		}
		if err := c.WaitHealthy(time.Minute); err != nil {
			tb.Fatal(err)
		}
		victim := on.Name
		if sc == "leader" {
			victim = leaders[0]
		}
		for i, n := range c.Nodes {
			if n.Name == victim {
				return i
			}
		}
	}
	tb.Fatalf("could not arrange the leaders for %s", sc)
	return -1
}

// clusterReadyAfter returns a function to call with the time of the kill
// of node victim, which starts measuring, from then, how long the cluster takes to
// acknowledge a QoS 1 publish again from a new MQTT connection on a
// surviving node: the floor under any client's failover. NATS holds a
// CONNECT or PUBLISH it cannot serve for its JetStream API timeout (4 s)
// before failing it, so a single prober would only see the floor in 4 s
// steps: a new attempt starts every 250 ms (each with a client ID of its
// own) until one succeeds. The result arrives on the channel.
func clusterReadyAfter(tb testing.TB, c *natstest.Cluster, victim int) func(killed time.Time) <-chan time.Duration {
	start := make(chan time.Time, 1)
	out := make(chan time.Duration, 1)
	go func() {
		killed := <-start
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		first := make(chan time.Duration, 1)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		var wg sync.WaitGroup
	probing:
		for i := 0; ; i++ {
			node := c.Nodes[(victim+1+i%(len(c.Nodes)-1))%len(c.Nodes)]
			id := fmt.Sprintf("fleet-probe-%d-%d", killed.UnixNano(), i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if probePublish(node.MQTTURL(), id) {
					select {
					case first <- time.Since(killed):
					default:
					}
				}
			}()
			select {
			case <-ctx.Done():
				break probing
			case <-tick.C:
				if len(first) > 0 {
					break probing
				}
			}
		}
		wg.Wait()
		select {
		case d := <-first:
			out <- d
		default:
			tb.Errorf("the cluster took no QoS 1 publish within 2 minutes of the kill")
			out <- 0
		}
	}()
	return func(killed time.Time) <-chan time.Duration {
		start <- killed
		return out
	}
}

// probePublish connects with a clean session, publishes one QoS 1 message
// and reports whether it was acknowledged, within 10 s.
func probePublish(url, id string) bool {
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second))
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return false
	}
	defer c.Disconnect(0)
	pt := c.Publish("failover-probe/"+id, 1, false, "x")
	return pt.WaitTimeout(10*time.Second) && pt.Error() == nil
}

func endpoints(urls []string) []uplink.Endpoint {
	var out []uplink.Endpoint
	for _, u := range urls {
		out = append(out, uplink.Endpoint{URL: u})
	}
	return out
}

// quietLogger keeps the forwarder's warnings (connection changes) on
// stderr when FLEET_VERBOSE is set, and discards them otherwise.
func quietLogger() *slog.Logger {
	if os.Getenv("FLEET_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// openLog opens a buffer in a temporary directory and runs it until the
// benchmark ends. DurabilityNone: the disk is not what is measured.
func openLog(tb testing.TB) *buffer.Log {
	tb.Helper()
	l, err := buffer.Open(filepath.Join(tb.TempDir(), "buffer.db"), buffer.Options{Durability: buffer.DurabilityNone})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("buffer: %v", err)
		}
		if err := l.Close(); err != nil {
			tb.Errorf("buffer close: %v", err)
		}
	})
	return l
}

// fillLog returns a running log holding n events of stream telemetry from
// sources sensors, each a 3-quantity JSON reading.
func fillLog(tb testing.TB, n, sensors int) *buffer.Log {
	tb.Helper()
	l := openLog(tb)
	ctx := context.Background()
	var last buffer.Pending
	for i := range n {
		p, err := enqueueEvent(ctx, l, i%sensors, i)
		if err != nil {
			tb.Fatal(err)
		}
		last = p
	}
	if err := last.Wait(); err != nil {
		tb.Fatal(err)
	}
	return l
}

func appendEvent(ctx context.Context, l *buffer.Log, sensor, seq int) error {
	p, err := enqueueEvent(ctx, l, sensor, seq)
	if err != nil {
		return err
	}
	return p.Wait()
}

func enqueueEvent(ctx context.Context, l *buffer.Log, sensor, seq int) (buffer.Pending, error) {
	now := time.Now()
	id, err := event.NewID(now, nil)
	if err != nil {
		return buffer.Pending{}, err
	}
	src := "sensor-" + strconv.Itoa(sensor)
	ev := &event.Event{ID: id, Stream: "telemetry", Source: src, Topic: "sensors/" + src, Time: now,
		ContentType: "application/json",
		Payload: fmt.Appendf(nil, `{"seq":%d,"temperature":%.2f,"humidity":%.1f,"pressure":%.1f}`,
			seq, 20+rand.Float64()*5, 40+rand.Float64()*20, 1000+rand.Float64()*30)}
	return l.Enqueue(ctx, ev)
}

// runForwarder runs a forwarder for l with cfg while fn runs, then stops it.
func runForwarder(tb testing.TB, l *buffer.Log, cfg uplink.Config, fn func(*uplink.Forwarder)) {
	tb.Helper()
	f, err := uplink.New(l, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("forwarder: %v", err)
		}
	}()
	fn(f)
}

// waitFor polls cond every 10 ms until it holds, failing after d.
func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// countingSub is a cloud subscriber with a persistent QoS 1 session that
// counts messages: load on the cluster as a real consumer makes it.
type countingSub struct {
	mu sync.Mutex
	n  int
}

func (s *countingSub) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func newCountingSub(tb testing.TB, urls []string, id, filter string) *countingSub {
	tb.Helper()
	s := &countingSub{}
	c := connectCloud(tb, urls, id, filter, func(_ paho.Client, _ paho.Message) {
		s.mu.Lock()
		s.n++
		s.mu.Unlock()
	})
	tb.Cleanup(func() { c.Disconnect(50) })
	return s
}
