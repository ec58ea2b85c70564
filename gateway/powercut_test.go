package gateway_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	bolt "go.etcd.io/bbolt"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/internal/lazyfs"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// TestPowerCut runs the real ferry binary with its data_dir on lazyfs, a
// FUSE file system that loses what was not fsynced when the power is cut
// (internal/lazyfs), while publishers stream QoS 1 readings and the cloud
// (Mosquitto) is down two cycles of three, so a backlog sits in the buffer
// file. Each cycle: start ferry, wait for readings to be acknowledged and
// for several commits, SIGKILL ferry, cut the power, mount again. Every
// other cut loses all unsynced data; the others lose a random part of it
// (a disk that wrote back some of the dirty pages, in any order). The
// fsync of lazyfs takes 2 ms, as on a slow disk, so a cut often lands while
// ferry waits for a commit to become durable. After the last cycle a final
// run drains the backlog to the cloud.
//
// Every mode must start after every cut (README: a buffer file bbolt
// cannot open is quarantined, ferry starts). With durability sync the
// whole contract is asserted: every PUBACKed reading reaches the cloud
// (duplicates allowed, counted), the buffer is never quarantined, and the
// file left by a last cut opens and checks clean. batch and none run fewer
// cycles and report what they lost, which README allows (a power cut
// loses up to batch_interval of acknowledged events with batch, what the
// OS had not flushed with none, possibly the whole file).
//
// When ferry exits instead of running (it panics on a file it cannot
// read), the test fails, says which file, and moves that file aside (as
// an operator would) to go on measuring; POWERCUT_KEEP=dir keeps a copy
// of the data directory as it was then.
func TestPowerCut(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs ferry through many power cuts")
	}
	bin := buildFerry(t)
	for _, tc := range []struct {
		durability string
		cycles     int
		strict     bool   // README promises that no acknowledged event is lost
		ingest     string // more ingest keys
	}{
		{"sync", 10, true, ""},
		// A batch_interval much shorter than a cycle, so that a cut
		// loses the last one (and the commit in flight), not all.
		{"batch", 4, false, "  batch_interval: 50ms\n"},
		{"none", 4, false, ""},
	} {
		t.Run(tc.durability, func(t *testing.T) {
			powerCutRun(t, bin, tc.durability, tc.ingest, tc.cycles, tc.strict)
		})
	}
}

// ferryProc is a running ferry and the end of its process.
type ferryProc struct {
	done chan struct{}
	err  error
	cmd  *exec.Cmd
}

func runFerry(t *testing.T, bin, cfgPath, logPath string) *ferryProc {
	t.Helper()
	p := &ferryProc{done: make(chan struct{}), cmd: startFerry(t, bin, cfgPath, logPath)}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	return p
}

func (p *ferryProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *ferryProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// startFailure reads why ferry exited at start from its log (from offset
// on): the panic or error line, and the file of the data directory it
// could not open ("" when unknown).
func startFailure(logPath string, offset int64) (why, file string) {
	b, _ := os.ReadFile(logPath)
	if offset > int64(len(b)) {
		offset = 0
	}
	out := string(b[offset:])
	// The crash: the first panic or fatal error, and the stack after it.
	stack := ""
	for i, l := range strings.SplitAfter(out, "\n") {
		if strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "fatal error:") {
			why = strings.TrimSpace(l)
			stack = strings.Join(strings.SplitAfter(out, "\n")[i:], "")
			break
		}
	}
	if why == "" { // no crash: the last error line
		stack = out
		for _, l := range slices.Backward(strings.Split(out, "\n")) {
			if strings.Contains(l, "level=ERROR") || strings.HasPrefix(l, "ferry:") || strings.HasPrefix(l, "error:") {
				why = strings.TrimSpace(l)
				break
			}
		}
	}
	switch {
	case strings.Contains(stack, "hooks/storage/bolt") || strings.Contains(stack, "Sessions") || strings.Contains(stack, "session store"):
		file = "sessions.db"
		why += " (in the broker's session store)"
	case strings.Contains(stack, "buffer.(*Log).open") || strings.Contains(stack, "open buffer"):
		file = "buffer.db"
		why += " (in buffer.Open)"
	case strings.Contains(stack, "ferry/buffer."):
		file = "buffer.db"
		why += " (in the buffer, after it opened)"
	}
	if why == "" {
		why = "no panic or error line; output: " + strings.Join(head(strings.Split(out, "\n"), 20), " | ")
	}
	return why, file
}

func powerCutRun(t *testing.T, bin, durability, ingest string, cycles int, strict bool) {
	began := time.Now()
	dir := t.TempDir()
	backing := filepath.Join(dir, "disk")
	if err := os.Mkdir(backing, 0o700); err != nil {
		t.Fatal(err)
	}
	const syncDelay = 2 * time.Millisecond
	// Each power cut is a new boot: ferry tells a power cut from a killed
	// process by the boot ID (the broker's session store, written without
	// fsync, is only trusted within the boot that wrote it).
	boots := 0
	t.Setenv("FERRY_BOOT_ID", "boot-0")
	newBoot := func() { boots++; os.Setenv("FERRY_BOOT_ID", fmt.Sprintf("boot-%d", boots)) }
	disk := lazyfs.MountForTest(t, backing, filepath.Join(dir, "mnt"))
	disk.SetSyncDelay(syncDelay)

	cloud := mqtttest.StartWith(t, mqtttest.Options{Persistent: true})
	sub := subscribeCloud(t, cloud.URL(), "powercut-cloud-"+durability)
	addr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	yaml := fmt.Sprintf(`
gateway_id: gw1
data_dir: %s
log: {level: warn}
broker:
  listen: %s
  allow_anonymous: true
ingest:
  durability: %s
%s  routes:
    - topics: ["sensors/#"]
      stream: telemetry
uplink:
  endpoints:
    - url: %s
  topic: "{gateway_id}/{stream}/{source}"
  backoff: {min: 20ms, max: 300ms, probe_interval: 200ms}
  connect_timeout: 2s
status:
  listen: ""
  log_interval: 0s
`, disk.Mountpoint(), addr, durability, ingest, cloud.URL())
	cfgPath, logPath := ferryFiles(t, dir, yaml)

	var mu sync.Mutex
	acked := map[reading]bool{}
	record := func(r reading) { mu.Lock(); acked[r] = true; mu.Unlock() }
	nAcked := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }

	ctx, stopPublishers := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { stopPublishers(); wg.Wait() }()
	const publishers = 8
	for p := range publishers {
		wg.Add(1)
		go func() { defer wg.Done(); crashPublisher(ctx, addr, p, record) }()
	}

	// quarantined returns the buffer files ferry moved aside and the
	// number of log lines saying so.
	quarantined := func() (files []string, lines int) {
		files, _ = filepath.Glob(filepath.Join(backing, "buffer.db.corrupt-*"))
		b, _ := os.ReadFile(logPath)
		return files, strings.Count(string(b), "buffer file corrupt")
	}
	// keepData copies the data directory to $POWERCUT_KEEP, if set.
	keepData := func(label string) {
		keep := os.Getenv("POWERCUT_KEEP")
		if keep == "" {
			return
		}
		to := filepath.Join(keep, fmt.Sprintf("%s-%s-%d", durability, strings.ReplaceAll(label, " ", "-"), time.Now().UnixNano()))
		_ = os.MkdirAll(keep, 0o755)
		if out, err := exec.Command("cp", "-a", backing, to).CombinedOutput(); err != nil {
			t.Logf("POWERCUT_KEEP: %v: %s", err, out)
		} else {
			t.Logf("%s: the data directory is kept in %s", label, to)
		}
	}
	var startFailures []string
	// start starts ferry and waits until ready. A ferry that exits
	// instead fails the test; the file it could not open is moved aside
	// and ferry started again (once per file), so the run goes on
	// measuring.
	start := func(label string, ready func() bool) *ferryProc {
		t.Helper()
		movedAside := map[string]bool{}
		designedStops := 0
		for {
			fi, _ := os.Stat(logPath)
			var offset int64
			if fi != nil {
				offset = fi.Size()
			}
			p := runFerry(t, bin, cfgPath, logPath)
			deadline := time.Now().Add(30 * time.Second)
			for !ready() {
				if p.exited() {
					break
				}
				if time.Now().After(deadline) {
					p.kill()
					t.Fatalf("%s: ferry not ready after 30s (%d readings acknowledged)", label, nAcked())
				}
				time.Sleep(5 * time.Millisecond)
			}
			if !p.exited() {
				return p
			}
			if out, _ := os.ReadFile(logPath); durability != "sync" && designedStops < 3 &&
				strings.Contains(string(out[min(offset, int64(len(out))):]), "the next start checks the file") {
				// Without fsync a cut can leave damage that only a commit
				// meets: the buffer stops the gateway by design, and the
				// next start (systemd restarts it) checks the file.
				designedStops++
				t.Logf("%s: ferry stopped on a damaged buffer (durability %s), as designed; starting it again", label, durability)
				continue
			}
			why, file := startFailure(logPath, offset)
			t.Errorf("%s: ferry exited instead of running after a power cut (durability %s): %v: %s", label, durability, p.err, why)
			startFailures = append(startFailures, file)
			keepData(label)
			if file == "" || movedAside[file] {
				t.FailNow()
			}
			movedAside[file] = true
			aside := filepath.Join(disk.Mountpoint(), fmt.Sprintf("%s.unopenable-%d", file, time.Now().UnixNano()))
			if err := os.Rename(filepath.Join(disk.Mountpoint(), file), aside); err != nil {
				t.Fatal(err)
			}
		}
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	var cutBytes, cutBlocks, cutKept int64
	var backlogs []int
	var uptime time.Duration // of ferry, in the cycles
	for c := range cycles {
		// The cloud is up in one cycle of three: a backlog builds up in
		// the file and is partly forwarded (and deleted) between cuts.
		if c%3 == 2 {
			cloud.StartAgain()
		} else {
			cloud.Stop()
		}
		before := nAcked()
		want := 100 + rng.IntN(300)
		// And at least this many commits of the buffer, so that a run
		// spans several batch intervals: counted as two fsyncs each (one
		// for the pages, one for the meta page), or with none, which
		// does not fsync, as two writes.
		minCommits := int64(5 + rng.IntN(15))
		commits := func() int64 {
			if s := disk.Stats(); durability != "none" {
				return s.Fsyncs / 2
			} else {
				return s.Writes / 2
			}
		}
		label := fmt.Sprintf("cycle %d", c)
		up := time.Now()
		p := start(label, func() bool {
			return nAcked()-before >= want && commits() >= minCommits
		})
		p.kill()
		uptime += time.Since(up)
		backlogs = append(backlogs, nAcked()-sub.distinct())
		if files, lines := quarantined(); strict && (len(files) > 0 || lines > 0) {
			t.Errorf("%s: ferry quarantined its buffer after a power cut with durability sync: %v, %d log lines", label, files, lines)
		}

		random := c%2 == 1
		var err error
		if random {
			err = disk.PowerCutRandom(0.5, rng.Uint64())
		} else {
			err = disk.PowerCut()
		}
		if err != nil {
			t.Fatalf("%s: power cut: %v", label, err)
		}
		newBoot()
		s := disk.Stats()
		cutBytes += s.CutBytes
		cutBlocks += s.CutBlocks
		cutKept += s.CutKept
		if testing.Verbose() {
			t.Logf("%s: %d acknowledged so far, backlog ~%d; %d fsyncs; the cut (random %v) discarded %d bytes in %d blocks of %d files (%d unsynced blocks kept), %d files removed",
				label, nAcked(), backlogs[len(backlogs)-1], s.Fsyncs, random, s.CutBytes, s.CutBlocks, s.CutFiles, s.CutKept, s.CutRemoved)
		}
		disk = lazyfs.RemountForTest(t, disk)
		disk.SetSyncDelay(syncDelay)
	}
	stopPublishers()
	wg.Wait()
	total := nAcked()
	if total < 100*cycles {
		t.Fatalf("only %d readings acknowledged in %d cycles: the test did not exercise the gateway", total, cycles)
	}

	// The final run, with the cloud up, drains the backlog. A sentinel
	// published now arrives after everything buffered before it (the
	// uplink forwards a stream in order).
	cloud.StartAgain()
	sentinel := reading{P: publishers, S: 0}
	var sentinelAcked atomic.Bool
	sctx, stopSentinel := context.WithCancel(context.Background())
	defer stopSentinel()
	go publishUntilAcked(sctx, addr, sentinel, &sentinelAcked)
	p := start("the final run", sentinelAcked.Load)
	defer func() {
		if !p.exited() {
			p.kill()
		}
	}()
	for deadline := time.Now().Add(60 * time.Second); !sub.has(sentinel); time.Sleep(20 * time.Millisecond) {
		if p.exited() {
			t.Fatalf("the final ferry exited: %v", p.err)
		}
		if time.Now().After(deadline) {
			p.kill()
			keepData("sentinel-not-forwarded")
			desc, _ := inspectBufferFile(t, filepath.Join(backing, "buffer.db"))
			t.Fatalf("the final run acknowledged the sentinel %v but did not forward it in 60s; the buffer file: %s", sentinel, desc)
		}
	}
	missing := func() []reading {
		mu.Lock()
		defer mu.Unlock()
		var m []reading
		for r := range acked {
			if !sub.has(r) {
				m = append(m, r)
			}
		}
		slices.SortFunc(m, func(a, b reading) int { return (a.P-b.P)*1_000_000 + a.S - b.S })
		return m
	}
	if strict {
		// Give stragglers a moment (resent after a reconnect); then
		// fail with the list rather than a bare timeout.
		deadline := time.Now().Add(10 * time.Second)
		for len(missing()) > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	lost := missing()

	// One more cut after the drain, then the file as the disk holds it.
	p.kill()
	if err := disk.PowerCut(); err != nil {
		t.Fatal(err)
	}
	files, lines := quarantined()
	sub.mu.Lock()
	dups, delivered := sub.dups, sub.total
	sub.mu.Unlock()
	bufferDesc, checkErr := inspectBufferFile(t, filepath.Join(backing, "buffer.db"))

	t.Logf("durability %s: %d cycles (%d power cuts) in %s: %d readings acknowledged (%.0f/s while ferry ran), %d acknowledged but lost (%.0f a cut), %d duplicates at the cloud (of %d delivered); backlog at the cuts %v; the cuts discarded %d bytes in %d blocks (%d unsynced blocks kept by the random cuts); buffer quarantined %d times; ferry exited on a file %d times %v",
		durability, cycles, cycles+1, time.Since(began).Round(100*time.Millisecond), total, float64(total)/uptime.Seconds(),
		len(lost), float64(len(lost))/float64(cycles), dups, delivered,
		backlogs, cutBytes, cutBlocks, cutKept, len(files), len(startFailures), startFailures)

	if !strict {
		if len(lost) > 0 {
			t.Logf("lost (allowed with %s): %v", durability, head(lost, 20))
		}
		if checkErr != nil {
			t.Logf("the buffer file after the last cut (allowed with %s): %v; %s", durability, checkErr, bufferDesc)
		}
		return
	}
	if len(lost) > 0 {
		t.Errorf("%d acknowledged readings never reached the cloud with durability sync: %v", len(lost), head(lost, 20))
	}
	if len(files) > 0 || lines > 0 {
		t.Errorf("ferry quarantined its buffer after a power cut with durability sync: %v, %d log lines", files, lines)
	}
	if checkErr != nil {
		t.Errorf("the buffer file after the last power cut: %v; %s", checkErr, bufferDesc)
	}
	sub.checkOrder(t)
}

// publishUntilAcked publishes r at QoS 1, reconnecting, until the gateway
// acknowledges it (then sets acked) or ctx ends.
func publishUntilAcked(ctx context.Context, addr string, r reading, acked *atomic.Bool) {
	b, _ := json.Marshal(r)
	for ctx.Err() == nil {
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).
			SetClientID("powercut-sentinel").SetAutoReconnect(false).SetConnectTimeout(time.Second))
		if tok := c.Connect(); !tok.WaitTimeout(2*time.Second) || tok.Error() != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		tok := c.Publish(fmt.Sprintf("sensors/%d", r.P), 1, false, b)
		ok := tok.WaitTimeout(2*time.Second) && tok.Error() == nil
		c.Disconnect(0)
		if ok {
			acked.Store(true)
			return
		}
	}
}

// inspectBufferFile describes and checks the buffer file at path
// (describeBuffer, checkBufferFile) in a child process, the test binary
// running TestPowerCutFileCheck: on a corrupt file bbolt may overflow the
// stack (its Check recurses through a cycle of pages), which no recover
// catches.
func inspectBufferFile(t *testing.T, path string) (desc string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestPowerCutFileCheck$", "-test.count=1", "-test.v=false")
	cmd.Env = append(os.Environ(), "FERRY_POWERCUT_CHECK="+path)
	out, runErr := cmd.CombinedOutput()
	var verdict string
	for _, l := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(l, "DESC "):
			desc = strings.TrimPrefix(l, "DESC ")
		case strings.HasPrefix(l, "VERDICT "):
			verdict = strings.TrimPrefix(l, "VERDICT ")
		}
	}
	switch {
	case verdict == "ok":
		return desc, nil
	case verdict != "":
		return desc, errors.New(verdict)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return desc, fmt.Errorf("checking the file crashed (%v): %s", runErr, strings.Join(head(lines, 3), " | "))
}

// TestPowerCutFileCheck is inspectBufferFile's child: it runs only with
// FERRY_POWERCUT_CHECK set.
func TestPowerCutFileCheck(t *testing.T) {
	path := os.Getenv("FERRY_POWERCUT_CHECK")
	if path == "" {
		t.Skip("the child process of TestPowerCut's file checks")
	}
	fmt.Printf("DESC %s\n", describeBuffer(path))
	if err := checkBufferFile(path); err != nil {
		fmt.Printf("VERDICT %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
	} else {
		fmt.Println("VERDICT ok")
	}
}

// checkBufferFile opens the buffer file as bbolt (tx.Check) and as the
// buffer package does (its metadata), refusing rather than quarantining.
// A bbolt that panics on the file is reported, not fatal.
func checkBufferFile(path string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("bbolt panics on the file: %v", r)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("bbolt open: %w", err)
	}
	var errs []string
	_ = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			errs = append(errs, err.Error())
		}
		return nil
	})
	db.Close()
	if len(errs) > 0 {
		return fmt.Errorf("bbolt check: %s", strings.Join(head(errs, 10), "; "))
	}
	l, err := buffer.Open(path, buffer.Options{OnCorrupt: buffer.CorruptFail})
	if err != nil {
		return err
	}
	return l.Close()
}

// describeBuffer summarizes the buffer file for a failure message: per
// stream its metadata record (first and next offset, count), the
// consumers' positions and the offsets of the events it holds.
func describeBuffer(path string) (desc string) {
	defer func() {
		if r := recover(); r != nil {
			desc += fmt.Sprintf(" (bbolt panics: %v)", r)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		return err.Error()
	}
	defer db.Close()
	var b strings.Builder
	_ = db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket([]byte("streams"))
		if root == nil {
			b.WriteString("no streams bucket")
			return nil
		}
		return root.ForEachBucket(func(name []byte) error {
			s := root.Bucket(name)
			fmt.Fprintf(&b, "stream %s:", name)
			if m := s.Get([]byte("meta")); len(m) == 32 {
				fmt.Fprintf(&b, " first %d next %d count %d;", binary.BigEndian.Uint64(m), binary.BigEndian.Uint64(m[8:]), binary.BigEndian.Uint64(m[16:]))
			} else {
				fmt.Fprintf(&b, " meta %x;", m)
			}
			if c := s.Bucket([]byte("consumers")); c != nil {
				_ = c.ForEach(func(k, v []byte) error {
					if len(v) == 8 {
						fmt.Fprintf(&b, " consumer %s at %d;", k, binary.BigEndian.Uint64(v))
					}
					return nil
				})
			}
			if ev := s.Bucket([]byte("ev")); ev != nil {
				c := ev.Cursor()
				first, _ := c.First()
				last, _ := c.Last()
				n := ev.Stats().KeyN
				if len(first) == 8 && len(last) == 8 {
					fmt.Fprintf(&b, " %d events, offsets %d to %d;", n, binary.BigEndian.Uint64(first), binary.BigEndian.Uint64(last))
				} else {
					fmt.Fprintf(&b, " %d events;", n)
				}
			}
			b.WriteString(" ")
			return nil
		})
	})
	return b.String()
}

func head[T any](s []T, n int) []T { return s[:min(n, len(s))] }
