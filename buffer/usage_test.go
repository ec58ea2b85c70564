package buffer_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/event"
)

func mustLoadUsage(t *testing.T, l interface {
	LoadUsage(string) (int64, uint64, error)
}, link string) (int64, uint64) {
	t.Helper()
	start, bytes, err := l.LoadUsage(link)
	if err != nil {
		t.Fatal(err)
	}
	return start, bytes
}

// TestUsageSurvivesReopen saves a link's usage, which a commit writes
// into the file without one of its own: after AckInterval when nothing is
// appended, and it is there after the file is reopened.
func TestUsageSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	opts := buffer.Options{AckInterval: 50 * time.Millisecond}
	l := buffertest.MustOpenPath(t, path, opts)
	if start, bytes := mustLoadUsage(t, l, "uplink"); start != 0 || bytes != 0 {
		t.Fatalf("new file: usage %d %d", start, bytes)
	}
	commits, _ := l.CommitStats()
	if err := l.SaveUsage("uplink", 1764547200, 5000); err != nil {
		t.Fatal(err)
	}
	if err := l.SaveUsage("uplink", 1764547200, 6000); err != nil {
		t.Fatal(err)
	}
	if start, bytes := mustLoadUsage(t, l, "uplink"); start != 1764547200 || bytes != 6000 {
		t.Fatalf("pending usage: %d %d", start, bytes)
	}
	waitFor(t, func() bool { return !l.UsagePending() })
	if n, _ := l.CommitStats(); n > commits+2 {
		t.Errorf("%d commits for two saves, want 1 (2 if the ack interval ran out between them)", n-commits)
	}
	if err := l.SaveUsage("other", 7, 1); err != nil {
		t.Fatal(err)
	}
	l.Close() // commits what is pending

	l = buffertest.MustOpenPath(t, path, opts)
	if start, bytes := mustLoadUsage(t, l, "uplink"); start != 1764547200 || bytes != 6000 {
		t.Errorf("after reopen: usage %d %d, want 1764547200 6000", start, bytes)
	}
	if start, bytes := mustLoadUsage(t, l, "other"); start != 7 || bytes != 1 {
		t.Errorf("after reopen: other's usage %d %d", start, bytes)
	}
}

const usageChildEnv = "FERRY_BUFFER_USAGE_CHILD"

// usageChild saves a growing usage, appends an event after each save and
// prints the usage once the append returned (with sync durability the
// commit that took the event took the usage saved before it), until it
// is killed.
func usageChild(path string) {
	l, err := buffer.Open(path, buffer.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	go func() { _ = l.Run(context.Background()) }()
	_, used, err := l.LoadUsage("uplink")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	w := bufio.NewWriter(os.Stdout)
	for {
		used += 100
		if err := l.SaveUsage("uplink", 42, used); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		if err := l.Append(context.Background(), &event.Event{Stream: "s", Payload: []byte("x")}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		fmt.Fprintln(w, used)
		w.Flush()
	}
}

// TestUsageKill9 kills a process that saves usage with SIGKILL, several
// times: the usage in the file afterwards is at least what was saved
// before the last commit the process saw, and each run goes on from it.
func TestUsageKill9(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	var last uint64
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), usageChildEnv+"="+path)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		deadline := time.After(time.Duration(150+round*50) * time.Millisecond)
		var first, seen uint64
	read:
		for sc.Scan() {
			v, err := strconv.ParseUint(strings.TrimSpace(sc.Text()), 10, 64)
			if err == nil {
				seen = v
				if first == 0 {
					first = v
				}
			}
			select {
			case <-deadline:
				break read
			default:
			}
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		for sc.Scan() {
			if v, err := strconv.ParseUint(strings.TrimSpace(sc.Text()), 10, 64); err == nil {
				seen = v
			}
		}
		_ = cmd.Wait()
		if seen == 0 {
			t.Fatalf("round %d: the child committed nothing", round)
		}
		if first != last+100 {
			t.Errorf("round %d: the child went on from %d, want %d", round, first-100, last)
		}
		l := buffertest.MustOpenPath(t, path, buffer.Options{})
		start, bytes := mustLoadUsage(t, l, "uplink")
		l.Close()
		if start != 42 || bytes < seen {
			t.Fatalf("round %d: usage %d in period %d after SIGKILL, want at least %d in 42", round, bytes, start, seen)
		}
		t.Logf("round %d: %d saved and committed before SIGKILL, %d in the file", round, seen, bytes)
		last = bytes
	}
}
