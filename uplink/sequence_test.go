package uplink

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/ferrygw/ferry/internal/tcpproxy"
)

// seqQueue is a memQueue with the Sequenced methods: a fixed epoch, events
// dropped by policy (skipped by Read, reported by Dropped) and a replay
// mark, as buffer.Log provides them.
type seqQueue struct {
	*memQueue
	epoch    string
	smu      sync.Mutex
	dropped  map[string]map[uint64]string // stream → offset → reason
	replayed map[string]uint64
	calls    int // Dropped calls
}

var _ Sequenced = (*seqQueue)(nil)

func newSeqQueue() *seqQueue {
	return &seqQueue{memQueue: newMemQueue(), epoch: "00c0ffee12345678",
		dropped: map[string]map[uint64]string{}, replayed: map[string]uint64{}}
}

// drop deletes offsets from..through of stream for reason, as a buffer
// policy does.
func (q *seqQueue) drop(stream string, from, through uint64, reason string) {
	q.smu.Lock()
	defer q.smu.Unlock()
	if q.dropped[stream] == nil {
		q.dropped[stream] = map[uint64]string{}
	}
	for off := from; off <= through; off++ {
		q.dropped[stream][off] = reason
	}
}

func (q *seqQueue) isDropped(stream string, off uint64) bool {
	q.smu.Lock()
	defer q.smu.Unlock()
	_, ok := q.dropped[stream][off]
	return ok
}

func (q *seqQueue) Read(stream string, from uint64, max int, fn func(uint64, *event.Event) error) (uint64, error) {
	return q.memQueue.Read(stream, from, max, func(off uint64, ev *event.Event) error {
		if q.isDropped(stream, off) {
			return nil
		}
		return fn(off, ev)
	})
}

func (q *seqQueue) Epoch() string { return q.epoch }

func (q *seqQueue) Dropped(stream string, after, before uint64) (uint64, map[string]uint64) {
	q.smu.Lock()
	defer q.smu.Unlock()
	q.calls++
	var n uint64
	reasons := map[string]uint64{}
	for off, r := range q.dropped[stream] {
		if off > after && off < before {
			n++
			reasons[r]++
		}
	}
	return n, reasons
}

func (q *seqQueue) ReplayedThrough(stream, consumer string) uint64 {
	q.smu.Lock()
	defer q.smu.Unlock()
	if consumer != Consumer {
		return 0
	}
	return q.replayed[stream]
}

// numericEvents returns n events of stream with a numeric JSON payload
// (SenML-eligible), numbered from first in the payload's "n".
func numericEvents(t testing.TB, stream string, first, n int) []event.Event {
	t.Helper()
	evs := mkEvents(t, stream, first, n)
	for i := range evs {
		evs[i].ContentType = ""
		evs[i].Payload = fmt.Appendf(nil, `{"n":%d,"temperature":21.%02d}`, first+i, i%100)
	}
	return evs
}

// envelopes decodes every message the subscriber received so far.
func envelopes(t testing.TB, sub *subscriber) []Envelope {
	t.Helper()
	var out []Envelope
	for _, m := range sub.messages() {
		envs, err := DecodeEnvelopes(m.payload)
		if err != nil {
			t.Errorf("undecodable message on %s (%d bytes): %v", m.topic, len(m.payload), err)
			continue
		}
		out = append(out, envs...)
	}
	return out
}

// lastCopies returns the envelopes of stream by seq, the last copy of each
// (a resend after a poison was isolated carries its announcement).
func lastCopies(envs []Envelope, stream string) map[uint64]Envelope {
	out := map[uint64]Envelope{}
	for _, e := range envs {
		if e.Event.Stream == stream {
			out[e.Seq] = e
		}
	}
	return out
}

func gapString(g *Gap) string {
	if g == nil {
		return "none"
	}
	return fmt.Sprintf("%d %v", g.Dropped, g.Reasons)
}

// TestSequenceFieldsReachTheCloud: every form of message (JSON, CBOR,
// SenML-CBOR; single or batched; plain or zstd) carries seq, epoch and the
// gateway through a real Mosquitto; a hole the queue dropped by policy is
// announced on the event after it with the count per reason; replayed
// events are marked; and DecodeEnvelopes reads it all back.
func TestSequenceFieldsReachTheCloud(t *testing.T) {
	leakCheck(t)
	b := mqtttest.Start(t)
	for _, format := range []Format{FormatJSON, FormatCBOR, FormatSenMLCBOR} {
		for _, batch := range []int{1, 10} {
			for _, comp := range []Compression{CompressionNone, CompressionZstd} {
				name := fmt.Sprintf("%s/batch%d/%s", format, batch, comp)
				t.Run(name, func(t *testing.T) {
					stream := fmt.Sprintf("s-%s-%d-%s", format, batch, comp)
					sub := subscribe(t, b.URL())
					q := newSeqQueue()
					const n = 30
					evs := numericEvents(t, stream, 1, n)
					evs[11].Payload = []byte("not numeric") // a CBOR envelope amid SenML packs
					q.append(stream, evs...)
					q.drop(stream, 5, 6, "overflow")
					q.drop(stream, 7, 7, "ttl")
					q.drop(stream, 20, 20, "overflow")
					q.replayed[stream] = 3
					cfg := testConfig(t, b.URL())
					cfg.Format, cfg.BatchMaxEvents, cfg.Compression = format, batch, comp
					cfg.Topic = "{gateway_id}/{stream}"
					f, stop := startForwarder(t, q, cfg)
					waitFor(t, 20*time.Second, "all acked", func() bool { return q.acked(stream) == n })
					waitFor(t, 10*time.Second, "all received", func() bool { return len(lastCopies(envelopes(t, sub), stream)) >= n-4 })
					stop()
					got := lastCopies(envelopes(t, sub), stream)
					for off := uint64(1); off <= n; off++ {
						e, ok := got[off]
						switch {
						case q.isDropped(stream, off):
							if ok {
								t.Errorf("seq %d was dropped but arrived", off)
							}
							continue
						case !ok:
							t.Errorf("seq %d missing", off)
							continue
						}
						want := evs[off-1]
						if e.Gateway != "gw-test" || e.Epoch != q.epoch || e.Event.Stream != stream ||
							e.Event.Source != want.Source || e.Event.Topic != want.Topic {
							t.Errorf("seq %d: gateway %q epoch %q stream %q source %q topic %q", off, e.Gateway, e.Epoch,
								e.Event.Stream, e.Event.Source, e.Event.Topic)
						}
						if !bytes.Equal(e.Event.Payload, want.Payload) {
							t.Errorf("seq %d: payload %q, want %q", off, e.Event.Payload, want.Payload)
						}
						senml := format == FormatSenMLCBOR && off != 12
						if !senml && e.Event.ID != want.ID || senml && !e.Event.ID.IsZero() {
							t.Errorf("seq %d: id %v (SenML %v)", off, e.Event.ID, senml)
						}
						if d := e.Event.Time.Sub(want.Time); d < -time.Millisecond || d > time.Millisecond || (!senml && d != 0) {
							t.Errorf("seq %d: time %v, want %v", off, e.Event.Time, want.Time)
						}
						if e.Replay != (off <= 3) {
							t.Errorf("seq %d: replay %v", off, e.Replay)
						}
						wantGap := "none"
						switch off {
						case 8:
							wantGap = "3 map[overflow:2 ttl:1]"
						case 21:
							wantGap = "1 map[overflow:1]"
						}
						if g := gapString(e.Gap); g != wantGap {
							t.Errorf("seq %d: gap %s, want %s", off, g, wantGap)
						}
					}
					if st := f.Status(); st.ForwardedEvents != n-4 {
						t.Errorf("forwarded %d events, want %d", st.ForwardedEvents, n-4)
					}
				})
			}
		}
	}
}

// recQueue is a seqQueue that is also a DropRecorder: the uplink's drops
// count in Dropped like the queue's own.
type recQueue struct{ *seqQueue }

var _ DropRecorder = recQueue{}

func (q recQueue) RecordDrop(stream string, from, through uint64, reason string) error {
	q.drop(stream, from, through, reason)
	return nil
}

// TestUnsendableEventIsAnnounced: an event the uplink cannot send is
// acked and announced in the gap of the next one, by the same forwarder
// from memory, and by a new one (a restart) when the queue records it.
func TestUnsendableEventIsAnnounced(t *testing.T) {
	for _, recorded := range []bool{false, true} {
		t.Run(fmt.Sprintf("recorded=%v", recorded), func(t *testing.T) {
			leakCheck(t)
			b := mqtttest.Start(t)
			sub := subscribe(t, b.URL())
			sq := newSeqQueue()
			var q Queue = sq
			if recorded {
				q = recQueue{sq}
			}
			evs := mkEvents(t, "s", 1, 3)
			evs[1].Payload = bytes.Repeat([]byte("x"), 1000)
			sq.append("s", evs[:2]...)
			cfg := testConfig(t, b.URL())
			cfg.MaxMessageBytes = 512
			f, stop := startForwarder(t, q, cfg)
			waitFor(t, 10*time.Second, "2 acked", func() bool { return sq.acked("s") == 2 })
			if st := f.Status(); st.Dropped["oversize"] != 1 {
				t.Errorf("dropped %v", st.Dropped)
			}
			if recorded {
				stop() // a restart: only the queue remembers the drop
				_, stop = startForwarder(t, q, cfg)
			}
			sq.append("s", evs[2])
			waitFor(t, 10*time.Second, "all acked", func() bool { return sq.acked("s") == 3 })
			waitFor(t, 10*time.Second, "2 received", func() bool { return len(lastCopies(envelopes(t, sub), "s")) == 2 })
			stop()
			got := lastCopies(envelopes(t, sub), "s")
			if g := gapString(got[3].Gap); g != "1 map[oversize:1]" {
				t.Errorf("event 3: gap %s, want the oversize event announced", g)
			}
			if g := gapString(got[1].Gap); g != "none" {
				t.Errorf("event 1: gap %s", g)
			}
		})
	}
}

// TestGapAfterReconnect: a hole dropped by the queue is announced again
// when the event after it is resent on a new connection (its PUBACK was
// lost): every copy the cloud gets carries the announcement.
func TestGapAfterReconnect(t *testing.T) {
	leakCheck(t)
	b := mqtttest.Start(t)
	sub := subscribe(t, b.URL())
	p := tcpproxy.Start(t, b.Addr)
	q := newSeqQueue()
	evs := mkEvents(t, "s", 1, 6)
	cfg := testConfig(t, p.URL())
	f, stop := startForwarder(t, q, cfg)
	defer stop()
	waitFor(t, 10*time.Second, "connected", func() bool { return f.Status().Connected })
	p.Pause() // PUBACKs are held back from here on
	q.drop("s", 2, 3, "disk")
	q.append("s", evs...)
	waitFor(t, 10*time.Second, "first copies", func() bool { return len(lastCopies(envelopes(t, sub), "s")) == 4 })
	p.CutAll()
	p.Unpause()
	waitFor(t, 20*time.Second, "all acked", func() bool { return q.acked("s") == 6 })
	stop()
	copies := 0
	for _, e := range envelopes(t, sub) {
		if e.Seq == 4 {
			copies++
			if g := gapString(e.Gap); g != "2 map[disk:2]" {
				t.Errorf("copy %d of event 4: gap %s", copies, g)
			}
		}
	}
	if copies < 2 {
		t.Errorf("event 4 arrived %d times: the test wants it resent", copies)
	}
}

// TestPoisonIsAnnounced: the event after an isolated poison message
// carries its announcement, from memory or from the queue's record.
func TestPoisonIsAnnounced(t *testing.T) {
	for _, recorded := range []bool{false, true} {
		t.Run(fmt.Sprintf("recorded=%v", recorded), func(t *testing.T) {
			leakCheck(t)
			url := startMosquittoWith(t, "max_packet_size 2048\n")
			sub := subscribe(t, url)
			sq := newSeqQueue()
			var q Queue = sq
			if recorded {
				q = recQueue{sq}
			}
			const n, poison = 12, 6
			evs := mkEvents(t, "s", 1, n)
			evs[poison-1].Payload = fmt.Appendf(nil, `{"seq":%d,"pad":"%s"}`, poison, bytes.Repeat([]byte("x"), 4000))
			sq.append("s", evs...)
			cfg := testConfig(t, url)
			cfg.DeadLetters = &memDeadLetters{}
			_, stop := startForwarder(t, q, cfg)
			waitFor(t, 30*time.Second, "acked", func() bool { return sq.acked("s") == n })
			waitFor(t, 10*time.Second, "received", func() bool { return len(lastCopies(envelopes(t, sub), "s")) == n-1 })
			stop()
			got := lastCopies(envelopes(t, sub), "s")
			if g := gapString(got[poison+1].Gap); g != "1 map[poison:1]" {
				t.Errorf("event after the poison: gap %s", g)
			}
			for off, e := range got {
				if off != poison+1 && e.Gap != nil {
					t.Errorf("event %d: gap %s", off, gapString(e.Gap))
				}
			}
		})
	}
}

// TestForwarderWithoutSequenced: a Queue without Sequenced still gets seq
// (the offset) on every message, no epoch, and gaps of the uplink's own
// drops only.
func TestForwarderWithoutSequenced(t *testing.T) {
	leakCheck(t)
	b := mqtttest.Start(t)
	sub := subscribe(t, b.URL())
	q := newMemQueue()
	q.append("s", mkEvents(t, "s", 1, 3)...)
	_, stop := startForwarder(t, q, testConfig(t, b.URL()))
	waitFor(t, 10*time.Second, "acked", func() bool { return q.acked("s") == 3 })
	waitFor(t, 10*time.Second, "received", func() bool { return len(lastCopies(envelopes(t, sub), "s")) == 3 })
	stop()
	for off, e := range lastCopies(envelopes(t, sub), "s") {
		if e.Epoch != "" || e.Gap != nil || e.Replay || e.Gateway != "gw-test" || off < 1 || off > 3 {
			t.Errorf("seq %d: %+v", off, e)
		}
	}
}

// TestBatchMaxDelay: a live stream's few events wait up to BatchMaxDelay
// for more and go as one message; a full batch goes at once.
func TestBatchMaxDelay(t *testing.T) {
	leakCheck(t)
	b := mqtttest.Start(t)
	sub := subscribe(t, b.URL())
	q := newMemQueue()
	cfg := testConfig(t, b.URL())
	cfg.BatchMaxEvents, cfg.BatchMaxDelay = 10, 700*time.Millisecond
	_, stop := startForwarder(t, q, cfg)
	defer stop()

	start := time.Now()
	evs := mkEvents(t, "s", 1, 13)
	q.append("s", evs[:2]...)
	q.append("s", evs[2]) // another commit: the batch still waits
	waitFor(t, 10*time.Second, "3 acked", func() bool { return q.acked("s") == 3 })
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Errorf("3 events sent after %v: they should have waited for the batch", d)
	}
	if m := sub.messages(); len(m) != 1 {
		t.Fatalf("%d messages, want the 3 events in one", len(m))
	}
	start = time.Now()
	q.append("s", evs[3:13]...)
	waitFor(t, 10*time.Second, "13 acked", func() bool { return q.acked("s") == 13 })
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("a full batch waited %v", d)
	}
	waitFor(t, 10*time.Second, "2 messages", func() bool { return len(sub.messages()) == 2 })
	checkInOrder(t, sub.events(), "s", 1, 13)
}
