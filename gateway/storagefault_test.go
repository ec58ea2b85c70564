package gateway_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/opsapi"
	"github.com/ferrygw/ferry/internal/lazyfs"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// TestStorageFaults is the black-box scenario of a board whose storage
// fails under ferry: the real ferry binary (durability sync) with its
// data_dir on lazyfs, which injects the fault (internal/lazyfs, Fault)
// and whose fsync takes 2 ms (an SD card), the cloud (Mosquitto) up, and
// an MQTT 5 sensor (mosquitto_pub -V 5, which prints each PUBACK's reason
// code). Two faults:
//
//   - "read-only": the kernel remounted the file system read-only after an
//     I/O error (ext4 errors=remount-ro, what an SD card going bad leads
//     to): every write, truncate, create and open for writing fails with
//     EROFS. It is set while ferry is idle (the backlog forwarded and its
//     deletion committed): through FUSE a refused write still reaches the
//     page cache for a moment, so a fault landing between the writes of a
//     bbolt commit would show bbolt a meta page no disk holds, which a
//     real read-only file system never does (internal/lazyfs, Faults).
//   - "fsync fails": every fsync and fdatasync fails with EIO; writes
//     succeed. The fault comes and goes ten times while the sensor
//     streams, so it lands at random points of ferry's back-to-back
//     commits, also between the fsync of a commit's pages and that of its
//     meta page: the commit fails although the page cache, and so bbolt's
//     mmap, holds all of it, as on a real disk whose cache flush fails.
//     Then it stays; ferry is SIGKILLed and the power cut with the fault
//     set (what the failed fsyncs did not make durable is lost), and ferry
//     started again on the remounted disk, without the fault.
//
// Phase 1: readings are acknowledged (reason code 0) and forwarded.
// Phase 2: every reading that ferry answers while the fault is set must
// be refused with 0x97 (quota exceeded: what ferry answers for an event
// it did not store, README "Durability contract"), never acknowledged;
// ferry keeps running and logs the failure a bounded number of times (its
// log lines are rate limited: a failing SD card must not fill with
// complaints). Phase 3, the fault gone: readings are acknowledged again at
// once; every reading ever acknowledged reaches the cloud; the backlog
// ferry reports drains to zero; ferry stops cleanly on SIGTERM and leaves
// a buffer file that checks clean (bbolt's check and the buffer's own
// metadata check, which ferry would otherwise quarantine at its next
// start).
//
// A commit whose meta page was written but whose fsync failed is visible
// to bbolt afterwards although Commit returned the error
// (lazyfs.TestLazyFSFaultBoltMetaFsync): the buffer refuses its events,
// and must then neither forward them nor give their offsets to the next
// events, or the uplink, already past those offsets, skips acknowledged
// readings. "fsync fails" checks exactly that. STORAGEFAULT_KEEP=dir
// keeps the data directory, log and configuration of a failed run.
func TestStorageFaults(t *testing.T) {
	pub := mqtttest.RequireClient(t, "mosquitto_pub")
	bin := buildFerry(t)
	for _, tc := range []struct {
		name    string
		fault   lazyfs.Fault
		toggles int  // times the fault comes and goes while the sensor streams
		cut     bool // SIGKILL and power cut after phase 2, the fault set
	}{
		{"read-only", lazyfs.Fault{Write: syscall.EROFS}, 0, false},
		{"fsync fails", lazyfs.Fault{Fsync: syscall.EIO}, 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			storageFaultRun(t, bin, pub, tc.fault, tc.toggles, tc.cut)
		})
	}
}

// Reason codes of a PUBACK.
const (
	rcSuccess       = 0
	rcQuotaExceeded = 0x97
	rcNone          = -1 // no PUBACK
)

func storageFaultRun(t *testing.T, bin, pub string, fault lazyfs.Fault, toggles int, cut bool) {
	began := time.Now()
	dir := t.TempDir()
	backing := filepath.Join(dir, "disk")
	if err := os.Mkdir(backing, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FERRY_BOOT_ID", "storagefault-boot-0")
	disk := lazyfs.MountForTest(t, backing, filepath.Join(dir, "mnt"))
	const syncDelay = 2 * time.Millisecond
	disk.SetSyncDelay(syncDelay)

	cloud := mqtttest.StartWith(t, mqtttest.Options{Persistent: true})
	sub := subscribeCloud(t, cloud.URL(), "storagefault-cloud")
	addr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	statusAddr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	// ack_interval 100ms: the uplink's positions, and the deletion of
	// what it forwarded, commit soon after, so that ferry is idle soon.
	yaml := fmt.Sprintf(`
gateway_id: gw1
data_dir: %s
log: {level: warn}
broker:
  listen: %s
  allow_anonymous: true
buffer:
  ack_interval: 100ms
ingest:
  durability: sync
  routes:
    - topics: ["sensors/#"]
      stream: telemetry
uplink:
  endpoints:
    - url: %s
  topic: "{gateway_id}/{stream}/{source}"
  backoff: {min: 20ms, max: 300ms, probe_interval: 200ms}
  connect_timeout: 2s
status:
  listen: %s
  log_interval: 0s
`, disk.Mountpoint(), addr, cloud.URL(), statusAddr)
	cfgPath, logPath := ferryFiles(t, dir, yaml)
	logSize := func() int64 {
		fi, err := os.Stat(logPath)
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	logSince := func(off int64) string {
		b, _ := os.ReadFile(logPath)
		return string(b[min(off, int64(len(b))):])
	}

	var p *ferryProc
	defer func() {
		if p != nil && !p.exited() {
			p.kill()
		}
	}()
	status := func() (opsapi.Status, bool) {
		var st opsapi.Status
		c := http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get("http://" + statusAddr + "/status")
		if err != nil {
			return st, false
		}
		defer resp.Body.Close()
		return st, json.NewDecoder(resp.Body).Decode(&st) == nil
	}
	backlog := func() int64 {
		st, ok := status()
		if !ok {
			return -1
		}
		var n int64
		for _, s := range st.Streams {
			n += s.Events
		}
		return n
	}
	start := func(label string) {
		t.Helper()
		off := logSize()
		p = runFerry(t, bin, cfgPath, logPath)
		deadline := time.Now().Add(30 * time.Second)
		for {
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				if _, ok := status(); ok {
					return
				}
			}
			if p.exited() {
				why, _ := startFailure(logPath, off)
				t.Fatalf("%s: ferry exited at start: %v: %s", label, p.err, why)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: ferry not listening after 30s", label)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	alive := func(label string) {
		t.Helper()
		if p.exited() {
			why, _ := startFailure(logPath, 0)
			t.Fatalf("%s: ferry exited: %v: %s", label, p.err, why)
		}
	}

	// codes[r] is the reason code of the PUBACK of reading r.
	codes := map[int]int{}
	record := func(c map[int]int) map[int]int {
		for r, rc := range c {
			codes[r] = rc
		}
		return c
	}
	next := 0 // the next reading
	// publish publishes n readings in one connection and returns their
	// reason codes.
	publish := func(n int) map[int]int {
		t.Helper()
		s := startSensor(t, pub, addr, next)
		from, to := s.send(n)
		s.wait(20 * time.Second)
		s.close()
		next = to
		return record(s.codesOf(from, to))
	}
	all := func(n, rc int) string { return fmt.Sprintf("%d×%d", n, rc) }
	// delivered waits until every acknowledged reading is at the cloud.
	delivered := func(d time.Duration) []int {
		deadline := time.Now().Add(d)
		for {
			var m []int
			for r, rc := range codes {
				if rc == rcSuccess && !sub.has(reading{P: 7, S: r}) {
					m = append(m, r)
				}
			}
			if len(m) == 0 || time.Now().After(deadline) {
				slices.Sort(m)
				return m
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// Phase 1: all well.
	start("phase 1")
	const n = 100
	if got := publish(n); tally(got) != all(n, rcSuccess) {
		t.Fatalf("phase 1, no fault: PUBACK reason codes %s, want all 0", tally(got))
	}
	if m := delivered(20 * time.Second); len(m) > 0 {
		t.Fatalf("phase 1: %d acknowledged readings not at the cloud after 20s: %v", len(m), head(m, 20))
	}

	if toggles == 0 {
		// Idle: nothing to forward, nothing left to commit.
		waitUntil(t, 20*time.Second, "ferry idle (its backlog forwarded and deleted)", func() bool { return backlog() == 0 })
	}
	off := logSize()
	before := disk.Stats()
	st0, _ := status()
	if toggles > 0 {
		// Phase 2a: the fault comes and goes while the sensor streams
		// a reading a millisecond (commits follow each other).
		s := startSensor(t, pub, addr, next)
		stop := make(chan struct{})
		streamed := make(chan struct{})
		go func() {
			defer close(streamed)
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if !s.sendAsync(1) {
						return
					}
				}
			}
		}()
		var landed []string
		for i := range toggles {
			// Some readings acknowledged; then the fault, at a random
			// point of a commit.
			s.waitCount(fmt.Sprintf("toggle %d, before the fault", i), rcSuccess, s.written(), 10, 20*time.Second)
			time.Sleep(time.Duration(rand.IntN(int(5 * time.Millisecond))))
			was := s.written()
			disk.SetFault(fault)
			set := s.written()
			s.waitCount(fmt.Sprintf("toggle %d, the fault set", i), rcQuotaExceeded, set, 10, 20*time.Second)
			// Every reading written after the fault was set and
			// answered before it is cleared was refused.
			answered := s.answered()
			disk.SetFault(lazyfs.Fault{})
			var wrong []string
			for r, rc := range answered {
				if r >= set && rc != rcQuotaExceeded {
					wrong = append(wrong, fmt.Sprintf("%d:%d", r, rc))
				}
			}
			if len(wrong) > 0 {
				slices.Sort(wrong)
				t.Errorf("phase 2a, toggle %d: readings written after the fault was set got reason codes other than 0x97 (151) before it was cleared (reading:code): %v", i, head(wrong, 20))
			}
			landed = append(landed, tally(s.codesOf(max(s.from, was-5), set)))
			alive(fmt.Sprintf("phase 2a, toggle %d", i))
		}
		// Readings acknowledged again after the last one.
		s.waitCount("after the last toggle", rcSuccess, s.written(), 10, 20*time.Second)
		close(stop)
		<-streamed
		s.wait(20 * time.Second)
		s.close()
		next = s.written()
		got := record(s.codesOf(s.from, next))
		t.Logf("phase 2a, the fault set and cleared %d times while streaming: %s; the 5 readings before each fault and those written while SetFault waited: %v",
			toggles, tally(got), landed)
		if m := delivered(10 * time.Second); len(m) > 0 {
			t.Errorf("phase 2a: %d acknowledged readings not at the cloud after 10s: %v", len(m), head(m, 20))
		}
	}

	// Phase 2b: the fault stays. Two sensors' connections, one after the
	// other, so that a refusal does not depend on one connection's state.
	disk.SetFault(fault)
	faultAt := time.Now()
	var phase2 []map[int]int
	for i := range 2 {
		phase2 = append(phase2, publish(n))
		alive(fmt.Sprintf("phase 2b, batch %d", i))
	}
	fs := disk.Stats()
	st1, _ := status()
	faultLog := logSince(off)
	lines := logLines(faultLog)
	t.Logf("phase 2b (fault %+v): PUBACK reason codes %s, then %s (%s); in phase 2 the disk failed %d changes and %d fsyncs (%d fsyncs done), ferry counted %d refused and %d commits; ferry logged %d WARN/ERROR lines: %s",
		fault, tally(phase2[0]), tally(phase2[1]), time.Since(faultAt).Round(10*time.Millisecond),
		fs.ChangesFailed-before.ChangesFailed, fs.FsyncsFailed-before.FsyncsFailed, fs.Fsyncs-before.Fsyncs,
		st1.Ingest.Refused-st0.Ingest.Refused, st1.Commits-st0.Commits, len(lines), summarize(lines))
	for i, got := range phase2 {
		if tally(got) != all(n, rcQuotaExceeded) {
			t.Errorf("phase 2b, batch %d, the disk failing: PUBACK reason codes %s; want every reading refused with 0x97 (151), none acknowledged: ferry cannot store them", i, tally(got))
		}
	}
	if fs.ChangesFailed == before.ChangesFailed && fs.FsyncsFailed == before.FsyncsFailed {
		t.Errorf("phase 2: ferry did not touch the disk during the fault (%+v)", fs)
	}
	if !strings.Contains(faultLog, "buffer commit failed") {
		t.Errorf("phase 2: ferry did not log the failing commits")
	}
	// Bounded: hundreds of refusals and failed commits in a few lines
	// (the logger passes 5 lines of a kind a minute).
	if len(lines) > 40 {
		t.Errorf("phase 2: ferry logged %d WARN/ERROR lines for %d refused readings: not bounded", len(lines), refusedCount(codes))
	}

	if cut {
		p.kill()
		if err := disk.PowerCut(); err != nil {
			t.Fatalf("power cut: %v", err)
		}
		cs := disk.Stats()
		t.Logf("power cut, the fault set: discarded %d bytes in %d blocks of %d files, %d files removed", cs.CutBytes, cs.CutBlocks, cs.CutFiles, cs.CutRemoved)
		t.Setenv("FERRY_BOOT_ID", "storagefault-boot-1")
		disk = lazyfs.RemountForTest(t, disk) // a new mount: no fault
		disk.SetSyncDelay(syncDelay)
		start("after the power cut")
	} else {
		disk.SetFault(lazyfs.Fault{})
	}

	// Phase 3: the fault is gone; ferry stores readings again at once.
	off = logSize()
	if got := publish(n); tally(got) != all(n, rcSuccess) {
		t.Errorf("phase 3, the fault gone: PUBACK reason codes %s, want all 0", tally(got))
	}
	alive("phase 3")
	ackedAll := acked(codes)
	if m := delivered(10 * time.Second); len(m) > 0 {
		t.Errorf("%d of %d acknowledged readings never reached the cloud: %v", len(m), len(ackedAll), head(m, 30))
	}
	// Everything forwarded: the backlog ferry counts must drain to 0.
	deadline := time.Now().Add(10 * time.Second)
	for backlog() != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	st2, _ := status()
	if b := backlog(); b != 0 {
		t.Errorf("every reading forwarded, but ferry still counts a backlog of %d events: %+v", b, st2.Streams)
	}
	// Refused readings are not promised anything, but one that reached
	// the cloud was stored although its sensor was told it was not (it
	// sends it again: a duplicate with another event ID).
	var refusedForwarded []int
	for r, rc := range codes {
		if rc != rcSuccess && sub.has(reading{P: 7, S: r}) {
			refusedForwarded = append(refusedForwarded, r)
		}
	}
	slices.Sort(refusedForwarded)
	after := logLines(logSince(off))

	// A clean stop, and the file it leaves.
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("ferry's exit after SIGTERM: %v", p.err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("ferry did not stop within 15s of SIGTERM")
	}
	desc, checkErr := inspectBufferFile(t, filepath.Join(backing, "buffer.db"))
	if checkErr != nil {
		t.Errorf("the buffer file after the run (ferry stopped cleanly): %v; %s", checkErr, desc)
	}
	if keep := os.Getenv("STORAGEFAULT_KEEP"); keep != "" && t.Failed() {
		to := filepath.Join(keep, fmt.Sprintf("%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), time.Now().UnixNano()))
		_ = os.MkdirAll(keep, 0o755)
		if out, err := exec.Command("cp", "-a", dir, to).CombinedOutput(); err != nil {
			t.Logf("STORAGEFAULT_KEEP: %v: %s", err, out)
		} else {
			t.Logf("the data directory (disk/), ferry's log and configuration are kept in %s", to)
		}
	}
	sub.mu.Lock()
	dups := sub.dups
	sub.mu.Unlock()
	t.Logf("phase 3: %d readings acknowledged in all, %d refused; %d refused readings reached the cloud anyway %v; %d duplicates at the cloud; %d WARN/ERROR lines after the fault: %s; %s",
		len(ackedAll), refusedCount(codes), len(refusedForwarded), head(refusedForwarded, 20), dups, len(after), summarize(after), time.Since(began).Round(100*time.Millisecond))
	sub.checkOrder(t)
}

func acked(codes map[int]int) []int {
	var a []int
	for r, rc := range codes {
		if rc == rcSuccess {
			a = append(a, r)
		}
	}
	slices.Sort(a)
	return a
}

func refusedCount(codes map[int]int) int {
	n := 0
	for _, rc := range codes {
		if rc != rcSuccess {
			n++
		}
	}
	return n
}

// sensor is an MQTT 5 sensor: mosquitto_pub -V 5 -d -q 1 -l publishing
// one reading of publisher 7 per line the test writes to its stdin, its
// output line-buffered (stdbuf -oL) and read as it comes, so that the
// test sees each PUBACK's reason code when it arrives.
type sensor struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	from   int // the first reading
	exited chan struct{}

	wmu sync.Mutex // held while writing to stdin

	mu     sync.Mutex
	next   int         // the next reading to write
	sent   int         // PUBLISHes sent (first sendings: reading from+sent-1 last)
	mids   map[int]int // message ID → reading
	codes  map[int]int // reading → PUBACK reason code
	out    []string    // the last lines of output
	stderr bytes.Buffer
}

func startSensor(t *testing.T, pub, addr string, from int) *sensor {
	t.Helper()
	stdbuf, err := exec.LookPath("stdbuf")
	if err != nil {
		t.Fatalf("stdbuf (coreutils): %v", err)
	}
	host, port, _ := net.SplitHostPort(addr)
	s := &sensor{t: t, from: from, next: from, exited: make(chan struct{}), mids: map[int]int{}, codes: map[int]int{}}
	s.cmd = exec.Command(stdbuf, "-oL", pub, "-V", "5", "-d", "-q", "1", "-h", host, "-p", port,
		"-i", fmt.Sprintf("storagefault-sensor-%d", from), "-t", "sensors/7", "-l")
	s.cmd.Stderr = &lockedWriter{mu: &s.mu, w: &s.stderr}
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if s.stdin, err = s.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.line(sc.Text())
		}
		_ = s.cmd.Wait() // exits non-zero after refusals
		close(s.exited)
	}()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.exited
	})
	return s
}

func (s *sensor) line(l string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.out = append(s.out, l)
	if len(s.out) > 40 {
		s.out = s.out[len(s.out)-20:]
	}
	if m := sentRE.FindStringSubmatch(l); m != nil {
		mid, _ := strconv.Atoi(m[1])
		s.mids[mid] = s.from + s.sent
		s.sent++
	} else if m := pubackRE.FindStringSubmatch(l); m != nil {
		mid, _ := strconv.Atoi(m[1])
		rc, _ := strconv.Atoi(m[2])
		if r, ok := s.mids[mid]; ok {
			s.codes[r] = rc
		}
	}
}

// sendAsync writes the next n readings; false if mosquitto_pub is gone.
// Safe to call from any goroutine.
func (s *sensor) sendAsync(n int) bool {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	from := s.next
	s.mu.Unlock()
	var b bytes.Buffer
	for i := from; i < from+n; i++ {
		fmt.Fprintf(&b, `{"p":7,"s":%d}`+"\n", i)
	}
	if _, err := s.stdin.Write(b.Bytes()); err != nil {
		return false
	}
	s.mu.Lock()
	s.next = from + n
	s.mu.Unlock()
	return true
}

// send writes the next n readings; it returns the first and the end.
func (s *sensor) send(n int) (from, to int) {
	s.t.Helper()
	from = s.written()
	if !s.sendAsync(n) {
		s.t.Fatalf("mosquitto_pub is gone: %s", s.output())
	}
	return from, from + n
}

// written returns the end of the readings written so far: a reading
// written after a call has a number at least what it returned.
func (s *sensor) written() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next
}

// answered returns the reason codes received so far.
func (s *sensor) answered() map[int]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.codes)
}

// waitCount waits until at least k readings from from on have reason
// code rc; it fails the test after d.
func (s *sensor) waitCount(label string, rc, from, k int, d time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for {
		s.mu.Lock()
		n := 0
		for r, c := range s.codes {
			if r >= from && c == rc {
				n++
			}
		}
		s.mu.Unlock()
		if n >= k {
			return
		}
		select {
		case <-s.exited:
			s.t.Fatalf("%s: mosquitto_pub exited: %s", label, s.output())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: %d readings from %d on with reason code %d after %s, want %d (ferry hangs?); so far %s: %s",
				label, n, from, rc, d, k, tally(s.codesOf(from, s.written())), s.output())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// wait waits until every reading written so far has its PUBACK; it fails
// the test after d (ferry hangs).
func (s *sensor) wait(d time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for {
		end := s.written()
		s.mu.Lock()
		n := len(s.codes)
		s.mu.Unlock()
		if n == end-s.from {
			return
		}
		select {
		case <-s.exited:
			s.t.Fatalf("mosquitto_pub exited with %d of %d readings answered: %s", n, end-s.from, s.output())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%d of %d readings answered after %s (ferry hangs?): %s", n, end-s.from, d, s.output())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// codesOf returns the reason codes of readings [from, to).
func (s *sensor) codesOf(from, to int) map[int]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := map[int]int{}
	for r := from; r < to; r++ {
		if rc, ok := s.codes[r]; ok {
			c[r] = rc
		} else {
			c[r] = rcNone
		}
	}
	return c
}

// close ends the sensor's input and waits for mosquitto_pub to exit.
func (s *sensor) close() {
	s.t.Helper()
	s.stdin.Close()
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.t.Errorf("mosquitto_pub did not exit: %s", s.output())
	}
}

func (s *sensor) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.out, "\n") + "\n" + s.stderr.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

var (
	sentRE   = regexp.MustCompile(`sending PUBLISH \(d0, q1, r\d, m(\d+),`)
	pubackRE = regexp.MustCompile(`received PUBACK \(Mid: (\d+), RC:(\d+)\)`)
)

// tally describes reason codes as "95×0 5×151 [none: 3]", by code.
func tally(codes map[int]int) string {
	count := map[int]int{}
	for _, rc := range codes {
		count[rc]++
	}
	var parts []string
	for _, rc := range slices.Sorted(maps.Keys(count)) {
		if rc == rcNone {
			parts = append(parts, fmt.Sprintf("[no PUBACK: %d]", count[rc]))
		} else {
			parts = append(parts, fmt.Sprintf("%d×%d", count[rc], rc))
		}
	}
	return strings.Join(parts, " ")
}

// logLines returns ferry's WARN and ERROR lines, and any line that is not
// a log record (a panic), in out.
func logLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l == "" {
			continue
		}
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") || !strings.HasPrefix(l, "time=") {
			lines = append(lines, l)
		}
	}
	return lines
}

// summarize counts lines by message: `3× "buffer commit failed" (err=...)`.
func summarize(lines []string) string {
	msgRE := regexp.MustCompile(`msg="([^"]*)"|msg=(\S+)`)
	errRE := regexp.MustCompile(`err="((?:[^"\\]|\\.)*)"`)
	count := map[string]int{}
	var order []string
	for _, l := range lines {
		key := l
		if m := msgRE.FindStringSubmatch(l); m != nil {
			key = m[1] + m[2]
			if e := errRE.FindStringSubmatch(l); e != nil {
				key += " (err=" + e[1] + ")"
			}
		}
		if count[key] == 0 {
			order = append(order, key)
		}
		count[key]++
	}
	var b strings.Builder
	for i, k := range order {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%d× %q", count[k], k)
	}
	if len(order) == 0 {
		return "none"
	}
	return b.String()
}
