package uplink

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/ferrygw/ferry/internal/tcpproxy"
)

// TestResendOnRequest: Forwarder.Resend sends acknowledged events again
// through a real Mosquitto, in every message form, marked replay, with
// their gaps announced again; it acks nothing (the stream's position and
// the forwarded counts are untouched) and the live stream goes on after it.
func TestResendOnRequest(t *testing.T) {
	leakCheck(t)
	b := mqtttest.Start(t)
	cases := []struct {
		format Format
		batch  int
		comp   Compression
	}{
		{FormatJSON, 1, CompressionNone},
		{FormatJSON, 10, CompressionZstd},
		{FormatCBOR, 10, CompressionNone},
		{FormatSenMLCBOR, 10, CompressionZstd},
	}
	for _, tc := range cases {
		name := fmt.Sprintf("%s/batch%d/%s", tc.format, tc.batch, tc.comp)
		t.Run(name, func(t *testing.T) {
			stream := fmt.Sprintf("r-%s-%d-%s", tc.format, tc.batch, tc.comp)
			sub := subscribe(t, b.URL())
			q := newSeqQueue()
			q.retain = true
			const n = 30
			evs := numericEvents(t, stream, 1, n)
			q.append(stream, evs...)
			q.drop(stream, 5, 6, "overflow")
			cfg := testConfig(t, b.URL())
			cfg.Format, cfg.BatchMaxEvents, cfg.Compression = tc.format, tc.batch, tc.comp
			cfg.Topic = "{gateway_id}/{stream}"
			f, stop := startForwarder(t, q, cfg)
			waitFor(t, 60*time.Second, "all acked", func() bool { return q.acked(stream) == n })
			waitFor(t, 60*time.Second, "all received", func() bool { return len(lastCopies(envelopes(t, sub), stream)) >= n-2 })
			before := f.Status()

			first, err := f.Resend(stream, 3, 10)
			if err != nil || first != 1 {
				t.Fatalf("Resend(3, 10) = %d, %v; want 1, nil", first, err)
			}
			replays := func() map[uint64]Envelope {
				out := map[uint64]Envelope{}
				for _, e := range envelopes(t, sub) {
					if e.Event.Stream == stream && e.Replay {
						out[e.Seq] = e
					}
				}
				return out
			}
			want := []uint64{3, 4, 7, 8, 9, 10}
			waitFor(t, 60*time.Second, "the resent events", func() bool { return len(replays()) >= len(want) })
			// The live stream goes on, acked as before.
			q.append(stream, numericEvents(t, stream, n+1, 5)...)
			waitFor(t, 60*time.Second, "the new events acked", func() bool { return q.acked(stream) == n+5 })
			waitFor(t, 60*time.Second, "the new events received", func() bool { return len(lastCopies(envelopes(t, sub), stream)) >= n+3 })
			stop()

			got := replays()
			if len(got) != len(want) {
				t.Errorf("resent %d events, want %v", len(got), want)
			}
			for _, off := range want {
				e, ok := got[off]
				if !ok {
					t.Errorf("seq %d not resent", off)
					continue
				}
				if !bytes.Equal(e.Event.Payload, evs[off-1].Payload) || e.Epoch != q.epoch || e.Gateway != "gw-test" {
					t.Errorf("seq %d: payload %q epoch %q gateway %q", off, e.Event.Payload, e.Epoch, e.Gateway)
				}
				wantGap := "none"
				if off == 7 {
					wantGap = "2 map[overflow:2]"
				}
				if g := gapString(e.Gap); g != wantGap {
					t.Errorf("seq %d: gap %s, want %s", off, g, wantGap)
				}
			}
			for _, m := range sub.messages() {
				if m.topic != "gw-test/"+strings.ReplaceAll(stream, "+", "_") {
					t.Errorf("message on %q", m.topic)
				}
			}
			st := f.Status()
			if st.ResendRequests != 1 || st.ResentOnRequest != uint64(len(want)) {
				t.Errorf("ResendRequests %d ResentOnRequest %d, want 1 and %d", st.ResendRequests, st.ResentOnRequest, len(want))
			}
			if st.ForwardedEvents != before.ForwardedEvents+5 || st.Acked[stream] != n+5 {
				t.Errorf("forwarded %d (before %d), acked %d: a resend must not count or ack", st.ForwardedEvents, before.ForwardedEvents, st.Acked[stream])
			}
		})
	}
}

// TestResendRefused: what Forwarder.Resend refuses, and a range beyond
// the acked position that it takes without queueing anything.
func TestResendRefused(t *testing.T) {
	leakCheck(t)
	q := newMemQueue()
	q.retain = true
	q.append("t", mkEvents(t, "t", 1, 40)...)
	if err := q.Ack("t", Consumer, 30); err != nil {
		t.Fatal(err)
	}
	q.trimmed = 12
	f, err := New(q, testConfig(t, "tcp://127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name      string
		stream    string
		from, to  uint64
		wantFirst uint64
		wantErr   error
		pending   bool
	}{
		{"unknown stream", "nope", 1, 2, 0, ErrResendStream, false},
		{"older than retained", "t", 3, 11, 12, ErrResendGone, false},
		{"backwards", "t", 20, 19, 0, ErrResendRange, false},
		{"too many", "t", 12, 12 + MaxResendEvents, 12, ErrResendRange, false},
		{"not acked yet", "t", 31, 40, 12, nil, false},
		{"partly retained", "t", 3, 20, 12, nil, true},
		{"merged", "t", 25, 35, 12, nil, true},
	}
	for _, tc := range cases {
		first, err := f.Resend(tc.stream, tc.from, tc.to)
		if first != tc.wantFirst || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
			t.Errorf("%s: Resend(%q, %d, %d) = %d, %v; want %d, %v", tc.name, tc.stream, tc.from, tc.to, first, err, tc.wantFirst, tc.wantErr)
		}
		f.mu.Lock()
		rg := f.resends[tc.stream]
		f.mu.Unlock()
		if (rg != nil) != tc.pending {
			t.Errorf("%s: pending %v", tc.name, rg)
		}
	}
	f.mu.Lock()
	rg := *f.resends["t"]
	f.mu.Unlock()
	if rg.next != 12 || rg.to != 30 || rg.prev != 11 {
		t.Errorf("pending range %+v, want 12..30 after 11", rg)
	}

	// A stream's pending range spans at most MaxResendEvents.
	one := mkEvents(t, "b", 1, 1)[0]
	many := make([]event.Event, MaxResendEvents+20)
	for i := range many {
		many[i] = one
	}
	q.trimmed = 0
	q.append("b", many...)
	if err := q.Ack("b", Consumer, uint64(len(many))); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Resend("b", 1, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Resend("b", MaxResendEvents+1, MaxResendEvents+2); !errors.Is(err, ErrResendBusy) {
		t.Errorf("a range too far from the pending one: %v, want ErrResendBusy", err)
	}
}

// FuzzDecodeResendRequest: a resend request comes from the network.
// DecodeResendRequest never panics, refuses what it does not accept with
// ErrMalformedResend, and what it accepts is within its bounds and
// survives a round trip.
func FuzzDecodeResendRequest(f *testing.F) {
	f.Add([]byte(`{"id":"4f3c","gateway":"gw-1","stream":"telemetry","epoch":"9b1f04c2d3e4a5b6","from_seq":120,"to_seq":129,"reply_to":"v/resend-reply"}`))
	f.Add([]byte(`{"gateway":"g","stream":"s","epoch":"e","from_seq":5,"to_seq":4}`))
	f.Add([]byte(`{"gateway":"g","stream":"s","epoch":"e"} {}`))
	f.Add([]byte(`{"gateway":"g","stream":"s","epoch":"e","from_seq":-1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeResendRequest(b)
		if err != nil {
			if !errors.Is(err, ErrMalformedResend) || r != nil {
				t.Fatalf("error %v (request %v) does not wrap ErrMalformedResend", err, r)
			}
			return
		}
		if len(b) > MaxResendRequestBytes || r.FromSeq > r.ToSeq || r.Gateway == "" || r.Stream == "" || r.Epoch == "" ||
			len(r.Gateway) > maxResendField || len(r.ReplyTo) > maxReplyTopic {
			t.Fatalf("accepted %+v from %q", r, b)
		}
		out, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeResendRequest(out)
		if err != nil || *back != *r {
			t.Fatalf("round trip: %+v, %v; want %+v", back, err, r)
		}
	})
}

// TestResendThroughAConnectionLoss: a long resend shares the window with
// live events (paced), the connection is cut in the middle of it, and
// after the reconnect the live stream goes on in order, every live event
// acked once (the resend's PUBACKs ack nothing), while the rest of the
// range is resent.
func TestResendThroughAConnectionLoss(t *testing.T) {
	leakCheck(t)
	b := mqtttest.Start(t)
	p := tcpproxy.Start(t, b.Addr)
	sub := subscribe(t, b.URL())
	const stream, n, more = "t", 300, 100
	q := newSeqQueue()
	q.retain = true
	q.append(stream, mkEvents(t, stream, 1, n)...)
	cfg := testConfig(t, p.URL())
	cfg.MessagesPerSecond = 200 // the resend takes over a second
	f, stop := startForwarder(t, q, cfg)
	waitFor(t, 60*time.Second, "all acked", func() bool { return q.acked(stream) == n })

	if first, err := f.Resend(stream, 1, n); err != nil || first != 1 {
		t.Fatalf("Resend = %d, %v", first, err)
	}
	replays := func() (count int, highest uint64) {
		for _, e := range envelopes(t, sub) {
			if e.Replay {
				count++
				highest = max(highest, e.Seq)
			}
		}
		return count, highest
	}
	waitFor(t, 60*time.Second, "the resend under way", func() bool { c, _ := replays(); return c >= 30 })
	q.append(stream, mkEvents(t, stream, n+1, more)...)
	p.CutAll()
	waitFor(t, 60*time.Second, "the new events acked", func() bool { return q.acked(stream) == n+more })
	// Every event of the range is resent, those in flight at the cut
	// again on the new connection.
	missing := func() (gone []uint64) {
		got := map[uint64]bool{}
		for _, e := range envelopes(t, sub) {
			if e.Replay {
				got[e.Seq] = true
			}
		}
		for off := uint64(1); off <= n; off++ {
			if !got[off] {
				gone = append(gone, off)
			}
		}
		return gone
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		gone := missing()
		if len(gone) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events of the range never resent (first %d) 60 s after the cut", len(gone), gone[0])
		}
	}
	stop()

	live := map[uint64]int{}
	var order []uint64
	for _, e := range envelopes(t, sub) {
		if e.Replay {
			if e.Seq < 1 || e.Seq > n {
				t.Errorf("replay of seq %d, outside the range", e.Seq)
			}
			continue
		}
		live[e.Seq]++
		order = append(order, e.Seq)
	}
	for off := uint64(1); off <= n+more; off++ {
		if live[off] == 0 {
			t.Errorf("seq %d never arrived live", off)
		}
	}
	// The live stream kept its order: each event's first copy came after
	// the one before it (copies resent after the reconnect repeat some).
	var last uint64
	seen := map[uint64]bool{}
	for _, s := range order {
		if seen[s] {
			continue
		}
		seen[s] = true
		if s < last {
			t.Errorf("live seq %d first came after %d", s, last)
		}
		last = s
	}
	st := f.Status()
	if st.Acked[stream] != n+more || st.ResendRequests != 1 || st.Reconnects < 1 {
		t.Errorf("acked %d, resend requests %d, reconnects %d", st.Acked[stream], st.ResendRequests, st.Reconnects)
	}
	c, _ := replays()
	t.Logf("%d replays of %d requested, %d resent acknowledged, through a reconnect", c, n, st.ResentOnRequest)
}

// TestResendRequeueBound: resent messages lost with a connection go back
// into their stream's range for up to maxResendRequeues connections per
// request (however many records each connection lost), then no more, so
// that a message the cloud never takes cannot end connections forever;
// the next request counts afresh.
func TestResendRequeueBound(t *testing.T) {
	f := &Forwarder{log: slog.New(slog.DiscardHandler), resendWake: make(chan struct{}, 1)}
	st := &streamState{name: "s"}
	lost := func(connID uint64) bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.resends = nil
		for from := uint64(1); from <= 3; from++ { // three records lost with one connection
			f.requeue(&conn{id: connID}, &record{stream: st, from: from * 10, through: from*10 + 9, events: 10})
		}
		rg := f.resends["s"]
		if rg != nil && (rg.next != 10 || rg.to != 39) {
			t.Fatalf("connection %d: range %d..%d, want 10..39", connID, rg.next, rg.to)
		}
		return rg != nil
	}
	for id := uint64(1); id <= maxResendRequeues; id++ {
		if !lost(id) {
			t.Fatalf("connection %d: the lost resend was not queued again", id)
		}
	}
	if lost(maxResendRequeues + 1) {
		t.Fatalf("connection %d: queued again past the bound of %d", maxResendRequeues+1, maxResendRequeues)
	}
	f.mu.Lock()
	delete(f.requeues, "s") // what a new request (Resend) does
	f.mu.Unlock()
	if !lost(maxResendRequeues + 2) {
		t.Fatal("after a new request the lost resend was not queued again")
	}
}
