package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ferrygw/ferry/internal/logging"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock {
	return &clock{t: time.Date(2025, 3, 4, 5, 6, 7, 890123456, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// open opens a log in a temporary directory; o.Path, if set, is taken as a
// name in that directory.
func open(t *testing.T, o Options) *Log {
	t.Helper()
	name := o.Path
	if name == "" {
		name = "audit.log"
	}
	o.Path = filepath.Join(t.TempDir(), name)
	l, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// start runs l's writer; the returned func stops it and returns Run's
// error.
func start(t *testing.T, l *Log) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// drain writes what was recorded: it runs the writer and stops it.
func drain(t *testing.T, l *Log) {
	t.Helper()
	if err := start(t, l)(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// readLines parses every line of the file at path, failing on a line that
// is not a JSON object.
func readLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: line %d is not a JSON object (%v): %q", path, len(out)+1, err, sc.Text())
		}
		out = append(out, m)
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		t.Errorf("%s does not end in a newline", path)
	}
	return out
}

func events(lines []map[string]any) []string {
	var ev []string
	for _, m := range lines {
		ev = append(ev, fmt.Sprint(m["event"]))
	}
	return ev
}

func TestLineFields(t *testing.T) {
	c := newClock()
	l := open(t, Options{Now: c.Now})
	l.Record(Entry{
		Event: "acl_deny", ClientID: "sensor-1", Username: "field", Remote: "192.0.2.7:50312",
		Listener: "tcp", Topic: "cmd/#", Action: "subscribe", Reason: "not allowed", Detail: "rule 3",
	})
	c.Add(time.Millisecond)
	l.Record(Entry{Event: "connect", ClientID: "sensor-2"})
	drain(t, l)

	data, err := os.ReadFile(l.path)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"time":"2025-03-04T05:06:07.890123456Z","event":"acl_deny","client_id":"sensor-1","username":"field","remote":"192.0.2.7:50312","listener":"tcp","topic":"cmd/#","action":"subscribe","reason":"not allowed","detail":"rule 3"}` + "\n" +
		`{"time":"2025-03-04T05:06:07.891123456Z","event":"connect","client_id":"sensor-2"}` + "\n"
	if string(data) != want {
		t.Errorf("file:\n%s\nwant:\n%s", data, want)
	}
	if st := l.Stats(); st.Written != 2 || st.Dropped != 0 || st.Suppressed != 0 {
		t.Errorf("stats %+v, want 2 written", st)
	}
	fi, err := os.Stat(l.path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestTimeIsUTC(t *testing.T) {
	loc := time.FixedZone("X", 5*3600)
	l := open(t, Options{Now: func() time.Time { return time.Date(2025, 1, 1, 12, 0, 0, 0, loc) }})
	l.Record(Entry{Event: "connect"})
	drain(t, l)
	if got := readLines(t, l.path)[0]["time"]; got != "2025-01-01T07:00:00Z" {
		t.Errorf("time %v, want 2025-01-01T07:00:00Z", got)
	}
}

func TestHostileStrings(t *testing.T) {
	long := strings.Repeat("x", 10<<10)
	tests := []struct {
		name, in string
		want     string // decoded; "" means what encoding/json makes of in
	}{
		{name: "quotes", in: `a"b\"c\\`},
		{name: "newlines", in: "a\nb\r\n{\"event\":\"forged\"}\n"},
		{name: "nul and controls", in: "a\x00b\x01\x1f\x7f\t\b\f"},
		{name: "invalid utf8", in: "a\xffb\xc3(\xed\xa0\x80"},
		{name: "line separators", in: "a\u2028b\u2029c"},
		{name: "html", in: "<script>&amp;</script>"},
		{name: "unicode", in: "Grüße 温度 🌡"},
		{name: "10 KiB", in: long, want: long[:MaxFieldLen] + "..."},
		{name: "10 KiB of NULs", in: strings.Repeat("\x00", 10<<10), want: strings.Repeat("\x00", MaxFieldLen) + "..."},
		{name: "cut at a rune", in: strings.Repeat("x", MaxFieldLen-1) + "é" + long, want: strings.Repeat("x", MaxFieldLen-1) + "..."},
		{name: "cut in invalid utf8", in: strings.Repeat("\x80", 2*MaxFieldLen), want: strings.Repeat("\uFFFD", MaxFieldLen-3) + "..."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := open(t, Options{})
			l.Record(Entry{Event: "auth_failure", ClientID: tt.in, Username: tt.in, Remote: tt.in, Detail: tt.in})
			drain(t, l)
			lines := readLines(t, l.path)
			if len(lines) != 1 {
				t.Fatalf("%d lines, want 1", len(lines))
			}
			want := tt.want
			if want == "" {
				b, _ := json.Marshal(tt.in)
				json.Unmarshal(b, &want)
			}
			for _, f := range []string{"client_id", "username", "remote"} {
				if got := lines[0][f]; got != want {
					t.Errorf("%s = %q, want %q", f, got, want)
				}
			}
			d := lines[0]["detail"].(string)
			if len(tt.in) <= MaxDetailLen {
				b, _ := json.Marshal(tt.in)
				var all string
				json.Unmarshal(b, &all)
				if d != all {
					t.Errorf("detail = %q, want %q", d, all)
				}
			} else if !strings.HasSuffix(d, "...") || len(d) > 3*MaxDetailLen+3 {
				t.Errorf("detail (%d bytes) not cut: %q", len(d), d)
			}
		})
	}
}

func TestCutKeepsRunes(t *testing.T) {
	// Every cut position in a string of multi-byte runes leaves whole
	// runes only.
	for pad := range 4 {
		s := strings.Repeat("a", pad) + strings.Repeat("🌡", MaxFieldLen)
		b := appendString(nil, s, MaxFieldLen)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		body := strings.TrimSuffix(got, "...")
		if !utf8.ValidString(body) || strings.ContainsRune(body, utf8.RuneError) || len(body) > MaxFieldLen || len(body) < MaxFieldLen-3 {
			t.Errorf("pad %d: cut to %d bytes %q", pad, len(body), body)
		}
	}
}

func TestRotation(t *testing.T) {
	const maxSize, maxFiles, n = 1000, 2, 300
	l := open(t, Options{MaxSize: maxSize, MaxFiles: maxFiles})
	stop := start(t, l)
	for i := range n {
		// Distinct remotes: flood control stays out of the way.
		l.Record(Entry{Event: "connect", ClientID: "c" + strconv.Itoa(i), Remote: "10.0." + strconv.Itoa(i/250) + "." + strconv.Itoa(i%250) + ":1"})
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	matches, _ := filepath.Glob(l.path + "*")
	if len(matches) != maxFiles+1 {
		t.Errorf("files %v, want %d", matches, maxFiles+1)
	}
	// Oldest first: the kept lines are the last ones recorded, in order.
	var ids []int
	for _, p := range []string{l.path + ".2", l.path + ".1", l.path} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > maxSize {
			t.Errorf("%s: %d bytes, more than %d", p, fi.Size(), maxSize)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", p, fi.Mode().Perm())
		}
		for _, m := range readLines(t, p) {
			id, _ := strconv.Atoi(strings.TrimPrefix(m["client_id"].(string), "c"))
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 || ids[len(ids)-1] != n-1 {
		t.Fatalf("last id %v, want %d", ids, n-1)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] != ids[i-1]+1 {
			t.Fatalf("ids not consecutive: %v", ids)
		}
	}
	st := l.Stats()
	if st.Rotations == 0 || st.Written != n || st.Dropped != 0 || st.Errors != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestRotationLineLargerThanMaxSize(t *testing.T) {
	l := open(t, Options{MaxSize: 50, MaxFiles: 3})
	for i := range 10 {
		l.Record(Entry{Event: "connect", ClientID: "client-" + strconv.Itoa(i), Remote: "10.0.0." + strconv.Itoa(i) + ":1"})
	}
	drain(t, l)
	matches, _ := filepath.Glob(l.path + "*")
	if len(matches) != 4 {
		t.Errorf("files %v, want 4", matches)
	}
	for _, p := range matches {
		if lines := readLines(t, p); len(lines) != 1 {
			t.Errorf("%s: %d lines, want one (each line alone exceeds MaxSize)", p, len(lines))
		}
	}
}

func TestAppendsAndRepairsCutLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	// A power loss cut the last line short.
	if err := os.WriteFile(path, []byte(`{"event":"connect"}`+"\n"+`{"time":"2025-`), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	l.Record(Entry{Event: "disconnect"})
	drain(t, l)
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 3 || lines[1] != `{"time":"2025-` || !json.Valid([]byte(lines[2])) {
		t.Errorf("file:\n%s", data)
	}
}

func TestFlood(t *testing.T) {
	c := newClock()
	l := open(t, Options{Now: c.Now, QueueLen: 20000})
	// 10,000 failures from one IP (many ports) within one second, with
	// another address's failures in between.
	for i := range 10000 {
		l.Record(Entry{Event: "auth_failure", Remote: "127.0.0.2:" + strconv.Itoa(1024+i), Reason: "bad password"})
		if i%1000 == 0 {
			l.Record(Entry{Event: "auth_failure", Remote: "[2001:db8::1]:1883"})
		}
		c.Add(90 * time.Microsecond)
	}
	drain(t, l)

	lines := readLines(t, l.path)
	var from1, from2 int
	var summary map[string]any
	for _, m := range lines {
		switch {
		case m["event"] == "suppressed":
			if summary != nil {
				t.Errorf("second summary %v", m)
			}
			summary = m
		case strings.HasPrefix(m["remote"].(string), "127.0.0.2:"):
			from1++
		default:
			from2++
		}
	}
	if from1 != FloodLimit || from2 != 10 {
		t.Errorf("written %d from 127.0.0.2 and %d from 2001:db8::1, want %d and 10", from1, from2, FloodLimit)
	}
	want := map[string]any{"event": "suppressed", "remote": "127.0.0.2", "count": 9990.0, "detail": "auth_failure x 9990 from 127.0.0.2"}
	for k, v := range want {
		if summary[k] != v {
			t.Errorf("summary %s = %v, want %v (line %v)", k, summary[k], v, summary)
		}
	}
	if st := l.Stats(); st.Suppressed != 9990 || st.Written != FloodLimit+10+1 {
		t.Errorf("stats %+v", st)
	}
}

func TestFloodOverSeconds(t *testing.T) {
	c := newClock()
	l := open(t, Options{Now: c.Now, QueueLen: 1000})
	// 100 failures a second for 3 seconds, then an entry 5 s later from
	// elsewhere: each second is limited and summarised on its own.
	for range 300 {
		l.Record(Entry{Event: "auth_failure", Remote: "192.0.2.1:1"})
		c.Add(10 * time.Millisecond)
	}
	c.Add(5 * time.Second)
	l.Record(Entry{Event: "connect", Remote: "192.0.2.9:1"})
	drain(t, l)

	var got []string
	for _, m := range readLines(t, l.path) {
		if d, ok := m["detail"]; ok {
			got = append(got, d.(string))
		} else {
			got = append(got, m["event"].(string))
		}
	}
	var want []string
	for range 3 {
		for range FloodLimit {
			want = append(want, "auth_failure")
		}
		want = append(want, "auth_failure x 90 from 192.0.2.1")
	}
	want = append(want, "connect")
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("lines:\n%v\nwant:\n%v", got, want)
	}
}

func TestFloodManyAddresses(t *testing.T) {
	c := newClock()
	const n = floodKeys + 500
	l := open(t, Options{Now: c.Now, QueueLen: 2 * n})
	// A failure from each of n addresses, then 20 more from a new one,
	// within one second: the table stays bounded and the addresses beyond
	// it share one limit.
	for i := range n {
		l.Record(Entry{Event: "auth_failure", Remote: fmt.Sprintf("10.%d.%d.1:1", i/256, i%256)})
	}
	for range 20 {
		l.Record(Entry{Event: "auth_failure", Remote: "192.0.2.1:1"})
	}
	drain(t, l)
	if len(l.w.flood) != 0 {
		t.Errorf("flood table holds %d keys after shutdown", len(l.w.flood))
	}
	lines := readLines(t, l.path)
	last := lines[len(lines)-1]
	if want := fmt.Sprintf("auth_failure x %d from other addresses", 500+20-FloodLimit); last["detail"] != want || last["remote"] != nil {
		t.Errorf("last line %v, want detail %q", last, want)
	}
	if len(lines) != floodKeys+FloodLimit+1 {
		t.Errorf("%d lines, want %d", len(lines), floodKeys+FloodLimit+1)
	}
}

func TestFullQueueDrops(t *testing.T) {
	l := open(t, Options{QueueLen: 4})
	done := make(chan struct{})
	go func() {
		// No writer yet: the queue fills and Record must not wait.
		for i := range 10 {
			l.Record(Entry{Event: "connect", ClientID: strconv.Itoa(i), Remote: "10.0.0." + strconv.Itoa(i) + ":1"})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Record blocked on a full queue")
	}
	if st := l.Stats(); st.Dropped != 6 {
		t.Errorf("dropped %d, want 6", st.Dropped)
	}
	drain(t, l)
	got := events(readLines(t, l.path))
	want := "connect,connect,connect,connect,audit_dropped"
	if strings.Join(got, ",") != want {
		t.Errorf("events %v, want %s", got, want)
	}
	if c := readLines(t, l.path)[4]["count"]; c != 6.0 {
		t.Errorf("audit_dropped count %v, want 6", c)
	}
	// After Run returned, entries are counted as dropped.
	l.Record(Entry{Event: "connect"})
	if st := l.Stats(); st.Dropped != 7 {
		t.Errorf("dropped %d after Run returned, want 7", st.Dropped)
	}
}

func TestNilLog(t *testing.T) {
	var l *Log
	l.Record(Entry{Event: "connect"})
	if st := l.Stats(); st != (Stats{}) {
		t.Errorf("stats %+v", st)
	}
	if err := l.Run(context.Background()); err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestRunDrainsOnCancel(t *testing.T) {
	const n = 500
	l := open(t, Options{QueueLen: n})
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Run starts with ctx already ended: it still writes the queue.
	for i := range n {
		l.Record(Entry{Event: "connect", ClientID: strconv.Itoa(i), Remote: "10.0." + strconv.Itoa(i/250) + "." + strconv.Itoa(i%250) + ":1"})
	}
	if err := l.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if lines := readLines(t, l.path); len(lines) != n {
		t.Errorf("%d lines, want %d", len(lines), n)
	}
	if err := l.Run(context.Background()); err == nil {
		t.Error("second Run did not fail")
	}
}

func TestOrderPerGoroutine(t *testing.T) {
	const goroutines, each = 8, 400
	l := open(t, Options{QueueLen: goroutines * each})
	stop := start(t, l)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				l.Record(Entry{Event: "connect", ClientID: strconv.Itoa(i), Remote: "10.0." + strconv.Itoa(g) + "." + strconv.Itoa(i) + ":1"})
			}
		})
	}
	wg.Wait()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	next := map[string]int{}
	n := 0
	for _, m := range readLines(t, l.path) {
		g := strings.Split(m["remote"].(string), ".")[2]
		i, _ := strconv.Atoi(m["client_id"].(string))
		if i != next[g] {
			t.Fatalf("goroutine %s: entry %d after %d", g, i, next[g]-1)
		}
		next[g]++
		n++
	}
	if n != goroutines*each {
		t.Errorf("%d lines, want %d", n, goroutines*each)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		o    Options
	}{
		{"no path", Options{}},
		{"missing directory", Options{Path: filepath.Join(dir, "missing", "audit.log")}},
		{"directory", Options{Path: dir}},
		{"negative size", Options{Path: filepath.Join(dir, "a"), MaxSize: -1}},
		{"negative files", Options{Path: filepath.Join(dir, "a"), MaxFiles: -1}},
		{"negative queue", Options{Path: filepath.Join(dir, "a"), QueueLen: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if l, err := Open(tt.o); err == nil {
				l.w.f.Close()
				t.Error("no error")
			}
		})
	}
}

// TestWriteFailure makes rotation fail (Path.1 is a non-empty directory):
// lines are dropped rather than growing the file past MaxSize, the error is
// logged through the gateway's rate limiter (here one line per minute), and
// once the obstacle is gone the log recovers and says how many entries it
// lost.
func TestWriteFailure(t *testing.T) {
	c := newClock()
	var logged bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(logging.NewLimiter(slog.NewTextHandler(lockedWriter{&logMu, &logged}, nil),
		logging.Limits{Burst: 1, Interval: time.Minute, Now: c.Now}))
	l := open(t, Options{Now: c.Now, MaxSize: 200, MaxFiles: 1, Logger: logger})
	if err := os.MkdirAll(filepath.Join(l.path+".1", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	rec := func(i int) {
		l.Record(Entry{Event: "connect", ClientID: strconv.Itoa(i), Remote: "10.0.0." + strconv.Itoa(i) + ":1"})
	}
	for i := range 10 {
		rec(i)
		c.Add(100 * time.Millisecond)
	}
	stop := start(t, l)
	waitFor(t, func() bool { return l.Stats().Dropped > 0 })

	if err := os.RemoveAll(l.path + ".1"); err != nil {
		t.Fatal(err)
	}
	c.Add(2 * time.Second)
	rec(100)
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	st := l.Stats()
	if st.Errors == 0 || st.Rotations == 0 {
		t.Errorf("stats %+v", st)
	}
	var all []map[string]any
	for _, p := range []string{l.path + ".1", l.path} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 200 {
			t.Errorf("%s: %d bytes", p, fi.Size())
		}
		all = append(all, readLines(t, p)...)
	}
	var dropped float64
	var written int
	for _, m := range all {
		if m["event"] == "audit_dropped" {
			dropped += m["count"].(float64)
		} else {
			written++
		}
	}
	// Every entry is either in the files (the oldest may have been
	// rotated out) or counted in an audit_dropped line.
	if dropped != float64(st.Dropped) || dropped == 0 {
		t.Errorf("audit_dropped lines count %v, stats %d", dropped, st.Dropped)
	}
	if written+int(dropped) != 11 {
		t.Errorf("%d entries written and %v dropped, want 11 in all", written, dropped)
	}
	if !slices.ContainsFunc(all, func(m map[string]any) bool { return m["client_id"] == "100" }) {
		t.Error("the entry recorded after recovery is missing")
	}
	logMu.Lock()
	defer logMu.Unlock()
	if n := strings.Count(logged.String(), "op=rotate"); n != 1 {
		t.Errorf("logged %d rotate errors, want 1 (rate-limited):\n%s", n, logged.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestHost(t *testing.T) {
	tests := []struct{ in, want string }{
		{"192.0.2.1:1883", "192.0.2.1"},
		{"[2001:db8::1]:1883", "2001:db8::1"},
		{"[fe80::1%eth0]:1883", "fe80::1%eth0"},
		{"2001:db8::1", "2001:db8::1"},
		{"192.0.2.1", "192.0.2.1"},
		{"", ""},
		{"[broken", "[broken"},
		{"pipe", "pipe"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := host(tt.in); got != tt.want {
				t.Errorf("host(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestRecordDoesNotAllocate(t *testing.T) {
	l := open(t, Options{QueueLen: 100})
	e := Entry{Event: "auth_failure", ClientID: "sensor-1", Remote: "192.0.2.1:5000", Listener: "tcp", Reason: "bad password"}
	// 1000 runs: queued while there is room, then dropped; both paths
	// must be allocation-free.
	if n := testing.AllocsPerRun(1000, func() { l.Record(e) }); n != 0 {
		t.Errorf("Record allocates %v times", n)
	}
	drain(t, l)
}

// jsonEncode is the reference: encoding/json without HTML escaping.
func jsonEncode(s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", `"\`, "\x00\x1f\x7f", "\xff\xfe", "\u2028\u2029", "<&>", "é\xc3", strings.Repeat("🌡", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := appendString(nil, s, len(s)+1)
		if want := jsonEncode(s); !bytes.Equal(got, want) {
			t.Fatalf("appendString(%q) = %s, encoding/json: %s", s, got, want)
		}
		// Cut: still valid JSON on one line, bounded, a prefix of s.
		const max = 16
		cut := appendString(nil, s, max)
		if !json.Valid(cut) || bytes.ContainsAny(cut, "\n\r") {
			t.Fatalf("cut %q: invalid or multi-line %s", s, cut)
		}
		if len(s) <= max {
			if !bytes.Equal(cut, got) {
				t.Fatalf("cut %q although short: %s", s, cut)
			}
			return
		}
		// The cut is s[:k] for k in max-3..max, escaped, then "...".
		for k := max; k >= max-3; k-- {
			want := jsonEncode(s[:k])
			want = append(want[:len(want)-1], `..."`...)
			if bytes.Equal(cut, want) {
				return
			}
		}
		t.Fatalf("cut %q: %s is not a prefix of at least %d bytes", s, cut, max-3)
	})
}

// BenchmarkRecord measures the caller's cost: queued (the writer keeps
// up), dropped (the queue is full), and from parallel goroutines with the
// writer running.
func BenchmarkRecord(b *testing.B) {
	e := Entry{Event: "connect", ClientID: "sensor-1", Username: "field", Remote: "192.0.2.1:5000", Listener: "tcp"}
	b.Run("queued", func(b *testing.B) {
		l := benchLog(b)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if i%DefaultQueueLen == 0 {
				b.StopTimer()
				for len(l.queue) > 0 {
					<-l.queue
				}
				b.StartTimer()
			}
			l.Record(e)
		}
		if l.Stats().Dropped != 0 {
			b.Fatal("dropped")
		}
	})
	b.Run("dropped", func(b *testing.B) {
		l := benchLog(b)
		for range DefaultQueueLen {
			l.Record(e)
		}
		b.ReportAllocs()
		for b.Loop() {
			l.Record(e)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		l := benchLog(b)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx) }()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.Record(e)
			}
		})
		b.StopTimer()
		cancel()
		<-done
		b.ReportMetric(float64(l.Stats().Dropped)/float64(b.N), "dropped/op")
	})
}

func benchLog(b *testing.B) *Log {
	l, err := Open(Options{Path: filepath.Join(b.TempDir(), "audit.log"), MaxSize: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if l.w.f != nil {
			l.w.f.Close()
		}
	})
	return l
}

// BenchmarkWriteLine measures the writer's cost per line written: flood
// control, formatting, and the batched write.
func BenchmarkWriteLine(b *testing.B) {
	l := benchLog(b)
	l.maxSize = 1 << 20 // rotations included
	w := &l.w
	now := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		// Distinct remotes so that each line is written, not suppressed.
		i++
		it := item{t: now, e: Entry{Event: "connect", ClientID: "sensor-1", Username: "field", Remote: remotes[i%len(remotes)], Listener: "tcp"}}
		w.entry(&it)
		if i%64 == 0 {
			w.idle(now)
		}
		now = now.Add(time.Millisecond)
	}
	w.shutdown()
}

var remotes = func() []string {
	r := make([]string, 256)
	for i := range r {
		r[i] = "10.0.0." + strconv.Itoa(i) + ":1883"
	}
	return r
}()

// TestShutdownOnFullDisk: on a full disk (/dev/full fails every write with
// ENOSPC) the last write at shutdown fails too; Run still returns nil, and
// the failure is counted and logged: the audit log is best effort and must
// not fail the gateway that stops.
func TestShutdownOnFullDisk(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("/dev/full: %v", err)
		}
		t.Skipf("no /dev/full: %v", err)
	}
	tests := []struct {
		name   string
		before int // entries recorded before Run starts
		during int // entries recorded while it runs
	}{
		{"entries queued at shutdown", 5, 0},
		{"entries written while running", 0, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logged bytes.Buffer
			var logMu sync.Mutex
			logger := slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logged}, nil))
			// A MaxSize far above what the test writes: the log never
			// rotates (renames) /dev/full.
			l, err := Open(Options{Path: "/dev/full", MaxSize: 1 << 20, Logger: logger})
			if err != nil {
				t.Fatal(err)
			}
			rec := func(n int) {
				for i := range n {
					l.Record(Entry{Event: "connect", ClientID: strconv.Itoa(i)})
				}
			}
			rec(tt.before)
			stop := start(t, l)
			rec(tt.during)
			if tt.during > 0 {
				waitFor(t, func() bool { return l.Stats().Dropped >= uint64(tt.during) })
			}
			if err := stop(); err != nil {
				t.Fatalf("Run = %v, want nil: a failed audit write must not fail the caller", err)
			}
			st := l.Stats()
			if st.Errors == 0 || st.Dropped < uint64(tt.before+tt.during) || st.Written != 0 {
				t.Errorf("stats %+v: want errors counted and every entry dropped", st)
			}
			logMu.Lock()
			defer logMu.Unlock()
			if !strings.Contains(logged.String(), "no space left on device") {
				t.Errorf("the failure was not logged:\n%s", logged.String())
			}
		})
	}
}
