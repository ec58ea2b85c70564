package logging_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ferrygw/ferry/internal/logging"
)

// clock is a manual clock for the limiter.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// jsonLines parses every line of out as a JSON object.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	return lines
}

func newJSON(t *testing.T, w io.Writer, c *clock) *slog.Logger {
	t.Helper()
	l, err := logging.New(w, "debug", "json", nil, logging.WithNow(c.now))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// count returns how many lines have msg, and the count of the summary
// line for orig (0 without one).
func count(lines []map[string]any, msg, orig string) (n, suppressed int) {
	for _, l := range lines {
		if l["msg"] == msg {
			n++
		}
		if l["msg"] == logging.SuppressedMsg && l["suppressed_msg"] == orig {
			suppressed += int(l["count"].(float64))
		}
	}
	return n, suppressed
}

func TestRateLimit(t *testing.T) {
	tests := []struct {
		name string
		// log writes the lines; the clock starts at a fixed moment.
		log func(l *slog.Logger, c *clock)
		// want: message -> lines expected; sup: message -> suppressed count.
		want map[string]int
		sup  map[string]int
	}{
		{"1000 identical warnings in a minute", func(l *slog.Logger, c *clock) {
			for range 1000 {
				l.Warn("uplink connect failed", "endpoint", "tcp://cloud:1883", "err", "refused")
				c.advance(50 * time.Millisecond) // 50 s in all
			}
			c.advance(11 * time.Second)
			l.Info("health") // the next line after the interval reports it
		}, map[string]int{"uplink connect failed": 5, "health": 1, logging.SuppressedMsg: 1},
			map[string]int{"uplink connect failed": 995}},

		{"distinct messages pass", func(l *slog.Logger, c *clock) {
			for i := range 100 {
				l.Warn(fmt.Sprintf("message %d", i))
			}
		}, map[string]int{"message 0": 1, "message 99": 1, logging.SuppressedMsg: 0}, nil},

		{"identity keys split a message", func(l *slog.Logger, c *clock) {
			for range 10 {
				l.Warn("connect failed", "endpoint", "a")
				l.Warn("connect failed", "endpoint", "b")
				l.Warn("connect failed", "endpoint", "b", "err", "other values do not count")
			}
			c.advance(time.Minute)
			l.Info("tick")
		}, map[string]int{"connect failed": 10, logging.SuppressedMsg: 2},
			map[string]int{"connect failed": 20}},

		{"With attributes share the limiter and split keys", func(l *slog.Logger, c *clock) {
			a := l.With("component", "uplink")
			b := l.With("component", "drivers").WithGroup("g")
			for range 6 {
				a.Error("failed")
				b.Error("failed")
				l.Error("failed")
			}
		}, map[string]int{"failed": 15}, nil},

		{"a new interval passes a new burst", func(l *slog.Logger, c *clock) {
			for range 3 {
				for range 7 {
					l.Warn("flap")
				}
				c.advance(61 * time.Second)
			}
		}, map[string]int{"flap": 15, logging.SuppressedMsg: 2},
			// The third interval's 2 are reported at the next line, which
			// does not come.
			map[string]int{"flap": 4}},

		{"levels are separate keys", func(l *slog.Logger, c *clock) {
			for range 6 {
				l.Warn("x")
				l.Error("x")
			}
		}, map[string]int{"x": 10}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			c := newClock()
			tt.log(newJSON(t, &buf, c), c)
			lines := jsonLines(t, buf.String())
			for msg, want := range tt.want {
				if n, _ := count(lines, msg, ""); n != want {
					t.Errorf("%d lines %q, want %d\n%s", n, msg, want, buf.String())
				}
			}
			for msg, want := range tt.sup {
				if _, n := count(lines, "", msg); n != want {
					t.Errorf("%d suppressed %q reported, want %d\n%s", n, msg, want, buf.String())
				}
			}
		})
	}
}

// TestUnlimited: a line with a cadence of its own is never limited, and
// lets the summaries due out.
func TestUnlimited(t *testing.T) {
	var buf bytes.Buffer
	c := newClock()
	l, err := logging.New(&buf, "info", "json", nil, logging.WithNow(c.now), logging.WithUnlimited("health"))
	if err != nil {
		t.Fatal(err)
	}
	for range 7 {
		l.Warn("flap")
	}
	for range 24 { // every 5 s for two minutes
		l.Info("health", "backlog_events", 0)
		c.advance(5 * time.Second)
	}
	lines := jsonLines(t, buf.String())
	if n, _ := count(lines, "health", ""); n != 24 {
		t.Fatalf("%d health lines, want 24:\n%s", n, buf.String())
	}
	if n, sup := count(lines, "flap", "flap"); n != 5 || sup != 2 {
		t.Fatalf("flap: %d lines, %d suppressed reported:\n%s", n, sup, buf.String())
	}
}

// TestSummaryCarriesIdentity: the summary names the endpoint and the
// logger's component, so one can tell which line it counts.
func TestSummaryCarriesIdentity(t *testing.T) {
	var buf bytes.Buffer
	c := newClock()
	l := newJSON(t, &buf, c).With("component", "uplink")
	for range 8 {
		l.Warn("connect failed", "endpoint", "tcp://a:1883")
	}
	c.advance(time.Minute)
	l.Warn("connect failed", "endpoint", "tcp://a:1883")
	lines := jsonLines(t, buf.String())
	if len(lines) != 7 {
		t.Fatalf("%d lines, want 5 + summary + 1:\n%s", len(lines), buf.String())
	}
	s := lines[5]
	if s["msg"] != logging.SuppressedMsg || s["count"] != 3.0 || s["endpoint"] != "tcp://a:1883" ||
		s["component"] != "uplink" || s["level"] != "WARN" || s["suppressed_msg"] != "connect failed" {
		t.Fatalf("summary %v", s)
	}
}

// TestEvictionBounded: more keys than MaxKeys evict the least recently
// seen, whose pending count is reported rather than lost.
func TestEvictionBounded(t *testing.T) {
	var buf bytes.Buffer
	c := newClock()
	h := logging.NewLimiter(slog.NewJSONHandler(&buf, nil), logging.Limits{Burst: 1, MaxKeys: 4, Now: c.now})
	l := slog.New(h)
	l.Info("first")
	l.Info("first") // suppressed
	for i := range 4 {
		l.Info(fmt.Sprintf("other %d", i)) // the fourth evicts "first"
	}
	lines := jsonLines(t, buf.String())
	if _, n := count(lines, "", "first"); n != 1 {
		t.Fatalf("eviction did not report the suppressed line:\n%s", buf.String())
	}
	l.Info("first") // tracked afresh: passes
	if n, _ := count(jsonLines(t, buf.String()), "first", ""); n != 2 {
		t.Fatalf("evicted key not tracked afresh:\n%s", buf.String())
	}
}

func TestNewFormatsAndLevels(t *testing.T) {
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	tests := []struct {
		name, level, format string
		env                 func(string) string
		json                bool
		want                []string // messages written, in order
		err                 string
	}{
		{"auto under journald is JSON", "info", "auto", env("JOURNAL_STREAM", "8:1234"), true, []string{"info", "warn", "error"}, ""},
		{"auto under systemd (INVOCATION_ID) is JSON", "", "", env("INVOCATION_ID", "abc"), true, []string{"info", "warn", "error"}, ""},
		{"auto elsewhere is text", "info", "auto", env(), false, []string{"info", "warn", "error"}, ""},
		{"json forced", "debug", "json", env(), true, []string{"debug", "info", "warn", "error"}, ""},
		{"text forced under systemd", "warn", "text", env("JOURNAL_STREAM", "8:1"), false, []string{"warn", "error"}, ""},
		{"error level", "error", "json", env(), true, []string{"error"}, ""},
		{"bad level", "loud", "json", env(), false, nil, `level "loud"`},
		{"bad format", "info", "xml", env(), false, nil, `format "xml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l, err := logging.New(&buf, tt.level, tt.format, tt.env)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			l.Debug("debug", "k", 1)
			l.Info("info", "k", 1)
			l.Warn("warn", "k", 1)
			l.Error("error", "k", 1)
			var got []string
			if tt.json {
				for _, m := range jsonLines(t, buf.String()) {
					got = append(got, m["msg"].(string))
				}
			} else {
				for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
					if strings.HasPrefix(line, "{") || !strings.Contains(line, "msg=") {
						t.Fatalf("not a text line: %q", line)
					}
					_, rest, _ := strings.Cut(line, "msg=")
					got = append(got, strings.Fields(rest)[0])
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("wrote %v, want %v\n%s", got, tt.want, buf.String())
			}
		})
	}
}

// TestConcurrent: many goroutines on shared and derived loggers; run with
// -race. Each key passes exactly its burst within the interval.
func TestConcurrent(t *testing.T) {
	var mu sync.Mutex
	var buf bytes.Buffer
	w := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	})
	c := newClock()
	l := newJSON(t, w, c)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ll := l.With("client", fmt.Sprintf("c%d", g%4))
			for range 200 {
				ll.Warn("publish refused")
			}
		}()
	}
	wg.Wait()
	if n, _ := count(jsonLines(t, buf.String()), "publish refused", ""); n != 4*logging.DefaultBurst {
		t.Fatalf("%d lines, want %d", n, 4*logging.DefaultBurst)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// nopHandler measures the limiter alone.
type nopHandler struct{}

func (nopHandler) Enabled(context.Context, slog.Level) bool  { return true }
func (nopHandler) Handle(context.Context, slog.Record) error { return nil }
func (h nopHandler) WithAttrs([]slog.Attr) slog.Handler      { return h }
func (h nopHandler) WithGroup(string) slog.Handler           { return h }

// BenchmarkHandle measures the pass-through path: lines of known keys under
// their burst (the limit is set high so that every line passes).
func BenchmarkHandle(b *testing.B) {
	ctx := context.Background()
	msgs := make([]string, 64)
	for i := range msgs {
		msgs[i] = fmt.Sprintf("message %d", i)
	}
	run := func(b *testing.B, h slog.Handler) {
		b.ReportAllocs()
		recs := make([]slog.Record, len(msgs))
		for i, m := range msgs {
			recs[i] = slog.NewRecord(time.Now(), slog.LevelInfo, m, 0)
			recs[i].AddAttrs(slog.String("stream", "telemetry"), slog.Int("events", i))
		}
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			if err := h.Handle(ctx, recs[i%len(recs)]); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("limiter", func(b *testing.B) {
		run(b, logging.NewLimiter(nopHandler{}, logging.Limits{Burst: 1 << 30}).WithAttrs([]slog.Attr{slog.String("component", "uplink")}))
	})
	b.Run("limiter+json", func(b *testing.B) {
		run(b, logging.NewLimiter(slog.NewJSONHandler(io.Discard, nil), logging.Limits{Burst: 1 << 30}))
	})
	b.Run("json alone", func(b *testing.B) {
		run(b, slog.NewJSONHandler(io.Discard, nil))
	})
}

// A client that changes its ID for every refused attempt makes a new key
// each time: the total limit still bounds the lines, and one line per
// interval says how many it suppressed.
func TestTotalLimit(t *testing.T) {
	var buf bytes.Buffer
	c := newClock()
	h := logging.NewLimiter(slog.NewJSONHandler(&buf, nil), logging.Limits{Total: 50, MaxKeys: 16, Now: c.now, Unlimited: []string{"health"}})
	l := slog.New(h)
	for i := range 1000 {
		l.Warn("publish refused", "client", fmt.Sprint("mallory-", i))
		if i%7 == 0 {
			l.Info("health") // never limited, never counted
		}
	}
	lines := jsonLines(t, buf.String())
	if n, _ := count(lines, "publish refused", ""); n != 50 {
		t.Fatalf("%d refusal lines in the interval, want the total limit, 50", n)
	}
	if n, _ := count(lines, "health", ""); n != 143 {
		t.Fatalf("%d health lines, want all 143", n)
	}
	c.advance(time.Minute)
	l.Warn("publish refused", "client", "late")
	lines = jsonLines(t, buf.String())
	var reported int
	for _, m := range lines {
		if m["msg"] == logging.TotalSuppressedMsg {
			reported += int(m["count"].(float64))
		}
	}
	if reported != 950 {
		t.Fatalf("total summary counts %d suppressed lines, want 950:\n%s", reported, buf.String()[max(0, buf.Len()-500):])
	}
	if n, _ := count(lines, "publish refused", ""); n != 51 {
		t.Fatalf("the next interval's first line was not written (%d)", n)
	}
}

func TestLongValuesCut(t *testing.T) {
	long := strings.Repeat("é", 40000) // 80,000 bytes; cut at a rune boundary
	var buf bytes.Buffer
	h := logging.NewLimiter(slog.NewJSONHandler(&buf, nil), logging.Limits{})
	l := slog.New(h)
	l.With("client", long).Warn("connect refused", "topic", long, "err", fmt.Errorf("bad: %s", long), slog.Group("g", "v", long))
	line := buf.String()
	if len(line) > 4*logging.DefaultMaxValue+400 {
		t.Fatalf("line of %d bytes for 4 long values", len(line))
	}
	m := jsonLines(t, line)[0]
	for _, v := range []any{m["client"], m["topic"], m["err"], m["g"].(map[string]any)["v"]} {
		s, _ := v.(string)
		if !strings.HasSuffix(s, "…(80000 bytes)") && !strings.HasSuffix(s, "…(80005 bytes)") {
			t.Errorf("value %.40q… not cut with its length", s)
		}
		if !utf8.ValidString(s) {
			t.Errorf("cut value is not valid UTF-8")
		}
	}
}
