package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

var (
	buildOnce sync.Once
	ferryBin  string
	buildErr  error
)

// buildFerry builds the real ferry binary once per test run.
func buildFerry(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ferry-bin-")
		if err != nil {
			buildErr = err
			return
		}
		ferryBin = filepath.Join(dir, "ferry")
		out, err := exec.Command("go", "build", "-o", ferryBin, "github.com/ferrygw/ferry/cmd/ferry").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return ferryBin
}

// startFerry starts the binary on cfgPath; its output goes to logPath.
func startFerry(t *testing.T, bin, cfgPath, logPath string) *exec.Cmd {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "-c", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	return cmd
}

// ferryFiles writes yaml as dir/ferry.yaml for the binary and returns it
// with dir/ferry.log, the binary's output (startFerry), which is printed
// if the test fails.
func ferryFiles(t *testing.T, dir, yaml string) (cfgPath, logPath string) {
	t.Helper()
	cfgPath, logPath = filepath.Join(dir, "ferry.yaml"), filepath.Join(dir, "ferry.log")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("ferry output:\n%s", b)
		}
	})
	return cfgPath, logPath
}

// crashPublisher publishes its sequence at QoS 1, one at a time, recording
// each sequence number the gateway acknowledged. On any failure it
// reconnects and publishes the same number again (a duplicate if only the
// PUBACK was lost), as a real sensor would.
func crashPublisher(ctx context.Context, addr string, p int, acked func(reading)) {
	var c paho.Client
	for s := 0; ctx.Err() == nil; {
		if c == nil || !c.IsConnectionOpen() {
			if c != nil {
				c.Disconnect(0)
			}
			c = paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).
				SetClientID(fmt.Sprintf("crash-sensor-%d", p)).SetAutoReconnect(false).SetConnectTimeout(time.Second))
			if tok := c.Connect(); !tok.WaitTimeout(2*time.Second) || tok.Error() != nil {
				c = nil
				time.Sleep(50 * time.Millisecond)
				continue
			}
		}
		b, _ := json.Marshal(reading{P: p, S: s})
		tok := c.Publish(fmt.Sprintf("sensors/%d", p), 1, false, b)
		if tok.WaitTimeout(2*time.Second) && tok.Error() == nil {
			acked(reading{P: p, S: s})
			s++
			continue
		}
		c.Disconnect(0)
		c = nil
	}
	if c != nil {
		c.Disconnect(0)
	}
}

// TestCrashKill9 runs the real ferry binary, SIGKILLs it five times while
// ten publishers are mid-stream and the cloud (Mosquitto) goes up and down,
// and checks that every event a publisher got a PUBACK for reaches the cloud.
func TestCrashKill9(t *testing.T) {
	bin := buildFerry(t)
	cloud := mqtttest.StartWith(t, mqtttest.Options{Persistent: true})
	sub := subscribeCloud(t, cloud.URL(), "crash-cloud-sub")
	dir := t.TempDir()
	yaml, addr := testConfig(t, filepath.Join(dir, "data"), cloud.URL(), "")
	cfgPath, logPath := ferryFiles(t, dir, yaml)

	var mu sync.Mutex
	acked := map[reading]bool{}
	record := func(r reading) { mu.Lock(); acked[r] = true; mu.Unlock() }

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for p := 0; p < 10; p++ {
		wg.Add(1)
		go func() { defer wg.Done(); crashPublisher(ctx, addr, p, record) }()
	}
	// The cloud flaps while the gateway crashes.
	var flaps atomic.Int32
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			time.Sleep(time.Duration(200+rand.IntN(500)) * time.Millisecond)
			cloud.Stop()
			flaps.Add(1)
			time.Sleep(time.Duration(100+rand.IntN(300)) * time.Millisecond)
			cloud.StartAgain()
		}
	}()

	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 5; round++ {
		cmd := startFerry(t, bin, cfgPath, logPath)
		time.Sleep(time.Duration(600+rng.IntN(900)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	}
	stop()
	wg.Wait()
	cloud.StartAgain()

	mu.Lock()
	total := len(acked)
	mu.Unlock()
	if total < 100 {
		t.Fatalf("only %d events acknowledged across the run: the test did not exercise the gateway", total)
	}

	// A final, uninterrupted run drains the backlog.
	final := startFerry(t, bin, cfgPath, logPath)
	defer func() {
		_ = final.Process.Signal(syscall.SIGTERM)
		_ = final.Wait()
	}()
	waitUntil(t, 90*time.Second, "every acknowledged event at the cloud", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for r := range acked {
			if !sub.has(r) {
				return false
			}
		}
		return true
	})
	sub.checkOrder(t)
	sub.mu.Lock()
	dups := sub.dups
	sub.mu.Unlock()
	t.Logf("%d acknowledged events all reached the cloud after 5 SIGKILLs and %d cloud outages; %d duplicates (dropped by event ID downstream)",
		total, flaps.Load(), dups)
}
