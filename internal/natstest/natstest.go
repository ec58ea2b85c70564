// Package natstest runs a real NATS JetStream cluster for tests: Debian's
// nats-server (2.9) as a clustered cloud broker with MQTT enabled on every
// node, each node a subprocess on free loopback ports with a JetStream store
// directory of its own, so that a test can kill a node, restart it, and wait
// until the cluster is healthy again.
//
// NATS's MQTT needs JetStream and an explicit server_name on every node; it
// keeps MQTT sessions and QoS 1 messages in JetStream streams ($MQTT_sess,
// $MQTT_msgs, $MQTT_rmsgs) that it creates on the first MQTT connection.
// StartCluster configures them with min(nodes, 3) replicas (mqtt {
// stream_replicas, consumer_replicas }), so a QoS 1 message the cluster
// acknowledged survives the loss of any one node of three, and so do the
// JetStream consumers behind persistent MQTT subscriptions.
//
// When nats-server is missing the test fails under CI=true (.ci/run
// installs it) and is skipped otherwise. With NATSTEST_LOGDIR set, every
// node's whole output is also appended to <dir>/<node>.log.
//
// # Concurrency
//
// A Cluster's methods may be called from any goroutine; Kill, Stop and
// Restart of one node are serialised. Every process started is killed when
// the test ends (and, through Pdeathsig, when the test binary dies).
package natstest

import (
	"bytes"
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
	"github.com/ferrygw/ferry/internal/testbin"
)

// maxLogBytes bounds the output kept per node (the newest is kept).
const maxLogBytes = 1 << 20

// candidates are where Debian and a manual install put nats-server.
var candidates = []string{"nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"}

// Path returns the nats-server binary, or "" when it is not installed.
func Path() string { return testbin.Find(candidates...) }

// Require returns the nats-server binary; it fails the test under CI=true
// when the binary is missing and skips it otherwise.
func Require(t testing.TB) string {
	t.Helper()
	return testbin.Require(t, "natstest", "nats-server", candidates...)
}

// Cluster is a running NATS cluster.
type Cluster struct {
	t     testing.TB
	bin   string
	Nodes []*Node
}

// Node is one nats-server of a Cluster.
type Node struct {
	// Name is the node's server_name: n1, n2, …
	Name string
	// ClientPort, MQTTPort, ClusterPort and HTTPPort are its loopback
	// listeners: NATS clients, MQTT clients, routes, monitoring.
	ClientPort, MQTTPort, ClusterPort, HTTPPort int
	conf                                        string

	mu     sync.Mutex // serialises start, stop and kill
	cmd    *exec.Cmd
	mqttOK *exec.Cmd // the process that accepted an MQTT connection (mqttReady)
	waited chan struct{}
	log    *ringBuffer
}

// MQTTURL returns the node's MQTT listener as a tcp:// URL for paho.
func (n *Node) MQTTURL() string { return "tcp://127.0.0.1:" + strconv.Itoa(n.MQTTPort) }

// MonitorURL returns the node's monitoring endpoint (http://host:port).
func (n *Node) MonitorURL() string { return "http://127.0.0.1:" + strconv.Itoa(n.HTTPPort) }

// Running reports whether the node's process is up.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// Logs returns the newest output of the node (at most 1 MiB).
func (n *Node) Logs() string { return n.log.String() }

// StartCluster starts n nats-server nodes (1 to 5) clustered over routes,
// each with JetStream and MQTT, waits until the cluster is healthy
// (WaitHealthy) and stops every node when the test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	bin := Require(t)
	if n < 1 || n > 5 {
		t.Fatalf("natstest: %d nodes (1..5)", n)
	}
	c := &Cluster{t: t, bin: bin}
	dir := t.TempDir()
	for i := range n {
		c.Nodes = append(c.Nodes, &Node{
			Name:        "n" + strconv.Itoa(i+1),
			ClientPort:  mqtttest.FreePort(t),
			MQTTPort:    mqtttest.FreePort(t),
			ClusterPort: mqtttest.FreePort(t),
			HTTPPort:    mqtttest.FreePort(t),
			log:         &ringBuffer{max: maxLogBytes},
		})
	}
	replicas := min(n, 3)
	var routes []string
	for _, nd := range c.Nodes {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", nd.ClusterPort))
	}
	for _, nd := range c.Nodes {
		store := filepath.Join(dir, nd.Name)
		if err := os.MkdirAll(store, 0o700); err != nil {
			t.Fatal(err)
		}
		cluster := ""
		if n > 1 {
			cluster = fmt.Sprintf("cluster {\n  name: ferrytest\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n",
				nd.ClusterPort, strings.Join(routes, ", "))
		}
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %q
  max_memory_store: 64MB
  max_file_store: 2GB
}
%smqtt {
  listen: 127.0.0.1:%d
  stream_replicas: %d
  consumer_replicas: %d
}
`, nd.Name, nd.ClientPort, nd.HTTPPort, store, cluster, nd.MQTTPort, replicas, replicas)
		nd.conf = filepath.Join(dir, nd.Name+".conf")
		if err := os.WriteFile(nd.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, nd := range c.Nodes {
			nd.kill()
		}
	})
	for _, nd := range c.Nodes {
		if err := c.start(nd); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitHealthy(60 * time.Second); err != nil {
		t.Fatalf("natstest: cluster did not become healthy: %v\n%s", err, c.logTails())
	}
	return c
}

// MQTTURLs returns every node's MQTT URL, in node order.
func (c *Cluster) MQTTURLs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.MQTTURL())
	}
	return out
}

// NodeByMQTTURL returns the node whose MQTT URL is url, or nil.
func (c *Cluster) NodeByMQTTURL(url string) *Node {
	for _, n := range c.Nodes {
		if n.MQTTURL() == url {
			return n
		}
	}
	return nil
}

func (c *Cluster) start(n *Node) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return nil
	}
	cmd := exec.Command(c.bin, "-c", n.conf)
	var out io.Writer = n.log
	var logFile *os.File
	if dir := os.Getenv("NATSTEST_LOGDIR"); dir != "" {
		// Keep every node's whole output for a post-mortem.
		f, err := os.OpenFile(filepath.Join(dir, n.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("natstest: NATSTEST_LOGDIR: %w", err)
		}
		logFile = f
		out = io.MultiWriter(n.log, f)
	}
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		if logFile != nil {
			logFile.Close()
		}
		return fmt.Errorf("natstest: start %s: %w", n.Name, err)
	}
	n.cmd = cmd
	n.waited = make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait() // returns once the output is copied
		if logFile != nil {
			logFile.Close()
		}
		close(done)
	}(n.waited)
	// Up when its MQTT and monitoring listeners accept connections.
	deadline := time.Now().Add(20 * time.Second)
	for _, port := range []int{n.HTTPPort, n.MQTTPort} {
		for {
			conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 200*time.Millisecond)
			if err == nil {
				conn.Close()
				break
			}
			select {
			case <-n.waited:
				return fmt.Errorf("natstest: %s exited at start:\n%s", n.Name, tail(n.log.String(), 4000))
			default:
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("natstest: %s: port %d not up: %v\n%s", n.Name, port, err, tail(n.log.String(), 4000))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// Kill kills node i (0-based) with SIGKILL: no goodbye to its peers or
// clients, as when a machine dies. Its store stays for Restart.
func (c *Cluster) Kill(i int) { c.Nodes[i].kill() }

func (n *Node) kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.waited
	n.cmd = nil
}

// Stop stops node i gracefully (SIGTERM), killing it after 10 s.
func (c *Cluster) Stop(i int) {
	n := c.Nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.waited:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.waited
	}
	n.cmd = nil
}

// Restart starts a stopped or killed node i again on its ports with its
// store; it does not wait for the cluster (see WaitHealthy).
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if err := c.start(c.Nodes[i]); err != nil {
		c.t.Fatal(err)
	}
}

// WaitHealthy polls the monitoring endpoints until the cluster is healthy
// or timeout passes: every running node is up with JetStream enabled
// (/healthz?js-enabled-only=true), all running nodes agree on a JetStream
// meta leader that is itself running, every MQTT stream ($MQTT_msgs,
// $MQTT_sess, $MQTT_rmsgs) that exists has a leader on a running node
// which sees each of the stream's replicas on running nodes current, and
// every consumer of the message stream (one per persistent subscription)
// has a leader on a running node, and every running node has accepted an
// MQTT connection since it started (NATS sets MQTT up on a node at its
// first MQTT connection, which a restarted node may take seconds to
// finish). With a node down this is "as healthy as it can be": every
// stream and consumer has a leader and a quorum.
//
// The plain /healthz is not used: NATS 2.9 reports a restarted node
// unhealthy for as long as an idle consumer's replica on it has not seen
// a new entry ("consumer … is not current"), which can be forever on an
// idle cluster, although the consumer's leader and quorum are fine.
func (c *Cluster) WaitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var why error
	for {
		if why = c.healthy(); why == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return why
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Healthy is WaitHealthy's check, once: nil when healthy, else why not.
func (c *Cluster) Healthy() error { return c.healthy() }

func (c *Cluster) healthy() error {
	running := map[string]bool{}
	byName := map[string]*Node{}
	var up []*Node
	for _, n := range c.Nodes {
		if n.Running() {
			running[n.Name] = true
			byName[n.Name] = n
			up = append(up, n)
		}
	}
	if len(up) == 0 {
		return fmt.Errorf("no node is running")
	}
	leader := ""
	var js *jszReply
	for _, n := range up {
		var hz struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		}
		if err := getJSON(n.MonitorURL()+"/healthz?js-enabled-only=true", &hz); err != nil && hz.Status == "" {
			return fmt.Errorf("%s /healthz: %w", n.Name, err)
		}
		if hz.Status != "ok" {
			return fmt.Errorf("%s /healthz: %s %s", n.Name, hz.Status, hz.Error)
		}
		r, err := jsz(n)
		if err != nil {
			return err
		}
		if js == nil {
			js = r
		}
		if len(c.Nodes) > 1 {
			l := r.Meta.Leader
			if l == "" || !running[l] {
				return fmt.Errorf("%s: JetStream meta leader %q is not a running node", n.Name, l)
			}
			if leader != "" && l != leader {
				return fmt.Errorf("nodes disagree on the meta leader: %s and %s", leader, l)
			}
			leader = l
		}
	}
	// NATS sets MQTT up on a node at its first MQTT connection (streams,
	// its retained-messages consumer): until one succeeded, a restarted
	// node is not ready for MQTT clients, however healthy its JetStream.
	for _, n := range up {
		if err := n.mqttReady(); err != nil {
			return err
		}
	}
	if len(c.Nodes) == 1 {
		return nil
	}
	for _, acc := range js.Accounts {
		for _, s := range acc.Streams {
			if !strings.HasPrefix(s.Name, "$MQTT_") {
				continue
			}
			// Replica state is only accurate on a stream's leader: ask it.
			ln := byName[s.Cluster.Leader]
			if ln == nil {
				return fmt.Errorf("stream %s: leader %q is not a running node", s.Name, s.Cluster.Leader)
			}
			ljs, err := jsz(ln)
			if err != nil {
				return err
			}
			if err := ljs.checkReplicas(s.Name, ln.Name, running); err != nil {
				return err
			}
			if s.Name != "$MQTT_msgs" {
				continue
			}
			for _, cs := range s.Consumers {
				if l := cs.Cluster.Leader; l == "" || !running[l] {
					return fmt.Errorf("consumer %s > %s: leader %q is not a running node", s.Name, cs.Name, l)
				}
			}
		}
	}
	return nil
}

// mqttReady connects to n's MQTT listener with a clean session once per
// process of n: nil when the CONNECT was accepted.
func (n *Node) mqttReady() error {
	n.mu.Lock()
	cmd, ready := n.cmd, n.mqttOK
	n.mu.Unlock()
	if cmd == nil || ready == cmd {
		return nil
	}
	c := paho.NewClient(paho.NewClientOptions().AddBroker(n.MQTTURL()).SetClientID("natstest-ready-" + n.Name).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second))
	tok := c.Connect()
	if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		return fmt.Errorf("%s: MQTT CONNECT not accepted: %v", n.Name, tok.Error())
	}
	c.Disconnect(0)
	n.mu.Lock()
	if n.cmd == cmd {
		n.mqttOK = cmd
	}
	n.mu.Unlock()
	return nil
}

// checkReplicas checks, on the reply of the node that leads stream name,
// that it still leads it and that its replicas on running nodes are current.
func (r *jszReply) checkReplicas(name, self string, running map[string]bool) error {
	for _, acc := range r.Accounts {
		for _, s := range acc.Streams {
			if s.Name != name {
				continue
			}
			if s.Cluster.Leader != self {
				return fmt.Errorf("stream %s: leadership moving (%s says %q)", name, self, s.Cluster.Leader)
			}
			for _, rp := range s.Cluster.Replicas {
				if running[rp.Name] && (!rp.Current || rp.Offline) {
					return fmt.Errorf("stream %s: replica %s is not current", name, rp.Name)
				}
			}
			return nil
		}
	}
	return fmt.Errorf("stream %s: not on its leader %s", name, self)
}

// jszReply is the part of /jsz?consumers=true the health check reads.
type jszReply struct {
	Meta struct {
		Leader string `json:"leader"`
	} `json:"meta_cluster"`
	Accounts []struct {
		Streams []struct {
			Name    string `json:"name"`
			Cluster struct {
				Leader   string `json:"leader"`
				Replicas []struct {
					Name    string `json:"name"`
					Current bool   `json:"current"`
					Offline bool   `json:"offline"`
				} `json:"replicas"`
			} `json:"cluster"`
			Consumers []struct {
				Name    string `json:"name"`
				Cluster struct {
					Leader string `json:"leader"`
				} `json:"cluster"`
			} `json:"consumer_detail"`
		} `json:"stream_detail"`
	} `json:"account_details"`
}

func jsz(n *Node) (*jszReply, error) {
	var r jszReply
	if err := getJSON(n.MonitorURL()+"/jsz?consumers=true", &r); err != nil {
		return nil, fmt.Errorf("%s /jsz: %w", n.Name, err)
	}
	return &r, nil
}

// StreamLeader returns the node currently leading JetStream stream name
// (e.g. "$MQTT_msgs"), as seen by the first running node, or "".
func (c *Cluster) StreamLeader(name string) string {
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		js, err := jsz(n)
		if err != nil {
			continue
		}
		for _, acc := range js.Accounts {
			for _, s := range acc.Streams {
				if s.Name == name {
					return s.Cluster.Leader
				}
			}
		}
		return ""
	}
	return ""
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

// getJSON decodes url's body into v; a non-200 answer with a JSON body
// (/healthz when unhealthy) is decoded too and also returned as an error.
func getJSON(url string, v any) error {
	resp, err := httpClient.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return err
	}
	derr := json.Unmarshal(buf.Bytes(), v)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, tail(buf.String(), 300))
	}
	return derr
}

// logTails returns the end of every node's output, for a failure message.
func (c *Cluster) logTails() string {
	var b strings.Builder
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "--- %s:\n%s\n", n.Name, tail(n.Logs(), 3000))
	}
	return b.String()
}

// LogTails is the end of every node's output (for a failing test's message).
func (c *Cluster) LogTails() string { return c.logTails() }

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// ringBuffer keeps the newest max bytes written to it; exec's copying
// goroutine writes while a test may read.
type ringBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (r *ringBuffer) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.b = append(r.b, p...)
	if len(r.b) > r.max {
		r.b = append(r.b[:0], r.b[len(r.b)-r.max/2:]...)
	}
	return len(p), nil
}

func (r *ringBuffer) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(r.b)
}

// StepDown asks the leader of JetStream stream name to step down, over the
// NATS client protocol of a running node ($JS.API.STREAM.LEADER.STEPDOWN),
// and waits until another running node leads it. It lets a test choose
// which node leads the MQTT streams before it kills one.
func (c *Cluster) StepDown(name string) error {
	old := c.StreamLeader(name)
	if old == "" {
		return fmt.Errorf("stream %s has no leader", name)
	}
	var n *Node
	for _, nd := range c.Nodes {
		if nd.Running() {
			n = nd
			break
		}
	}
	if n == nil {
		return fmt.Errorf("no node is running")
	}
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(n.ClientPort), 2*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	subj := "$JS.API.STREAM.LEADER.STEPDOWN." + name
	// The server's INFO comes first; the PONG after our PING says the
	// PUB was processed.
	if _, err := fmt.Fprintf(conn, "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPUB %s 0\r\n\r\nPING\r\n", subj); err != nil {
		return err
	}
	buf := make([]byte, 0, 4096)
	tmp := make([]byte, 1024)
	for !bytes.Contains(buf, []byte("PONG\r\n")) {
		k, err := conn.Read(tmp)
		if err != nil {
			return fmt.Errorf("stepdown %s: %w", name, err)
		}
		buf = append(buf, tmp[:k]...)
		if bytes.Contains(buf, []byte("-ERR")) {
			return fmt.Errorf("stepdown %s: %s", name, tail(string(buf), 200))
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		l := c.StreamLeader(name)
		if l != "" && l != old {
			for _, nd := range c.Nodes {
				if nd.Name == l && nd.Running() {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("stream %s: still led by %q after stepping down %s", name, l, old)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ConsumerReport returns, from the first running node, one line per
// consumer of the MQTT message stream (one per persistent subscription)
// with its delivery state, and the stream's message count: what a test
// prints when a message did not reach a subscriber.
func (c *Cluster) ConsumerReport() string {
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		var r struct {
			Accounts []struct {
				Streams []struct {
					Name  string `json:"name"`
					State struct {
						Msgs     uint64 `json:"messages"`
						FirstSeq uint64 `json:"first_seq"`
						LastSeq  uint64 `json:"last_seq"`
					} `json:"state"`
					Consumers []struct {
						Name      string `json:"name"`
						Delivered struct {
							Stream uint64 `json:"stream_seq"`
						} `json:"delivered"`
						AckFloor struct {
							Stream uint64 `json:"stream_seq"`
						} `json:"ack_floor"`
						Pending     uint64 `json:"num_pending"`
						AckPending  uint64 `json:"num_ack_pending"`
						Redelivered uint64 `json:"num_redelivered"`
						Config      struct {
							Filter string `json:"filter_subject"`
						} `json:"config"`
					} `json:"consumer_detail"`
				} `json:"stream_detail"`
			} `json:"account_details"`
		}
		if err := getJSON(n.MonitorURL()+"/jsz?consumers=true", &r); err != nil {
			return fmt.Sprintf("%s /jsz: %v", n.Name, err)
		}
		var b strings.Builder
		for _, acc := range r.Accounts {
			for _, s := range acc.Streams {
				if s.Name != "$MQTT_msgs" {
					continue
				}
				fmt.Fprintf(&b, "%s (seen from %s): %d messages, seq %d..%d\n", s.Name, n.Name, s.State.Msgs, s.State.FirstSeq, s.State.LastSeq)
				for _, cs := range s.Consumers {
					fmt.Fprintf(&b, "  consumer %s filter %s: delivered through %d, acked through %d, pending %d, ack pending %d, redelivered %d\n",
						cs.Name, cs.Config.Filter, cs.Delivered.Stream, cs.AckFloor.Stream, cs.Pending, cs.AckPending, cs.Redelivered)
				}
			}
		}
		return b.String()
	}
	return "no node is running"
}
