package uplink

import (
	"fmt"
	"slices"
	"time"
)

// Priorities and the data budget (Config.Priorities, Config.Budget).
//
// Every stream has a priority, 0 the highest (Config.Priorities; a stream
// not listed has Config.DefaultPriority). When the window, the rate caps
// or the budget are scarce, fill gives the free window slots to the
// streams of the highest priority that have unsent events first, and to
// a lower priority only what they leave: a low-priority stream waits
// (starves) for as long as a higher one has a backlog, and only then.
// Within a priority the streams share the slots round-robin, and a
// stream's own order never changes.
//
// The budget counts the bytes the uplink puts on the wire in a period (a
// month from Budget.ResetDay at midnight in Budget.Location): for every
// publish, the MQTT PUBLISH packet (fixed header, topic, packet
// identifier, payload), its PUBACK (QoS 1) and, over TLS, the TLS 1.3
// record overhead of both (see wireBytes). A resent message counts again.
// Not counted: CONNECT/CONNACK, TLS handshakes, PINGREQ/PINGRESP,
// DISCONNECT, TCP/IP headers and the downlink session; leave room for them
// in Budget.Bytes (on a link that reconnects rarely they are a few kB a
// day: a TLS handshake is 5 to 10 kB, a ping 2 packets per keepalive).
//
// The rule: a stream of priority p may start a message while the period's
// usage is below Bytes × (1 − Reserve[p]) (priorities past the end of
// Reserve take its last entry; Reserve[0] is 0, so priority 0 may spend the
// whole budget). A message started below that line is sent whole, so the
// line can be passed by at most one message. A stream held by the budget
// keeps its events in the queue: the budget never drops anything (the
// queue's own bounds still do); they go when the next period starts.
// Lower priorities are not paced within the period: they may spend their
// share early (Config.BytesPerSecond paces the whole link).
// The isolation of a suspected poison (poison.go) sends its message and
// probes whatever the budget says: it is counted, not held, and is rare.
// A clock set back to an earlier period stays in the current one (see
// roll), so a board without a real-time clock does not lose the month's
// count before NTP sets its clock.

// DefaultPriority is the priority of a stream Config.Priorities does not
// list when Config.DefaultPriority is not set: "normal", between alerts
// (0) and bulk data (2).
const DefaultPriority = 1

// MaxPriority is the lowest priority (the largest number) a stream may have.
const MaxPriority = 9

// DefaultReserve is Budget.Reserve when it is empty: priority 1 leaves the
// last 10% of the budget to priority 0, priority 2 and below the last 30%
// to priorities 0 and 1.
var DefaultReserve = []float64{0, 0.1, 0.3}

// budgetRecheck is how often a publisher whose streams the budget holds
// looks at the clock again (the period also ends on a timer): a board
// without a real-time clock may have its wall clock set long after start.
const budgetRecheck = time.Minute

// Budget is a data budget for the uplink (all of its endpoints).
type Budget struct {
	// Bytes is what the link may carry in a period (see budget.go for
	// what counts); 0 turns the budget off.
	Bytes uint64
	// ResetDay is the day of the month a period starts, at midnight in
	// Location (1..28; default 1).
	ResetDay int
	// Location is the time zone of the period boundaries (default UTC).
	Location *time.Location
	// Reserve[p] is the share of Bytes, in [0, 1), that priority p leaves
	// to the higher priorities: it may send while usage < Bytes × (1 −
	// Reserve[p]). Reserve[0] must be 0 and the entries must not decrease;
	// priorities past the end take the last entry. Empty means
	// DefaultReserve.
	Reserve []float64
	// Store keeps the usage across restarts; nil means the Queue, when it
	// implements BudgetStore, else memory only (a restart starts the
	// period's count at zero).
	Store BudgetStore
}

// BudgetStore keeps the budget's usage across restarts. *buffer.Log
// implements it, in its file. Implementations must be safe for concurrent
// use.
type BudgetStore interface {
	// LoadUsage returns the usage last saved for link: the start of its
	// period (Unix seconds) and its bytes; zeros when none was saved.
	LoadUsage(link string) (periodStart int64, bytes uint64, err error)
	// SaveUsage records the usage of link in the period starting at
	// periodStart. It must not wait for disk I/O: the store commits it
	// with its next commit, so a crash loses at most the usage of one
	// commit interval (buffer.Options.AckInterval for *buffer.Log).
	SaveUsage(link string, periodStart int64, bytes uint64) error
}

// BudgetLink is the name the Forwarder saves its usage under.
const BudgetLink = "uplink"

// BudgetStatus is the budget's state, in Status.Budget.
type BudgetStatus struct {
	// Bytes is the budget of a period; Used what the period has carried
	// (see budget.go for what counts); Remaining what is left (0 when
	// Used passed Bytes).
	Bytes, Used, Remaining uint64
	// PeriodStart and PeriodEnd bound the current period.
	PeriodStart, PeriodEnd time.Time
	// Held lists the priorities the budget holds now (their streams' events
	// wait in the queue for the next period), highest first.
	Held []int
	// HeldStreams lists the streams with unsent events that the budget
	// holds, as of the last time the publisher looked.
	HeldStreams []string
}

// normalizeBudget checks b and applies its defaults.
func normalizeBudget(b Budget) (Budget, error) {
	if b.ResetDay == 0 {
		b.ResetDay = 1
	}
	if b.ResetDay < 1 || b.ResetDay > 28 {
		return b, fmt.Errorf("%w: Budget.ResetDay %d (1..28)", ErrConfig, b.ResetDay)
	}
	if b.Location == nil {
		b.Location = time.UTC
	}
	if len(b.Reserve) == 0 {
		b.Reserve = DefaultReserve
	}
	b.Reserve = slices.Clone(b.Reserve)
	if b.Reserve[0] != 0 {
		return b, fmt.Errorf("%w: Budget.Reserve[0] %v (priority 0 may spend the whole budget: 0)", ErrConfig, b.Reserve[0])
	}
	for i, r := range b.Reserve {
		if !(r >= 0 && r < 1) || (i > 0 && r < b.Reserve[i-1]) {
			return b, fmt.Errorf("%w: Budget.Reserve[%d] %v (in [0, 1), not less than the entry before)", ErrConfig, i, r)
		}
	}
	return b, nil
}

// budget is the publisher's view of the data budget. Its fields are
// guarded by Forwarder.mu except where noted; only the publisher changes
// them.
type budget struct {
	cfg         Budget
	store       BudgetStore // nil: memory only
	start       time.Time   // current period
	end         time.Time
	used        uint64
	held        []bool // per priority, as of the last check
	heldStreams []string
	// saveErr is logged once until a save succeeds again (publisher only).
	saveErr bool
}

// periodOf returns the budget period holding now: from the last ResetDay
// midnight in loc at or before now to the next one.
func periodOf(now time.Time, day int, loc *time.Location) (start, end time.Time) {
	t := now.In(loc)
	start = time.Date(t.Year(), t.Month(), day, 0, 0, 0, 0, loc)
	if start.After(t) {
		start = time.Date(t.Year(), t.Month()-1, day, 0, 0, 0, 0, loc)
	}
	end = time.Date(start.Year(), start.Month()+1, day, 0, 0, 0, 0, loc)
	return start, end
}

// limit is the usage below which priority p may start a message.
func (b *budget) limit(p int) uint64 {
	r := b.cfg.Reserve[min(p, len(b.cfg.Reserve)-1)]
	return uint64(float64(b.cfg.Bytes) * (1 - r))
}

// allowance is how many bytes priority p may still start messages with
// (0: held).
func (b *budget) allowance(p int) uint64 {
	if l := b.limit(p); b.used < l {
		return l - b.used
	}
	return 0
}

// roll moves to the period holding now, starting its count at zero, when
// that period is later than the current one. It reports whether the
// period changed. A clock set back to an earlier period (a board without
// a real-time clock, before NTP) stays in the current period, so that
// neither its usage nor the saved one is lost. The caller holds
// Forwarder.mu.
func (b *budget) roll(now time.Time) bool {
	if !b.start.IsZero() && now.Before(b.end) {
		return false
	}
	b.start, b.end = periodOf(now, b.cfg.ResetDay, b.cfg.Location)
	b.used = 0
	return true
}

// resume adopts the usage saved for the period starting at start (Unix
// seconds): the current period's, or a later one's when the clock is
// behind it. The caller holds Forwarder.mu.
func (b *budget) resume(start int64, used uint64) {
	s := time.Unix(start, 0)
	switch {
	case s.Equal(b.start):
		b.used = max(b.used, used)
	case s.After(b.start):
		// The clock is behind the saved period: count on in it, unless it
		// was saved under another reset_day or location.
		if ps, pe := periodOf(s, b.cfg.ResetDay, b.cfg.Location); ps.Equal(s) {
			b.start, b.end, b.used = ps, pe, used
		}
	}
}

// wireBytes estimates the bytes one publish of a payload of n bytes to a
// topic of t bytes puts on the wire, both ways: the MQTT 3.1.1 PUBLISH
// (fixed header with its remaining length, topic length and topic, packet
// identifier at QoS 1, payload), the PUBACK at QoS 1 (4 bytes) and, over
// TLS, each TLS 1.3 record's 22 bytes (5 header, 1 content type, 16 AEAD
// tag; one record per 16 KiB of the packet, one per PUBACK). This matches
// what internal/bench/wire measures at a proxy (README, "Wire size":
// 22 bytes more per message up and per PUBACK down over TLS); TLS 1.2 with
// AES-GCM costs 7 bytes more per record, not counted.
func wireBytes(t, n int, qos byte, tls bool) uint64 {
	rem := 2 + t + n
	if qos > 0 {
		rem += 2
	}
	pkt := 1 + varintLen(rem) + rem
	total := pkt
	if tls {
		total += tlsRecordOverhead * ((pkt + tlsMaxRecord - 1) / tlsMaxRecord)
	}
	if qos > 0 {
		total += 4
		if tls {
			total += tlsRecordOverhead
		}
	}
	return uint64(total)
}

const (
	tlsRecordOverhead = 22
	tlsMaxRecord      = 16384
)

// varintLen is the length of MQTT's variable byte integer for n.
func varintLen(n int) int {
	l := 1
	for n >= 128 {
		n /= 128
		l++
	}
	return l
}

// budgetRoom is how many bytes priority p may still start messages
// with, less spent (publisher).
func (f *Forwarder) budgetRoom(p int, spent uint64) uint64 {
	f.mu.Lock()
	a := f.budget.allowance(p)
	f.mu.Unlock()
	if a <= spent {
		return 0
	}
	return a - spent
}

// maxWire is the budget's estimate of the largest message.
func (f *Forwarder) maxWire() uint64 {
	return wireBytes(f.cfg.MaxTopicBytes, f.cfg.BatchMaxBytes, f.cfg.QoS, true)
}

// loadBudget reads the usage saved for the current period (publisher, at
// the start of Run).
func (f *Forwarder) loadBudget() {
	b := f.budget
	if b == nil {
		return
	}
	f.mu.Lock()
	b.roll(f.cfg.Now())
	f.mu.Unlock()
	if b.store == nil {
		return
	}
	ps, used, err := b.store.LoadUsage(BudgetLink)
	if err != nil {
		f.setError(fmt.Errorf("%w: load the budget's usage: %w", ErrQueue, err))
		f.log.Error("cannot load the data budget's usage; counting from zero", "err", err)
		return
	}
	if ps != 0 {
		f.mu.Lock()
		b.resume(ps, used)
		f.mu.Unlock()
	}
}

// budgetCheck rolls the period over when it ended and records which
// priorities the budget holds (publisher).
func (f *Forwarder) budgetCheck() {
	b := f.budget
	if b == nil {
		return
	}
	now := f.cfg.Now()
	f.mu.Lock()
	rolled := b.roll(now)
	first, changed := -1, false // the highest priority held, and whether that changed
	for p := range b.held {
		h := b.allowance(p) == 0
		changed = changed || h != b.held[p]
		b.held[p] = h
		if h && first < 0 {
			first = p
		}
	}
	used := b.used
	start := b.start
	f.mu.Unlock()
	if rolled {
		f.log.Info("data budget period started", "start", start, "bytes", b.cfg.Bytes)
		f.saveUsage(start, used)
	}
	if changed {
		if first >= 0 {
			f.log.Warn("data budget: streams of this priority and lower wait for the next period",
				"priority", first, "used", used, "bytes", b.cfg.Bytes, "period_end", b.end)
		} else {
			f.log.Info("data budget: no priority held", "used", used, "bytes", b.cfg.Bytes)
		}
	}
}

// spend counts a publish of r and saves the usage (publisher).
func (f *Forwarder) spend(c *conn, r *record) {
	b := f.budget
	if b == nil {
		return
	}
	n := wireBytes(len(r.topicS), len(r.msg), f.cfg.QoS, c.tls)
	f.mu.Lock()
	b.used += n
	used, start := b.used, b.start
	f.mu.Unlock()
	f.saveUsage(start, used)
}

func (f *Forwarder) saveUsage(start time.Time, used uint64) {
	b := f.budget
	if b.store == nil {
		return
	}
	if err := b.store.SaveUsage(BudgetLink, start.Unix(), used); err != nil {
		if !b.saveErr {
			b.saveErr = true
			f.log.Error("cannot save the data budget's usage", "err", err)
		}
		return
	}
	b.saveErr = false
}

// budgetHeld reports whether the budget holds st (publisher).
func (f *Forwarder) budgetHeld(st *streamState) bool {
	b := f.budget
	if b == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return b.held[st.prio]
}

// noteHeld records the streams with unsent events the budget holds, for
// Status (publisher).
func (f *Forwarder) noteHeld() {
	b := f.budget
	if b == nil {
		return
	}
	var names []string
	for _, st := range f.active {
		if st.dirty && f.budgetHeld(st) {
			names = append(names, st.name)
		}
	}
	f.mu.Lock()
	if !slices.Equal(names, b.heldStreams) {
		b.heldStreams = names
	}
	f.mu.Unlock()
}

// budgetWait returns a channel that fires when the publisher should look
// at the budget again: at the end of the period, or after budgetRecheck,
// whichever is sooner; nil when the budget holds nothing.
func (f *Forwarder) budgetWait() <-chan time.Time {
	b := f.budget
	if b == nil {
		return nil
	}
	f.mu.Lock()
	held := len(b.heldStreams) > 0
	end := b.end
	f.mu.Unlock()
	if !held {
		return nil
	}
	d := min(max(end.Sub(f.cfg.Now()), 0), f.budgetRecheck)
	if f.budgetT == nil {
		f.budgetT = time.NewTimer(d)
	} else {
		f.budgetT.Stop()
		f.budgetT.Reset(d)
	}
	return f.budgetT.C
}

// budgetStatus returns the budget's state; the caller holds f.mu.
func (f *Forwarder) budgetStatus() *BudgetStatus {
	b := f.budget
	if b == nil {
		return nil
	}
	s := &BudgetStatus{Bytes: b.cfg.Bytes, Used: b.used, PeriodStart: b.start, PeriodEnd: b.end,
		HeldStreams: slices.Clone(b.heldStreams)}
	if b.used < b.cfg.Bytes {
		s.Remaining = b.cfg.Bytes - b.used
	}
	for p, h := range b.held {
		if h {
			s.Held = append(s.Held, p)
		}
	}
	return s
}
