//go:build linux

package wear

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/uplink"
)

func TestParseIO(t *testing.T) {
	in := "rchar: 6976\nwchar: 120\nsyscr: 10\nsyscw: 7\nread_bytes: 0\nwrite_bytes: 8192\ncancelled_write_bytes: 4096\n"
	got, err := parseIO([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := ioStats{WriteBytes: 8192, CancelledWriteBytes: 4096, Syscw: 7, Wchar: 120}
	if got != want {
		t.Errorf("parseIO = %+v, want %+v", got, want)
	}
	if _, err := parseIO([]byte("rchar: 1\n")); err == nil {
		t.Error("parseIO without write_bytes: no error")
	}
}

func TestReadOwnCounters(t *testing.T) {
	if _, err := readIO(os.Getpid()); err != nil {
		if os.Getenv("CI") == "true" { // CI is Linux: the counters must be there
			t.Fatalf("no /proc/PID/io: %v", err)
		}
		t.Skipf("no /proc/PID/io here: %v", err)
	}
	if _, err := cpuSeconds(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}

func TestParseCPU(t *testing.T) {
	// A command name with spaces and a parenthesis; utime 250, stime 50.
	stat := "4242 (fer ry) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 9 0 100 0 0\n"
	got, err := parseCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if got != 3.0 {
		t.Errorf("parseCPU = %v, want 3 s", got)
	}
	if f := statFields([]byte(stat)); f[1] != "1" {
		t.Errorf("ppid = %q, want 1", f[1])
	}
}

func TestParsePerf(t *testing.T) {
	in := `# started on Fri Dec  4 16:43:21 2026

     0.211865478,3,,syscalls:sys_enter_fdatasync,11428351,100.00,,
     0.211865478,1,,syscalls:sys_enter_fsync,11428351,100.00,,
     0.434146930,<not counted>,,syscalls:sys_enter_fdatasync,0,100.00,,
     0.434146930,2,,syscalls:sys_enter_fdatasync,19372055,100.00,,
     0.5,9,,task-clock,1,100.00,,
`
	if got := parsePerf(strings.NewReader(in)); got != 6 {
		t.Errorf("parsePerf = %d, want 6", got)
	}
}

func TestYears(t *testing.T) {
	// The note's example: 1 KiB per reading at 100 readings/s is ~3.2 TB a
	// year, so 10 TB lasts ~3.1 years.
	if y := Years(10e12, 1024, 100); math.Abs(y-3.097) > 0.01 {
		t.Errorf("Years(10 TB, 1 KiB, 100/s) = %v, want ~3.1", y)
	}
	if y := Years(10e12, 0, 100); !math.IsInf(y, 1) {
		t.Errorf("Years with no writes = %v, want +Inf", y)
	}
}

func TestFormat(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567", -4096: "-4,096"} {
		if got := fmtInt(v); got != want {
			t.Errorf("fmtInt(%v) = %q, want %q", v, got, want)
		}
	}
	if got := fmtNum(0.456); got != "0.46" {
		t.Errorf("fmtNum(0.456) = %q", got)
	}
	if got := fmtYears(math.Inf(1)); got != "inf" {
		t.Errorf("fmtYears(+Inf) = %q", got)
	}
}

func TestReading(t *testing.T) {
	for _, seq := range []int{0, 7, 1234, 99999} {
		b := reading("c03", 7, seq)
		var r struct {
			ID   string
			T, H float64
			Seq  int
		}
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("reading %d: %s: %v", seq, b, err)
		}
		if r.ID != "c03-s07" || r.Seq != seq || r.T < 19 || r.T > 24 || r.H < 34 || r.H > 46 {
			t.Errorf("reading %d = %s", seq, b)
		}
		if len(b) < 40 || len(b) > 55 {
			t.Errorf("reading %d is %d bytes, want ~50: %s", seq, len(b), b)
		}
	}
}

func TestCloudSubParse(t *testing.T) {
	c := &cloudSub{tag: "c03", arrived: map[readingKey]int{}}
	raw := reading("c03", 4, 17)
	c.ingest(raw) // as a Mosquitto bridge forwards it
	ev := event.Event{Stream: "telemetry", Source: "wear-c03-s04", Topic: "wear/s04", Time: time.Unix(1, 0), ContentType: "application/json", Payload: reading("c03", 4, 18)}
	c.ingest(uplink.AppendJSON(nil, "wear", &ev)) // as ferry's uplink sends it
	batch, err := uplink.AppendCBORBatch(nil, []event.Event{ev, ev})
	if err != nil {
		t.Fatal(err)
	}
	c.ingest(batch)                                // a duplicate, in a CBOR batch
	c.ingest(reading("c04", 4, 19))                // another run
	c.ingest([]byte(`{"id":"c03-probe","seq":2}`)) // a probe
	c.ingest([]byte("garbage"))
	want := map[readingKey]int{{4, 17}: 1, {4, 18}: 3, {-1, 2}: 1}
	if len(c.arrived) != len(want) {
		t.Errorf("arrived = %v, want %v", c.arrived, want)
	}
	for k, n := range want {
		if c.arrived[k] != n {
			t.Errorf("arrived[%v] = %d, want %d", k, c.arrived[k], n)
		}
	}
	if c.other != 2 {
		t.Errorf("other = %d, want 2", c.other)
	}

	now := time.Now()
	s := &sensor{idx: 4, acks: make([]time.Time, 20), published: 20}
	s.acks[17], s.acks[18], s.acks[19] = now, now, now
	d := c.check([]*sensor{s})
	if d.Acked != 3 || d.Arrived != 2 || d.Lost != 1 || d.Duplicates != 2 || d.Unacked != 17 {
		t.Errorf("check = %+v", d)
	}
	if n := ackedBetween([]*sensor{s}, now, now.Add(time.Second)); n != 3 {
		t.Errorf("ackedBetween = %d, want 3", n)
	}
}

// TestConfigs checks that the ferry configuration the harness writes is
// valid for this tree's ferry, in every durability mode.
func TestConfigs(t *testing.T) {
	for _, mode := range []string{"sync", "batch", "none"} {
		y := ferryConfig(t.TempDir(), mode, 1883, 8080, 1884)
		c, err := config.LoadBytes([]byte(y), "wear.yaml")
		if err != nil {
			t.Fatalf("%s: %v\n%s", mode, err, y)
		}
		if c.Ingest.Durability != mode {
			t.Errorf("durability = %q, want %q", c.Ingest.Durability, mode)
		}
	}
	m := mosquittoEdgeConfig("/tmp/x", "user root\n", true, 1883, 1884, "wear-bridge")
	for _, want := range []string{"persistence true\n", "address 127.0.0.1:1884\n", "topic wear/# out 1\n", "listener 1883 127.0.0.1\n"} {
		if !strings.Contains(m, want) {
			t.Errorf("mosquitto config lacks %q:\n%s", want, m)
		}
	}
}

func TestTable(t *testing.T) {
	cfg := &Config{Duration: 30 * time.Second, Warmup: 5 * time.Second, Sensors: 10, EnduranceTB: 10, NoSyncWindow: 70 * time.Second}
	rows := []Row{
		{Target: Targets[0], Rate: 100, Window: 30 * time.Second, Readings: 3000, WriteBytes: 3000 * 1024, Syscw: 9000, Syncs: 6000, CPU: 1.5,
			Delivery: delivery{Acked: 3500, Arrived: 3500}, SaveBytes: -1, Commits: 3000},
		{Target: Targets[2], Rate: 1, Window: 10 * time.Second, Readings: 10, Syncs: 0, SaveBytes: -1, Delivery: delivery{Acked: 15, Arrived: 14, Lost: 1}},
		{Target: Targets[4], Rate: 10, Window: 30 * time.Second, Readings: 300, Syncs: 0, SaveBytes: 8192, Delivery: delivery{Acked: 350, Arrived: 350}},
		{Target: Targets[3], Rate: 10, Err: os.ErrNotExist},
	}
	var b bytes.Buffer
	writeTable(&b, cfg, header{ferry: "ferry test", payload: 46}, rows)
	out := b.String()
	for _, want := range []string{
		"1,024", "3.1\n", // 1 KiB per reading at 100/s: ~3.1 years of 10 TB
		"3500 of 3500, 0 lost", "14 of 15 LOST 1", "LOST 1 PUBACKed readings",
		"0.00~", "~ undercounts", // ferry none over a too-short window
		"0.00*", "wrote 8,192 B",
		"FAILED: file does not exist",
		"How to read it.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}
