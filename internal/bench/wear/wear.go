//go:build linux

package wear

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Defaults of Config.
const (
	DefaultDuration    = 30 * time.Second
	DefaultWarmup      = 5 * time.Second
	DefaultSettle      = 30 * time.Second
	DefaultSensors     = 10
	DefaultEnduranceTB = 10
	// MosquittoAutosave is mosquitto's default autosave_interval, which
	// the persistence-true edge keeps (Debian's mosquitto.conf does too).
	MosquittoAutosave = 1800 * time.Second
)

// DefaultRates are the aggregate readings per second measured.
var DefaultRates = []float64{1, 10, 100}

// Targets, in the order of the table: ferry in each durability mode, then
// a Mosquitto edge bridging to the cloud with persistence off (mosquitto's
// built-in default) and on (as Debian's /etc/mosquitto/mosquitto.conf
// ships it: persistence true, autosave_interval left at 1800 s).
var Targets = []Target{
	{Key: "sync", Edge: "ferry", Setting: "sync"},
	{Key: "batch", Edge: "ferry", Setting: "batch"},
	{Key: "none", Edge: "ferry", Setting: "none"},
	{Key: "mosquitto", Edge: "mosquitto", Setting: "persistence false"},
	{Key: "mosquitto-persist", Edge: "mosquitto", Setting: "persistence true"},
}

// Target is one edge setup measured.
type Target struct {
	Key     string // as in Config.Targets
	Edge    string // ferry or mosquitto
	Setting string // ferry's durability, or mosquitto's persistence
}

// Config describes one `make bench-wear` run.
type Config struct {
	Ferry     string // ferry binary
	Mosquitto string // mosquitto binary
	// Duration is the measured window, Warmup the load before it, Settle
	// the longest wait for readings to reach the cloud after the load.
	Duration, Warmup, Settle time.Duration
	// NoSyncWindow is the least window for a ferry with durability none,
	// which never fsyncs: write_bytes counts a page only when it turns from
	// clean to dirty, and without fsync the kernel cleans (writes back) a
	// page only once it has been dirty for dirty_expire_centisecs, checked
	// every dirty_writeback_centisecs, so a shorter window sees too few
	// writebacks. Negative: 2 x WritebackCycle(); 0: no minimum.
	NoSyncWindow time.Duration
	Rates        []float64 // aggregate readings per second
	Sensors      int       // MQTT clients sharing each rate
	Targets      []Target
	EnduranceTB  float64 // host writes a card takes, for the years column
	NoPerf       bool    // do not count fsyncs with perf
	Keep         bool    // keep the work directory
	TmpDir       string  // parent of the work directory ("" = os.TempDir)
	Out, Log     io.Writer
}

// Row is the outcome of one target at one rate.
type Row struct {
	Target Target
	Rate   float64 // aggregate readings/s asked for
	Window time.Duration
	// Readings counts PUBACKs received in the window.
	Readings int64
	// Deltas over the window of the edge process's /proc/PID/io and
	// /proc/PID/stat, and of perf's fsync+fdatasync count (Syncs < 0: not
	// counted).
	WriteBytes, CancelledBytes, Syscw int64
	Syncs                             int64
	CPU                               float64
	// Commits is ferry's commit count over the window (from /status);
	// -1 for Mosquitto or when unknown.
	Commits int64
	// SaveBytes is what one persistence save of the Mosquitto edge wrote
	// (SIGUSR1, as an autosave does); -1 when not measured.
	SaveBytes int64
	Late      int // readings published after their slot
	// AckP50 and AckP99 are publish-to-PUBACK percentiles in the window.
	AckP50, AckP99 time.Duration
	Delivery       delivery
	Err            error
}

// sample is a snapshot of the measured process's counters.
type sample struct {
	at      time.Time
	io      ioStats
	cpu     float64
	syncs   int64
	commits int64
	err     error
}

// harness holds what lives for the whole run.
type harness struct {
	cfg   *Config
	work  string
	procs procs
	ports ports
	cloud int
	user  string
	n     int // edges started, for directory names and tags
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.cfg.Log, "%s wear: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// Run measures every target at every rate and prints the table to
// cfg.Out. It returns an error if setup failed, and ErrLost (wrapped) if
// any run lost acknowledged readings or failed: the table is printed
// either way.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	if cfg.Log == nil {
		cfg.Log = os.Stderr
	}
	if err := cfg.check(); err != nil {
		return err
	}
	work, err := os.MkdirTemp(cfg.TmpDir, "ferry-wear.")
	if err != nil {
		return err
	}
	h := &harness{cfg: &cfg, work: work}
	defer func() {
		h.procs.stopAll()
		if cfg.Keep {
			h.logf("work directory kept: %s", work)
		} else {
			os.RemoveAll(work)
		}
	}()
	fs, err := describeFS(work)
	if err != nil {
		return err
	}
	if needsFerry(cfg.Targets) {
		if cfg.Ferry, err = snapshot(cfg.Ferry, filepath.Join(work, "ferry")); err != nil {
			return err
		}
	}
	if u, err := user.Current(); err == nil {
		h.user = u.Username
	}
	if !cfg.NoPerf {
		var why string
		if h.procs.perf, why = findPerf(work); why != "" {
			h.logf("fsyncs not counted: %s", why)
		}
		h.procs.setpriv, _ = exec.LookPath("setpriv")
	} else {
		h.logf("fsyncs not counted: PERF=0")
	}
	start := time.Now()
	h.logf("work dir %s on %s; load average %s", work, fs, loadavg())
	if err := h.startCloud(ctx); err != nil {
		return err
	}
	h.logf("cloud: mosquitto on 127.0.0.1:%d", h.cloud)

	var rows []Row
	for _, t := range cfg.Targets {
		for _, r := range cfg.Rates {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			row := h.measure(ctx, t, r)
			if row.Err != nil && ctx.Err() != nil {
				return ctx.Err()
			}
			h.logRow(&row)
			rows = append(rows, row)
		}
	}
	writeTable(cfg.Out, &cfg, header{
		ferry:     versionLine(cfg.Ferry, "version") + binaryHash(cfg.Ferry, cfg.Targets),
		checkout:  gitDescribe(),
		mosquitto: versionLine(cfg.Mosquitto, "-h"),
		fs:        fs,
		work:      work,
		perf:      h.procs.perf != "",
		took:      time.Since(start),
		payload:   avgPayload(cfg.Sensors),
	}, rows)
	bad := 0
	for _, r := range rows {
		if r.Err != nil || r.Delivery.Lost > 0 {
			bad++
		}
	}
	if bad > 0 {
		return fmt.Errorf("%w: %d of %d runs", ErrLost, bad, len(rows))
	}
	return nil
}

// ErrLost reports runs that failed or lost acknowledged readings.
var ErrLost = errors.New("runs failed or lost acknowledged readings; their figures are worthless")

func (c *Config) check() error {
	if c.Duration <= 0 || c.Warmup < 0 || c.Settle <= 0 {
		return fmt.Errorf("wear: duration %v, warm-up %v, settle %v: want duration and settle > 0, warm-up >= 0", c.Duration, c.Warmup, c.Settle)
	}
	if c.NoSyncWindow < 0 {
		c.NoSyncWindow = 2 * WritebackCycle()
	}
	if c.Sensors < 1 || len(c.Rates) == 0 || len(c.Targets) == 0 {
		return errors.New("wear: want at least one sensor, rate and target")
	}
	for _, r := range c.Rates {
		if r <= 0 || r > 10000 {
			return fmt.Errorf("wear: rate %v readings/s: want 0 < rate <= 10000", r)
		}
	}
	if c.EnduranceTB <= 0 {
		return fmt.Errorf("wear: endurance %v TB: want > 0", c.EnduranceTB)
	}
	if needsFerry(c.Targets) {
		if st, err := os.Stat(c.Ferry); err != nil || st.IsDir() {
			return fmt.Errorf("wear: ferry binary %q missing (make build)", c.Ferry)
		}
	}
	if _, err := os.Stat(c.Mosquitto); err != nil {
		return fmt.Errorf("wear: mosquitto %q missing (apt-get install mosquitto): %w", c.Mosquitto, err)
	}
	return nil
}

func needsFerry(ts []Target) bool {
	for _, t := range ts {
		if t.Edge == "ferry" {
			return true
		}
	}
	return false
}

// snapshot copies the ferry binary to dst and checks that the copy runs,
// so that every row measures one binary even if bin/ferry is rebuilt
// meanwhile (by another engineer, or a second `make bench-wear`). A copy
// that does not run, e.g. taken while a build was writing it, is retried.
func snapshot(src, dst string) (string, error) {
	var err error
	for range 10 {
		var b []byte
		if b, err = os.ReadFile(src); err == nil {
			if err = os.WriteFile(dst, b, 0o755); err == nil {
				var out []byte
				if out, err = exec.Command(dst, "version").CombinedOutput(); err == nil {
					return dst, nil
				}
				err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
			}
		}
		time.Sleep(time.Second)
	}
	return "", fmt.Errorf("wear: copy of %s does not run: %w", src, err)
}

// binaryHash identifies the ferry binary measured, as a dirty checkout's
// version does not: ", binary sha256 0123456789ab".
func binaryHash(path string, ts []Target) string {
	if !needsFerry(ts) {
		return " (not measured)"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return fmt.Sprintf(", binary sha256 %x", sha256.Sum256(b))[:len(", binary sha256 ")+12]
}

// ---- the brokers ---------------------------------------------------------------

// startCloud starts the cloud: Mosquitto without persistence, up for the
// whole run, not measured.
func (h *harness) startCloud(ctx context.Context) error {
	return retry(3, func() error {
		port, err := h.ports.get()
		if err != nil {
			return err
		}
		dir := filepath.Join(h.work, "cloud")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\n%slog_dest stderr\nmax_queued_messages 0\n", port, h.userLine())
		if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(conf), 0o644); err != nil {
			return err
		}
		p, err := h.procs.start(ctx, dir, "cloud", false, h.cfg.Mosquitto, "-c", filepath.Join(dir, "mosquitto.conf"))
		if err != nil {
			return err
		}
		if err := waitPort(ctx, p, port); err != nil {
			h.procs.stop(p, syscall.SIGTERM)
			return err
		}
		h.cloud = port
		return nil
	})
}

// userLine keeps a mosquitto started as root from switching to user
// mosquitto, which could not write in the work directory.
func (h *harness) userLine() string {
	if h.user == "" {
		return ""
	}
	return "user " + h.user + "\n"
}

// edge is a started edge broker.
type edge struct {
	proc   *proc
	url    string // tcp://127.0.0.1:port
	status int    // ferry's status port, 0 for Mosquitto
	dir    string
}

// startEdge starts t's edge broker under perf, in a fresh directory on
// fresh ports, retrying on fresh ports if it fails to start.
func (h *harness) startEdge(ctx context.Context, t Target) (*edge, error) {
	var e *edge
	err := retry(3, func() error {
		h.n++
		dir := filepath.Join(h.work, fmt.Sprintf("%02d-%s", h.n, t.Key))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		port, err := h.ports.get()
		if err != nil {
			return err
		}
		e = &edge{url: fmt.Sprintf("tcp://127.0.0.1:%d", port), dir: dir}
		var argv []string
		if t.Edge == "ferry" {
			if e.status, err = h.ports.get(); err != nil {
				return err
			}
			conf := ferryConfig(filepath.Join(dir, "data"), t.Setting, port, e.status, h.cloud)
			if err := os.WriteFile(filepath.Join(dir, "ferry.yaml"), []byte(conf), 0o644); err != nil {
				return err
			}
			argv = []string{h.cfg.Ferry, "run", "-c", filepath.Join(dir, "ferry.yaml")}
		} else {
			conf := mosquittoEdgeConfig(dir, h.userLine(), t.Setting == "persistence true", port, h.cloud, fmt.Sprintf("wear-%s-%02d", filepath.Base(h.work), h.n))
			if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(conf), 0o644); err != nil {
				return err
			}
			argv = []string{h.cfg.Mosquitto, "-c", filepath.Join(dir, "mosquitto.conf")}
		}
		p, err := h.procs.start(ctx, dir, "edge", true, argv...)
		if err != nil {
			return err
		}
		e.proc = p
		for _, port := range []int{port, e.status} {
			if port == 0 {
				continue
			}
			if err := waitPort(ctx, p, port); err != nil {
				h.procs.stop(p, syscall.SIGTERM)
				return err
			}
		}
		return nil
	})
	return e, err
}

func ferryConfig(data, durability string, edge, status, cloud int) string {
	return fmt.Sprintf(`gateway_id: wear
data_dir: %s
log: {level: warn}
broker: {listen: "127.0.0.1:%d", allow_anonymous: true}
ingest:
  durability: %s
  routes:
    - topics: ["wear/#"]
      stream: telemetry
uplink:
  endpoints: [{url: "tcp://127.0.0.1:%d"}]
  backoff: {min: 100ms, max: 1s}
status: {listen: "127.0.0.1:%d", log_interval: 0}
`, data, edge, durability, cloud, status)
}

// mosquittoEdgeConfig is a Mosquitto edge bridging wear/# to the cloud,
// everything else at mosquitto's defaults (autosave_interval 1800 s with
// persistence on).
func mosquittoEdgeConfig(dir, userLine string, persist bool, edge, cloud int, clientID string) string {
	return fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
%slog_dest stderr
persistence %t
persistence_location %s/

connection wear
address 127.0.0.1:%d
clientid %s
cleansession false
topic wear/# out 1
restart_timeout 1 2
`, edge, userLine, persist, dir, cloud, clientID)
}

func retry(n int, f func() error) error {
	var err error
	for range n {
		if err = f(); err == nil || errors.Is(err, context.Canceled) {
			return err
		}
	}
	return err
}

// ---- one row ---------------------------------------------------------------------

// measure runs one target at one aggregate rate: a fresh edge, the probe,
// the sensors for warm-up plus window, the delivery check, and a clean
// stop.
func (h *harness) measure(ctx context.Context, t Target, rate float64) (row Row) {
	row = Row{Target: t, Rate: rate, Syncs: -1, Commits: -1, SaveBytes: -1}
	h.logf("%s %s at %g readings/s: starting", t.Edge, t.Setting, rate)
	e, err := h.startEdge(ctx, t)
	if err != nil {
		row.Err = err
		return row
	}
	defer func() {
		if e.proc.alive() {
			h.procs.stop(e.proc, syscall.SIGTERM)
		}
		if row.Err == nil && e.proc.waitErr != nil && !isSignalled(e.proc.waitErr) {
			row.Err = fmt.Errorf("%s exited: %v (see %s)", t.Edge, e.proc.waitErr, e.proc.log.Name())
		}
	}()
	tag := fmt.Sprintf("c%02d", h.n)
	sub, err := startCloudSub(ctx, fmt.Sprintf("tcp://127.0.0.1:%d", h.cloud), tag)
	if err != nil {
		row.Err = err
		return row
	}
	defer sub.close()
	if err := sub.probe(ctx, e.url); err != nil {
		row.Err = err
		return row
	}

	period := time.Duration(float64(h.cfg.Sensors) / rate * float64(time.Second))
	start := time.Now().Add(300 * time.Millisecond)
	t0 := start.Add(h.cfg.Warmup)
	t1 := t0.Add(h.window(t))
	samples := make(chan [2]sample, 1)
	go func() {
		var s [2]sample
		for i, at := range []time.Time{t0, t1} {
			select {
			case <-time.After(time.Until(at)):
			case <-ctx.Done():
			}
			s[i] = h.sample(e, i == 0)
		}
		samples <- s
	}()
	ss, err := runSensors(ctx, e.url, tag, h.cfg.Sensors, period, start, t1)
	s := <-samples
	if err != nil {
		row.Err = err
		return row
	}
	defer disconnectSensors(ss)
	for _, x := range s {
		if x.err != nil {
			row.Err = x.err
		}
	}
	for _, sn := range ss {
		row.Late += sn.late
		if sn.err != nil && row.Err == nil {
			row.Err = sn.err
		}
	}
	row.Window = s[1].at.Sub(s[0].at)
	row.Readings = ackedBetween(ss, s[0].at, s[1].at)
	row.AckP50, row.AckP99 = ackLatency(ss, s[0].at, s[1].at)
	row.WriteBytes = s[1].io.WriteBytes - s[0].io.WriteBytes
	row.CancelledBytes = s[1].io.CancelledWriteBytes - s[0].io.CancelledWriteBytes
	row.Syscw = s[1].io.Syscw - s[0].io.Syscw
	row.CPU = s[1].cpu - s[0].cpu
	if e.proc.perfOut != "" {
		row.Syncs = s[1].syncs - s[0].syncs
	}
	if s[0].commits >= 0 && s[1].commits >= 0 {
		row.Commits = s[1].commits - s[0].commits
	}
	row.Delivery = sub.waitDelivered(ctx, ss, h.cfg.Settle)

	if t.Setting == "persistence true" && row.Err == nil {
		row.SaveBytes, err = h.measureSave(ctx, e)
		if err != nil {
			h.logf("mosquitto save not measured: %v", err)
		}
	}
	return row
}

// window is the measured window for t: Config.Duration, or NoSyncWindow
// for a ferry that never fsyncs, if that is longer.
func (h *harness) window(t Target) time.Duration {
	if noSync(t) {
		return max(h.cfg.Duration, h.cfg.NoSyncWindow)
	}
	return h.cfg.Duration
}

// noSync reports whether t writes its buffer without fsync, so that pages
// stay dirty until the kernel's writeback.
func noSync(t Target) bool { return t.Edge == "ferry" && t.Setting == "none" }

// WritebackCycle is the longest a dirty page waits for the kernel's
// writeback: vm.dirty_expire_centisecs + vm.dirty_writeback_centisecs
// (30 s + 5 s by default).
func WritebackCycle() time.Duration {
	return vmCentisecs("dirty_expire_centisecs", 3000) + writebackInterval()
}

// writebackInterval is vm.dirty_writeback_centisecs: how often the
// kernel's flusher looks for expired dirty pages.
func writebackInterval() time.Duration { return vmCentisecs("dirty_writeback_centisecs", 500) }

// vmCentisecs reads /proc/sys/vm/name, in centiseconds, or returns def.
func vmCentisecs(name string, def int64) time.Duration {
	b, err := os.ReadFile("/proc/sys/vm/" + name)
	n, err2 := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || err2 != nil || n <= 0 {
		n = def
	}
	return time.Duration(n) * 10 * time.Millisecond
}

// sample reads the edge's counters. Ferry's status request, which costs it
// a little CPU, is made outside the window: before the other counters at
// its start, after them at its end.
func (h *harness) sample(e *edge, start bool) sample {
	s := sample{commits: -1}
	if e.status != 0 && start {
		s.commits = ferryCommits(e.status)
	}
	s.at = time.Now()
	s.io, s.err = readIO(e.proc.pid)
	if s.err == nil {
		s.cpu, s.err = cpuSeconds(e.proc.pid)
	}
	if e.proc.perfOut != "" && s.err == nil {
		s.syncs, s.err = perfSyncs(e.proc.perfOut)
	}
	if e.status != 0 && !start {
		s.commits = ferryCommits(e.status)
	}
	if s.err != nil {
		s.err = fmt.Errorf("sample %s (pid %d): %w", e.proc.name, e.proc.pid, s.err)
	}
	return s
}

// measureSave has the Mosquitto edge save its persistence file now
// (SIGUSR1: what the autosave does every autosave_interval) and returns
// the bytes that wrote, once write_bytes has stood still for 500 ms.
func (h *harness) measureSave(ctx context.Context, e *edge) (int64, error) {
	before, err := readIO(e.proc.pid)
	if err != nil {
		return -1, err
	}
	if err := e.proc.signal(syscall.SIGUSR1); err != nil {
		return -1, err
	}
	last, still := before.WriteBytes, 0
	for range 100 {
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		now, err := readIO(e.proc.pid)
		if err != nil {
			return -1, err
		}
		if now.WriteBytes == last && last != before.WriteBytes {
			if still++; still >= 5 {
				break
			}
		} else {
			still = 0
		}
		last = now.WriteBytes
	}
	if last == before.WriteBytes {
		return -1, errors.New("SIGUSR1 wrote nothing within 10 s")
	}
	return last - before.WriteBytes, nil
}

// ferryCommits reads ferry's buffer commit count from its status
// endpoint, or -1.
func ferryCommits(port int) int64 {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/status", port))
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var st struct {
		Commits *int64 `json:"commits"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil || st.Commits == nil {
		return -1
	}
	return *st.Commits
}

func isSignalled(err error) bool {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return true
		}
	}
	return false
}

func (h *harness) logRow(r *Row) {
	if r.Err != nil {
		h.logf("%s %s at %g/s: FAILED: %v", r.Target.Edge, r.Target.Setting, r.Rate, r.Err)
		return
	}
	d := r.Delivery
	extra := ""
	if r.Commits >= 0 {
		extra = fmt.Sprintf(", %d commits", r.Commits)
	}
	if r.SaveBytes >= 0 {
		extra += fmt.Sprintf(", one save (SIGUSR1) wrote %d B", r.SaveBytes)
	}
	h.logf("%s %s at %g/s: %d readings in %.1fs, write_bytes %d (cancelled %d), syscw %d, syncs %d, CPU %.2fs, PUBACK p50 %v p99 %v%s; cloud %d/%d acked arrived, %d dup, %d unacked, %d late",
		r.Target.Edge, r.Target.Setting, r.Rate, r.Readings, r.Window.Seconds(), r.WriteBytes, r.CancelledBytes, r.Syscw, r.Syncs, r.CPU, r.AckP50.Round(10*time.Microsecond), r.AckP99.Round(10*time.Microsecond), extra,
		d.Arrived, d.Acked, d.Duplicates, d.Unacked, r.Late)
}

// ---- the environment -----------------------------------------------------

// describeFS names the filesystem and device holding dir, refusing ones
// where write_bytes means nothing (tmpfs and ramfs hold no storage).
func describeFS(dir string) (string, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return "", err
	}
	const tmpfsMagic, ramfsMagic = 0x01021994, 0x858458f6
	if t := uint32(st.Type); t == tmpfsMagic || t == ramfsMagic { // Type is int32 on 32-bit ARM
		return "", fmt.Errorf("wear: %s is on tmpfs/ramfs, which has no storage to wear: write_bytes would read 0; set TMPDIR to a directory on a disk", dir)
	}
	fstype, dev := "", ""
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err == nil {
		best := -1
		for line := range strings.SplitSeq(string(b), "\n") {
			pre, post, ok := strings.Cut(line, " - ")
			f, g := strings.Fields(pre), strings.Fields(post)
			if !ok || len(f) < 5 || len(g) < 2 {
				continue
			}
			mp := f[4]
			if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > best {
				best, fstype, dev = len(mp), g[0], g[1]
			}
		}
	}
	if fstype == "" {
		fstype = fmt.Sprintf("filesystem type %#x", st.Type)
	}
	if dev != "" {
		return fstype + " (" + dev + ")", nil
	}
	return fstype, nil
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func versionLine(bin string, arg string) string {
	out, _ := exec.Command(bin, arg).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if line == "" {
		return filepath.Base(bin) + " (version unknown)"
	}
	return line
}

func gitDescribe() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "not a git checkout"
	}
	return strings.TrimSpace(string(out))
}

func avgPayload(sensors int) float64 {
	var n, sum int
	for i := range sensors {
		for seq := range 1000 {
			sum += len(reading("c01", i, seq))
			n++
		}
	}
	return float64(sum) / float64(n)
}

// nproc is the number of CPUs usable, for the header.
func nproc() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	n, model := 0, ""
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.HasPrefix(line, "processor") {
			n++
		}
		if k, v, ok := strings.Cut(line, ":"); ok && model == "" && strings.TrimSpace(k) == "model name" {
			model = strings.TrimSpace(v)
		}
	}
	return strconv.Itoa(n) + " CPUs (" + model + ")"
}
