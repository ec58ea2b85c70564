package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/ferrygw/ferry/uplink"
	"github.com/ferrygw/ferry/verify"
)

// cloudMessage is a JSON envelope as the uplink sends it, with seq and
// epoch.
func cloudMessage(gw, stream string, seq uint64) []byte {
	ev := event.Event{Stream: stream, Source: "s1", Topic: "t", Time: time.Now(), Payload: []byte(`{"v":1}`)}
	ev.ID[0], ev.ID[15] = 1, byte(seq)
	b := uplink.AppendJSON(nil, gw, &ev)
	return fmt.Appendf(b[:len(b)-1], `,"seq":%d,"epoch":"00000000000000e1"}`, seq)
}

// verifyRun runs ferry verify in the process until the cloud saw msgs
// messages (read from its metrics), then stops it as SIGINT would.
func verifyRun(t *testing.T, cloud string, publish func(mqtt.Client), msgs int, extra ...string) (int, string, string) {
	t.Helper()
	port := mqtttest.FreePort(t)
	args := append([]string{"-url", cloud, "-listen", fmt.Sprintf("127.0.0.1:%d", port), "-settle", "1h",
		"-client-id", fmt.Sprintf("verify-cmd-%d", port)}, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- runVerify(ctx, args, &out, &errb) }()
	metrics := func() string {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	waitUntil(t, 15*time.Second, "ferry verify serving metrics", func() bool { return metrics() != "" })

	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(cloud).SetClientID(fmt.Sprintf("pub-%d", port)))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	publish(c)
	want := fmt.Sprintf("ferry_verify_messages_total %d\n", msgs)
	waitUntil(t, 15*time.Second, want, func() bool { return strings.Contains(metrics(), want) })
	cancel()
	select {
	case code := <-done:
		return code, out.String(), errb.String()
	case <-time.After(15 * time.Second):
		t.Fatal("ferry verify did not stop")
		return 0, "", ""
	}
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func publishSeqs(gw, stream string, seqs ...uint64) func(mqtt.Client) {
	return func(c mqtt.Client) {
		for _, s := range seqs {
			if tok := c.Publish(gw+"/"+stream+"/s1", 1, false, cloudMessage(gw, stream, s)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				panic(fmt.Sprintf("publish: %v", tok.Error()))
			}
		}
	}
}

func TestVerifyCommand(t *testing.T) {
	cloud := mqtttest.Start(t).URL()

	t.Run("complete streams exit 0", func(t *testing.T) {
		code, out, errb := verifyRun(t, cloud, publishSeqs("gw-1", "telemetry", 1, 2, 3, 4), 4)
		if code != 0 || !strings.Contains(out, "result: ok: no unexplained gap\n") || !strings.Contains(out, "gw-1     telemetry  00000000000000e1  1-4") {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errb)
		}
	})
	t.Run("a hole exits 1", func(t *testing.T) {
		code, out, errb := verifyRun(t, cloud, publishSeqs("gw-2", "telemetry", 1, 2, 5, 6), 4, "-json")
		var rep verify.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("-json output: %v\n%s", err, out)
		}
		if code != 1 || rep.Totals.Missing != 2 || rep.Rows[0].Epochs[0].MissingRanges[0] != (verify.Range{From: 3, To: 4}) {
			t.Fatalf("exit %d, missing %d\nstdout:\n%s\nstderr:\n%s", code, rep.Totals.Missing, out, errb)
		}
		if !strings.Contains(errb, "unexplained gap") || !strings.Contains(errb, "from_seq=3") {
			t.Errorf("stderr does not log the gap:\n%s", errb)
		}
	})
	t.Run("duration", func(t *testing.T) {
		var out, errb bytes.Buffer
		code := runVerify(context.Background(), []string{"-url", cloud, "-duration", "200ms", "-clean", "-client-id", "verify-duration"}, &out, &errb)
		if code != 0 || !strings.Contains(out.String(), "totals: 0 gateways") {
			t.Fatalf("exit %d\n%s\n%s", code, out.String(), errb.String())
		}
	})
	t.Run("usage and connection errors exit 2", func(t *testing.T) {
		dead := fmt.Sprintf("tcp://127.0.0.1:%d", mqtttest.FreePort(t))
		for _, args := range [][]string{
			{},
			{"-url", cloud, "extra"},
			{"-url", cloud, "-partition", "2/2"},
			{"-url", cloud, "-metrics-labels", "pod"},
			{"-url", cloud, "-settle", "0s"},
			{"-url", cloud, "-share", "a/b"},
			{"-url", cloud, "-bogus"},
			{"-url", dead},
		} {
			var out, errb bytes.Buffer
			if code := runVerify(context.Background(), args, &out, &errb); code != 2 {
				t.Errorf("%q: exit %d, want 2\n%s", args, code, errb.String())
			}
		}
	})
	t.Run("dispatch and usage", func(t *testing.T) {
		var out, errb bytes.Buffer
		if code := run([]string{"verify", "-h"}, nil, &out, &errb); code != 0 || !strings.Contains(errb.String(), "-repair") {
			t.Fatalf("ferry verify -h: exit %d\n%s", code, errb.String())
		}
		if !strings.Contains(usage, "verify -url URL") {
			t.Error("ferry's usage does not list verify")
		}
	})
}
