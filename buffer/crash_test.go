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

const crashChildEnv = "FERRY_BUFFER_CRASH_CHILD"

// crashChild appends events with sync durability from several goroutines
// and prints the sequence number of each append that returned, until it is
// killed.
func crashChild() {
	l, err := buffer.Open(os.Getenv(crashChildEnv), buffer.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	go func() { _ = l.Run(context.Background()) }()
	start, _ := strconv.Atoi(os.Getenv("FERRY_CRASH_START"))
	out := make(chan int, 1024)
	for w := 0; w < 8; w++ {
		go func() {
			for i := start + w; ; i += 8 {
				e := &event.Event{Stream: "s", Payload: []byte(strconv.Itoa(i))}
				if err := l.Append(context.Background(), e); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				out <- i
			}
		}()
	}
	w := bufio.NewWriter(os.Stdout)
	for i := range out {
		fmt.Fprintln(w, i)
		if len(out) == 0 {
			w.Flush()
		}
	}
}

// TestKill9 kills a process that is appending with SIGKILL, several times,
// and checks that every append that returned is in the file afterwards and
// the file is consistent.
func TestKill9(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	acked := map[int]bool{}
	start := 0
	for round := 0; round < 5; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path, "FERRY_CRASH_START="+strconv.Itoa(start))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		deadline := time.After(time.Duration(100+round*70) * time.Millisecond)
		n := 0
	read:
		for sc.Scan() {
			i, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
			if err == nil {
				acked[i] = true
				n++
			}
			select {
			case <-deadline:
				break read
			default:
			}
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		for sc.Scan() { // acks printed before the kill still count
			if i, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil {
				acked[i] = true
			}
		}
		_ = cmd.Wait()
		if n == 0 {
			t.Fatalf("round %d: child acknowledged nothing", round)
		}
		start += 1 << 20
	}
	l := buffertest.MustOpenPath(t, path, buffer.Options{})
	found := map[int]bool{}
	_, payloads := readAll(t, l, "s", 0)
	for _, p := range payloads {
		i, _ := strconv.Atoi(p)
		found[i] = true
	}
	missing := 0
	for i := range acked {
		if !found[i] {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged events missing after SIGKILLs", missing, len(acked))
	}
	if err := l.Check(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d acknowledged events all present after 5 SIGKILLs (%d in file)", len(acked), len(found))
}
