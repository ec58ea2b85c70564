package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/gateway/opsapi"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/ferrygw/ferry/uplink"
	"github.com/fxamacker/cbor/v2"
)

// opsGateway runs a gateway with its status listener on a free port,
// forwarding to cloud; it returns the gateway, its broker address and an
// HTTP helper for the listener.
func opsGateway(t *testing.T, cloud *mqtttest.Broker) (*gateway.Gateway, string, *opsHTTP) {
	t.Helper()
	statusAddr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	yaml, addr := testConfig(t, t.TempDir(), cloud.URL(), "")
	yaml = strings.Replace(yaml, `listen: ""`, "listen: "+statusAddr, 1)
	g := runGateway(t, loadConfig(t, yaml))
	// No kept-alive connections: goleak would count their goroutines.
	h := &opsHTTP{t: t, addr: statusAddr, c: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true}}}
	waitUntil(t, 10*time.Second, "status listener", func() bool {
		resp, err := h.c.Get("http://" + statusAddr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return g, addr, h
}

type opsHTTP struct {
	t    *testing.T
	addr string
	c    *http.Client
}

// do sends a request and returns the status, body and trailers.
func (h *opsHTTP) do(method, path string, edit func(*http.Request)) (int, []byte, http.Header) {
	h.t.Helper()
	req, err := http.NewRequest(method, "http://"+h.addr+path, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	if edit != nil {
		edit(req)
	}
	resp, err := h.c.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("%s %s: body: %v", method, path, err)
	}
	return resp.StatusCode, body, resp.Trailer
}

// getJSON GETs path, expecting 200, into v.
func (h *opsHTTP) getJSON(path string, v any) {
	h.t.Helper()
	code, body, _ := h.do(http.MethodGet, path, nil)
	if code != http.StatusOK {
		h.t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		h.t.Fatalf("GET %s: %v\n%s", path, err, body)
	}
}

func streamOf(t *testing.T, streams []opsapi.BufferStream, name string) opsapi.BufferStream {
	t.Helper()
	for _, s := range streams {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no stream %s in %+v", name, streams)
	return opsapi.BufferStream{}
}

func wantPayload(i int) string { return fmt.Sprintf(`{"p":0,"s":%d}`, i) }

// TestOpsBuffer: with the cloud down, the events published are exactly
// what stats, peek and export report, in order and byte for byte.
func TestOpsBuffer(t *testing.T) {
	cloud := mqtttest.Start(t)
	cloud.Stop() // outage: everything stays in the buffer
	g, addr, h := opsGateway(t, cloud)
	const n = 60
	publishAll(t, addr, 1, n) // one publisher: offsets 1..n in publish order

	var stats []opsapi.BufferStream
	h.getJSON("/buffer/stats", &stats)
	tel := streamOf(t, stats, "telemetry")
	if tel.First != 1 || tel.Next != n+1 || tel.Events != n || !tel.Forwarded || tel.Bytes <= 0 || tel.OldestAge <= 0 {
		t.Fatalf("stats %+v", tel)
	}
	if pos, ok := tel.Consumers["uplink"]; !ok || pos != 0 {
		t.Fatalf("consumers %v, want uplink=0", tel.Consumers)
	}

	t.Run("peek", func(t *testing.T) {
		var p opsapi.Peek
		h.getJSON("/buffer/peek?stream=telemetry&n=1000", &p)
		if p.First != 1 || p.Next != n+1 || len(p.Events) != n {
			t.Fatalf("peek: first %d next %d, %d events", p.First, p.Next, len(p.Events))
		}
		for i, e := range p.Events {
			if e.Offset != uint64(i+1) || e.Text != wantPayload(i) || e.Hex != "" || e.Size != len(wantPayload(i)) ||
				e.Source != "sensor-0" || e.Topic != "sensors/0" || e.ID == "" || e.Time.IsZero() {
				t.Fatalf("event %d: %+v", i, e)
			}
		}
		h.getJSON("/buffer/peek?stream=telemetry&from=10&n=5", &p)
		if len(p.Events) != 5 || p.Events[0].Offset != 10 || p.Events[4].Offset != 14 || p.Events[0].Text != wantPayload(9) {
			t.Fatalf("peek from 10: %+v", p.Events)
		}
		h.getJSON("/buffer/peek?stream=telemetry&from=1000", &p)
		if len(p.Events) != 0 {
			t.Fatalf("peek past the end: %+v", p.Events)
		}
	})

	t.Run("export jsonl", func(t *testing.T) {
		code, body, trailer := h.do(http.MethodGet, "/buffer/export?stream=telemetry", nil)
		if code != http.StatusOK || trailer.Get(opsapi.ExportEventsTrailer) != fmt.Sprint(n) || trailer.Get(opsapi.ExportErrorTrailer) != "" {
			t.Fatalf("export: %d, trailers %v", code, trailer)
		}
		lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
		if len(lines) != n {
			t.Fatalf("%d lines, want %d", len(lines), n)
		}
		for i, line := range lines {
			var x opsapi.ExportedEvent
			if err := json.Unmarshal([]byte(line), &x); err != nil {
				t.Fatalf("line %d: %v: %s", i, err, line)
			}
			if x.Offset != uint64(i+1) || string(x.Payload) != wantPayload(i) || x.PayloadB64 != nil || x.Stream != "telemetry" {
				t.Fatalf("line %d: %s", i, line)
			}
			// Each line is also a cloud message.
			evs, err := uplink.DecodeMessage([]byte(line))
			if err != nil || len(evs) != 1 || string(evs[0].Payload) != wantPayload(i) || evs[0].ID.String() != x.ID {
				t.Fatalf("line %d as a cloud message: %v %+v", i, err, evs)
			}
		}
		_, body, trailer = h.do(http.MethodGet, "/buffer/export?stream=telemetry&from=41&format=jsonl", nil)
		if got := strings.Count(string(body), "\n"); got != n-40 || trailer.Get(opsapi.ExportEventsTrailer) != fmt.Sprint(n-40) {
			t.Fatalf("export from 41: %d lines, trailers %v", got, trailer)
		}
	})

	t.Run("export cbor", func(t *testing.T) {
		code, body, trailer := h.do(http.MethodGet, "/buffer/export?stream=telemetry&format=cbor", nil)
		if code != http.StatusOK || trailer.Get(opsapi.ExportEventsTrailer) != fmt.Sprint(n) {
			t.Fatalf("export: %d, trailers %v", code, trailer)
		}
		dec := cbor.NewDecoder(bytes.NewReader(body))
		for i := 0; ; i++ {
			var item struct {
				_      struct{} `cbor:",toarray"`
				Offset uint64
				Event  cbor.RawMessage
			}
			err := dec.Decode(&item)
			if errors.Is(err, io.EOF) {
				if i != n {
					t.Fatalf("%d items, want %d", i, n)
				}
				break
			}
			var ev event.Event
			if err == nil {
				err = event.Unmarshal(item.Event, &ev)
			}
			if err != nil || item.Offset != uint64(i+1) || string(ev.Payload) != wantPayload(i) {
				t.Fatalf("item %d: %v offset %d payload %q", i, err, item.Offset, ev.Payload)
			}
		}
	})

	t.Run("payloads that are not one-line JSON", func(t *testing.T) {
		long := "a" + strings.Repeat("é", opsapi.PeekPayloadMax) // 2 bytes each: cut mid-character
		payloads := [][]byte{{0, 1, 2, 0xff}, []byte("{\n  \"a\": 1\n}"), []byte(long), {}, []byte(" 1")}
		for _, p := range payloads {
			id, _ := event.NewID(time.Now(), nil)
			if err := g.Buffer().Append(context.Background(), &event.Event{ID: id, Stream: "raw", Source: "test", Payload: p}); err != nil {
				t.Fatal(err)
			}
		}
		var p opsapi.Peek
		h.getJSON("/buffer/peek?stream=raw", &p)
		if len(p.Events) != len(payloads) {
			t.Fatalf("%d events", len(p.Events))
		}
		if e := p.Events[0]; e.Hex != "000102ff" || e.Text != "" {
			t.Fatalf("binary: %+v", e)
		}
		if e := p.Events[1]; e.Text != string(payloads[1]) {
			t.Fatalf("multi-line JSON: %+v", e)
		}
		if e := p.Events[2]; !e.Truncated || e.Size != len(long) || e.Text != "a"+strings.Repeat("é", opsapi.PeekPayloadMax/2-1) {
			t.Fatalf("long text: truncated %v size %d text %d bytes", e.Truncated, e.Size, len(e.Text))
		}
		_, body, trailer := h.do(http.MethodGet, "/buffer/export?stream=raw", nil)
		if trailer.Get(opsapi.ExportEventsTrailer) != fmt.Sprint(len(payloads)) {
			t.Fatalf("trailers %v", trailer)
		}
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(nil, 1<<20)
		for i := 0; sc.Scan(); i++ {
			evs, err := uplink.DecodeMessage(sc.Bytes())
			if err != nil || !bytes.Equal(evs[0].Payload, payloads[i]) {
				t.Fatalf("line %d: %v: %s", i, err, sc.Bytes())
			}
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		tests := []struct {
			method, path string
			edit         func(*http.Request)
			code         int
			msg          []string
		}{
			{"GET", "/buffer/peek", nil, 400, []string{"stream is required", "known streams: ", "telemetry"}},
			{"GET", "/buffer/peek?stream=nope", nil, 400, []string{`unknown stream "nope"`, "telemetry"}},
			{"GET", "/buffer/peek?stream=telemetry&from=x", nil, 400, []string{`from "x"`}},
			{"GET", "/buffer/peek?stream=telemetry&from=-1", nil, 400, []string{`from "-1"`}},
			{"GET", "/buffer/peek?stream=telemetry&n=0", nil, 400, []string{`n "0"`}},
			{"GET", "/buffer/peek?stream=telemetry&n=lots", nil, 400, []string{`n "lots"`}},
			{"GET", "/buffer/peek?stream=telemetry&from=0", nil, 404, []string{"first retained offset is 1"}},
			{"GET", "/buffer/export?stream=telemetry&format=xml", nil, 400, []string{`format "xml"`}},
			{"GET", "/buffer/export?stream=" + url.QueryEscape("a b"), nil, 400, []string{`unknown stream "a b"`}},
			{"GET", "/buffer/replay?stream=telemetry&from=1", nil, 405, nil},
			{"POST", "/buffer/replay?stream=telemetry", nil, 400, []string{"from is required"}},
			{"POST", "/buffer/replay?from=1", nil, 400, []string{"stream is required"}},
			{"GET", "/reload", nil, 405, nil},
			{"POST", "/reload", func(r *http.Request) { r.Header.Set("Origin", "http://evil.example") }, 403, []string{"Origin"}},
			{"POST", "/buffer/replay?stream=telemetry&from=1", func(r *http.Request) { r.Header.Set("Origin", "null") }, 403, []string{"Origin"}},
			{"GET", "/buffer/stats", func(r *http.Request) { r.Host = "evil.example:8080" }, 403, []string{"DNS rebinding"}},
		}
		for _, tt := range tests {
			code, body, _ := h.do(tt.method, tt.path, tt.edit)
			if code != tt.code {
				t.Errorf("%s %s: %d %s, want %d", tt.method, tt.path, code, body, tt.code)
				continue
			}
			for _, m := range tt.msg {
				if !strings.Contains(string(body), m) {
					t.Errorf("%s %s: %q lacks %q", tt.method, tt.path, body, m)
				}
			}
		}
		// The listener's own origin passes the guard (the handler answers).
		code, body, _ := h.do("POST", "/reload", func(r *http.Request) { r.Header.Set("Origin", "http://"+h.addr) })
		if code == http.StatusForbidden {
			t.Errorf("own origin refused: %s", body)
		}
	})

	// Once the cloud has the events they are deleted: their offsets are
	// 404, with the first retained offset in the message.
	cloud.StartAgain()
	waitUntil(t, 30*time.Second, "backlog forwarded", func() bool {
		h.getJSON("/buffer/stats", &stats)
		return streamOf(t, stats, "telemetry").Events == 0
	})
	code, body, _ := h.do(http.MethodGet, "/buffer/peek?stream=telemetry&from=5", nil)
	if code != http.StatusNotFound || !strings.Contains(string(body), fmt.Sprintf("first retained offset is %d", n+1)) {
		t.Fatalf("peek of forwarded events: %d %s", code, body)
	}
	if tel := streamOf(t, stats, "telemetry"); tel.Consumers["uplink"] != n {
		t.Fatalf("uplink position %v, want %d", tel.Consumers, n)
	}
	code, body, trailer := h.do(http.MethodGet, "/buffer/export?stream=telemetry", nil)
	if code != http.StatusOK || len(body) != 0 || trailer.Get(opsapi.ExportEventsTrailer) != "0" {
		t.Fatalf("export of an empty stream: %d %q %v", code, body, trailer)
	}
}

// TestOpsExportPages: an export of many pages, cut by count (small
// events) and by bytes (large ones), arrives whole and in order.
func TestOpsExportPages(t *testing.T) {
	cloud := mqtttest.Start(t)
	cloud.Stop()
	g, _, h := opsGateway(t, cloud)
	const n = 3000
	large := bytes.Repeat([]byte{0xfe}, 600) // base64: 800 bytes a line
	err := g.Buffer().Update(context.Background(), func(tx *buffer.Tx) error {
		for i := range n {
			id, _ := event.NewID(time.Now(), nil)
			p := fmt.Appendf(nil, "%d;", i)
			if i >= n/2 {
				p = append(p, large...)
			}
			if err := tx.Append(&event.Event{ID: id, Stream: "bulk", Source: "test", Time: time.Now(), Payload: p}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, body, trailer := h.do(http.MethodGet, "/buffer/export?stream=bulk&from=2", nil)
	if trailer.Get(opsapi.ExportEventsTrailer) != fmt.Sprint(n-1) {
		t.Fatalf("trailers %v", trailer)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	i := 1
	for ; sc.Scan(); i++ {
		var x opsapi.ExportedEvent
		if err := json.Unmarshal(sc.Bytes(), &x); err != nil || x.Offset != uint64(i+1) || !bytes.HasPrefix(x.PayloadB64, fmt.Appendf(nil, "%d;", i)) {
			t.Fatalf("line %d: %v offset %d", i, err, x.Offset)
		}
	}
	if i != n {
		t.Fatalf("%d lines", i-1)
	}
}
