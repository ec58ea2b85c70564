package verify

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/uplink"
)

// Whoever starts a goroutine stops it: after all tests no paho, HTTP or
// test goroutine may be left.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable clock for Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)} }

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

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ev builds an envelope of gateway gw, stream s, epoch ep at seq; opts
// modify it (gap, replay, time).
func ev(gw, s, ep string, seq uint64, opts ...func(*Envelope)) Envelope {
	e := Envelope{Gateway: gw, Seq: seq, Epoch: ep,
		Event: event.Event{Stream: s, Source: "sensor-1", Topic: "sensors/" + s, ContentType: "application/json",
			Payload: []byte(`{"t":21.5}`)}}
	// A deterministic ID per (gateway, stream, epoch, seq): copies share it.
	id := fmt.Sprintf("%s/%s/%s/%d", gw, s, ep, seq)
	for i := 0; i < len(id); i++ {
		e.Event.ID[i%16] = e.Event.ID[i%16]*31 + id[i]
	}
	e.Event.ID[0] = 1 // never the zero ID
	for _, o := range opts {
		o(&e)
	}
	return e
}

func gap(n uint64, reasons ...any) func(*Envelope) {
	return func(e *Envelope) {
		g := &Gap{Dropped: n, Reasons: map[string]uint64{}}
		for i := 0; i+1 < len(reasons); i += 2 {
			g.Reasons[reasons[i].(string)] = uint64(reasons[i+1].(int))
		}
		e.Gap = g
	}
}

func replay(e *Envelope) { e.Replay = true }

func at(t time.Time) func(*Envelope) { return func(e *Envelope) { e.Event.Time = t } }

func noSeq(e *Envelope) { e.Seq, e.Epoch = 0, "" }

// encodeJSON is the test encoder: the uplink's JSON envelope
// (uplink.AppendJSON) with the fields pre16 adds: "seq" and "epoch"
// (when Seq > 0), "gap" and "replay".
func encodeJSON(e *Envelope) []byte {
	b := uplink.AppendJSON(nil, e.Gateway, &e.Event)
	b = b[:len(b)-1]
	if e.Seq > 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, e.Seq, 10)
		b = append(b, `,"epoch":`...)
		b = strconv.AppendQuote(b, e.Epoch)
	}
	if e.Gap != nil {
		b = append(b, `,"gap":{"dropped":`...)
		b = strconv.AppendUint(b, e.Gap.Dropped, 10)
		b = append(b, `,"reasons":{`...)
		for i, r := range slices.Sorted(maps.Keys(e.Gap.Reasons)) {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendQuote(b, r)
			b = append(b, ':')
			b = strconv.AppendUint(b, e.Gap.Reasons[r], 10)
		}
		b = append(b, "}}"...)
	}
	if e.Replay {
		b = append(b, `,"replay":true`...)
	}
	return append(b, '}')
}

// encodeBatch is a JSON batch of envs.
func encodeBatch(envs ...Envelope) []byte {
	b := []byte{'['}
	for i := range envs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, encodeJSON(&envs[i])...)
	}
	return append(b, ']')
}

// seqs returns envelopes for from..to of one stream.
func seqs(gw, s, ep string, from, to uint64, opts ...func(*Envelope)) []Envelope {
	var out []Envelope
	for i := from; i <= to; i++ {
		out = append(out, ev(gw, s, ep, i, opts...))
	}
	return out
}

// newTestChecker is a checker on clk with settle.
func newTestChecker(t testing.TB, clk *clock, settle time.Duration, mod ...func(*Config)) *Checker {
	t.Helper()
	cfg := Config{Settle: settle, Now: clk.Now}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := NewChecker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// row returns the report row of gw/s.
func row(t testing.TB, r *Report, gw, s string) *StreamReport {
	t.Helper()
	for i := range r.Rows {
		if r.Rows[i].Gateway == gw && r.Rows[i].Stream == s {
			return &r.Rows[i]
		}
	}
	t.Fatalf("no row %s/%s in report", gw, s)
	return nil
}
