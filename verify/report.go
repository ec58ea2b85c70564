package verify

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is a snapshot of a Checker.
type Report struct {
	// Messages counts the MQTT messages handled, Undecodable those that
	// could not be decoded, Envelopes the envelopes they held.
	Messages    uint64 `json:"messages"`
	Undecodable uint64 `json:"undecodable"`
	Envelopes   uint64 `json:"envelopes"`
	// Rejected counts envelopes with a gateway ID, stream or epoch over
	// MaxNameBytes or a seq over MaxSeq; Untracked those of new streams beyond MaxStreams;
	// Skipped those of gateways in other partitions.
	Rejected  uint64 `json:"rejected"`
	Untracked uint64 `json:"untracked"`
	Skipped   uint64 `json:"skipped"`
	// Partition is "i/N", or empty.
	Partition string `json:"partition,omitempty"`
	// Gateways and Streams count the gateways and (gateway, stream)
	// pairs seen; NewEpochs the epochs that followed another one.
	Gateways  int    `json:"gateways"`
	Streams   int    `json:"streams"`
	NewEpochs uint64 `json:"new_epochs"`
	// Totals sums every stream's counts.
	Totals Counts `json:"totals"`
	// Pending counts the events in holes not judged yet (within the
	// settle window).
	Pending uint64 `json:"pending"`
	// Lag summarises the fleet's lag.
	Lag Lag `json:"lag"`
	// Final is set once Finish was called: every hole is judged.
	Final bool `json:"final"`
	// Rows has one entry per (gateway, stream), sorted.
	Rows []StreamReport `json:"rows"`
}

// StreamReport is one (gateway, stream): the sums of its epochs (those
// retired included) and each tracked epoch.
type StreamReport struct {
	Gateway string `json:"gateway"`
	Stream  string `json:"stream"`
	Counts
	Pending       uint64 `json:"pending"`
	NewEpochs     uint64 `json:"new_epochs"`
	RetiredEpochs uint64 `json:"retired_epochs"`
	// Retired sums the counts of the retired epochs (see MaxEpochs).
	Retired Counts        `json:"retired"`
	Lag     Lag           `json:"lag"`
	Epochs  []EpochReport `json:"epochs"`
}

// EpochReport is one sequence space.
type EpochReport struct {
	Epoch string `json:"epoch"`
	// FirstSeq and LastSeq are the lowest and highest sequence numbers
	// seen (0: only unsequenced envelopes).
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Counts
	Pending uint64 `json:"pending"`
	// MissingRanges lists the unexplained holes still missing (at most
	// 16, oldest first); Forgotten counts missing events no longer
	// listed (beyond Config.MaxHoles).
	MissingRanges []Range   `json:"missing_ranges,omitempty"`
	Forgotten     uint64    `json:"forgotten,omitempty"`
	Lag           Lag       `json:"lag"`
	LastSeen      time.Time `json:"last_seen"`
}

// Range is the sequence numbers From to To, both included.
type Range struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
}

// String is "from-to", or the number alone for a range of one.
func (r Range) String() string {
	if r.From == r.To {
		return strconv.FormatUint(r.From, 10)
	}
	return strconv.FormatUint(r.From, 10) + "-" + strconv.FormatUint(r.To, 10)
}

// maxRangesListed bounds EpochReport.MissingRanges.
const maxRangesListed = 16

// OK reports whether no event is missing: no unexplained gap remains.
func (r *Report) OK() bool { return r.Totals.Missing == 0 }

// Report returns a snapshot of every stream.
func (c *Checker) Report() *Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := &Report{
		Messages: c.messages, Undecodable: c.undecodable, Envelopes: c.envelopes,
		Rejected: c.rejected, Untracked: c.untracked, Skipped: c.skipped,
		Partition: c.cfg.Partition.String(), Streams: len(c.streams), NewEpochs: c.newEpochs,
		Lag: lagOf(c.lag.n[:], c.lag.max), Final: c.finished,
	}
	gateways := map[string]bool{}
	r.Rows = make([]StreamReport, 0, len(c.streams))
	for _, st := range c.streams {
		gateways[st.gateway] = true
		row := StreamReport{Gateway: st.gateway, Stream: st.name, NewEpochs: st.newEpochs, RetiredEpochs: st.retiredN}
		row.Retired.add(&st.retired)
		row.Counts.add(&st.retired)
		var lag lagHist
		for _, sp := range st.epochs {
			er := sp.report()
			row.Counts.add(&er.Counts)
			row.Pending += er.Pending
			for i, k := range sp.lag.n {
				lag.n[i] += k
			}
			lag.max = max(lag.max, sp.lag.max)
			row.Epochs = append(row.Epochs, er)
		}
		row.Lag = lagOf(lag.n[:], lag.max)
		r.Totals.add(&row.Counts)
		r.Pending += row.Pending
		r.Rows = append(r.Rows, row)
	}
	r.Gateways = len(gateways)
	slices.SortFunc(r.Rows, func(a, b StreamReport) int {
		return cmp.Or(cmp.Compare(a.Gateway, b.Gateway), cmp.Compare(a.Stream, b.Stream))
	})
	return r
}

func (sp *space) report() EpochReport {
	er := EpochReport{Epoch: sp.epoch, Counts: sp.c, Forgotten: sp.forgotten, LastSeen: sp.last,
		Lag: lagOf(sp.lag.n[:], sp.lag.max)}
	er.DroppedBy = maps.Clone(sp.c.DroppedBy)
	if sp.hi > 0 {
		er.FirstSeq, er.LastSeq = sp.base, sp.hi-1
	}
	for _, h := range sp.open {
		er.Pending += h.to - h.from
	}
	lost := slices.Clone(sp.lost)
	slices.SortFunc(lost, func(a, b hole) int { return cmp.Compare(a.from, b.from) })
	for i, h := range lost {
		if i == maxRangesListed {
			break
		}
		er.MissingRanges = append(er.MissingRanges, Range{h.from, h.to - 1})
	}
	return er
}

// WriteJSON writes r as one JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// TextOptions select what WriteText lists.
type TextOptions struct {
	// ProblemsOnly lists only the streams with missing or pending events.
	ProblemsOnly bool
	// MaxRows bounds the streams listed (0: all).
	MaxRows int
}

// WriteText writes r as a table, one line per (gateway, stream, epoch),
// the missing ranges, the totals and the verdict ("result: ok" once the
// report is final, "result: FAIL" whenever events are missing).
func (r *Report) WriteText(w io.Writer, o TextOptions) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GATEWAY\tSTREAM\tEPOCH\tSEQ\tRECEIVED\tDUP\tREPLAY\tREORDER\tDROPPED\tUNEXPLAINED\tMISSING\tPENDING\tREPAIRED\tLAG_P50\tLAG_P99")
	var missing []string
	listed := 0
	for i := range r.Rows {
		row := &r.Rows[i]
		if o.ProblemsOnly && row.Missing == 0 && row.Pending == 0 {
			continue
		}
		if o.MaxRows > 0 && listed == o.MaxRows {
			fmt.Fprintf(tw, "…\t(more)\n")
			break
		}
		listed++
		if row.RetiredEpochs > 0 {
			fmt.Fprintf(tw, "%s\t%s\t(%d retired)\t\t%s\n", row.Gateway, row.Stream, row.RetiredEpochs, countCells(&row.Retired, 0, nil))
		}
		for j := range row.Epochs {
			e := &row.Epochs[j]
			seq := "-"
			if e.LastSeq > 0 {
				seq = Range{e.FirstSeq, e.LastSeq}.String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", row.Gateway, row.Stream, orDash(e.Epoch), seq, countCells(&e.Counts, e.Pending, &e.Lag))
			if len(e.MissingRanges) > 0 {
				rs := make([]string, len(e.MissingRanges))
				for k, m := range e.MissingRanges {
					rs[k] = m.String()
				}
				s := fmt.Sprintf("missing: %s/%s epoch %s: %s", row.Gateway, row.Stream, orDash(e.Epoch), strings.Join(rs, ","))
				if e.Forgotten > 0 {
					s += fmt.Sprintf(" and %d more events", e.Forgotten)
				}
				missing = append(missing, s)
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, m := range missing {
		fmt.Fprintln(w, m)
	}
	t := &r.Totals
	fmt.Fprintf(w, "totals: %d gateways, %d streams, %d messages (%d undecodable), received %d, duplicates %d, replays %d, reordered %d, dropped %d%s, unexplained gaps %d (%d events), missing %d, repaired %d, new epochs %d, pending %d",
		r.Gateways, r.Streams, r.Messages, r.Undecodable, t.Received, t.Duplicates, t.Replays, t.Reordered,
		t.Dropped, reasonsText(t.DroppedBy), t.UnexplainedGaps, t.Unexplained, t.Missing, t.Repaired, r.NewEpochs, r.Pending)
	if r.Lag.Count > 0 {
		fmt.Fprintf(w, ", lag p50 %s p99 %s max %s", lagText(r.Lag.P50), lagText(r.Lag.P99), r.Lag.Max.Round(time.Millisecond))
	}
	if t.Unsequenced > 0 {
		fmt.Fprintf(w, ", unsequenced %d", t.Unsequenced)
	}
	if r.Rejected+r.Untracked+r.Skipped > 0 {
		fmt.Fprintf(w, ", rejected %d, untracked %d, skipped %d (other partitions)", r.Rejected, r.Untracked, r.Skipped)
	}
	if t.RepairRequests > 0 {
		fmt.Fprintf(w, ", repair requests %d (%d refused)", t.RepairRequests, t.RepairRefused)
	}
	fmt.Fprintln(w)
	var err error
	switch {
	case !r.OK():
		_, err = fmt.Fprintf(w, "result: FAIL: %d events missing in unexplained gaps\n", t.Missing)
	case r.Final:
		_, err = fmt.Fprintln(w, "result: ok: no unexplained gap")
	}
	return err
}

func countCells(c *Counts, pending uint64, lag *Lag) string {
	unexplained := "0"
	if c.UnexplainedGaps > 0 {
		unexplained = fmt.Sprintf("%d (%d events)", c.UnexplainedGaps, c.Unexplained)
	}
	p50, p99 := "-", "-"
	if lag != nil && lag.Count > 0 {
		p50, p99 = lagText(lag.P50), lagText(lag.P99)
	}
	return fmt.Sprintf("%d\t%d\t%d\t%d\t%d%s\t%s\t%d\t%d\t%d\t%s\t%s",
		c.Received, c.Duplicates, c.Replays, c.Reordered, c.Dropped, reasonsText(c.DroppedBy),
		unexplained, c.Missing, pending, c.Repaired, p50, p99)
}

// reasonsText is " (overflow 7, ttl 3)", reasons sorted; "" for none.
func reasonsText(m map[string]uint64) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// lagText is "≤250ms", or ">1d" beyond the last bucket.
func lagText(d time.Duration) string {
	if d < 0 {
		return ">1d"
	}
	return "≤" + d.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
