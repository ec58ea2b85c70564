// Package sdnotify tells systemd how the service is doing, with the
// sd_notify(3) protocol: one datagram of NEWLINE-separated KEY=VALUE
// assignments to the unix datagram socket named by $NOTIFY_SOCKET.
//
// It is what a unit with Type=notify and WatchdogSec= needs: Ready once the
// gateway accepts work (so units ordered after ferry start only then, and
// "systemctl start" reports a failing start), Reloading and Ready around a
// SIGHUP reload, Stopping on shutdown, Status for the line "systemctl
// status" shows, and RunWatchdog to prove, at least once per WatchdogSec,
// that the gateway is not wedged. Written here rather than imported because
// the protocol is a few lines and the binary runs on a Pi Zero.
//
// Every function is a no-op returning nil when $NOTIFY_SOCKET is unset
// (started from a shell, a test, or a unit without Type=notify), so callers
// need not check whether they run under systemd.
package sdnotify

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Notify sends state, NEWLINE-separated KEY=VALUE assignments, to systemd.
// It returns nil without doing anything when $NOTIFY_SOCKET is unset.
func Notify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	// A path, or an abstract socket written with a leading '@'; the net
	// package turns that '@' into the NUL byte the kernel expects. systemd
	// 254+ may also hand out "vsock:..." addresses, for virtual machines
	// only: refused rather than misread as a relative path.
	if addr[0] != '/' && addr[0] != '@' {
		return fmt.Errorf("sdnotify: unsupported NOTIFY_SOCKET %q", addr)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	defer conn.Close()
	// A datagram socket sends all of it or nothing: no short writes.
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	return nil
}

// Ready says start-up is finished: the broker listens and the buffer is
// open. With Type=notify, systemd considers the service started only then.
func Ready() error { return Notify("READY=1") }

// Stopping says the service is shutting down (draining, committing the
// buffer), so systemd does not mistake the wait for a hang.
func Stopping() error { return Notify("STOPPING=1") }

// Reloading says a configuration reload has begun; send Ready when it is
// done. It carries MONOTONIC_USEC, the CLOCK_MONOTONIC time of the
// request, which systemd 253 and later require with RELOADING=1 to tell
// this reload from an earlier one (older versions ignore it).
func Reloading() error {
	state := "RELOADING=1"
	if usec, ok := monotonicUsec(); ok {
		state += "\nMONOTONIC_USEC=" + strconv.FormatUint(usec, 10)
	}
	return Notify(state)
}

// Status sets the one-line status "systemctl status ferry" shows. A
// newline would end the assignment, so newlines become spaces.
func Status(s string) error {
	return Notify("STATUS=" + strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s))
}

// Watchdog pings the service manager's watchdog (WATCHDOG=1). Prefer
// RunWatchdog, which pings only while the gateway is healthy.
func Watchdog() error { return Notify("WATCHDOG=1") }

// WatchdogInterval returns the unit's WatchdogSec= as systemd passed it in
// $WATCHDOG_USEC, and whether the watchdog is enabled for this process:
// false when the variable is unset, not a positive number, or when
// $WATCHDOG_PID names another process (the variables were inherited from a
// parent that was the one being watched).
func WatchdogInterval() (time.Duration, bool) {
	usec, err := strconv.ParseUint(os.Getenv("WATCHDOG_USEC"), 10, 63)
	if err != nil || usec == 0 || usec > uint64(1<<63-1)/uint64(time.Microsecond) {
		return 0, false
	}
	if p := os.Getenv("WATCHDOG_PID"); p != "" {
		pid, err := strconv.Atoi(p)
		if err != nil || pid != os.Getpid() {
			return 0, false
		}
	}
	return time.Duration(usec) * time.Microsecond, true
}

// RunWatchdog pings the watchdog at half the interval WatchdogInterval
// returns, but only while healthy returns true: a gateway whose commit loop
// or broker is wedged stops pinging, and systemd kills and restarts it
// after WatchdogSec (Restart=always). healthy is called from RunWatchdog's
// goroutine before every ping; if it blocks, no ping is sent, which is the
// point. A nil healthy counts as always healthy.
//
// Half the interval, as sd_watchdog_enabled(3) advises, leaves a whole
// half for a slow tick or a busy Pi Zero. A ping that fails to send is not
// fatal: the next tick tries again, and if none gets through systemd
// restarts the service, which is the right outcome either way.
//
// Without a watchdog for this process (see WatchdogInterval), or without
// $NOTIFY_SOCKET, there is nothing to do: RunWatchdog waits for ctx like
// the gateway's other Run methods. It returns nil once ctx is done, and an
// error only when $NOTIFY_SOCKET is set but unusable.
func RunWatchdog(ctx context.Context, healthy func() bool) error {
	interval, ok := WatchdogInterval()
	addr := os.Getenv("NOTIFY_SOCKET")
	if !ok || addr == "" {
		<-ctx.Done()
		return nil
	}
	if addr[0] != '/' && addr[0] != '@' {
		return fmt.Errorf("sdnotify: unsupported NOTIFY_SOCKET %q", addr)
	}
	period := interval / 2
	if period <= 0 {
		period = interval
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		if healthy == nil || healthy() {
			_ = Watchdog() // see above: retried at the next tick
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
