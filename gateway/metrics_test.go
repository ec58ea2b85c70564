package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// TestMetricsEndpoint runs a gateway against a Mosquitto cloud, publishes
// over MQTT and checks what GET /metrics says while the cloud is up and
// after it went away, and that GET /readyz stays 200 throughout: the cloud
// link is not part of readiness.
func TestMetricsEndpoint(t *testing.T) {
	cloud := mqtttest.Start(t)
	sub := subscribeCloud(t, cloud.URL(), "metrics-sub")
	statusAddr, addr := runWithStatus(t, cloud.URL())
	waitReady(t, statusAddr)

	const n = 100
	publishAll(t, addr, 4, n/4)
	waitUntil(t, 30*time.Second, "all events at the cloud", func() bool { return sub.distinct() == n })
	var m *exposition
	waitUntil(t, 10*time.Second, "forwarded == n and backlog 0", func() bool {
		m = scrape(t, statusAddr)
		return m.value(t, "ferry_uplink_forwarded_events_total") == n &&
			m.value(t, "ferry_backlog_events", "stream", "telemetry") == 0
	})
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"ferry_ingest_events_total", nil, n},
		{"ferry_ingest_refused_total", nil, 0},
		{"ferry_uplink_connected", nil, 1},
		{"ferry_backlog_bytes", []string{"stream", "telemetry"}, 0},
		{"ferry_backlog_oldest_age_seconds", []string{"stream", "telemetry"}, 0},
		{"ferry_buffer_dropped_events_total", []string{"stream", "telemetry", "reason", "overflow"}, 0},
		{"ferry_uplink_dropped_events_total", []string{"reason", "oversize"}, 0},
		{"ferry_buffer_disk_full", nil, 0},
	} {
		if got := m.value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := m.value(t, "ferry_buffer_commit_duration_seconds_count"); got <= 0 {
		t.Errorf("commit histogram count %v, want > 0", got)
	}
	if got := m.value(t, "ferry_buffer_commit_duration_seconds_sum"); got <= 0 {
		t.Errorf("commit histogram sum %v, want > 0", got)
	}
	if got := m.value(t, "ferry_buffer_committed_events_total"); got < n {
		t.Errorf("committed events %v, want >= %d", got, n)
	}
	// Go runtime and process memory, from the library.
	for _, name := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "process_resident_memory_bytes"} {
		if got := m.value(t, name); got <= 0 {
			t.Errorf("%s = %v, want > 0", name, got)
		}
	}
	m.value(t, "go_gc_duration_seconds_count") // present

	cloud.Stop()
	waitUntil(t, 10*time.Second, "link down", func() bool { return scrape(t, statusAddr).value(t, "ferry_uplink_connected") == 0 })
	const more = 20
	publishAll(t, addr, 1, more)
	waitUntil(t, 10*time.Second, "backlog grows and ages", func() bool {
		m = scrape(t, statusAddr)
		return m.value(t, "ferry_backlog_events", "stream", "telemetry") == more &&
			m.value(t, "ferry_backlog_oldest_age_seconds", "stream", "telemetry") > 0
	})
	if got := m.value(t, "ferry_backlog_bytes", "stream", "telemetry"); got <= 0 {
		t.Errorf("backlog bytes %v during the outage", got)
	}
	if got := m.value(t, "ferry_ingest_events_total"); got != n+more {
		t.Errorf("ingest total %v, want %d", got, n+more)
	}
	if got := m.value(t, "ferry_uplink_forwarded_events_total"); got != n {
		t.Errorf("forwarded %v during the outage, want %d", got, n)
	}
	if code, body := get(t, statusAddr, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz during a cloud outage: %d %q, want 200", code, body)
	}
}

// TestMetricsFormat checks the exposition is valid text format (every
// line parses, one HELP and one TYPE per family, before its samples, a
// family's samples together, histograms consistent) and that two gateways
// in one process keep their series apart.
func TestMetricsFormat(t *testing.T) {
	status1, addr1 := runWithStatus(t, mqtttest.Start(t).URL())
	status2, _ := runWithStatus(t, mqtttest.Start(t).URL())
	waitReady(t, status1)
	waitReady(t, status2)
	publishAll(t, addr1, 1, 30)

	// Once idle, each gateway's histogram has seen exactly its own
	// commits: with one set shared by both it would count the other's too.
	var m1, m2 *exposition
	waitUntil(t, 10*time.Second, "histogram count == commits, on each gateway", func() bool {
		m1, m2 = scrape(t, status1), scrape(t, status2)
		for _, m := range []*exposition{m1, m2} {
			if m.value(t, "ferry_buffer_commit_duration_seconds_count") != m.value(t, "ferry_buffer_commits_total") {
				return false
			}
		}
		return m1.value(t, "ferry_uplink_forwarded_events_total") == 30
	})
	if got := m1.value(t, "ferry_ingest_events_total"); got != 30 {
		t.Errorf("gateway 1 ingest %v, want 30", got)
	}
	if got := m2.value(t, "ferry_ingest_events_total"); got != 0 {
		t.Errorf("gateway 2 ingest %v, want 0", got)
	}
	if m1.value(t, "ferry_buffer_commits_total") == 0 {
		t.Error("gateway 1 committed nothing")
	}
	for fam, typ := range m1.types {
		if !strings.HasPrefix(fam, "ferry_") {
			continue
		}
		if m1.help[fam] == "" {
			t.Errorf("%s: empty HELP", fam)
		}
		if typ == "counter" && !strings.HasSuffix(fam, "_total") {
			t.Errorf("%s: a counter not named _total", fam)
		}
	}
	h := m1.series["ferry_buffer_commit_duration_seconds_bucket"]
	les := []string{}
	for _, s := range h {
		les = append(les, s.labels["le"])
	}
	sort.Strings(les)
	if want := "[+Inf 0.0005 0.001 0.002 0.005 0.01 0.02 0.05 0.1 0.2 0.5 1]"; fmt.Sprint(les) != want {
		t.Errorf("commit histogram buckets %v, want %s", les, want)
	}
}

// TestReady checks Gateway.Ready across the lifecycle: not before Run,
// ready while it runs, not after it returned.
func TestReady(t *testing.T) {
	cloud := mqtttest.Start(t)
	yaml, _ := testConfig(t, t.TempDir(), cloud.URL(), "")
	g, err := gateway.New(loadConfig(t, yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Ready(); err == nil || !strings.Contains(err.Error(), "buffer") {
		t.Fatalf("before Run: Ready() = %v, want the buffer's reason", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	waitUntil(t, 10*time.Second, "ready", func() bool { return g.Ready() == nil })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := g.Ready(); err == nil {
		t.Fatal("after Run returned: ready")
	}
}

// runWithStatus runs a gateway forwarding to cloudURL with its status
// endpoint on a free port, and returns that and the broker's address.
func runWithStatus(t *testing.T, cloudURL string) (statusAddr, brokerAddr string) {
	t.Helper()
	statusAddr = fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	yaml, addr := testConfig(t, t.TempDir(), cloudURL, "")
	yaml = strings.Replace(yaml, `listen: ""`, "listen: "+statusAddr, 1)
	runGateway(t, loadConfig(t, yaml))
	return statusAddr, addr
}

func waitReady(t *testing.T, statusAddr string) {
	t.Helper()
	waitUntil(t, 10*time.Second, "GET /readyz 200", func() bool {
		code, _ := get(t, statusAddr, "/readyz")
		return code == http.StatusOK
	})
}

// get fetches path from the status endpoint without keeping the
// connection (an idle keep-alive connection would outlive the test).
func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// scrape fetches and parses GET /metrics, failing the test on anything
// that is not valid text format.
func scrape(t *testing.T, addr string) *exposition {
	t.Helper()
	code, body := get(t, addr, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	m, err := parseExposition(body)
	if err != nil {
		t.Fatalf("GET /metrics: %v\n%s", err, body)
	}
	return m
}

// exposition is a parsed Prometheus text format page.
type exposition struct {
	help, types map[string]string   // family -> HELP text, TYPE
	series      map[string][]sample // sample name -> its samples
}

type sample struct {
	labels map[string]string
	value  float64
}

// value returns the one sample of name with exactly labels (name, value
// pairs), failing the test when there is none.
func (m *exposition) value(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, s := range m.series[name] {
		if fmt.Sprint(s.labels) == fmt.Sprint(want) {
			return s.value
		}
	}
	t.Fatalf("no sample %s%v", name, want)
	return 0
}

var (
	metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*`)
	labelName  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*`)
)

// parseExposition parses the text format (version 0.0.4) strictly enough
// to catch what a scraper would reject or misread.
func parseExposition(text string) (*exposition, error) {
	m := &exposition{help: map[string]string{}, types: map[string]string{}, series: map[string][]sample{}}
	if !strings.HasSuffix(text, "\n") {
		return nil, fmt.Errorf("does not end in a newline")
	}
	seen := map[string]bool{} // series (name and labels) already given
	done := map[string]bool{} // families whose samples ended
	current := ""             // family of the previous line
	enter := func(fam string) error {
		if fam != current {
			if done[fam] {
				return fmt.Errorf("family %s is split", fam)
			}
			if current != "" {
				done[current] = true
			}
			current = fam
		}
		return nil
	}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		fail := func(format string, a ...any) error {
			return fmt.Errorf("line %d %q: %s", i+1, line, fmt.Sprintf(format, a...))
		}
		if strings.HasPrefix(line, "#") {
			f := strings.SplitN(line, " ", 4)
			if len(f) < 3 || (f[1] != "HELP" && f[1] != "TYPE") {
				continue // a plain comment
			}
			fam := f[2]
			if metricName.FindString(fam) != fam {
				return nil, fail("bad metric name")
			}
			if err := enter(fam); err != nil {
				return nil, fail("%v", err)
			}
			rest := ""
			if len(f) == 4 {
				rest = f[3]
			}
			switch f[1] {
			case "HELP":
				if _, dup := m.help[fam]; dup {
					return nil, fail("second HELP")
				}
				m.help[fam] = rest
			case "TYPE":
				if _, dup := m.types[fam]; dup {
					return nil, fail("second TYPE")
				}
				switch rest {
				case "counter", "gauge", "histogram", "summary", "untyped":
				default:
					return nil, fail("unknown type")
				}
				m.types[fam] = rest
			}
			continue
		}
		name := metricName.FindString(line)
		if name == "" {
			return nil, fail("no metric name")
		}
		rest := line[len(name):]
		labels := map[string]string{}
		if strings.HasPrefix(rest, "{") {
			rest = rest[1:]
			for {
				rest = strings.TrimLeft(rest, " ")
				if strings.HasPrefix(rest, "}") {
					rest = rest[1:]
					break
				}
				ln := labelName.FindString(rest)
				if ln == "" || !strings.HasPrefix(rest[len(ln):], `="`) {
					return nil, fail("bad label")
				}
				rest = rest[len(ln)+2:]
				var val strings.Builder
				for {
					if rest == "" {
						return nil, fail("unterminated label value")
					}
					c := rest[0]
					rest = rest[1:]
					if c == '"' {
						break
					}
					if c == '\\' {
						if rest == "" {
							return nil, fail("bad escape")
						}
						switch rest[0] {
						case '\\', '"':
							val.WriteByte(rest[0])
						case 'n':
							val.WriteByte('\n')
						default:
							return nil, fail("bad escape")
						}
						rest = rest[1:]
						continue
					}
					val.WriteByte(c)
				}
				if _, dup := labels[ln]; dup {
					return nil, fail("label %s twice", ln)
				}
				labels[ln] = val.String()
				rest = strings.TrimLeft(rest, " ")
				if strings.HasPrefix(rest, ",") {
					rest = rest[1:]
				} else if !strings.HasPrefix(rest, "}") {
					return nil, fail("expected , or }")
				}
			}
		}
		f := strings.Fields(rest)
		if !strings.HasPrefix(rest, " ") || len(f) < 1 || len(f) > 2 {
			return nil, fail("expected ' value [timestamp]'")
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fail("value: %v", err)
		}
		fam := name
		if _, ok := m.types[fam]; !ok {
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(name, suf); ok && (m.types[base] == "histogram" || m.types[base] == "summary") {
					fam = base
				}
			}
		}
		if m.types[fam] == "" || fam != current {
			return nil, fail("sample without a TYPE line of its family just before")
		}
		if _, ok := m.help[fam]; !ok {
			return nil, fail("sample without a HELP line")
		}
		key := name + fmt.Sprint(labels)
		if seen[key] {
			return nil, fail("duplicate series")
		}
		seen[key] = true
		m.series[name] = append(m.series[name], sample{labels: labels, value: v})
	}
	return m, m.checkHistograms()
}

// checkHistograms checks each histogram series: buckets cumulative, a +Inf
// bucket, and _count (where given) equal to it.
func (m *exposition) checkHistograms() error {
	for fam, typ := range m.types {
		if typ != "histogram" {
			continue
		}
		groups := map[string][]sample{} // by labels other than le
		for _, s := range m.series[fam+"_bucket"] {
			rest := map[string]string{}
			for k, v := range s.labels {
				if k != "le" {
					rest[k] = v
				}
			}
			groups[fmt.Sprint(rest)] = append(groups[fmt.Sprint(rest)], s)
		}
		if len(groups) == 0 {
			return fmt.Errorf("histogram %s without buckets", fam)
		}
		for key, bs := range groups {
			le := func(s sample) float64 { v, _ := strconv.ParseFloat(s.labels["le"], 64); return v }
			sort.Slice(bs, func(i, j int) bool { return le(bs[i]) < le(bs[j]) })
			inf := bs[len(bs)-1]
			if inf.labels["le"] != "+Inf" {
				return fmt.Errorf("histogram %s%s: no +Inf bucket", fam, key)
			}
			for i := 1; i < len(bs); i++ {
				if bs[i].value < bs[i-1].value {
					return fmt.Errorf("histogram %s%s: buckets not cumulative", fam, key)
				}
			}
			for _, c := range m.series[fam+"_count"] {
				if fmt.Sprint(c.labels) == key && c.value != inf.value {
					return fmt.Errorf("histogram %s%s: count %v but +Inf bucket %v", fam, key, c.value, inf.value)
				}
			}
		}
	}
	return nil
}
