package statuspage_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/statuspage"
	"go.uber.org/goleak"
)

// Every stream's goroutine, the server's and the client's included, must be
// gone after the tests: a stream that outlived its client would leak one
// per browser tab on the board.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type snap struct {
	N    int64  `json:"n"`
	Note string `json:"note"`
}

// server serves a Handler whose snapshot counts its calls, and tells when
// each /events request's handler has returned.
type server struct {
	*httptest.Server
	calls    atomic.Int64
	returned chan string // the path of each request whose handler returned
}

func start(t *testing.T, ctx context.Context, o statuspage.Options) *server {
	t.Helper()
	s := &server{returned: make(chan string, 64)}
	h := statuspage.Handler(ctx, func() any {
		// A newline in a string must not split the data line.
		return snap{N: s.calls.Add(1), Note: "line1\nline2"}
	}, o)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		if r.URL.Path == "/events" {
			s.returned <- r.URL.Path
		}
	}))
	t.Cleanup(func() {
		s.Close() // waits for every handler to return
		s.Client().CloseIdleConnections()
	})
	return s
}

// sse is one client's event stream.
type sse struct {
	res *http.Response
	r   *bufio.Reader
}

type message struct {
	event, data string
	comments    []string
}

// open starts a stream; cancel ends it from the client side.
func (s *server) open(t *testing.T, ctx context.Context) *sse {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL+"/events", nil)
	res, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("GET /events: %s: %s", res.Status, b)
	}
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	return &sse{res: res, r: bufio.NewReader(res.Body)}
}

// next reads up to and including the next blank line; a block holding
// only comments or a retry field is returned with an empty event.
func (c *sse) next() (message, error) {
	var m message
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return m, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			return m, nil
		case strings.HasPrefix(line, ":"):
			m.comments = append(m.comments, strings.TrimSpace(line[1:]))
		case strings.HasPrefix(line, "event: "):
			m.event = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			if m.data != "" {
				return m, io.ErrUnexpectedEOF // one data line per event is the contract
			}
			m.data = line[len("data: "):]
		}
	}
}

// status reads until the next status event and decodes it.
func (c *sse) status(t *testing.T) snap {
	t.Helper()
	for {
		m, err := c.next()
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		if m.event == "" {
			continue
		}
		if m.event != "status" {
			t.Fatalf("event %q, want status", m.event)
		}
		var s snap
		if err := json.Unmarshal([]byte(m.data), &s); err != nil {
			t.Fatalf("status data %q: %v", m.data, err)
		}
		return s
	}
}

// deadline closes c's body after d, failing a read that takes longer; the
// returned func cancels it.
func (c *sse) deadline(d time.Duration) func() bool {
	return time.AfterFunc(d, func() { c.res.Body.Close() }).Stop
}

// waitReturned waits for n /events handlers to return.
func (s *server) waitReturned(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-s.returned:
		case <-time.After(2 * time.Second):
			t.Fatal("an /events handler did not return within 2s")
		}
	}
}

func TestFirstEventImmediately(t *testing.T) {
	// An hour's interval: the only event that can arrive is the one sent
	// on connect.
	s := start(t, context.Background(), statuspage.Options{Interval: time.Hour})
	c := s.open(t, context.Background())
	defer c.deadline(2 * time.Second)()
	got := c.status(t)
	if got.N != 1 || got.Note != "line1\nline2" {
		t.Fatalf("first event %+v", got)
	}
	if cc := c.res.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q", cc)
	}
}

func TestEventsAndHeartbeats(t *testing.T) {
	s := start(t, context.Background(), statuspage.Options{Interval: 20 * time.Millisecond, Heartbeat: 30 * time.Millisecond})
	c := s.open(t, context.Background())
	var statuses, pings int
	var retry bool
	defer c.deadline(5 * time.Second)()
	for statuses < 5 || pings == 0 {
		m, err := c.next()
		if err != nil {
			t.Fatalf("stream, after %d status events and %d heartbeats: %v", statuses, pings, err)
		}
		for _, cm := range m.comments {
			if cm == "ping" {
				pings++
			}
		}
		if m.event == "status" {
			statuses++
			var v snap
			if err := json.Unmarshal([]byte(m.data), &v); err != nil || v.N < int64(statuses) {
				t.Fatalf("status %d: %q: %v", statuses, m.data, err)
			}
		}
		if m.event == "" && m.comments == nil {
			retry = true
		}
	}
	if !retry {
		t.Fatal("no retry: field before the first event")
	}
}

func TestClientLimit(t *testing.T) {
	s := start(t, context.Background(), statuspage.Options{Interval: time.Hour}) // default limit: 8
	cancels := make([]context.CancelFunc, 8)
	for i := range cancels {
		ctx, cancel := context.WithCancel(context.Background())
		cancels[i] = cancel
		defer cancel()
		// Reading the first event proves the stream holds its slot.
		s.open(t, ctx).status(t)
	}
	res, err := s.Client().Get(s.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
		t.Fatalf("9th stream: %s (Retry-After %q): %s", res.Status, res.Header.Get("Retry-After"), body)
	}
	s.waitReturned(t, 1) // the refused request's own return, not a freed slot
	// The page still loads: only streams are limited.
	if res, err := s.Client().Get(s.URL + "/"); err != nil || res.StatusCode != 200 {
		t.Fatalf("GET / with the streams full: %v %v", res, err)
	} else {
		res.Body.Close()
	}
	// A client that goes frees its slot once its handler has returned.
	cancels[0]()
	s.waitReturned(t, 1)
	s.open(t, context.Background()).status(t)
}

func TestClientGoneEndsHandler(t *testing.T) {
	s := start(t, context.Background(), statuspage.Options{Interval: time.Hour, Heartbeat: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.open(t, ctx).status(t)
	cancel()
	s.waitReturned(t, 1)
}

func TestServerContextEndsStreams(t *testing.T) {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	s := start(t, ctx, statuspage.Options{Interval: time.Hour, Heartbeat: time.Hour})
	c1, c2 := s.open(t, context.Background()), s.open(t, context.Background())
	c1.status(t)
	c2.status(t)
	stop()
	for _, c := range []*sse{c1, c2} {
		stop := c.deadline(2 * time.Second)
		if _, err := c.next(); err != io.EOF {
			t.Fatalf("after the server context ended: %v, want EOF", err)
		}
		stop()
	}
	s.waitReturned(t, 2)
	// A new stream after the end gets its snapshot and ends at once.
	c3 := s.open(t, context.Background())
	defer c3.deadline(2 * time.Second)()
	c3.status(t)
	if _, err := c3.next(); err != io.EOF {
		t.Fatalf("a stream opened after the server context ended: %v, want EOF", err)
	}
}

func get(t *testing.T, s *server, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", s.URL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

func TestPage(t *testing.T) {
	s := start(t, context.Background(), statuspage.Options{})
	res, page := get(t, s, "/")
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %s %s", res.Status, res.Header.Get("Content-Type"))
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Fatalf("Content-Security-Policy %q", csp)
	}
	// The CSP forbids inline code; make sure the page does not rely on it.
	scripts := regexp.MustCompile(`<script([^>]*)>([^<]*)</script>`).FindAllStringSubmatch(page, -1)
	if len(scripts) == 0 || len(scripts) != strings.Count(page, "<script") {
		t.Errorf("%d well-formed script tags of %d", len(scripts), strings.Count(page, "<script"))
	}
	for _, sc := range scripts {
		if !strings.Contains(sc[1], `src="static/`) || strings.TrimSpace(sc[2]) != "" {
			t.Errorf("inline script: %q", sc[0])
		}
	}
	for _, re := range []string{`\son[a-z]+=`, `\sstyle=`, `<style`, `https?://`} {
		if m := regexp.MustCompile(re).FindString(page); m != "" {
			t.Errorf("page has inline code or an external reference: %q", m)
		}
	}
	total := len(page)
	for path, ctype := range map[string]string{"/static/app.js": "text/javascript", "/static/style.css": "text/css"} {
		if !strings.Contains(page, `"`+strings.TrimPrefix(path, "/")+`"`) {
			t.Errorf("page does not load %s", path)
		}
		res, body := get(t, s, path)
		if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), ctype) {
			t.Fatalf("GET %s: %s %s", path, res.Status, res.Header.Get("Content-Type"))
		}
		total += len(body)
		etag := res.Header.Get("ETag")
		if res, _ := get(t, s, path, "If-None-Match", etag); etag == "" || res.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match %q: %s", path, etag, res.Status)
		}
	}
	if total >= 30<<10 {
		t.Errorf("page, script and style sheet are %d bytes; the budget is 30 KiB", total)
	}
	t.Logf("page weight: %d bytes", total)
	for _, p := range []string{"/nope", "/static/nope.js", "/static/index.html", "/static/"} {
		if res, _ := get(t, s, p); res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404", p, res.Status)
		}
	}
	if res, err := s.Client().Post(s.URL+"/events", "text/plain", nil); err != nil || res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /events: %v %v", res, err)
	} else {
		res.Body.Close()
	}
}
