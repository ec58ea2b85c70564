//go:build linux

package wear

import (
	"bufio"
	"bytes"
	"context"
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
	"time"
)

// proc is one process the harness started: a broker, possibly run under
// `perf stat` (which then is cmd, and the broker its child). Every proc is
// in a process group of its own, so the harness can end perf and the broker
// together, and a terminal's Ctrl-C reaches only the harness, which stops
// them in order.
type proc struct {
	name string
	cmd  *exec.Cmd
	// pid is the measured process: the broker itself, also when cmd is perf.
	pid int
	// perfOut is perf's interval output (fsync and fdatasync counts), or ""
	// when the process does not run under perf.
	perfOut string
	done    chan struct{} // closed once cmd has exited and been reaped
	waitErr error
	log     *os.File
}

// logSink wraps the log file in a type other than *os.File so that exec
// gives the child a pipe, copied by the harness: were the child to write
// its log file itself, those writes would count in its write_bytes, which
// on a Pi go to journald, another process.
type logSink struct{ f *os.File }

func (l logSink) Write(b []byte) (int, error) { return l.f.Write(b) }

// procs tracks every process started, for the cleanup on exit.
type procs struct {
	mu   sync.Mutex
	all  []*proc
	perf string // path of a working perf, or ""
	// setpriv, when found, gives a broker run under perf a parent-death
	// signal too: were perf killed, the broker would otherwise be orphaned.
	setpriv string
}

// start runs argv with its output going to dir/name.log. With underPerf and
// a working perf, it runs under `perf stat -I` counting fsync and fdatasync
// syscalls; the measured pid is then perf's child, found once it has
// exec'd argv[0].
func (ps *procs) start(ctx context.Context, dir, name string, underPerf bool, argv ...string) (*proc, error) {
	lf, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	bin, err := filepath.Abs(argv[0])
	if err != nil {
		lf.Close()
		return nil, err
	}
	argv = append([]string{bin}, argv[1:]...)
	p := &proc{name: name, log: lf, done: make(chan struct{})}
	full := argv
	if underPerf && ps.perf != "" {
		p.perfOut = filepath.Join(dir, name+".perf")
		full = []string{ps.perf, "stat", "-I", "100", "-x", ",", "-e", syncEvents, "-o", p.perfOut, "--"}
		if ps.setpriv != "" {
			full = append(full, ps.setpriv, "--pdeathsig", "KILL", "--")
		}
		full = append(full, argv...)
	}
	cmd := exec.Command(full[0], full[1:]...)
	cmd.Dir = dir
	cmd.Stdout = logSink{lf}
	cmd.Stderr = logSink{lf}
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = 2 * time.Second
	fmt.Fprintf(lf, "%s harness: start %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(full, " "))
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.cmd = cmd
	ps.mu.Lock()
	ps.all = append(ps.all, p)
	ps.mu.Unlock()
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	p.pid = cmd.Process.Pid
	if p.perfOut != "" {
		if p.pid, err = p.findChild(ctx, bin); err != nil {
			ps.stop(p, 0)
			return nil, err
		}
	}
	return p, nil
}

// findChild waits for perf's child to have exec'd bin and returns its pid.
func (p *proc) findChild(ctx context.Context, bin string) (int, error) {
	want, _ := filepath.EvalSymlinks(bin)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		for _, c := range children(p.cmd.Process.Pid) {
			if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", c)); err == nil && (exe == want || exe == bin) {
				return c, nil
			}
		}
		select {
		case <-p.done:
			return 0, fmt.Errorf("%s exited at start: %v (see %s)", p.name, p.waitErr, p.log.Name())
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("%s: perf's child never became %s", p.name, bin)
}

// children lists the child processes of pid, from /proc/PID/task/*/children
// or, without CONFIG_PROC_CHILDREN, from every process's parent pid.
func children(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	if len(tasks) > 0 {
		return out
	}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, s := range stats {
		b, err := os.ReadFile(s)
		if err != nil {
			continue
		}
		f := statFields(b)
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			n, _ := strconv.Atoi(filepath.Base(filepath.Dir(s)))
			out = append(out, n)
		}
	}
	return out
}

// alive reports whether p has not exited.
func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig to the measured process.
func (p *proc) signal(sig syscall.Signal) error { return syscall.Kill(p.pid, sig) }

// stop ends p: sig (if non-zero) to the measured process, then, if p is
// still there after 10 s, SIGKILL to its whole process group. (When perf
// is the leader it exits only after its child, the broker.)
func (ps *procs) stop(p *proc, sig syscall.Signal) {
	if p == nil || p.cmd == nil {
		return
	}
	if sig != 0 && p.alive() {
		_ = p.signal(sig)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		// Only while the group's leader is unreaped: its pgid cannot have
		// been reused by then.
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	fmt.Fprintf(p.log, "%s harness: %s ended: %v\n", time.Now().Format(time.RFC3339Nano), p.name, p.waitErr)
	p.log.Close()
}

// stopAll kills every process group still running, for the exit path.
func (ps *procs) stopAll() {
	ps.mu.Lock()
	all := ps.all
	ps.all = nil
	ps.mu.Unlock()
	for _, p := range all {
		if p.alive() {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		}
	}
	for _, p := range all {
		<-p.done
	}
}

// syncEvents are the syscalls counted under perf.
const syncEvents = "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync"

// findPerf returns the path of a perf that can count syscall tracepoints
// of a command it starts, or "" with the reason.
func findPerf(dir string) (string, string) {
	path, err := exec.LookPath("perf")
	if err != nil {
		return "", "perf not installed (apt-get install linux-perf)"
	}
	out := filepath.Join(dir, "probe.perf")
	cmd := exec.Command(path, "stat", "-x", ",", "-e", syncEvents, "-o", out, "--", "true")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Sprintf("perf cannot count syscall tracepoints here: %v: %s", err, strings.TrimSpace(string(b)))
	}
	b, err := os.ReadFile(out)
	if err != nil || !bytes.Contains(b, []byte("sys_enter_fdatasync")) || bytes.Contains(b, []byte("<not supported>")) {
		return "", "perf cannot count syscall tracepoints here"
	}
	return path, ""
}

// perfSyncs sums the fsync and fdatasync counts of the intervals perf has
// written so far (each line is one interval's count: "time,count,,event,...").
// It trails the present by up to one interval (100 ms).
func perfSyncs(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return parsePerf(f), nil
}

func parsePerf(r io.Reader) int64 {
	var n int64
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Split(strings.TrimSpace(sc.Text()), ",")
		if len(f) < 4 || !strings.HasPrefix(f[3], "syscalls:sys_enter_f") {
			continue
		}
		if c, err := strconv.ParseInt(f[1], 10, 64); err == nil {
			n += c
		}
	}
	return n
}

// ioStats is /proc/PID/io.
type ioStats struct {
	WriteBytes, CancelledWriteBytes, Syscw, Wchar int64
}

func readIO(pid int) (ioStats, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return ioStats{}, err
	}
	return parseIO(b)
}

func parseIO(b []byte) (ioStats, error) {
	var s ioStats
	seen := 0
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "write_bytes":
			s.WriteBytes = n
			seen++
		case "cancelled_write_bytes":
			s.CancelledWriteBytes = n
		case "syscw":
			s.Syscw = n
			seen++
		case "wchar":
			s.Wchar = n
		}
	}
	if seen < 2 {
		return s, errors.New("no write_bytes or syscw in /proc/PID/io (kernel without CONFIG_TASK_IO_ACCOUNTING?)")
	}
	return s, nil
}

// statFields returns the fields of /proc/PID/stat after the command name
// (which may hold spaces and parentheses): [0] is the state, [1] the ppid,
// [11] utime and [12] stime (fields 14 and 15 of proc(5)).
func statFields(b []byte) []string {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// clkTck is USER_HZ, the unit of utime and stime: 100 on every Linux
// architecture ferry runs on (sysconf(_SC_CLK_TCK) needs cgo).
const clkTck = 100

// cpuSeconds is a process's user+system CPU time.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseCPU(b)
}

func parseCPU(b []byte) (float64, error) {
	f := statFields(b)
	if len(f) < 13 {
		return 0, errors.New("short /proc/PID/stat")
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return float64(u+s) / clkTck, nil
}

// ports hands out free loopback ports: the kernel picks one for a listener
// that is closed at once. Another process may take it before the broker
// binds it, so a failed start is retried on fresh ports (see startRetry).
type ports struct {
	mu   sync.Mutex
	used map[int]bool
}

func (p *ports) get() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.used == nil {
		p.used = map[int]bool{}
	}
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		n := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !p.used[n] {
			p.used[n] = true
			return n, nil
		}
	}
	return 0, errors.New("no free loopback port")
}

// waitPort waits until something accepts connections on 127.0.0.1:port
// while p runs, and p is still running a moment later (so that the
// listener found is p's, not another process's that had the port first).
func waitPort(ctx context.Context, p *proc, port int) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		if !p.alive() {
			return fmt.Errorf("%s exited at start: %v (see %s)", p.name, p.waitErr, p.log.Name())
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			select {
			case <-p.done:
				return fmt.Errorf("%s exited at start: %v (see %s)", p.name, p.waitErr, p.log.Name())
			case <-time.After(150 * time.Millisecond):
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
	return fmt.Errorf("nothing listens on %s (see %s)", addr, p.log.Name())
}
