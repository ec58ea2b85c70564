package conformance

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/mochi-mqtt/server/v2/packets"
)

// wait bounds every wait for something that should happen.
const wait = 10 * time.Second

// opts are what a case needs of the broker under test; each is given to
// ferry and to Mosquitto in their own terms.
type opts struct {
	// acl allows publishing and subscribing within TopicA/# only.
	acl bool
	// sessions keeps sessions in a file (ferry: sessions.db, Mosquitto: its
	// persistence file), so restart can show what survives.
	sessions bool
}

// target is one running broker under test: ferry's embedded broker or
// Debian's Mosquitto, the reference.
type target struct {
	name string // "ferry" or "mosquitto"
	addr string // host:port, plain MQTT over TCP
	ws   string // ws:// URL, or "" without a websocket listener
	host string
	port int

	log *buffertest.Log // ferry: the event log the broker ingests into

	// restart stops the broker and starts it again on the same port(s)
	// with the same session file.
	restart func()
}

// brokers are the two implementations every case runs against.
var brokers = []struct {
	name  string
	start func(*testing.T, opts) *target
}{
	{"ferry", startFerry},
	{"mosquitto", startMosquitto},
}

func splitAddr(t *testing.T, tg *target, addr string) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	tg.addr, tg.host = addr, h
	tg.port, _ = strconv.Atoi(p)
}

// startFerry runs ferry's embedded broker in-process, as the gateway
// configures it: the config's default packet size, the broker's own
// defaults for the rest, every topic routed into an event log.
func startFerry(t *testing.T, o opts) *target {
	t.Helper()
	tcpPort, wsPort := mqtttest.FreePort(t), mqtttest.FreePort(t)
	dir := t.TempDir()
	l := buffertest.MustOpen(t, buffer.Options{})
	cfg := broker.Config{
		Listen:         fmt.Sprintf("127.0.0.1:%d", tcpPort),
		Websocket:      fmt.Sprintf("127.0.0.1:%d", wsPort),
		AllowAnonymous: true,
		MaxPacketSize:  uint32(config.DefaultMaxPacketSize),
		Routes:         []broker.Route{{Topics: []string{"#"}, Stream: "all"}},
	}
	if o.sessions {
		cfg.SessionPath = filepath.Join(dir, "sessions.db")
	}
	if o.acl {
		cfg.ACL = []broker.ACLRule{{User: "*", Publish: []string{"TopicA/#"}, Subscribe: []string{"TopicA/#"}}}
	}
	var (
		mu   sync.Mutex
		stop func()
	)
	run := func() {
		b, err := broker.New(cfg, l)
		if err != nil {
			t.Fatalf("ferry broker: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- b.Run(ctx) }()
		mu.Lock()
		stop = func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("ferry broker run: %v", err)
				}
			case <-time.After(wait):
				t.Errorf("ferry broker did not stop within %v", wait)
			}
		}
		mu.Unlock()
	}
	run()
	t.Cleanup(func() {
		mu.Lock()
		s := stop
		stop = nil
		mu.Unlock()
		if s != nil {
			s()
		}
	})
	tg := &target{name: "ferry", ws: fmt.Sprintf("ws://127.0.0.1:%d/mqtt", wsPort), log: l}
	splitAddr(t, tg, cfg.Listen)
	tg.restart = func() {
		mu.Lock()
		s := stop
		stop = nil
		mu.Unlock()
		s()
		run()
	}
	return tg
}

// startMosquitto runs Debian's Mosquitto on a free loopback port with the
// options in Mosquitto's terms.
func startMosquitto(t *testing.T, o opts) *target {
	t.Helper()
	bin := mqtttest.RequireMosquitto(t)
	tcpPort := mqtttest.FreePort(t)
	dir := t.TempDir()
	var c strings.Builder
	fmt.Fprintf(&c, "per_listener_settings false\nallow_anonymous true\nlog_dest stderr\nlog_type all\n")
	// No websocket listener: Debian's 2.0.11 fails to open one on this
	// machine ("Unable to start any listening sockets", libwebsockets), so
	// websocket clients are tried against ferry only.
	fmt.Fprintf(&c, "listener %d 127.0.0.1\n", tcpPort)
	if o.sessions {
		fmt.Fprintf(&c, "persistence true\npersistence_location %s/\n", dir)
	}
	if o.acl {
		acl := filepath.Join(dir, "acl")
		if err := os.WriteFile(acl, []byte("pattern readwrite TopicA/#\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&c, "acl_file %s\n", acl)
	}
	if os.Geteuid() == 0 {
		// Run as root, Mosquitto drops to user mosquitto, who cannot read
		// or write the test's private temp directory.
		c.WriteString("user root\n")
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(c.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	tg := &target{name: "mosquitto"}
	splitAddr(t, tg, fmt.Sprintf("127.0.0.1:%d", tcpPort))
	var (
		mu   sync.Mutex
		cmd  *exec.Cmd
		logs bytes.Buffer
	)
	run := func() {
		mu.Lock()
		defer mu.Unlock()
		cmd = exec.Command(bin, "-c", conf)
		cmd.Stdout, cmd.Stderr = &syncWriter{w: &logs, mu: &mu}, &syncWriter{w: &logs, mu: &mu}
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start mosquitto: %v", err)
		}
	}
	stop := func() {
		mu.Lock()
		c := cmd
		cmd = nil
		mu.Unlock()
		if c == nil {
			return
		}
		_ = c.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(wait):
			_ = c.Process.Kill()
			<-done
		}
	}
	up := func() {
		deadline := time.Now().Add(wait)
		for {
			c, err := net.DialTimeout("tcp", tg.addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
				return
			}
			if time.Now().After(deadline) {
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("mosquitto did not come up on %s: %v\n%s", tg.addr, err, logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	run()
	up()
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			mu.Lock()
			t.Logf("mosquitto log:\n%s", logs.String())
			mu.Unlock()
		}
	})
	tg.restart = func() { stop(); run(); up() }
	return tg
}

type syncWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// events returns what ferry ingested into its log.
func (tg *target) events(t *testing.T) []event.Event {
	t.Helper()
	var out []event.Event
	if _, err := tg.log.Read("all", 0, 1<<20, func(_ uint64, e *event.Event) error {
		out = append(out, *e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// ---- Raw MQTT -------------------------------------------------------------

// raw is a client speaking MQTT packet by packet (mochi's codec), for what
// the real clients cannot send or do not show: bad aliases, acks' exact
// reason codes and properties, abrupt drops.
type raw struct {
	t    *testing.T
	c    net.Conn
	r    *bufio.Reader
	v    byte // protocol version: 4 (3.1.1) or 5
	next uint16
}

// dialRaw connects and sends CONNECT; the CONNACK is returned.
func dialRaw(t *testing.T, tg *target, v byte, mod func(*packets.Packet)) (*raw, packets.Packet) {
	t.Helper()
	c, err := net.DialTimeout("tcp", tg.addr, wait)
	if err != nil {
		t.Fatalf("%s: dial: %v", tg.name, err)
	}
	t.Cleanup(func() { c.Close() })
	r := &raw{t: t, c: c, r: bufio.NewReader(c), v: v}
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: v,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60,
			ClientIdentifier: fmt.Sprintf("raw-%d", time.Now().UnixNano()),
		},
	}
	if mod != nil {
		mod(&pk)
	}
	r.send(pk)
	ack := r.read()
	if ack.FixedHeader.Type != packets.Connack {
		t.Fatalf("%s: got %s, want CONNACK", tg.name, packets.PacketNames[ack.FixedHeader.Type])
	}
	if ack.ReasonCode != 0 {
		t.Fatalf("%s: CONNACK reason 0x%02x", tg.name, ack.ReasonCode)
	}
	return r, ack
}

func (r *raw) id() uint16 {
	r.next++
	return r.next
}

func (r *raw) send(pk packets.Packet) {
	r.t.Helper()
	pk.ProtocolVersion = r.v
	var b bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&b)
	case packets.Publish:
		err = pk.PublishEncode(&b)
	case packets.Puback:
		err = pk.PubackEncode(&b)
	case packets.Pubrec:
		err = pk.PubrecEncode(&b)
	case packets.Pubrel:
		pk.FixedHeader.Qos = 1
		err = pk.PubrelEncode(&b)
	case packets.Pubcomp:
		err = pk.PubcompEncode(&b)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1
		err = pk.SubscribeEncode(&b)
	case packets.Unsubscribe:
		pk.FixedHeader.Qos = 1
		err = pk.UnsubscribeEncode(&b)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&b)
	default:
		r.t.Fatalf("raw: cannot send packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		r.t.Fatalf("raw: encode %s: %v", packets.PacketNames[pk.FixedHeader.Type], err)
	}
	_ = r.c.SetWriteDeadline(time.Now().Add(wait))
	if _, err := r.c.Write(b.Bytes()); err != nil {
		r.t.Fatalf("raw: write: %v", err)
	}
}

// errClosed: the broker closed the connection.
var errClosed = errors.New("connection closed")

// tryRead reads the next packet within d; errClosed when the broker
// closed the connection, os.ErrDeadlineExceeded when none came.
func (r *raw) tryRead(d time.Duration) (packets.Packet, []byte, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(d))
	var pk packets.Packet
	pk.ProtocolVersion = r.v
	hb, err := r.r.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return pk, nil, errClosed
		}
		return pk, nil, err
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, nil, err
	}
	n, _, err := packets.DecodeLength(r.r)
	if err != nil {
		return pk, nil, err
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(r.r, body); err != nil {
		return pk, nil, err
	}
	rawPk := append(append([]byte{hb}, encLen(n)...), body...)
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubrel:
		err = pk.PubrelDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Unsuback:
		err = pk.UnsubackDecode(body)
	case packets.Disconnect:
		// mochi's decoder skips a DISCONNECT holding only its reason
		// code (remaining length 1), as Mosquitto sends it.
		if r.v == 5 && n == 1 {
			pk.ReasonCode = body[0]
		} else {
			err = pk.DisconnectDecode(body)
		}
	case packets.Pingresp:
	default:
		err = fmt.Errorf("unexpected packet type %d", pk.FixedHeader.Type)
	}
	return pk, rawPk, err
}

// read returns the next packet, failing the test after wait.
func (r *raw) read() packets.Packet {
	r.t.Helper()
	pk, _, err := r.tryRead(wait)
	if err != nil {
		r.t.Fatalf("raw: read: %v", err)
	}
	return pk
}

// readType skips PUBLISHes (acking none) until a packet of type typ.
func (r *raw) readType(typ byte) (packets.Packet, []byte) {
	r.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		pk, b, err := r.tryRead(time.Until(deadline))
		if err != nil {
			r.t.Fatalf("raw: waiting for %s: %v", packets.PacketNames[typ], err)
		}
		if pk.FixedHeader.Type == typ {
			return pk, b
		}
	}
}

// closedWith waits for the broker to end the connection and returns the
// DISCONNECT reason code it sent first (-1: closed without DISCONNECT).
func (r *raw) closedWith() int {
	r.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		pk, _, err := r.tryRead(time.Until(deadline))
		switch {
		case errors.Is(err, errClosed):
			return -1
		case err != nil:
			r.t.Fatalf("raw: waiting for the connection to close: %v", err)
		case pk.FixedHeader.Type == packets.Disconnect:
			return int(pk.ReasonCode)
		}
	}
}

func (r *raw) subscribe(filter string, qos byte, props packets.Properties, subID int) packets.Packet {
	r.t.Helper()
	r.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe},
		PacketID:    r.id(),
		Properties:  props,
		Filters:     packets.Subscriptions{{Filter: filter, Qos: qos, Identifier: subID}},
	})
	ack, _ := r.readType(packets.Suback)
	return ack
}

func (r *raw) publish(topic string, qos byte, payload []byte, props packets.Properties) uint16 {
	r.t.Helper()
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic, Payload: payload, Properties: props,
	}
	if qos > 0 {
		pk.PacketID = r.id()
	}
	r.send(pk)
	return pk.PacketID
}

func encLen(n int) []byte {
	var b []byte
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// ---- Third-party clients ---------------------------------------------------

// tool returns the path of an installed program; under CI=true a missing
// one fails the test (.ci/run installs it), otherwise the test is skipped.
func tool(t *testing.T, name, pkg string, candidates ...string) string {
	t.Helper()
	for _, c := range append([]string{name}, candidates...) {
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed; .ci/run must apt-get install %s", name, pkg)
	}
	t.Skipf("%s not installed (apt-get install %s)", name, pkg)
	return ""
}

// debianPython returns Debian's python3 when it has paho-mqtt (a pyenv or
// venv python3 earlier on PATH usually lacks the Debian module).
func debianPython(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		path, err := exec.LookPath(p)
		if err != nil {
			continue
		}
		if exec.Command(path, "-c", "import paho.mqtt.client").Run() == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("python3 with paho-mqtt is not installed; .ci/run must apt-get install python3-paho-mqtt")
	}
	t.Skip("python3-paho-mqtt not installed (apt-get install python3-paho-mqtt)")
	return ""
}

var (
	mqttjsOnce sync.Once
	mqttjsDir  string
	mqttjsErr  error
)

// mqttjs returns a directory holding client.js with MQTT.js installed
// beside it. The package is installed with `npm ci` from the committed
// package-lock.json into the user's cache directory (keyed by the lock
// file's hash), once per machine, so the source tree stays clean and a
// fresh machine needs only node and npm (and the npm registry, once).
func mqttjs(t *testing.T) string {
	t.Helper()
	tool(t, "node", "nodejs", "nodejs")
	npm := tool(t, "npm", "npm")
	mqttjsOnce.Do(func() { mqttjsDir, mqttjsErr = installMQTTjs(npm) })
	if mqttjsErr != nil {
		t.Fatalf("MQTT.js: %v", mqttjsErr)
	}
	return mqttjsDir
}

func installMQTTjs(npm string) (string, error) {
	src := filepath.Join("testdata", "mqttjs")
	lock, err := os.ReadFile(filepath.Join(src, "package-lock.json"))
	if err != nil {
		return "", err
	}
	pkg, err := os.ReadFile(filepath.Join(src, "package.json"))
	if err != nil {
		return "", err
	}
	script, err := os.ReadFile(filepath.Join(src, "client.js"))
	if err != nil {
		return "", err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	sum := sha256.Sum256(append(append([]byte{}, pkg...), lock...))
	dir := filepath.Join(cache, "ferry", "conformance-mqttjs-"+hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "mqtt", "package.json")); err != nil {
		// Installed into a fresh directory renamed into place, so that
		// concurrent or interrupted runs never see half an install.
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return "", err
		}
		tmp, err := os.MkdirTemp(filepath.Dir(dir), "install-")
		if err != nil {
			return "", err
		}
		defer os.RemoveAll(tmp)
		for name, b := range map[string][]byte{"package.json": pkg, "package-lock.json": lock} {
			if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
				return "", err
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = tmp
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("npm ci in %s: %w\n%s", tmp, err, out)
		}
		if err := os.Rename(tmp, dir); err != nil && !errors.Is(err, os.ErrExist) {
			if _, serr := os.Stat(filepath.Join(dir, "node_modules", "mqtt")); serr != nil {
				return "", err
			}
		}
	}
	// The script is copied on every run: it is the test's, not the cache's.
	if err := os.WriteFile(filepath.Join(dir, "client.js"), script, 0o644); err != nil {
		return "", err
	}
	return dir, nil
}

// runTool runs a client program to its end within wait and returns its
// output; a non-zero exit is returned as an error along with the output.
func runTool(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait+5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// sub is a running mosquitto_sub printing each message as one line
// "MSG <qos> <topic> <length> <payload>" (payloads are short ASCII here,
// except in the large-payload case, which prints no payload).
type sub struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
}

// startSub starts mosquitto_sub with -d (debug lines show its SUBACK) and
// returns once the broker acknowledged the subscription.
func startSub(t *testing.T, tg *target, v string, args ...string) *sub {
	t.Helper()
	return startSubWith(t, tg, v, true, args...)
}

// startSubWith is startSub that waits for the SUBACK only if waitAck.
func startSubWith(t *testing.T, tg *target, v string, waitAck bool, args ...string) *sub {
	t.Helper()
	bin := mqtttest.RequireClient(t, "mosquitto_sub")
	// stdbuf: mosquitto_sub's stdio buffers a pipe whole, and the SUBACK
	// line must be seen when it happens.
	all := append([]string{"-oL", bin, "-h", tg.host, "-p", strconv.Itoa(tg.port), "-V", v, "-d", "-F", "MSG %q %t %l %p"}, args...)
	cmd := exec.Command(tool(t, "stdbuf", "coreutils"), all...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &sub{t: t, cmd: cmd, lines: make(chan string, 4096), done: make(chan struct{})}
	suback := make(chan struct{})
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
		seen := false
		for sc.Scan() {
			line := sc.Text()
			if !seen && strings.Contains(line, "received SUBACK") {
				seen = true
				close(suback)
			}
			if strings.HasPrefix(line, "MSG ") {
				s.lines <- line
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(s.kill)
	if !waitAck {
		return s
	}
	select {
	case <-suback:
	case <-s.done:
		t.Fatalf("%s: mosquitto_sub %v exited before its SUBACK", tg.name, args)
	case <-time.After(wait):
		t.Fatalf("%s: mosquitto_sub %v got no SUBACK within %v", tg.name, args, wait)
	}
	return s
}

// kill ends mosquitto_sub abruptly (no DISCONNECT: its will is sent).
func (s *sub) kill() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
	}
	<-s.done
}

// next returns the next message line, failing after wait.
func (s *sub) next() string {
	s.t.Helper()
	select {
	case l := <-s.lines:
		return l
	case <-time.After(wait):
		s.t.Fatalf("mosquitto_sub: no message within %v", wait)
		return ""
	}
}

// none shows that no message arrives within d.
func (s *sub) none(d time.Duration) {
	s.t.Helper()
	select {
	case l := <-s.lines:
		s.t.Fatalf("mosquitto_sub: unexpected message %q", l)
	case <-time.After(d):
	}
}

// pub runs mosquitto_pub to completion.
func pub(t *testing.T, tg *target, v string, args ...string) {
	t.Helper()
	bin := mqtttest.RequireClient(t, "mosquitto_pub")
	all := append([]string{"-h", tg.host, "-p", strconv.Itoa(tg.port), "-V", v}, args...)
	if out, err := runTool(t, bin, all...); err != nil {
		t.Fatalf("%s: mosquitto_pub %v: %v\n%s", tg.name, args, err, out)
	}
}

// uniq is a topic level unique to this run, so cases never see each
// other's messages or retained state.
func uniq(t *testing.T) string {
	return strings.NewReplacer("/", "-", " ", "_", "#", "", "+", "").Replace(t.Name()) + "-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
}
