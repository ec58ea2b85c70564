package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/downlink"
	"github.com/ferrygw/ferry/drivers"
	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/gateway/opsapi"
	"github.com/ferrygw/ferry/gateway/rules"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/ferrygw/ferry/uplink"
)

// cliGateway runs a real gateway in this process, its cloud down, with
// events 1..20 ({"n":i}) and 21 (binary) in stream telemetry. It returns
// the status address and the config file's path.
func cliGateway(t *testing.T) (statusAddr, cfgPath string) {
	t.Helper()
	cloud := mqtttest.Start(t)
	cloud.Stop() // the link stays down: events stay in the buffer
	statusAddr = fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	brokerAddr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	yaml := fmt.Sprintf(`
gateway_id: gw-cli
data_dir: %s
log: {level: error}
broker: {listen: "%s", allow_anonymous: true}
ingest:
  routes: [{topics: ["sensors/#"], stream: telemetry}]
uplink:
  endpoints: [{url: "%s"}]
  backoff: {min: 20ms, max: 200ms}
drivers:
  - {name: sim1, kind: sim, interval: 50ms, stream: sim}
status: {listen: "%s", log_interval: 0s}
`, t.TempDir(), brokerAddr, cloud.URL(), statusAddr)
	cfgPath = filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})

	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + brokerAddr).SetClientID("sensor-a").SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(50)
	for i := 1; i <= 21; i++ {
		p := []byte(fmt.Sprintf(`{"n":%d}`, i))
		if i == 21 {
			p = []byte{0x00, 0xff, 0x10}
		}
		if tok := c.Publish("sensors/a", 1, false, p); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + statusAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status listener: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return statusAddr, cfgPath
}

// ferry runs the CLI and returns its exit code, stdout and stderr.
func ferry(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, nil, &out, &errb)
	return code, out.String(), errb.String()
}

func TestOpsCLI(t *testing.T) {
	addr, cfgPath := cliGateway(t)
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr []string
	}{
		// Expected output is compared with runs of spaces squeezed to one:
		// the tables' widths depend on every row.
		{"status", []string{"status", "-addr", addr, "-sample", "300ms"}, 0, []string{
			"gateway gw-cli up ",
			"link DOWN (not connected since the start) reconnects 0",
			"last error: uplink: cannot connect: tcp://127.0.0.1:",
			"rates ingest 0.0/s (over ", // the measured sample: 300ms or more under load
			" forward 0.0/s (10 s average)",
			"ingest 21 events clients ",
			"forward 0 events in 0 messages (0 B) resent 0",
			"drops none",
			"STREAM BACKLOG BYTES OLDEST DROPS", "\ntelemetry 21 ",
			"DRIVER KIND STATE READS ERRORS LAST ERROR", "\nsim1 sim ok ",
		}, nil},
		{"status from the config's status.listen", []string{"status", "-c", cfgPath, "-sample", "0"}, 0,
			[]string{"gateway gw-cli", "rates ingest -"}, nil},
		{"status of a bad config", []string{"status", "-c", "/nonexistent.yaml"}, 1, nil, []string{"nonexistent.yaml"}},
		{"buffer stats", []string{"buffer", "stats", "-addr", addr}, 0, []string{
			"STREAM FIRST NEXT EVENTS BYTES OLDEST LIMITS FORWARDED CONSUMERS", "\ntelemetry 1 22 21 ", " yes uplink=0\n",
		}, nil},
		{"buffer peek", []string{"buffer", "peek", "-addr", addr, "-stream", "telemetry", "-n", "5"}, 0, []string{
			"OFFSET TIME SOURCE TOPIC CONTENT TYPE SIZE PAYLOAD\n1 ", ` sensor-a sensors/a - 7 {"n":1}`,
			`{"n":5}`, "more: ferry buffer peek -stream telemetry -from 6",
		}, nil},
		{"buffer peek binary", []string{"buffer", "peek", "-c", cfgPath, "-stream", "telemetry", "-from", "21"}, 0,
			[]string{"\n21 ", " 3 hex:00ff10\n"}, nil},
		{"buffer peek past the end", []string{"buffer", "peek", "-addr", addr, "-stream", "telemetry", "-from", "99"}, 0,
			[]string{"stream telemetry: no events from there (retained offsets 1..21)"}, nil},
		{"buffer peek unknown stream", []string{"buffer", "peek", "-addr", addr, "-stream", "nope"}, 1, nil,
			[]string{`unknown stream "nope"; known streams: `, "telemetry", "400 Bad Request"}},
		{"buffer peek without stream", []string{"buffer", "peek", "-addr", addr}, 2, nil, []string{"-stream is required"}},
		{"buffer peek before the first", []string{"buffer", "peek", "-addr", addr, "-stream", "telemetry", "-from", "0"}, 1, nil,
			[]string{"the first retained offset is 1", "404"}},
		{"buffer export cbor", []string{"buffer", "export", "-addr", addr, "-stream", "telemetry", "-format", "cbor"}, 0,
			[]string{"\x82\x01"}, []string{"21 events of stream telemetry"}},
		{"buffer export bad format", []string{"buffer", "export", "-addr", addr, "-stream", "telemetry", "-format", "xml"}, 1,
			nil, []string{`format "xml": must be jsonl or cbor`}},
		{"buffer without command", []string{"buffer"}, 2, nil, []string{"usage: ferry buffer"}},
		{"buffer unknown command", []string{"buffer", "drop"}, 2, nil, []string{`unknown command "drop"`}},
		{"buffer replay without from", []string{"buffer", "replay", "-addr", addr, "-stream", "telemetry"}, 2, nil,
			[]string{"-stream and -from are required"}},
		{"no gateway", []string{"buffer", "stats", "-addr", "127.0.0.1:1"}, 1, nil, []string{"is the gateway running"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := ferry(tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, out, errs)
			}
			squeezed := spaces.ReplaceAllString(out, " ")
			for _, s := range tt.stdout {
				if !strings.Contains(squeezed, s) {
					t.Errorf("stdout lacks %q:\n%s", s, out)
				}
			}
			for _, s := range tt.stderr {
				if !strings.Contains(errs, s) {
					t.Errorf("stderr lacks %q:\n%s", s, errs)
				}
			}
		})
	}

	t.Run("status -json", func(t *testing.T) {
		code, out, errs := ferry("status", "-addr", addr, "-json")
		var st opsapi.Status
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.GatewayID != "gw-cli" || st.Ingest.Ingested != 21 {
			t.Fatalf("exit %d: %s%s", code, out, errs)
		}
	})

	t.Run("buffer export jsonl", func(t *testing.T) {
		code, out, errs := ferry("buffer", "export", "-addr", addr, "-stream", "telemetry", "-from", "2")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 20 {
			t.Fatalf("%d lines:\n%s", len(lines), out)
		}
		for i, line := range lines {
			var x opsapi.ExportedEvent
			if err := json.Unmarshal([]byte(line), &x); err != nil || x.Offset != uint64(i+2) || x.Source != "sensor-a" {
				t.Fatalf("line %d: %v %s", i, err, line)
			}
			if i < 19 && string(x.Payload) != fmt.Sprintf(`{"n":%d}`, i+2) {
				t.Fatalf("line %d payload: %s", i, line)
			}
		}
		if !strings.Contains(lines[19], `"payload_b64":"AP8Q"`) {
			t.Fatalf("binary payload: %s", lines[19])
		}
	})
}

var spaces = regexp.MustCompile(` {2,}`)

func TestPayloadCell(t *testing.T) {
	long := strings.Repeat("x", payloadWidth+10)
	tests := []struct {
		e    opsapi.PeekedEvent
		want string
	}{
		{opsapi.PeekedEvent{Size: 3, Text: "a\tb\nc"}, `a\tb\nc`},
		{opsapi.PeekedEvent{Size: 2, Hex: "00ff"}, "hex:00ff"},
		{opsapi.PeekedEvent{}, "(empty)"},
		{opsapi.PeekedEvent{Size: len(long), Text: long}, strings.Repeat("x", payloadWidth) + "…"},
		{opsapi.PeekedEvent{Size: 5000, Text: "abc", Truncated: true}, "abc…"},
	}
	for _, tt := range tests {
		if got := payloadCell(tt.e); got != tt.want {
			t.Errorf("payloadCell(%+v) = %q, want %q", tt.e, got, tt.want)
		}
	}
}

// TestPrintStatus: one screen with everything a healthy, busy gateway has.
func TestPrintStatus(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	st := &opsapi.Status{
		GatewayID: "gw", Uptime: opsapi.Duration(time.Hour),
		Link: &uplink.Status{Connected: true, Endpoint: "ssl://cloud:8883", LastConnected: now.Add(-90 * time.Second),
			Reconnects: 2, Inflight: 3, ForwardedEvents: 1000, ForwardedMessages: 100, ForwardedBytes: 2048,
			Dropped: map[string]uint64{"oversize": 1}, EventsPerSecond: 12.5, LastError: "connection lost: EOF",
			RefusingAll: true, RefusedAll: 4, LastPoison: "telemetry 17: connection ended\x01",
			Budget: &uplink.BudgetStatus{Bytes: 500 << 20, Used: 460 << 20, Remaining: 40 << 20,
				PeriodStart: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), PeriodEnd: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
				Held: []int{1, 2}, HeldStreams: []string{"telemetry", "bulk"}}},
		Downlink: &opsapi.DownlinkStatus{Status: downlink.Status{Connected: true, Endpoint: "ssl://cloud:8883", Commands: 9,
			Replies: 4, ConfigsReceived: 2, RepliesDropped: 1, Dropped: map[string]uint64{"oversize": 2},
			ResendRequests: 5, ResendRefused: 2},
			Delivered: 7, Expired: 1, Failed: 1, ConfigVersion: 3},
		Ingest: broker.Stats{Ingested: 1200, Refused: 4, Ignored: 1, Clients: 7},
		Streams: []opsapi.StreamStatus{{StreamStats: buffer.StreamStats{Name: "telemetry", Events: 200, Bytes: 3 << 20,
			Drops: map[string]uint64{"overflow": 3, "expired": 2}}, OldestAge: opsapi.Duration(125 * time.Second)}},
		Pipelines: []rules.RunnerStats{{Name: "avg", In: 1200, Out: 20, DeadLetters: 5, Position: 1190}},
		Drivers:   []drivers.DriverStats{{Name: "air", Kind: "bme280", State: "failing", Errors: 9, LastError: "i2c: no device"}},
	}
	var b bytes.Buffer
	printStatus(&b, st, statusRates{ingest: 20, over: time.Second}, now)
	out := spaces.ReplaceAllString(b.String(), " ")
	for _, want := range []string{
		"gateway gw up 1h0m0s\n",
		"link up ssl://cloud:8883 for 1m30s inflight 3 reconnects 2\n",
		"last error: connection lost: EOF\n",
		"the cloud refuses every publish (4 times): nothing is dead-lettered; check its policy\n",
		`last poison: "telemetry 17: connection ended\x01"` + "\n",
		"rates ingest 20.0/s (over 1s) forward 12.5/s (10 s average)\n",
		"ingest 1200 events clients 7 refused 4 matching no route 1 ",
		"forward 1000 events in 100 messages (2.0 KiB) resent 0\n",
		"data 460.0 MiB of 500.0 MiB used, 40.0 MiB left until 2026-12-01 00:00 UTC held: priority 1,2 (telemetry, bulk waiting)\n",
		"downlink up ssl://cloud:8883 commands 9 (delivered 7, expired 1, failed 1) replies 4 configs 2 config version 3\n",
		"resend requests 5 (refused 2)\n",
		"drops downlink_oversize=2 downlink_replies=1 expired=2 overflow=3 uplink_oversize=1\n",
		"telemetry 200 3.0 MiB 2m5s expired=2 overflow=3\n",
		"avg 1200 20 5 1190\n",
		"air bme280 failing 0 9 i2c: no device\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("lacks %q:\n%s", want, b.String())
		}
	}
	if n := strings.Count(b.String(), "\n"); n > 24 {
		t.Errorf("%d lines: not one screen", n)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
