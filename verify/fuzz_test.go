package verify

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// FuzzHandle: any message, decoded by the default decoder
// (uplink.DecodeEnvelopes, fuzzed on its own by uplink.FuzzDecodeMessage),
// leaves the checker consistent and never panics it.
func FuzzHandle(f *testing.F) {
	e := ev("gw", "s", e1, 7, gap(3, "overflow", 2, "ttl", 1), replay, at(time.Unix(1700000000, 0)))
	f.Add(encodeJSON(&e))
	f.Add(encodeBatch(seqs("gw", "s", e1, 1, 3)...))
	f.Add([]byte(`{"id":"01M89A0T2RN20SXHG3J8FQ9SV6","gateway":"g","stream":"s","seq":18446744073709551615,"epoch":"","gap":{"dropped":18446744073709551615,"reasons":null}}`))
	f.Add([]byte(`[]`))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0})
	f.Add([]byte(`{"id":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, _ := NewChecker(Config{Settle: time.Second})
		c.Handle(b)
		c.Handle(b) // a second copy: duplicates, not new events
		c.Finish()
		checkInvariants(t, c)
	})
}

// FuzzDecodeReply: a reply from the network never panics the decoder.
func FuzzDecodeReply(f *testing.F) {
	f.Add([]byte(`{"id":"1","gateway":"g","stream":"s","epoch":"e","from_seq":1,"to_seq":2,"status":"refused","first_seq":9}`))
	f.Add([]byte(`{"status":"ok","from_seq":3,"to_seq":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeReply(b)
		if err != nil {
			if !errors.Is(err, ErrUndecodable) {
				t.Fatalf("error %v does not wrap ErrUndecodable", err)
			}
			return
		}
		if r.FromSeq > r.ToSeq || (r.Status != ReplyOK && r.Status != ReplyRefused) {
			t.Fatalf("accepted %+v", r)
		}
		c, _ := NewChecker(Config{Settle: time.Second, Repair: true})
		c.Observe(ev(r.Gateway, r.Stream, r.Epoch, 1), ev(r.Gateway, r.Stream, r.Epoch, 5))
		c.Finish()
		c.Reply(r)
		checkInvariants(t, c)
	})
}

// FuzzChecker drives a checker with arbitrary envelopes, clock steps,
// ticks, replies and the end of a run, four bytes an operation, and
// checks its invariants after each.
func FuzzChecker(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 1, 0, 0, 0, 0, 9, 3, 1})
	f.Add([]byte{0, 5, 0, 0, 0, 1, 0, 0, 0, 20, 0, 4, 2, 0, 0, 0, 3, 0, 0, 0, 0, 2, 0, 2})
	f.Add([]byte{0, 1, 0, 0, 0, 100, 0, 0, 1, 60, 0, 0, 4, 60, 10, 0, 0, 70, 0, 2})
	f.Fuzz(fuzzChecker)
}

func fuzzChecker(t *testing.T, b []byte) {
	{
		clk := newClock()
		c, err := NewChecker(Config{Settle: 10 * time.Second, MaxHoles: 4, MaxStreams: 6, Repair: true, RepairAttempts: 2, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		for len(b) >= 4 {
			op, x, y, z := b[0], b[1], b[2], b[3]
			b = b[4:]
			stream := fmt.Sprint("s", z&3)
			epoch := fmt.Sprint("e", (z>>2)&7)
			switch op % 6 {
			case 0, 5: // an envelope: seq x, gap y, flags z
				e := ev("g", stream, epoch, uint64(x))
				if y > 0 {
					e.Gap = &Gap{Dropped: uint64(y), Reasons: map[string]uint64{"overflow": uint64(y)}}
				}
				e.Replay = z&0x20 != 0
				if z&0x40 != 0 {
					e.Event.Time = clk.Now().Add(-time.Duration(y) * time.Second)
				}
				c.Observe(e)
			case 1:
				clk.Add(time.Duration(x) * time.Second)
			case 2:
				for _, r := range c.Tick() {
					if r.FromSeq > r.ToSeq || r.FromSeq == 0 {
						t.Fatalf("request %+v", r)
					}
				}
			case 3:
				c.Reply(&ResendReply{Gateway: "g", Stream: stream, Epoch: epoch, FromSeq: uint64(x), ToSeq: uint64(x) + uint64(y),
					Status: []string{ReplyOK, ReplyRefused}[z&1], FirstSeq: uint64(y)})
			case 4:
				c.Finish()
			}
			checkInvariants(t, c)
		}
		c.Finish()
		checkInvariants(t, c)
		if r := c.Report(); r.Pending != 0 {
			t.Fatalf("pending %d after Finish", r.Pending)
		}
	}
}

// checkInvariants checks the checker's internal state: holes lie between
// the lowest and highest sequence numbers seen, do not overlap, and
// Missing counts exactly the unexplained holes' numbers plus the
// forgotten ones; the report agrees with the state.
func checkInvariants(t *testing.T, c *Checker) {
	t.Helper()
	c.mu.Lock()
	spaces := 0
	for k, st := range c.streams {
		if len(st.epochs) == 0 || len(st.epochs) > MaxEpochs {
			t.Fatalf("%v: %d epochs", k, len(st.epochs))
		}
		for _, sp := range st.epochs {
			spaces++
			if len(sp.open)+len(sp.lost) > c.cfg.MaxHoles {
				t.Fatalf("%v: %d holes, max %d", k, len(sp.open)+len(sp.lost), c.cfg.MaxHoles)
			}
			var lost uint64
			all := append(append([]hole(nil), sp.open...), sp.lost...)
			for i, h := range all {
				if h.from >= h.to || h.from <= sp.base || h.to > sp.hi {
					t.Fatalf("%v: hole [%d,%d) outside (%d,%d) or empty", k, h.from, h.to, sp.base, sp.hi)
				}
				for _, o := range all[i+1:] {
					if h.from < o.to && o.from < h.to {
						t.Fatalf("%v: holes [%d,%d) and [%d,%d) overlap", k, h.from, h.to, o.from, o.to)
					}
				}
				if i >= len(sp.open) {
					lost += h.to - h.from
				}
			}
			if sp.c.Missing != lost+sp.forgotten {
				t.Fatalf("%v: missing %d, unexplained holes hold %d, forgotten %d", k, sp.c.Missing, lost, sp.forgotten)
			}
			if sp.c.Repaired+sp.c.Missing > sp.c.Unexplained {
				t.Fatalf("%v: repaired %d + missing %d > unexplained %d", k, sp.c.Repaired, sp.c.Missing, sp.c.Unexplained)
			}
		}
	}
	if spaces != c.spaces || spaces > c.cfg.MaxStreams {
		t.Fatalf("%d spaces, counted %d, max %d", spaces, c.spaces, c.cfg.MaxStreams)
	}
	c.mu.Unlock()
	r := c.Report()
	var received uint64
	for _, row := range r.Rows {
		received += row.Received
	}
	if received != r.Totals.Received {
		t.Fatalf("rows received %d, totals %d", received, r.Totals.Received)
	}
}
