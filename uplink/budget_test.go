package uplink

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/internal/mqtttest"
)

func TestPeriodOf(t *testing.T) {
	berlin := time.FixedZone("CET", 3600)
	utc := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		now        string
		day        int
		loc        *time.Location
		start, end string
	}{
		{"2026-12-05T03:55:00Z", 1, time.UTC, "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"2026-12-01T00:00:00Z", 1, time.UTC, "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"2026-11-30T23:59:59Z", 1, time.UTC, "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"},
		{"2026-12-05T03:55:00Z", 15, time.UTC, "2026-11-15T00:00:00Z", "2026-12-15T00:00:00Z"},
		{"2027-01-10T00:00:00Z", 28, time.UTC, "2026-12-28T00:00:00Z", "2027-01-28T00:00:00Z"},
		{"2027-03-01T12:00:00Z", 28, time.UTC, "2027-02-28T00:00:00Z", "2027-03-28T00:00:00Z"},
		// Midnight in the configured zone: 23:30 UTC on the 30th is the
		// 1st, 00:30, at UTC+1.
		{"2026-11-30T23:30:00Z", 1, berlin, "2026-11-30T23:00:00Z", "2026-12-31T23:00:00Z"},
		{"2026-11-30T22:30:00Z", 1, berlin, "2026-10-31T23:00:00Z", "2026-11-30T23:00:00Z"},
	}
	for _, tt := range tests {
		start, end := periodOf(utc(tt.now), tt.day, tt.loc)
		if !start.Equal(utc(tt.start)) || !end.Equal(utc(tt.end)) {
			t.Errorf("periodOf(%s, day %d, %s) = %s .. %s, want %s .. %s", tt.now, tt.day, tt.loc,
				start.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339), tt.start, tt.end)
		}
	}
}

func TestBudgetRule(t *testing.T) {
	b := &budget{cfg: Budget{Bytes: 1000, ResetDay: 1, Location: time.UTC, Reserve: []float64{0, 0.1, 0.3}}}
	now := time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)
	if !b.roll(now) {
		t.Fatal("first roll: no period")
	}
	tests := []struct {
		used   uint64
		allows [4]uint64 // allowance of priorities 0..3 (3 takes the last entry)
	}{
		{0, [4]uint64{1000, 900, 700, 700}},
		{699, [4]uint64{301, 201, 1, 1}},
		{700, [4]uint64{300, 200, 0, 0}},
		{899, [4]uint64{101, 1, 0, 0}},
		{900, [4]uint64{100, 0, 0, 0}},
		{999, [4]uint64{1, 0, 0, 0}},
		{1000, [4]uint64{0, 0, 0, 0}},
		{5000, [4]uint64{0, 0, 0, 0}},
	}
	for _, tt := range tests {
		b.used = tt.used
		for p, want := range tt.allows {
			if got := b.allowance(p); got != want {
				t.Errorf("used %d: allowance(%d) = %d, want %d", tt.used, p, got, want)
			}
		}
	}
	b.used = 1000
	if b.roll(now.Add(24 * time.Hour)) {
		t.Error("rolled within the period")
	}
	if b.used != 1000 {
		t.Errorf("used %d after a roll within the period", b.used)
	}
	if !b.roll(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) || b.used != 0 {
		t.Errorf("next period: used %d, want 0", b.used)
	}
	// A clock set back (a board without a real-time clock before NTP)
	// stays in the current period, with its count.
	b.used = 10
	if b.roll(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)) || b.used != 10 || b.start.Month() != time.January {
		t.Errorf("clock set back: period %s, used %d; want January's, 10", b.start, b.used)
	}
}

func TestWireBytes(t *testing.T) {
	tests := []struct {
		topic, payload int
		qos            byte
		tls            bool
		want           uint64
	}{
		// 1 type byte, 1 length byte, 2+10 topic, 2 packet id, 100 payload; PUBACK 4.
		{10, 100, 1, false, 1 + 1 + 12 + 2 + 100 + 4},
		{10, 100, 0, false, 1 + 1 + 12 + 100},
		{10, 100, 1, true, 1 + 1 + 12 + 2 + 100 + 22 + 4 + 22},
		// Remaining length 200: two bytes.
		{10, 186, 1, false, 1 + 2 + 200 + 4},
		// 128 KiB: three length bytes, nine TLS records.
		{20, 128 << 10, 1, true, 1 + 3 + 22 + 2 + 128<<10 + 9*22 + 4 + 22},
	}
	for _, tt := range tests {
		if got := wireBytes(tt.topic, tt.payload, tt.qos, tt.tls); got != tt.want {
			t.Errorf("wireBytes(%d, %d, qos %d, tls %v) = %d, want %d", tt.topic, tt.payload, tt.qos, tt.tls, got, tt.want)
		}
	}
}

func TestBudgetConfigValidation(t *testing.T) {
	ok := func() Config {
		return Config{Endpoints: []Endpoint{{URL: "tcp://h:1883"}}, GatewayID: "gw", QoS: 1,
			Priorities: map[string]int{"alerts": 0, "bulk": 2}, Budget: Budget{Bytes: 1 << 20}}
	}
	tests := []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"defaults", func(*Config) {}, true},
		{"priority below 0", func(c *Config) { c.Priorities["x"] = -1 }, false},
		{"priority above the lowest", func(c *Config) { c.Priorities["x"] = MaxPriority + 1 }, false},
		{"lowest priority", func(c *Config) { c.Priorities["x"] = MaxPriority }, true},
		{"default priority 0 means 1", func(c *Config) { c.DefaultPriority = 0 }, true},
		{"default priority too low", func(c *Config) { c.DefaultPriority = MaxPriority + 1 }, false},
		{"reset day 29", func(c *Config) { c.Budget.ResetDay = 29 }, false},
		{"reset day 28", func(c *Config) { c.Budget.ResetDay = 28 }, true},
		{"reserve of priority 0", func(c *Config) { c.Budget.Reserve = []float64{0.1} }, false},
		{"reserve 1", func(c *Config) { c.Budget.Reserve = []float64{0, 1} }, false},
		{"reserve decreasing", func(c *Config) { c.Budget.Reserve = []float64{0, 0.5, 0.2} }, false},
		{"reserve NaN", func(c *Config) { c.Budget.Reserve = []float64{0, zeroF() / zeroF()} }, false},
		{"no budget ignores the rest", func(c *Config) { c.Budget = Budget{ResetDay: 40} }, true},
	}
	for _, tt := range tests {
		c := ok()
		tt.mod(&c)
		_, err := New(newMemQueue(), c)
		if tt.ok && err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
		if !tt.ok && !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err = %v, want ErrConfig", tt.name, err)
		}
	}
	f, err := New(newMemQueue(), ok())
	if err != nil {
		t.Fatal(err)
	}
	if b := f.cfg.Budget; b.ResetDay != 1 || b.Location != time.UTC || !slices.Equal(b.Reserve, DefaultReserve) || f.cfg.DefaultPriority != 1 {
		t.Errorf("defaults: %+v, default priority %d", b, f.cfg.DefaultPriority)
	}
}

func zeroF() float64 { return 0 }

// TestFillByPriority checks that fill gives scarce window slots to the
// streams of the highest priority first, round-robin among them, and
// the rest to lower priorities.
func TestFillByPriority(t *testing.T) {
	q := newMemQueue()
	for _, s := range []string{"bulk", "telemetry", "alerts", "alarms"} {
		q.append(s, mkEvents(t, s, 1, 10)...)
	}
	cfg := testConfig(t, "tcp://127.0.0.1:1")
	cfg.Inflight = 8
	cfg.Priorities = map[string]int{"alerts": 0, "alarms": 0, "bulk": 2}
	f, err := New(q, cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.refreshStreams()
	take := func(n int) []string {
		t.Helper()
		recs := make([]*record, n)
		for i := range recs {
			recs[i] = <-f.slots
		}
		used, err := f.fill(recs)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range recs[:used] {
			got = append(got, r.stream.name)
		}
		for _, r := range recs {
			f.slots <- r
		}
		return got
	}
	count := func(names []string) map[string]int {
		m := map[string]int{}
		for _, n := range names {
			m[n]++
		}
		return m
	}
	// 8 slots, 20 events of priority 0: all to alerts and alarms, 4 each.
	if got := count(take(8)); got["alerts"] != 4 || got["alarms"] != 4 || len(got) != 2 {
		t.Fatalf("first fill: %v, want 4 alerts and 4 alarms", got)
	}
	if got := count(take(8)); got["alerts"] != 4 || got["alarms"] != 4 {
		t.Fatalf("second fill: %v", got)
	}
	// 4 priority-0 events left: they go first, telemetry (unlisted:
	// priority 1) gets the rest; bulk nothing.
	if got := count(take(8)); got["alerts"] != 2 || got["alarms"] != 2 || got["telemetry"] != 4 {
		t.Fatalf("third fill: %v, want 2+2 priority 0, 4 telemetry", got)
	}
	if got := count(take(8)); got["telemetry"] != 6 || got["bulk"] != 2 {
		t.Fatalf("fourth fill: %v, want 6 telemetry, 2 bulk", got)
	}
	// Order within a stream is unchanged: offsets read in sequence.
	if st := f.streams["bulk"]; st.next != 3 {
		t.Errorf("bulk next %d, want 3", st.next)
	}
}

// budgetClock is a settable clock for budget tests.
type budgetClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *budgetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *budgetClock) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// memStore is a BudgetStore in memory.
type memStore struct {
	mu    sync.Mutex
	start int64
	bytes uint64
	saves int
}

func (s *memStore) LoadUsage(string) (int64, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.start, s.bytes, nil
}

func (s *memStore) SaveUsage(_ string, start int64, bytes uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.start, s.bytes = start, bytes
	s.saves++
	return nil
}

// TestBudgetHoldsLowPriorities runs a forwarder with a small budget into
// Mosquitto: telemetry (priority 1, reserve 50%) stops at half the
// budget and keeps its events in the queue while alerts (priority 0) are
// still delivered; when the injected clock passes the end of the period,
// telemetry flows again.
func TestBudgetHoldsLowPriorities(t *testing.T) {
	leakCheck(t)
	b := mqtttest.Start(t)
	sub := subscribe(t, b.URL())
	q := newMemQueue()
	const nTelemetry = 200
	q.append("telemetry", mkEvents(t, "telemetry", 1, nTelemetry)...)
	clock := &budgetClock{now: time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)}
	store := &memStore{}
	cfg := testConfig(t, b.URL())
	cfg.Now = clock.Now
	cfg.Inflight = 10
	cfg.Priorities = map[string]int{"alerts": 0}
	const budgetBytes = 40_000
	cfg.Budget = Budget{Bytes: budgetBytes, Reserve: []float64{0, 0.5}, Store: store}
	f, err := New(q, cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.budgetRecheck = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Errorf("Run did not return")
		}
	})

	maxWire := f.maxWire()
	waitFor(t, 60*time.Second, "telemetry held by the budget", func() bool {
		s := f.Status().Budget
		return s != nil && slices.Equal(s.HeldStreams, []string{"telemetry"})
	})
	waitFor(t, 60*time.Second, "telemetry in flight acked", func() bool { return f.Status().Inflight == 0 })
	held := q.acked("telemetry")
	st := f.Status().Budget
	t.Logf("telemetry held after %d of %d events; used %d of %d", held, nTelemetry, st.Used, st.Bytes)
	if held == 0 || held >= nTelemetry {
		t.Fatalf("telemetry acked through %d: the budget did not hold it part way", held)
	}
	if st.Used < budgetBytes/2 || st.Used > budgetBytes/2+maxWire {
		t.Errorf("used %d when telemetry was held, want %d .. %d (the line plus one message)", st.Used, budgetBytes/2, budgetBytes/2+maxWire)
	}
	if !slices.Equal(st.Held, []int{1}) || st.Remaining != budgetBytes-st.Used {
		t.Errorf("budget status %+v: want priority 1 held", st)
	}

	// Alerts go while telemetry is held.
	q.append("alerts", mkEvents(t, "alerts", 1, 5)...)
	waitFor(t, 60*time.Second, "alerts delivered", func() bool { return q.acked("alerts") == 5 })
	if got := q.acked("telemetry"); got != held {
		t.Fatalf("telemetry acked through %d while held at %d", got, held)
	}
	waitFor(t, 60*time.Second, "the subscriber got the alerts", func() bool {
		n := 0
		for _, ev := range sub.events() {
			if ev.Stream == "alerts" {
				n++
			}
		}
		return n == 5
	})
	used := f.Status().Budget.Used
	store.mu.Lock()
	saved, saves := store.bytes, store.saves
	store.mu.Unlock()
	if saved != used || saves == 0 {
		t.Errorf("store holds %d (%d saves), status %d", saved, saves, used)
	}

	// The period ends: telemetry flows again, up to half the new budget.
	clock.set(time.Date(2027, 1, 1, 0, 0, 1, 0, time.UTC))
	waitFor(t, 60*time.Second, "telemetry flowing in the new period", func() bool { return q.acked("telemetry") > held })
	waitFor(t, 60*time.Second, "telemetry held again or done", func() bool {
		s := f.Status().Budget
		return f.Status().Inflight == 0 && (len(s.HeldStreams) > 0 || q.acked("telemetry") == nTelemetry)
	})
	st = f.Status().Budget
	t.Logf("new period: telemetry acked through %d; used %d", q.acked("telemetry"), st.Used)
	if !st.PeriodStart.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) || st.Used > budgetBytes/2+maxWire {
		t.Errorf("new period status %+v", st)
	}
}

// TestBudgetResumesSavedUsage checks that a new Forwarder (a restart)
// goes on from the usage its store holds for the current period, and
// starts from zero when the saved usage is of another period.
func TestBudgetResumesSavedUsage(t *testing.T) {
	now := time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)
	start, _ := periodOf(now, 1, time.UTC)
	for _, tt := range []struct {
		name      string
		start     int64
		want      uint64
		wantStart time.Time
	}{
		{"same period", start.Unix(), 1234, start},
		{"previous period", start.AddDate(0, -1, 0).Unix(), 0, start},
		// The clock is behind (no real-time clock, NTP not yet there):
		// the saved, later period goes on.
		{"later period", start.AddDate(0, 2, 0).Unix(), 1234, start.AddDate(0, 2, 0)},
		// Saved under another reset day: not a period of this config.
		{"other reset day", start.AddDate(0, 2, 4).Unix(), 0, start},
	} {
		cfg := testConfig(t, "tcp://127.0.0.1:1")
		cfg.Now = func() time.Time { return now }
		cfg.Budget = Budget{Bytes: 10_000, Store: &memStore{start: tt.start, bytes: 1234}}
		f, err := New(newMemQueue(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		f.loadBudget()
		if got := f.Status().Budget; got.Used != tt.want || !got.PeriodStart.Equal(tt.wantStart) {
			t.Errorf("%s: used %d in the period from %s, want %d from %s", tt.name, got.Used, got.PeriodStart, tt.want, tt.wantStart)
		}
	}
}
