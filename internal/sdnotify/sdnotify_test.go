package sdnotify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// listen plays systemd: a unixgram socket that NOTIFY_SOCKET points at.
// name "" makes a socket file in t.TempDir(); "@..." an abstract one.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	if name == "" {
		name = filepath.Join(t.TempDir(), "n.sock") // short: sun_path is 108 bytes
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return c
}

// recv returns the next datagram, failing the test after wait.
func recv(t *testing.T, c *net.UnixConn, wait time.Duration) string {
	t.Helper()
	s, err := tryRecv(c, wait)
	if err != nil {
		t.Fatalf("no notification within %s: %v", wait, err)
	}
	return s
}

func tryRecv(c *net.UnixConn, wait time.Duration) (string, error) {
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(wait))
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

func TestUnsetIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "1000000")
	for name, f := range map[string]func() error{
		"Ready": Ready, "Stopping": Stopping, "Reloading": Reloading, "Watchdog": Watchdog,
		"Status": func() error { return Status("x") },
	} {
		if err := f(); err != nil {
			t.Errorf("%s without NOTIFY_SOCKET: %v", name, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunWatchdog(ctx, nil) }()
	select {
	case err := <-done:
		t.Fatalf("RunWatchdog returned before ctx ended: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestMessages(t *testing.T) {
	c := listen(t, "")
	for _, tt := range []struct {
		f    func() error
		want string
	}{
		{Ready, "READY=1"},
		{Stopping, "STOPPING=1"},
		{Watchdog, "WATCHDOG=1"},
		{func() error { return Status("backlog 12\nlink down") }, "STATUS=backlog 12 link down"},
		{func() error { return Notify("A=1\nB=2") }, "A=1\nB=2"},
	} {
		if err := tt.f(); err != nil {
			t.Fatal(err)
		}
		if got := recv(t, c, 5*time.Second); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

// TestReloading checks MONOTONIC_USEC is CLOCK_MONOTONIC now, as systemd
// 253+ compares it with its own reading of that clock.
func TestReloading(t *testing.T) {
	c := listen(t, "")
	before, ok := monotonicUsec()
	if err := Reloading(); err != nil {
		t.Fatal(err)
	}
	after, _ := monotonicUsec()
	got := recv(t, c, 5*time.Second)
	first, rest, _ := strings.Cut(got, "\n")
	if first != "RELOADING=1" {
		t.Fatalf("got %q", got)
	}
	if !ok { // not Linux: no clock to send
		if rest != "" {
			t.Fatalf("got %q", got)
		}
		return
	}
	v, found := strings.CutPrefix(rest, "MONOTONIC_USEC=")
	usec, err := strconv.ParseUint(v, 10, 64)
	if !found || err != nil || usec < before || usec > after {
		t.Fatalf("got %q, want MONOTONIC_USEC in [%d, %d]", got, before, after)
	}
}

func TestAbstractSocket(t *testing.T) {
	c := listen(t, fmt.Sprintf("@ferry-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := Ready(); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, c, 5*time.Second); got != "READY=1" {
		t.Fatalf("got %q", got)
	}
}

func TestErrors(t *testing.T) {
	for _, addr := range []string{
		filepath.Join(t.TempDir(), "nobody-listens"),
		"vsock:2:1234",
		"relative/path",
	} {
		t.Setenv("NOTIFY_SOCKET", addr)
		if err := Ready(); err == nil {
			t.Errorf("NOTIFY_SOCKET=%q: no error", addr)
		}
	}
	t.Setenv("NOTIFY_SOCKET", "vsock:2:1234")
	t.Setenv("WATCHDOG_USEC", "1000000")
	t.Setenv("WATCHDOG_PID", "")
	if err := RunWatchdog(context.Background(), nil); err == nil {
		t.Error("RunWatchdog with an unusable NOTIFY_SOCKET: no error")
	}
}

func TestWatchdogInterval(t *testing.T) {
	me := strconv.Itoa(os.Getpid())
	for _, tt := range []struct {
		usec, pid string
		want      time.Duration
		ok        bool
	}{
		{"", "", 0, false},
		{"0", "", 0, false},
		{"-5", "", 0, false},
		{"30s", "", 0, false},
		{"99999999999999999999", "", 0, false},
		{"30000000", "", 30 * time.Second, true},
		{"30000000", me, 30 * time.Second, true},
		{"30000000", "1", 0, false}, // another process is the one watched
		{"30000000", "x", 0, false},
	} {
		t.Setenv("WATCHDOG_USEC", tt.usec)
		t.Setenv("WATCHDOG_PID", tt.pid)
		d, ok := WatchdogInterval()
		if d != tt.want || ok != tt.ok {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v %v, want %v %v", tt.usec, tt.pid, d, ok, tt.want, tt.ok)
		}
	}
}

// TestRunWatchdog checks the pings come at about half the interval while
// healthy, stop while not (so systemd would restart a wedged gateway), and
// resume once healthy again.
func TestRunWatchdog(t *testing.T) {
	c := listen(t, "")
	const interval = 200 * time.Millisecond
	t.Setenv("WATCHDOG_USEC", strconv.FormatInt(interval.Microseconds(), 10))
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	var healthy atomic.Bool
	healthy.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunWatchdog(ctx, healthy.Load) }()

	start := time.Now()
	for i := 0; i < 4; i++ {
		if got := recv(t, c, 5*time.Second); got != "WATCHDOG=1" {
			t.Fatalf("got %q", got)
		}
	}
	// The first ping is at once, then one every interval/2: three periods.
	// Generous bounds: this also runs under qemu on a loaded machine.
	if took := time.Since(start); took < 3*interval/2-20*time.Millisecond || took > 10*interval {
		t.Errorf("4 pings took %s, want about %s", took, 3*interval/2)
	}

	healthy.Store(false)
	// At most one ping already decided on may still arrive.
	_, _ = tryRecv(c, interval)
	if got, err := tryRecv(c, 2*interval); err == nil {
		t.Fatalf("ping %q while unhealthy", got)
	}

	healthy.Store(true)
	if got := recv(t, c, 5*time.Second); got != "WATCHDOG=1" {
		t.Fatalf("after recovery got %q", got)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RunWatchdog did not return after cancel")
	}
}

// TestRunWatchdogDisabled: NOTIFY_SOCKET but no WatchdogSec sends nothing.
func TestRunWatchdogDisabled(t *testing.T) {
	c := listen(t, "")
	t.Setenv("WATCHDOG_USEC", "")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := RunWatchdog(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("RunWatchdog returned before ctx ended")
	}
	if got, err := tryRecv(c, 50*time.Millisecond); err == nil {
		t.Fatalf("sent %q without a watchdog", got)
	}
}
