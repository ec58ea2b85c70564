package verify

import (
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/ferrygw/ferry/event"
)

// Counts are a sequence space's (or a sum of them) tallies. See the
// package doc for the exact meaning of each.
type Counts struct {
	// Received counts events received for the first time: one per
	// sequence number (per event ID when unsequenced), whichever copy came
	// first, replays that filled a hole included.
	Received uint64 `json:"received"`
	// Duplicates counts further copies of events already received, not
	// marked replay.
	Duplicates uint64 `json:"duplicates"`
	// Replays counts envelopes marked replay (new or not).
	Replays uint64 `json:"replays"`
	// Reordered counts events that arrived after a later event of their
	// stream and filled its hole (replays excluded).
	Reordered uint64 `json:"reordered"`
	// Dropped is the sum of the announced gaps; DroppedBy splits it by
	// reason.
	Dropped   uint64            `json:"dropped"`
	DroppedBy map[string]uint64 `json:"dropped_by,omitempty"`
	// UnexplainedGaps counts holes judged unexplained (still open after
	// the settle window, or at the end); Unexplained the events they
	// held when judged.
	UnexplainedGaps uint64 `json:"unexplained_gaps"`
	Unexplained     uint64 `json:"unexplained"`
	// Missing counts the events of unexplained holes that are still
	// missing: what makes the run fail.
	Missing uint64 `json:"missing"`
	// Repaired counts events of unexplained holes that arrived later (a
	// resend request answered, or a very late delivery).
	Repaired uint64 `json:"repaired"`
	// RepairRequests counts the resend requests sent; RepairRefused the
	// ones a gateway refused (events no longer retained).
	RepairRequests uint64 `json:"repair_requests"`
	RepairRefused  uint64 `json:"repair_refused"`
	// Unsequenced counts envelopes without a sequence number (checked for
	// duplicate IDs only).
	Unsequenced uint64 `json:"unsequenced"`
}

func (c *Counts) add(o *Counts) {
	c.Received += o.Received
	c.Duplicates += o.Duplicates
	c.Replays += o.Replays
	c.Reordered += o.Reordered
	c.Dropped += o.Dropped
	for r, n := range o.DroppedBy {
		if c.DroppedBy == nil {
			c.DroppedBy = map[string]uint64{}
		}
		c.DroppedBy[r] += n
	}
	c.UnexplainedGaps += o.UnexplainedGaps
	c.Unexplained += o.Unexplained
	c.Missing += o.Missing
	c.Repaired += o.Repaired
	c.RepairRequests += o.RepairRequests
	c.RepairRefused += o.RepairRefused
	c.Unsequenced += o.Unsequenced
}

// hole is a run of missing sequence numbers [from, to).
type hole struct {
	from, to uint64
	since    time.Time // when it opened
	asked    time.Time // last resend request
	tries    int       // resend requests sent
	refused  bool      // a gateway refused to resend it
}

// cut removes [a, b) from hs and returns the list and how many numbers it
// removed. A hole split in two keeps its state in both halves.
func cut(hs []hole, a, b uint64) ([]hole, uint64) {
	var removed uint64
	for i := 0; i < len(hs); {
		h := &hs[i]
		if h.to <= a || h.from >= b {
			i++
			continue
		}
		lo, hi := max(h.from, a), min(h.to, b)
		removed += hi - lo
		switch {
		case lo == h.from && hi == h.to:
			hs = slices.Delete(hs, i, i+1)
		case lo == h.from:
			h.from = hi
			i++
		case hi == h.to:
			h.to = lo
			i++
		default:
			right := *h
			right.from = hi
			h.to = lo
			hs = slices.Insert(hs, i+1, right)
			i += 2
		}
	}
	return hs, removed
}

// MaxSeq is the largest sequence number taken; an envelope with a larger
// one is rejected (a buffer offset never gets there).
const MaxSeq = 1 << 62

// idWindow is how many recent event IDs an unsequenced space remembers.
const idWindow = 128

// space is one sequence space: a (gateway, stream, epoch).
type space struct {
	epoch       string
	base, hi    uint64 // lowest and highest+1 sequence numbers seen; hi 0: none yet
	first, last time.Time
	open        []hole // not yet judged
	lost        []hole // judged unexplained, still missing
	forgotten   uint64 // unexplained events no longer tracked (MaxHoles)
	c           Counts
	lag         lagHist
	ids         *[idWindow]event.ID // unsequenced: the last IDs, a ring
	idNext      int
}

// stream is one (gateway, stream): its epochs, the newest last.
type stream struct {
	gateway, name string
	epochs        []*space
	retired       Counts // sums of retired epochs
	retiredN      uint64
	newEpochs     uint64
}

type streamKey struct{ gateway, stream string }

// Checker checks the sequence numbers of a fleet's streams. It is safe
// for concurrent use: Handle and Observe (one message's envelopes are
// observed together), Tick, Finish, Report and the metrics take one
// mutex.
type Checker struct {
	cfg Config
	log *slog.Logger

	mu          sync.Mutex
	streams     map[streamKey]*stream
	spaces      int
	messages    uint64
	undecodable uint64
	envelopes   uint64
	rejected    uint64
	untracked   uint64
	skipped     uint64
	newEpochs   uint64
	lag         lagTotal
	finished    bool
}

// NewChecker returns a Checker for cfg's checker fields (see Config).
func NewChecker(cfg Config) (*Checker, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	return &Checker{cfg: cfg, log: cfg.Logger, streams: map[streamKey]*stream{}}, nil
}

// Handle decodes one message's payload with Config.Decode and observes
// its envelopes; an undecodable message is counted and otherwise ignored.
func (c *Checker) Handle(payload []byte) {
	envs, err := c.cfg.Decode(payload)
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.messages++
	if err != nil {
		c.undecodable++
		return
	}
	for i := range envs {
		c.observe(&envs[i], now)
	}
}

// Observe checks envelopes that came in one message.
func (c *Checker) Observe(envs ...Envelope) {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.messages++
	for i := range envs {
		c.observe(&envs[i], now)
	}
}

func (c *Checker) observe(e *Envelope, now time.Time) {
	c.envelopes++
	if len(e.Gateway) > MaxNameBytes || len(e.Event.Stream) > MaxNameBytes || len(e.Epoch) > MaxNameBytes || e.Seq > MaxSeq {
		c.rejected++
		return
	}
	if !c.cfg.Partition.Owns(e.Gateway) {
		c.skipped++
		return
	}
	sp := c.space(e, now)
	if sp == nil {
		c.untracked++
		return
	}
	sp.last = now
	if e.Replay {
		sp.c.Replays++
	}
	if e.Seq == 0 {
		c.unsequenced(sp, e, now)
		return
	}
	s := e.Seq
	var n uint64 // announced drops right before s
	if e.Gap != nil {
		n = min(e.Gap.Dropped, s-1)
	}
	switch {
	case sp.hi == 0:
		sp.base, sp.hi = s, s+1
		c.fresh(sp, e, n, now)
	case s >= sp.hi:
		if lo := s - n; lo > sp.hi {
			c.addHole(sp, sp.hi, lo, now)
		}
		sp.hi = s + 1
		c.fresh(sp, e, n, now)
	case s < sp.base:
		// Older than anything seen: within the settle window of the
		// stream's first sighting the checker started mid-stream and an
		// earlier event came late; the numbers between are owed.
		if e.Replay || now.Sub(sp.first) > c.cfg.Settle {
			if !e.Replay {
				sp.c.Duplicates++
			}
			return
		}
		if s+1 < sp.base {
			c.addHole(sp, s+1, sp.base, now)
		}
		sp.base = s
		sp.c.Reordered++
		c.fresh(sp, e, n, now)
	default:
		var got uint64
		if sp.open, got = cut(sp.open, s, s+1); got == 1 {
			if !e.Replay {
				sp.c.Reordered++
			}
			c.fresh(sp, e, n, now)
			return
		}
		if sp.lost, got = cut(sp.lost, s, s+1); got == 1 {
			sp.c.Missing--
			sp.c.Repaired++
			c.fresh(sp, e, n, now)
			return
		}
		if !e.Replay {
			sp.c.Duplicates++
		}
		if n > 0 {
			c.explainLate(sp, e, n)
		}
	}
}

// explainLate applies the gap a further copy of an event announces: the
// first copy may have announced less (the buffer dropped events between
// the two sends, before the cloud acknowledged them). The holes it
// explains count as dropped; their reasons are taken from the
// announcement's, in name order, as far as they go.
func (c *Checker) explainLate(sp *space, e *Envelope, n uint64) {
	a := e.Seq - n
	var open, lost uint64
	sp.open, open = cut(sp.open, a, e.Seq)
	sp.lost, lost = cut(sp.lost, a, e.Seq)
	sp.c.Missing -= lost
	left := open + lost
	if left == 0 {
		return
	}
	sp.c.Dropped += left
	for _, r := range slices.Sorted(maps.Keys(e.Gap.Reasons)) {
		k := min(e.Gap.Reasons[r], left)
		if k > 0 {
			c.addReason(sp, r, k)
			left -= k
		}
	}
	if left > 0 {
		c.addReason(sp, "other", left)
	}
}

// addReason adds k drops for reason r, keeping at most 16 reasons (the
// rest go to "other") of at most 64 bytes.
func (c *Checker) addReason(sp *space, r string, k uint64) {
	if sp.c.DroppedBy == nil {
		sp.c.DroppedBy = map[string]uint64{}
	}
	if len(r) > 64 || (len(sp.c.DroppedBy) >= maxReasons && sp.c.DroppedBy[r] == 0) {
		r = "other"
	}
	sp.c.DroppedBy[r] += k
}

// fresh records the first copy of event e at sequence number e.Seq, which
// announces n drops before it: the drops are counted and explain the
// numbers [e.Seq-n, e.Seq) wherever they were owed.
func (c *Checker) fresh(sp *space, e *Envelope, n uint64, now time.Time) {
	sp.c.Received++
	if !e.Replay && !e.Event.Time.IsZero() {
		d := now.Sub(e.Event.Time)
		sp.lag.add(d)
		c.lag.add(d)
	}
	if n == 0 {
		return
	}
	sp.c.Dropped += n
	var sum uint64
	for r, k := range e.Gap.Reasons {
		c.addReason(sp, r, k)
		sum += k
	}
	if sum < n {
		c.addReason(sp, "unspecified", n-sum)
	}
	a := e.Seq - n
	sp.open, _ = cut(sp.open, a, e.Seq)
	var late uint64
	sp.lost, late = cut(sp.lost, a, e.Seq)
	sp.c.Missing -= late
}

// addHole opens the hole [from, to), keeping at most MaxHoles: beyond,
// the oldest open hole is judged at once, or the oldest unexplained one
// forgotten (its events stay missing).
func (c *Checker) addHole(sp *space, from, to uint64, now time.Time) {
	sp.open = append(sp.open, hole{from: from, to: to, since: now})
	for len(sp.open)+len(sp.lost) > c.cfg.MaxHoles {
		if len(sp.lost) > 0 {
			sp.forgotten += sp.lost[0].to - sp.lost[0].from
			sp.lost = slices.Delete(sp.lost, 0, 1)
			continue
		}
		c.judge(sp, 0)
	}
}

// judge moves open hole i to the unexplained ones.
func (c *Checker) judge(sp *space, i int) {
	h := sp.open[i]
	sp.open = slices.Delete(sp.open, i, i+1)
	n := h.to - h.from
	sp.c.UnexplainedGaps++
	sp.c.Unexplained += n
	sp.c.Missing += n
	sp.lost = append(sp.lost, h)
}

func (c *Checker) unsequenced(sp *space, e *Envelope, now time.Time) {
	sp.c.Unsequenced++
	if sp.ids == nil {
		sp.ids = new([idWindow]event.ID)
	}
	if !e.Event.ID.IsZero() {
		for _, id := range sp.ids {
			if id == e.Event.ID {
				if !e.Replay {
					sp.c.Duplicates++
				}
				return
			}
		}
		sp.ids[sp.idNext] = e.Event.ID
		sp.idNext = (sp.idNext + 1) % idWindow
	}
	c.fresh(sp, e, 0, now)
}

// space returns e's sequence space, creating it (and retiring the oldest
// epoch of its stream when MaxEpochs are tracked), or nil when
// MaxStreams spaces are tracked.
func (c *Checker) space(e *Envelope, now time.Time) *space {
	st := c.streams[streamKey{e.Gateway, e.Event.Stream}]
	if st != nil {
		// The newest epoch first: it is almost always the one.
		for i := len(st.epochs) - 1; i >= 0; i-- {
			if st.epochs[i].epoch == e.Epoch {
				return st.epochs[i]
			}
		}
	}
	if c.spaces >= c.cfg.MaxStreams && (st == nil || len(st.epochs) < MaxEpochs) {
		return nil
	}
	if st == nil {
		st = &stream{gateway: e.Gateway, name: e.Event.Stream}
		c.streams[streamKey{e.Gateway, e.Event.Stream}] = st
	} else {
		st.newEpochs++
		c.newEpochs++
		c.log.Info("new epoch", "gateway", e.Gateway, "stream", e.Event.Stream, "epoch", e.Epoch)
	}
	if len(st.epochs) == MaxEpochs {
		old := st.epochs[0]
		for len(old.open) > 0 {
			c.judge(old, 0)
		}
		st.retired.add(&old.c)
		st.retiredN++
		st.epochs = slices.Delete(st.epochs, 0, 1)
		c.spaces--
	}
	sp := &space{epoch: e.Epoch, first: now}
	st.epochs = append(st.epochs, sp)
	c.spaces++
	return sp
}

// Tick judges the holes open for the settle window and, with
// Config.Repair, returns the resend requests due (at most 1,000 a call;
// the rest come with the next calls). The Verifier calls it a few times
// per settle window.
func (c *Checker) Tick() []ResendRequest {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	var reqs []ResendRequest
	for _, st := range c.streams {
		for _, sp := range st.epochs {
			for i := 0; i < len(sp.open); {
				if now.Sub(sp.open[i].since) >= c.cfg.Settle {
					c.logGap(st, sp, sp.open[i])
					c.judge(sp, i)
					continue
				}
				i++
			}
			if c.cfg.Repair && len(reqs) < maxRepairsPerTick {
				reqs = c.repairs(st, sp, now, reqs)
			}
		}
	}
	return reqs
}

func (c *Checker) logGap(st *stream, sp *space, h hole) {
	c.log.Warn("unexplained gap", "gateway", st.gateway, "stream", st.name, "epoch", sp.epoch,
		"from_seq", h.from, "to_seq", h.to-1, "events", h.to-h.from)
}

// repairs appends the resend requests due for sp's unexplained holes.
func (c *Checker) repairs(st *stream, sp *space, now time.Time, reqs []ResendRequest) []ResendRequest {
	for i := range sp.lost {
		h := &sp.lost[i]
		if h.refused || h.tries >= c.cfg.RepairAttempts || (h.tries > 0 && now.Sub(h.asked) < c.cfg.Settle) {
			continue
		}
		if len(reqs) >= maxRepairsPerTick {
			break
		}
		h.tries++
		h.asked = now
		sp.c.RepairRequests++
		reqs = append(reqs, ResendRequest{Gateway: st.gateway, Stream: st.name, Epoch: sp.epoch, FromSeq: h.from, ToSeq: h.to - 1})
	}
	return reqs
}

// Reply records a gateway's answer to a resend request. A refusal, or an
// answer whose FirstSeq is after FromSeq, counts as refused: the holes
// the gateway no longer has are asked for no more (they stay missing).
func (c *Checker) Reply(r *ResendReply) {
	to := r.ToSeq
	switch {
	case r.Status == ReplyRefused:
	case r.FirstSeq > r.FromSeq:
		to = min(to, r.FirstSeq-1)
	default:
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.streams[streamKey{r.Gateway, r.Stream}]
	if st == nil {
		return
	}
	for _, sp := range st.epochs {
		if sp.epoch != r.Epoch {
			continue
		}
		sp.c.RepairRefused++
		for i := range sp.lost {
			if h := &sp.lost[i]; h.from <= to && h.to > r.FromSeq {
				h.refused = true
			}
		}
	}
}

// Finish judges every open hole, settled or not: the end of a run. Later
// envelopes are still counted (a late one counts as repaired).
func (c *Checker) Finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.finished = true
	for _, st := range c.streams {
		for _, sp := range st.epochs {
			for len(sp.open) > 0 {
				c.logGap(st, sp, sp.open[0])
				c.judge(sp, 0)
			}
		}
	}
}
