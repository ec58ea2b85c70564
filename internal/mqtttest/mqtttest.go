// Package mqtttest runs real MQTT brokers for tests: Debian's Mosquitto as
// the stand-in cloud, on a free loopback port, stoppable and restartable on
// the same port to simulate outages.
//
// When the mosquitto binary is missing the test fails under CI=true (CI
// installs it) and otherwise falls back to an in-process mochi broker, so a
// developer without Mosquitto can still run the suite.
package mqtttest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
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

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/ferrygw/ferry/internal/testbin"
)

// Broker is a running (or stopped) test broker on a fixed loopback port.
type Broker struct {
	t    testing.TB
	Addr string // host:port
	Kind string // "mosquitto" or "mochi"

	mu     sync.Mutex
	cmd    *exec.Cmd
	waited chan struct{}
	conf   string
	logBuf *lockedBuffer
	mochi  *mqtt.Server
}

// URL returns the broker's address as a tcp:// URL for paho.
func (b *Broker) URL() string { return "tcp://" + b.Addr }

// FreePort returns a loopback TCP port that was free a moment ago and that
// this process has not handed out before.
//
// It is taken below the kernel's ephemeral range (ip_local_port_range),
// not from it: a port the kernel picked for "listen on :0" is just as
// likely to be picked next for some test's outgoing connection, which then
// holds it when the test binds it ("address already in use" under load).
// Test binaries run in parallel, so the search starts at a random port.
func FreePort(t testing.TB) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	lo, hi := 10000, ephemeralStart()-1
	if hi <= lo {
		lo, hi = 1024, 65535
	}
	n := hi - lo + 1
	start := rand.IntN(n)
	for i := 0; i < n; i++ {
		port := lo + (start+i)%n
		if portsGiven[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		portsGiven[port] = true
		return port
	}
	t.Fatalf("mqtttest: no free port in %d-%d", lo, hi)
	return 0
}

var (
	portMu     sync.Mutex
	portsGiven = map[int]bool{}
)

// ephemeralStart is the first port the kernel hands out for outgoing
// connections and "listen on :0" (Linux's default when unknown).
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	v, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return v
}

// mosquittoCandidates are where Debian and a manual install put mosquitto.
var mosquittoCandidates = []string{"mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"}

// MosquittoPath returns the mosquitto binary, or "" when it is not installed.
func MosquittoPath() string { return testbin.Find(mosquittoCandidates...) }

// RequireMosquitto returns the mosquitto binary path; it fails the test
// under CI=true when the binary is missing and skips it otherwise.
func RequireMosquitto(t testing.TB) string {
	t.Helper()
	return testbin.Require(t, "mqtttest", "mosquitto", mosquittoCandidates...)
}

// Options tune the Mosquitto instance.
type Options struct {
	// Persistent keeps sessions and queued messages across Stop and
	// StartAgain (Mosquitto's persistence file), so a subscriber with a
	// persistent session misses nothing during an outage.
	Persistent bool
	// Extra is appended to Mosquitto's configuration (the mochi fallback
	// ignores it).
	Extra string
}

// Start starts a cloud broker on a free loopback port and stops it when the
// test ends. It prefers Mosquitto; see the package doc for the fallback.
func Start(t testing.TB) *Broker {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith is Start with options.
func StartWith(t testing.TB, o Options) *Broker {
	t.Helper()
	b := &Broker{t: t, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))}
	if MosquittoPath() == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("mqtttest: mosquitto is not installed; .ci/run must apt-get install mosquitto")
		}
		t.Logf("mqtttest: mosquitto not found, using an embedded mochi broker as the cloud")
		b.Kind = "mochi"
	} else {
		b.Kind = "mosquitto"
		b.conf = filepath.Join(t.TempDir(), "mosquitto.conf")
		_, port, _ := net.SplitHostPort(b.Addr)
		persist := "persistence false\n"
		if o.Persistent {
			persist = fmt.Sprintf("persistence true\npersistence_location %s/\n", filepath.Dir(b.conf))
			if os.Geteuid() == 0 {
				// Mosquitto run as root drops to user mosquitto, who
				// cannot write the test's private temp directory.
				persist += "user root\n"
			}
		}
		conf := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\n%smax_inflight_messages 0\nmax_queued_messages 0\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\nlog_type subscribe\n%s", port, persist, o.Extra)
		if err := os.WriteFile(b.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b.StartAgain()
	t.Cleanup(b.Stop)
	return b
}

// StartAgain (re)starts a stopped broker on the same port and waits until it
// accepts connections.
func (b *Broker) StartAgain() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil || b.mochi != nil {
		return
	}
	if b.Kind == "mochi" {
		s := mqtt.New(&mqtt.Options{InlineClient: false})
		_ = s.AddHook(new(auth.AllowHook), nil)
		if err := s.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: b.Addr})); err != nil {
			b.t.Fatalf("mqtttest: mochi listener: %v", err)
		}
		go func() { _ = s.Serve() }()
		b.mochi = s
	} else {
		if b.logBuf == nil {
			b.logBuf = new(lockedBuffer)
		}
		cmd := exec.Command(MosquittoPath(), "-c", b.conf)
		cmd.Stdout = b.logBuf
		cmd.Stderr = b.logBuf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			b.t.Fatalf("mqtttest: start mosquitto: %v", err)
		}
		b.cmd = cmd
		b.waited = make(chan struct{})
		go func() { _ = cmd.Wait(); close(b.waited) }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", b.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mqtttest: %s on %s did not come up: %v\n%s", b.Kind, b.Addr, err, b.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Logs returns what the broker printed so far (Mosquitto only).
func (b *Broker) Logs() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.logs()
}

func (b *Broker) logs() string {
	if b.logBuf == nil {
		return ""
	}
	return b.logBuf.String()
}

// Stop stops the broker (an outage); StartAgain brings it back.
func (b *Broker) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mochi != nil {
		_ = b.mochi.Close()
		b.mochi = nil
	}
	if b.cmd != nil {
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.waited:
		case <-time.After(5 * time.Second):
			_ = b.cmd.Process.Kill()
			<-b.waited
		}
		b.cmd = nil
	}
}

// RequireClient returns the path of a Debian mosquitto client tool
// (mosquitto_pub, mosquitto_sub); it fails the test under CI=true when the
// tool is missing (.ci/run installs mosquitto-clients) and skips it
// otherwise.
func RequireClient(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mqtttest: %s is not installed; .ci/run must apt-get install mosquitto-clients", name)
		}
		t.Skipf("%s not installed (apt-get install mosquitto-clients)", name)
	}
	return p
}

// lockedBuffer is Mosquitto's output: written by exec's copying goroutine
// while a test may read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
