package gateway_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrygw/ferry/internal/mqtttest"
)

// TestSystemdNotifyAndReload runs the real binary as systemd would run it
// with Type=notify and WatchdogSec: it must send READY=1 once it serves,
// feed the watchdog, announce reloads on SIGHUP and on `ferry reload`,
// refuse a broken config while keeping the old one, and say STOPPING=1 on
// SIGTERM.
func TestSystemdNotifyAndReload(t *testing.T) {
	bin := buildFerry(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	// expect waits for a notification containing want.
	expect := func(want string) {
		t.Helper()
		timeout := time.After(15 * time.Second)
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					t.Fatalf("notify socket closed before %q", want)
				}
				if strings.Contains(m, want) {
					return
				}
			case <-timeout:
				t.Fatalf("no %q from the gateway", want)
			}
		}
	}

	statusAddr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	yaml, _ := testConfig(t, filepath.Join(dir, "data"), "tcp://127.0.0.1:1", "")
	yaml = strings.Replace(yaml, "status:\n  listen: \"\"", "status:\n  listen: "+statusAddr, 1)
	yaml = strings.Replace(yaml, "log: {level: warn}", "log: {level: info}", 1)
	cfgPath := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "ferry.log")
	cmd := exec.Command(bin, "run", "-c", cfgPath)
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=200000", "INVOCATION_ID=test")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("ferry log:\n%s", b)
		}
	}()

	expect("READY=1")
	expect("WATCHDOG=1")
	expect("WATCHDOG=1") // fed repeatedly, every 100 ms

	// SIGHUP with a new uplink topic: applied.
	if err := os.WriteFile(cfgPath, []byte(strings.Replace(yaml, "{gateway_id}/{stream}/{source}", "v2/{stream}", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	expect("RELOADING=1")
	expect("READY=1")
	waitUntil(t, 5*time.Second, "the reload logged", func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), `"msg":"config reloaded"`)
	})

	// `ferry reload` with a broken file: refused with the reason, and the
	// gateway keeps running.
	if err := os.WriteFile(cfgPath, []byte(yaml+"uplink_typo: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "reload", "-addr", statusAddr).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "uplink_typo") {
		t.Fatalf("ferry reload of a broken config: %v\n%s", err, out)
	}
	expect("READY=1")
	if out, err := exec.Command(bin, "status", "-addr", statusAddr, "-json").CombinedOutput(); err != nil {
		t.Fatalf("ferry status after a refused reload: %v\n%s", err, out)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expect("STOPPING=1")
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("ferry exited with %v after SIGTERM", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("ferry did not exit after SIGTERM")
	}
}
