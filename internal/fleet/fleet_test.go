package fleet

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/opsapi"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/ferrygw/ferry/internal/natstest"
	"github.com/ferrygw/ferry/uplink"
	"github.com/ferrygw/ferry/verify"

	paho "github.com/eclipse/paho.mqtt.golang"
)

const (
	// fleetSize gateways run as `ferry run` processes, each with its own
	// data directory, broker and status listener. 20 processes cost
	// about 30 MB of RSS each and little CPU between readings: measured
	// lighter on this 2-core VM than 20 gateways in the test binary,
	// where their GCs and the cloud subscriber share one runtime.
	fleetSize = 20
	// sensorInterval paces each gateway's sensor: 20 QoS 1 readings a
	// second, 400 for the fleet.
	sensorInterval = 50 * time.Millisecond
	// fleetUplink is every gateway's uplink beyond its endpoints: one
	// topic per stream so that consecutive events share a message,
	// batches of up to 100 events (see "Running a fleet" in the README:
	// NATS stores every QoS 1 PUBLISH with a replicated JetStream write),
	// and a backoff capped at 10 s to bound the test.
	fleetUplink = `  topic: "fleet/{gateway_id}/{stream}"
  batch: {max_events: 100}
  backoff: {max: 10s}
`
)

// cloud is what the fleet uplinks to.
type cloud interface {
	name() string
	// urls are the endpoints, in node order.
	urls() []string
	// outage takes the whole cloud away (gracefully); back brings it
	// back and returns once it serves.
	outage(t *testing.T)
	back(t *testing.T)
	// nodes is how many nodes kill and restart address; alone says
	// there is no other node to fail over to.
	nodes() int
	alone() bool
	kill(t *testing.T, i int)
	restart(t *testing.T, i int)
	// report describes the cloud's delivery state, for a failure.
	report() string
}

// natsCloud is a 3-node NATS JetStream cluster with MQTT on every node.
type natsCloud struct{ c *natstest.Cluster }

func (n *natsCloud) name() string   { return "NATS JetStream, 3 nodes" }
func (n *natsCloud) urls() []string { return n.c.MQTTURLs() }
func (n *natsCloud) nodes() int     { return len(n.c.Nodes) }
func (n *natsCloud) alone() bool    { return false }
func (n *natsCloud) outage(*testing.T) {
	for i := range n.c.Nodes {
		n.c.Stop(i)
	}
}

func (n *natsCloud) back(t *testing.T) {
	t.Helper()
	for i := range n.c.Nodes {
		n.c.Restart(i)
	}
	n.healthy(t)
}

func (n *natsCloud) kill(_ *testing.T, i int) { n.c.Kill(i) } // SIGKILL: a node dies

func (n *natsCloud) restart(t *testing.T, i int) {
	t.Helper()
	n.c.Restart(i)
	n.healthy(t)
}

func (n *natsCloud) report() string { return n.c.ConsumerReport() }

func (n *natsCloud) healthy(t *testing.T) {
	t.Helper()
	if err := n.c.WaitHealthy(2 * time.Minute); err != nil {
		t.Fatalf("NATS cluster not healthy: %v\n%s", err, n.c.LogTails())
	}
}

// mosquittoCloud is one Mosquitto with persistence. Its "kill" is a
// graceful stop: Mosquitto saves persistent sessions only at shutdown (or
// every autosave_interval), so a SIGKILL loses messages Mosquitto itself
// acknowledged and had not yet delivered, which says nothing about ferry.
type mosquittoCloud struct{ b *mqtttest.Broker }

func (m *mosquittoCloud) name() string            { return "Mosquitto, 1 node" }
func (m *mosquittoCloud) urls() []string          { return []string{m.b.URL()} }
func (m *mosquittoCloud) nodes() int              { return 1 }
func (m *mosquittoCloud) alone() bool             { return true }
func (m *mosquittoCloud) outage(*testing.T)       { m.b.Stop() }
func (m *mosquittoCloud) back(*testing.T)         { m.b.StartAgain() }
func (m *mosquittoCloud) kill(*testing.T, int)    { m.b.Stop() }
func (m *mosquittoCloud) restart(*testing.T, int) { m.b.StartAgain() }
func (m *mosquittoCloud) report() string {
	return "Mosquitto (end of its log):\n" + string(tailBytes([]byte(m.b.Logs()), 3000))
}

// TestFleetNATS: 20 gateways, each with the three nodes of a NATS
// JetStream cluster as endpoints, forward their sensors' readings through
// a whole-cloud outage and the death (SIGKILL) and restart of every node
// in turn; at the end every reading a sensor got a PUBACK for is at the
// cloud subscriber (persistent session, QoS 1).
func TestFleetNATS(t *testing.T) {
	runFleet(t, &natsCloud{natstest.StartCluster(t, 3)})
}

// TestFleetMosquitto is TestFleetNATS against a plain Mosquitto cloud.
func TestFleetMosquitto(t *testing.T) {
	mqtttest.RequireMosquitto(t)
	runFleet(t, &mosquittoCloud{mqtttest.StartWith(t, mqtttest.Options{Persistent: true})})
}

func runFleet(t *testing.T, cl cloud) {
	began := time.Now()
	rec := newRecorder()
	sub := connectCloud(t, cl.urls(), "fleet-cloud", "fleet/#", rec.handle)
	t.Cleanup(func() { sub.Disconnect(100) })
	// ferry verify runs as the README tells fleet operators to, except
	// against NATS, where its persistent subscription can stall like the
	// recorder's (see drainCloud); there its checker reads what the
	// recorder received.
	var vf *verifier
	if cl.alone() {
		vf = startVerify(t, cl.urls(), "fleet/#")
	}

	urls := cl.urls()
	gws := make([]*gateway, fleetSize)
	for i := range gws {
		// Each gateway lists every node, starting with a different one,
		// so that the fleet spreads over the cluster.
		k := i % len(urls)
		gws[i] = startGateway(t, i, append(slices.Clone(urls[k:]), urls[:k]...), fleetUplink)
	}
	waitAll(t, gws, time.Minute, "every gateway connected", func(st *opsapi.Status) bool {
		return st.Link != nil && st.Link.Connected
	})
	t.Logf("%s: %d gateways connected %v after the start", cl.name(), fleetSize, time.Since(began).Round(time.Millisecond))

	sensors := make([]*sensor, fleetSize)
	for i, g := range gws {
		sensors[i] = startSensor(t, g, sensorInterval)
	}
	waitFor(t, time.Minute, "readings at the cloud", func() bool { return rec.distinct() >= 20*fleetSize })

	// A whole-cloud outage: the fleet buffers, then drains.
	t0 := time.Now()
	cl.outage(t)
	waitAll(t, gws, time.Minute, "a backlog of 100 events on every gateway", func(st *opsapi.Status) bool {
		return st.Link != nil && !st.Link.Connected && backlog(st) >= 100
	})
	down := time.Since(t0)
	t1 := time.Now()
	cl.back(t)
	up := time.Since(t1)
	t2 := time.Now()
	waitAll(t, gws, 3*time.Minute, "every backlog forwarded after the outage", func(st *opsapi.Status) bool {
		return st.Link != nil && st.Link.Connected && backlog(st) < 20
	})
	t.Logf("outage: cloud down %v (until every gateway held 100 events), back and serving after %v, every backlog forwarded %v later",
		down.Round(time.Millisecond), up.Round(time.Millisecond), time.Since(t2).Round(time.Millisecond))

	// Every node dies once (SIGKILL for a cluster node) and comes back.
	var all []time.Duration
	for i := range cl.nodes() {
		all = append(all, killNode(t, cl, gws, i)...)
	}

	// Drain: the sensors stop; every acknowledged reading must arrive.
	acked := map[int]map[int][]int{}
	total, failed := 0, 0
	for _, s := range sensors {
		s.halt()
		a, f := s.result()
		acked[s.g] = map[int][]int{0: a}
		total += len(a)
		failed += f
	}
	t3 := time.Now()
	sub = drainCloud(t, cl, sub, rec, total)
	drain := time.Since(t3)
	msgs := rec.snapshot()
	rep := checkDelivery(msgs, acked)
	t.Logf("%s: %d gateways, %d readings acknowledged to the sensors (%d publishes not acknowledged: the sensor may resend those, ferry never promised them), run %v, last reading at the cloud %v after the sensors stopped",
		cl.name(), fleetSize, total, failed, time.Since(began).Round(time.Second), drain.Round(time.Millisecond))
	t.Logf("cloud: %s", rep)
	if len(all) > 0 {
		t.Logf("failovers: %s", durations(all))
	}
	if len(rep.Missing) > 0 {
		t.Errorf("%d acknowledged readings never reached the cloud:%s\n%s", len(rep.Missing), missingSample(rep.Missing), cl.report())
	}
	if rep.Undecodable > 0 || rep.Foreign > 0 || rep.SameReadingTwoIDs > 0 {
		t.Errorf("cloud: %d undecodable messages, %d foreign events, %d readings under two IDs", rep.Undecodable, rep.Foreign, rep.SameReadingTwoIDs)
	}
	for _, g := range gws {
		st, err := g.status()
		if err != nil {
			t.Errorf("%s: %v", g.id, err)
			continue
		}
		if st.Link != nil && len(st.Link.Dropped) > 0 {
			t.Errorf("%s: the uplink dropped events: %v", g.id, st.Link.Dropped)
		}
	}
	checkVerify(t, "ferry verify's checker over what the cloud subscriber received (lag: at the end)", checkReceived(t, msgs), 0, total)
	if vf != nil {
		vf.waitReceived(t, rec.distinct(), time.Minute)
		vrep, code := vf.finish(t)
		checkVerify(t, "ferry verify (its own subscription)", vrep, code, total)
	}
}

// drainCloud waits up to 3 minutes until the cloud subscriber has total
// distinct readings and returns it (a new one when it was reconnected).
// NATS 2.9 sometimes stops delivering a persistent QoS 1 subscription
// after its nodes died and came back: the consumer holds the messages
// (num_pending > 0, nothing awaiting an ack) and sends none
// (nats-server#5679, #6989). The subscriber then reconnects, which
// restarts the delivery; the log says so.
func drainCloud(t *testing.T, cl cloud, sub paho.Client, rec *recorder, total int) paho.Client {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	last, since := rec.distinct(), time.Now()
	for rec.distinct() < total && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if n := rec.distinct(); n != last {
			last, since = n, time.Now()
			continue
		}
		if !cl.alone() && time.Since(since) > 20*time.Second {
			t.Logf("cloud subscriber stalled at %d of %d readings for 20 s; reconnecting it\n%s", last, total, cl.report())
			sub.Disconnect(100)
			sub = connectCloud(t, cl.urls(), "fleet-cloud", "fleet/#", rec.handle)
			since = time.Now()
		}
	}
	return sub
}

// checkReceived runs ferry verify's checker over the messages the cloud
// subscriber received and returns its final report.
func checkReceived(t *testing.T, msgs []Received) *verify.Report {
	t.Helper()
	c, err := verify.NewChecker(verify.Config{Decode: uplink.DecodeEnvelopes})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		c.Handle(m.Payload)
	}
	c.Finish()
	return c.Report()
}

// killNode kills node i, measures how long each gateway that was
// connected to it takes to forward again through another node (or, with
// a single node, through it once restarted), restarts it and returns the
// gateways' failover times.
func killNode(t *testing.T, cl cloud, gws []*gateway, i int) []time.Duration {
	t.Helper()
	url := cl.urls()[i]
	before := statuses(t, gws)
	var on []int
	for k, st := range before {
		if st.Link != nil && st.Link.Connected && st.Link.Endpoint == url {
			on = append(on, k)
		}
	}
	killed := time.Now()
	cl.kill(t, i)
	if cl.alone() {
		waitAll(t, gws, time.Minute, "every gateway to see the cloud gone", func(st *opsapi.Status) bool {
			return st.Link != nil && !st.Link.Connected
		})
		cl.restart(t, i)
	}
	took := make([]time.Duration, len(gws))
	deadline := time.Now().Add(2 * time.Minute)
	for {
		pending := 0
		for _, k := range on {
			if took[k] != 0 {
				continue
			}
			st, err := gws[k].status()
			if err == nil && st.Link != nil && st.Link.Connected &&
				(cl.alone() || st.Link.Endpoint != url) && st.Link.ForwardedEvents > before[k].Link.ForwardedEvents {
				took[k] = time.Since(killed)
				continue
			}
			pending++
		}
		if pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d killed: %d of %d gateways not forwarding again within 2 minutes", i, pending, len(on))
		}
		time.Sleep(100 * time.Millisecond)
	}
	var out []time.Duration
	for _, k := range on {
		out = append(out, took[k])
	}
	if !cl.alone() {
		cl.restart(t, i)
	}
	t.Logf("node %d (%s) killed with %d gateways on it: forwarding again after %s", i+1, url, len(on), durations(out))
	return out
}

// backlog is the number of events of stream telemetry still buffered.
func backlog(st *opsapi.Status) int64 {
	for _, s := range st.Streams {
		if s.Name == "telemetry" {
			return s.Events
		}
	}
	return 0
}

// statuses fetches every gateway's status, failing the test on an error.
func statuses(t *testing.T, gws []*gateway) []*opsapi.Status {
	t.Helper()
	out := make([]*opsapi.Status, len(gws))
	for k, g := range gws {
		st, err := g.status()
		if err != nil {
			t.Fatal(err)
		}
		out[k] = st
	}
	return out
}

// waitAll polls every gateway's status until cond holds for all of them,
// failing after d with the gateways it did not hold for.
func waitAll(t *testing.T, gws []*gateway, d time.Duration, what string, cond func(*opsapi.Status) bool) {
	t.Helper()
	done := make([]bool, len(gws))
	deadline := time.Now().Add(d)
	for {
		var missing []string
		for k, g := range gws {
			if done[k] {
				continue
			}
			st, err := g.status()
			if err == nil && cond(st) {
				done[k] = true
				continue
			}
			missing = append(missing, g.id)
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: not yet %s", d, what, strings.Join(missing, ", "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// durations summarises failover times: count, median, max, all.
func durations(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return fmt.Sprintf("%d: median %v, max %v", len(s), s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}
