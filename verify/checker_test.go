package verify

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	e1 = "00000000000000e1"
	e2 = "00000000000000e2"
)

// feed observes each envelope as its own message.
func feed(c *Checker, envs ...Envelope) {
	for _, e := range envs {
		c.Observe(e)
	}
}

// counts returns the sums of gw/s.
func counts(t testing.TB, c *Checker, gw, s string) Counts {
	t.Helper()
	return row(t, c.Report(), gw, s).Counts
}

func wantCounts(t testing.TB, got, want Counts) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("counts:\n got %+v\nwant %+v", got, want)
	}
}

func TestCheckerInOrder(t *testing.T) {
	c := newTestChecker(t, newClock(), time.Second)
	c.Observe(seqs("g", "s", e1, 1, 5)...) // one batch
	feed(c, seqs("g", "s", e1, 6, 10)...)
	c.Tick()
	c.Finish()
	wantCounts(t, counts(t, c, "g", "s"), Counts{Received: 10})
	r := c.Report()
	if !r.OK() || r.Messages != 6 || r.Envelopes != 10 || !r.Final {
		t.Fatalf("report: ok %v messages %d envelopes %d final %v", r.OK(), r.Messages, r.Envelopes, r.Final)
	}
	if e := r.Rows[0].Epochs[0]; e.FirstSeq != 1 || e.LastSeq != 10 || e.Epoch != e1 {
		t.Fatalf("epoch report %+v", e)
	}
}

func TestCheckerHoleJudgedAfterSettle(t *testing.T) {
	clk := newClock()
	c := newTestChecker(t, clk, 10*time.Second)
	feed(c, ev("g", "s", e1, 1), ev("g", "s", e1, 2), ev("g", "s", e1, 5))
	clk.Add(9 * time.Second)
	c.Tick()
	if r := c.Report(); r.Pending != 2 || r.Totals.UnexplainedGaps != 0 || !r.OK() {
		t.Fatalf("within the settle window: pending %d, unexplained %d", r.Pending, r.Totals.UnexplainedGaps)
	}
	clk.Add(time.Second)
	c.Tick()
	r := c.Report()
	wantCounts(t, r.Totals, Counts{Received: 3, UnexplainedGaps: 1, Unexplained: 2, Missing: 2})
	if got := r.Rows[0].Epochs[0].MissingRanges; !reflect.DeepEqual(got, []Range{{3, 4}}) {
		t.Fatalf("missing ranges %v", got)
	}
	// A late event of the hole is repaired; the other stays missing.
	feed(c, ev("g", "s", e1, 3))
	c.Finish()
	r = c.Report()
	wantCounts(t, r.Totals, Counts{Received: 4, UnexplainedGaps: 1, Unexplained: 2, Missing: 1, Repaired: 1})
	if r.OK() {
		t.Fatal("report OK with an event missing")
	}
	var b strings.Builder
	if err := r.WriteText(&b, TextOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"missing: g/s epoch " + e1 + ": 4\n", "result: FAIL: 1 events missing"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, b.String())
		}
	}
}

func TestCheckerReorderWithinSettle(t *testing.T) {
	clk := newClock()
	c := newTestChecker(t, clk, 10*time.Second)
	feed(c, ev("g", "s", e1, 1), ev("g", "s", e1, 4), ev("g", "s", e1, 3), ev("g", "s", e1, 2))
	clk.Add(time.Minute)
	c.Tick()
	c.Finish()
	wantCounts(t, counts(t, c, "g", "s"), Counts{Received: 4, Reordered: 2})
}

func TestCheckerAnnouncedGap(t *testing.T) {
	c := newTestChecker(t, newClock(), time.Second)
	feed(c, ev("g", "s", e1, 1), ev("g", "s", e1, 2),
		ev("g", "s", e1, 6, gap(3, "overflow", 2, "ttl", 1)), // 3..5 dropped
		ev("g", "s", e1, 12, gap(3, "disk_full", 3)),         // 9..11 dropped, 7..8 a hole
		ev("g", "s", e1, 6, gap(3, "overflow", 2, "ttl", 1)), // a resend: counted once
	)
	c.Finish()
	r := c.Report()
	wantCounts(t, r.Totals, Counts{Received: 4, Duplicates: 1, Dropped: 6,
		DroppedBy:       map[string]uint64{"overflow": 2, "ttl": 1, "disk_full": 3},
		UnexplainedGaps: 1, Unexplained: 2, Missing: 2})
	if got := r.Rows[0].Epochs[0].MissingRanges; !reflect.DeepEqual(got, []Range{{7, 8}}) {
		t.Fatalf("missing ranges %v", got)
	}
}

func TestCheckerLateAnnouncementExplainsHole(t *testing.T) {
	clk := newClock()
	c := newTestChecker(t, clk, time.Second)
	feed(c, ev("g", "s", e1, 1), ev("g", "s", e1, 2), ev("g", "s", e1, 10, gap(3, "ttl", 3))) // hole 3..6
	clk.Add(time.Second)
	c.Tick()
	if got := counts(t, c, "g", "s").Missing; got != 4 {
		t.Fatalf("missing %d, want 4", got)
	}
	// Event 5, late, announces 3..4 as dropped: only 6 is left missing.
	feed(c, ev("g", "s", e1, 5, gap(2, "overflow", 2)))
	c.Finish()
	wantCounts(t, counts(t, c, "g", "s"), Counts{Received: 4, Dropped: 5,
		DroppedBy:       map[string]uint64{"ttl": 3, "overflow": 2},
		UnexplainedGaps: 1, Unexplained: 4, Missing: 1, Repaired: 1})
}

// TestCheckerLateAnnouncementOnACopy: the first copy of 16 announced
// nothing (10..15 were sent, and lost at the cloud); the buffer then
// dropped them before their PUBACK, and the resent 16 announces them.
func TestCheckerLateAnnouncementOnACopy(t *testing.T) {
	clk := newClock()
	c := newTestChecker(t, clk, time.Second)
	feed(c, seqs("g", "s", e1, 1, 11)...)
	feed(c, ev("g", "s", e1, 16))
	clk.Add(time.Second)
	c.Tick() // 12..15 unexplained
	feed(c, ev("g", "s", e1, 16, gap(6, "overflow", 1, "ttl", 5)))
	feed(c, ev("g", "t", e1, 3, gap(2))) // no reasons given
	c.Finish()
	wantCounts(t, counts(t, c, "g", "s"), Counts{Received: 12, Duplicates: 1, Dropped: 4,
		DroppedBy: map[string]uint64{"overflow": 1, "ttl": 3}, UnexplainedGaps: 1, Unexplained: 4})
	wantCounts(t, counts(t, c, "g", "t"), Counts{Received: 1, Dropped: 2, DroppedBy: map[string]uint64{"unspecified": 2}})
}

func TestCheckerDuplicatesAndReplays(t *testing.T) {
	clk := newClock()
	c := newTestChecker(t, clk, time.Second)
	feed(c, seqs("g", "s", e1, 1, 5)...)
	feed(c, ev("g", "s", e1, 2), ev("g", "s", e1, 3))         // duplicates
	feed(c, seqs("g", "s", e1, 2, 4, replay)...)              // replays: not duplicates
	feed(c, ev("g", "s", e1, 8), ev("g", "s", e1, 6, replay)) // a replay fills a hole: not reordered
	c.Finish()
	r := c.Report()
	wantCounts(t, r.Totals, Counts{Received: 7, Duplicates: 2, Replays: 4, UnexplainedGaps: 1, Unexplained: 1, Missing: 1})
	if got := r.Rows[0].Epochs[0].MissingRanges; !reflect.DeepEqual(got, []Range{{7, 7}}) {
		t.Fatalf("missing ranges %v", got)
	}
}

func TestCheckerNewEpochs(t *testing.T) {
	clk := newClock()
	c := newTestChecker(t, clk, time.Second)
	feed(c, seqs("g", "s", e1, 1, 3)...)
	feed(c, seqs("g", "s", e2, 1, 2)...)
	feed(c, ev("g", "s", e1, 4)) // a late message of the old buffer file
	c.Finish()
	r := c.Report()
	st := row(t, r, "g", "s")
	if r.NewEpochs != 1 || st.NewEpochs != 1 || len(st.Epochs) != 2 || st.Received != 6 {
		t.Fatalf("new epochs %d/%d, epochs %d, received %d", r.NewEpochs, st.NewEpochs, len(st.Epochs), st.Received)
	}
	if st.Epochs[0].Epoch != e1 || st.Epochs[0].LastSeq != 4 || st.Epochs[1].Epoch != e2 || st.Epochs[1].LastSeq != 2 {
		t.Fatalf("epochs %+v", st.Epochs)
	}
	// A fifth epoch retires the first, its hole judged and kept.
	feed(c, ev("g", "s", e1, 7))
	for _, ep := range []string{"e3", "e4", "e5"} {
		feed(c, ev("g", "s", ep, 1))
	}
	r = c.Report()
	st = row(t, r, "g", "s")
	if len(st.Epochs) != MaxEpochs || st.RetiredEpochs != 1 || st.NewEpochs != 4 || st.Missing != 2 || st.Received != 10 {
		t.Fatalf("after 5 epochs: %d tracked, %d retired, %d new, missing %d, received %d",
			len(st.Epochs), st.RetiredEpochs, st.NewEpochs, st.Missing, st.Received)
	}
}

func TestCheckerStartsMidStream(t *testing.T) {
	clk := newClock()
	c := newTestChecker(t, clk, 10*time.Second)
	feed(c, ev("g", "s", e1, 50), ev("g", "s", e1, 47)) // a resend that started earlier
	feed(c, ev("g", "s", e1, 48), ev("g", "s", e1, 49))
	clk.Add(11 * time.Second)
	feed(c, ev("g", "s", e1, 20)) // long after: not owed, a stale copy
	c.Finish()
	r := c.Report()
	wantCounts(t, r.Totals, Counts{Received: 4, Reordered: 3, Duplicates: 1})
	if e := r.Rows[0].Epochs[0]; e.FirstSeq != 47 || e.LastSeq != 50 {
		t.Fatalf("seq %d-%d", e.FirstSeq, e.LastSeq)
	}
}

func TestCheckerBounds(t *testing.T) {
	clk := newClock()
	c := newTestChecker(t, clk, time.Hour, func(c *Config) { c.MaxHoles = 2; c.MaxStreams = 2 })
	feed(c, ev("g", "s", e1, 1), ev("g", "s", e1, 3), ev("g", "s", e1, 5), ev("g", "s", e1, 7), ev("g", "s", e1, 9))
	feed(c, ev("g", "t", e1, 1), ev("g", "u", e1, 1)) // u: a third stream, untracked
	long := strings.Repeat("x", MaxNameBytes+1)
	feed(c, ev(long, "s", e1, 1), ev("g", long, e1, 1), ev("g", "s", long, 1), ev("g", "s", e1, MaxSeq+1))
	r := c.Report()
	st := row(t, r, "g", "s")
	// Four holes, at most two kept: the oldest judged early, then forgotten.
	if st.Missing != 2 || st.UnexplainedGaps != 2 || r.Pending != 2 || st.Epochs[0].Forgotten != 2 {
		t.Fatalf("missing %d, unexplained gaps %d, pending %d, forgotten %d", st.Missing, st.UnexplainedGaps, r.Pending, st.Epochs[0].Forgotten)
	}
	c.Finish()
	r = c.Report()
	if st := row(t, r, "g", "s"); st.Missing != 4 || st.UnexplainedGaps != 4 {
		t.Fatalf("after finish: missing %d, unexplained gaps %d", st.Missing, st.UnexplainedGaps)
	}
	if r.Untracked != 1 || r.Rejected != 4 || r.Streams != 2 {
		t.Fatalf("untracked %d, rejected %d, streams %d", r.Untracked, r.Rejected, r.Streams)
	}
}

func TestCheckerUnsequenced(t *testing.T) {
	c := newTestChecker(t, newClock(), time.Second)
	a, b := ev("g", "legacy", "", 1, noSeq), ev("g", "legacy", "", 2, noSeq)
	feed(c, a, b, a)
	c.Finish()
	wantCounts(t, counts(t, c, "g", "legacy"), Counts{Received: 2, Duplicates: 1, Unsequenced: 3})
}

func TestCheckerGapLargerThanSeq(t *testing.T) {
	c := newTestChecker(t, newClock(), time.Second)
	feed(c, ev("g", "s", e1, 3, gap(1<<60, "overflow", 5)))
	c.Finish()
	if got := counts(t, c, "g", "s"); got.Dropped != 2 || got.Missing != 0 {
		t.Fatalf("dropped %d missing %d: a gap is at most seq-1", got.Dropped, got.Missing)
	}
}

func TestCheckerPartition(t *testing.T) {
	p := Partition{Index: 0, Count: 2}
	var mine, theirs string
	for _, g := range []string{"a", "b", "c", "d", "e", "f"} {
		if p.Owns(g) && mine == "" {
			mine = g
		}
		if !p.Owns(g) && theirs == "" {
			theirs = g
		}
	}
	c := newTestChecker(t, newClock(), time.Second, func(c *Config) { c.Partition = p })
	feed(c, ev(mine, "s", e1, 1), ev(theirs, "s", e1, 1))
	r := c.Report()
	if r.Streams != 1 || r.Skipped != 1 || r.Rows[0].Gateway != mine || r.Partition != "0/2" {
		t.Fatalf("streams %d skipped %d partition %q", r.Streams, r.Skipped, r.Partition)
	}
	for _, bad := range []string{"2/2", "-1/2", "1", "a/b", "0/0"} {
		if _, err := ParsePartition(bad); err == nil {
			t.Errorf("ParsePartition(%q) accepted", bad)
		}
	}
}

func TestCheckerRepairRequests(t *testing.T) {
	clk := newClock()
	c := newTestChecker(t, clk, 10*time.Second, func(c *Config) { c.Repair = true; c.RepairAttempts = 2 })
	feed(c, ev("g", "s", e1, 1), ev("g", "s", e1, 5), ev("g", "t", e1, 1), ev("g", "t", e1, 4))
	if reqs := c.Tick(); len(reqs) != 0 {
		t.Fatalf("requests before the settle window: %v", reqs)
	}
	clk.Add(10 * time.Second)
	reqs := c.Tick()
	want := map[ResendRequest]bool{
		{Gateway: "g", Stream: "s", Epoch: e1, FromSeq: 2, ToSeq: 4}: true,
		{Gateway: "g", Stream: "t", Epoch: e1, FromSeq: 2, ToSeq: 3}: true,
	}
	if len(reqs) != 2 || !want[reqs[0]] || !want[reqs[1]] {
		t.Fatalf("requests %+v", reqs)
	}
	if reqs[0].Topic() != "g/cmd/ferry/resend" {
		t.Fatalf("topic %q", reqs[0].Topic())
	}
	// t is refused; s is asked once more after a settle window, then no more.
	c.Reply(&ResendReply{Gateway: "g", Stream: "t", Epoch: e1, FromSeq: 2, ToSeq: 3, Status: ReplyRefused, FirstSeq: 9})
	if reqs := c.Tick(); len(reqs) != 0 {
		t.Fatalf("requests again within the settle window: %v", reqs)
	}
	clk.Add(10 * time.Second)
	if reqs := c.Tick(); len(reqs) != 1 || reqs[0].Stream != "s" {
		t.Fatalf("second attempt: %+v", reqs)
	}
	feed(c, seqs("g", "s", e1, 2, 4, replay)...)
	clk.Add(10 * time.Second)
	if reqs := c.Tick(); len(reqs) != 0 {
		t.Fatalf("requests after the repair: %v", reqs)
	}
	c.Finish()
	wantCounts(t, counts(t, c, "g", "s"), Counts{Received: 5, Replays: 3, UnexplainedGaps: 1, Unexplained: 3, Repaired: 3, RepairRequests: 2})
	wantCounts(t, counts(t, c, "g", "t"), Counts{Received: 2, UnexplainedGaps: 1, Unexplained: 2, Missing: 2, RepairRequests: 1, RepairRefused: 1})
}

func TestCheckerLag(t *testing.T) {
	clk := newClock()
	c := newTestChecker(t, clk, time.Second)
	now := clk.Now()
	for i := uint64(1); i <= 100; i++ {
		d := 20 * time.Millisecond
		if i == 100 {
			d = 2 * time.Minute
		}
		feed(c, ev("g", "s", e1, i, at(now.Add(-d))))
	}
	feed(c, ev("g", "s", e1, 50, at(now.Add(-time.Hour)), replay)) // replays do not count
	r := c.Report()
	l := r.Rows[0].Lag
	if l.Count != 100 || l.P50 != 50*time.Millisecond || l.P99 != 50*time.Millisecond || l.Max != 2*time.Minute {
		t.Fatalf("lag %+v", l)
	}
	if r.Lag != l {
		t.Fatalf("fleet lag %+v, stream lag %+v", r.Lag, l)
	}
}

func TestCheckerUndecodable(t *testing.T) {
	c := newTestChecker(t, newClock(), time.Second)
	c.Handle([]byte("not json"))
	e := ev("g", "s", e1, 1)
	c.Handle(encodeJSON(&e))
	r := c.Report()
	if r.Messages != 2 || r.Undecodable != 1 || r.Totals.Received != 1 {
		t.Fatalf("messages %d undecodable %d received %d", r.Messages, r.Undecodable, r.Totals.Received)
	}
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"settle":    {Settle: -1},
		"labels":    {MetricsLabels: "pod"},
		"partition": {Partition: Partition{Index: 3, Count: 2}},
		"share":     {Share: "a/b"},
		"holes":     {MaxHoles: -1},
	} {
		if _, err := NewChecker(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New without URLs accepted")
	}
}
