package fleet

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
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

	"github.com/ferrygw/ferry/verify"
)

// verifier is a `ferry verify` process watching the fleet's cloud: the
// cloud-side check by (gateway, stream, epoch) and sequence number that
// the README tells fleet operators to run.
type verifier struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr lockedBuffer // written by the process while the test polls it
	done   chan error
	listen string // its metrics listener
}

// lockedBuffer is a bytes.Buffer safe for one writer and one reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

func (l *lockedBuffer) String() string { return string(l.Bytes()) }

// startVerify runs `ferry verify` on urls (every node, in order) for
// filter, with a persistent session, and returns once it is subscribed.
func startVerify(t *testing.T, urls []string, filter string) *verifier {
	t.Helper()
	v := &verifier{done: make(chan error, 1), listen: freeAddr(t)}
	v.cmd = exec.Command(ferry(t), "verify", "-url", strings.Join(urls, ","), "-topic", filter,
		"-client-id", "fleet-verify", "-settle", "20s", "-report-every", "0", "-json",
		"-listen", v.listen, "-metrics-labels", "none")
	v.cmd.Stdout = &v.stdout
	v.cmd.Stderr = &v.stderr
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { v.done <- v.cmd.Wait() }()
	t.Cleanup(func() {
		if v.cmd.ProcessState == nil {
			_ = v.cmd.Process.Kill()
			<-v.done
		}
	})
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(v.stderr.String(), "msg=subscribed") {
		if time.Now().After(deadline) {
			t.Fatalf("ferry verify not subscribed within a minute:\n%s", tailBytes(v.stderr.Bytes(), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return v
}

// received returns the events ferry verify has received (first copies),
// from its metrics.
func (v *verifier) received() (uint64, error) {
	resp, err := http.Get("http://" + v.listen + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "ferry_verify_events_total "); ok {
			return strconv.ParseUint(n, 10, 64)
		}
	}
	return 0, fmt.Errorf("no ferry_verify_events_total in its metrics (%v)", sc.Err())
}

// waitReceived waits until ferry verify has received n events.
func (v *verifier) waitReceived(t *testing.T, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got, err := v.received()
		if err == nil && got >= uint64(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("ferry verify received %d events within %v, want %d (%v)", got, d, n, err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// freeAddr returns a loopback address no one listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// finish stops ferry verify (SIGTERM: it judges every hole and prints
// its final report) and returns the report and its exit status.
func (v *verifier) finish(t *testing.T) (*verify.Report, int) {
	t.Helper()
	_ = v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-v.done:
	case <-time.After(time.Minute):
		_ = v.cmd.Process.Kill()
		<-v.done
		t.Fatalf("ferry verify did not stop within a minute of SIGTERM:\n%s", tailBytes(v.stderr.Bytes(), 3000))
	}
	var rep verify.Report
	if err := json.Unmarshal(v.stdout.Bytes(), &rep); err != nil {
		t.Fatalf("ferry verify's report: %v\nstdout:\n%s\nstderr:\n%s", err, tailBytes(v.stdout.Bytes(), 2000), tailBytes(v.stderr.Bytes(), 3000))
	}
	if dir := os.Getenv("FLEET_VERIFY_OUT"); dir != "" { // keep the report for a README figure
		_ = os.WriteFile(filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".json"), v.stdout.Bytes(), 0o644)
	}
	return &rep, v.cmd.ProcessState.ExitCode()
}

// checkVerify requires that ferry verify saw every acknowledged reading
// (total) and no unexplained gap still missing events, with exit status 0.
func checkVerify(t *testing.T, who string, rep *verify.Report, code, total int) {
	t.Helper()
	c := rep.Totals
	t.Logf("%s: exit %d, %d gateways, %d streams, received %d, duplicates %d, reordered %d, dropped %d, unexplained gaps %d (%d events, %d still missing, %d arrived later), epochs %d, lag p50 %v p99 %v",
		who, code, rep.Gateways, rep.Streams, c.Received, c.Duplicates, c.Reordered, c.Dropped, c.UnexplainedGaps, c.Unexplained, c.Missing, c.Repaired, rep.NewEpochs, rep.Lag.P50, rep.Lag.P99)
	if code != 0 || !rep.OK() || !rep.Final {
		t.Errorf("%s: exit %d, final %v, %d events missing in unexplained gaps", who, code, rep.Final, c.Missing)
	}
	if rep.Gateways != fleetSize {
		t.Errorf("%s saw %d gateways, want %d", who, rep.Gateways, fleetSize)
	}
	if c.Received < uint64(total) {
		t.Errorf("%s received %d events, fewer than the %d readings acknowledged to the sensors", who, c.Received, total)
	}
	if c.Dropped > 0 {
		t.Errorf("%s: %d events announced dropped (%v); nothing should be dropped", who, c.Dropped, c.DroppedBy)
	}
}
