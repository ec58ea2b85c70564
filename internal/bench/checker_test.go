package bench

import (
	"testing"
	"time"
)

type arrival struct{ pub, seq int }

func TestCheckerCounts(t *testing.T) {
	seqs := func(s ...int) []int { return s }
	tests := []struct {
		name     string
		m        int
		acked    []int     // acked seqs of publisher 0 (nil = all)
		arrivals []arrival // in arrival order
		want     PublisherStats
		ignored  int64
	}{
		{
			name:     "in order, complete",
			m:        5,
			arrivals: []arrival{{0, 0}, {0, 1}, {0, 2}, {0, 3}, {0, 4}},
			want:     PublisherStats{Received: 5},
		},
		{
			name:     "gaps are lost",
			m:        6,
			arrivals: []arrival{{0, 0}, {0, 2}, {0, 5}},
			want:     PublisherStats{Received: 3, Lost: 3},
		},
		{
			name:     "duplicates counted once each repeat, not as out of order",
			m:        4,
			arrivals: []arrival{{0, 0}, {0, 1}, {0, 1}, {0, 2}, {0, 0}, {0, 3}, {0, 3}, {0, 3}},
			want:     PublisherStats{Received: 4, Duplicated: 4},
		},
		{
			name:     "reorder: every late seq below the max is out of order",
			m:        6,
			arrivals: []arrival{{0, 0}, {0, 3}, {0, 1}, {0, 2}, {0, 5}, {0, 4}},
			want:     PublisherStats{Received: 6, OutOfOrder: 3},
		},
		{
			name:     "reordered duplicate is a duplicate only",
			m:        4,
			arrivals: []arrival{{0, 2}, {0, 0}, {0, 2}, {0, 0}, {0, 1}, {0, 3}},
			want:     PublisherStats{Received: 4, Duplicated: 2, OutOfOrder: 2},
		},
		{
			name:     "gap, dup and reorder together",
			m:        10,
			arrivals: []arrival{{0, 0}, {0, 1}, {0, 4}, {0, 2}, {0, 4}, {0, 6}, {0, 5}, {0, 9}, {0, 9}},
			want:     PublisherStats{Received: 7, Duplicated: 2, OutOfOrder: 2, Lost: 3},
		},
		{
			name:     "unacked: not lost when missing, reported when received",
			m:        5,
			acked:    seqs(0, 1, 3),
			arrivals: []arrival{{0, 0}, {0, 2}, {0, 3}},
			want:     PublisherStats{Received: 3, Lost: 1, UnackedReceived: 1},
		},
		{
			name:     "other publisher does not disturb order",
			m:        3,
			arrivals: []arrival{{0, 0}, {1, 2}, {0, 1}, {1, 0}, {0, 2}},
			want:     PublisherStats{Received: 3},
		},
		{
			name:     "out of range indices are ignored",
			m:        2,
			arrivals: []arrival{{0, 0}, {0, 2}, {2, 0}, {0, 1}},
			want:     PublisherStats{Received: 2},
			ignored:  2,
		},
		{
			name:     "nothing arrives",
			m:        65,
			want:     PublisherStats{Lost: 65},
			arrivals: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Publishers: 2, Messages: tt.m, QoS: 1, Broker: "tcp://x:1", Subscribe: "tcp://y:1"}
			cfg, err := cfg.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			run := RunID{1, 2, 3}
			pubs := []*publisher{newPublisher(&cfg, 0, run, t.Logf), newPublisher(&cfg, 1, run, t.Logf)}
			for _, p := range pubs {
				p.published.Store(int64(tt.m))
				ack := tt.acked
				if ack == nil || p.idx == 1 {
					ack = make([]int, tt.m)
					for i := range ack {
						ack[i] = i
					}
				}
				for _, s := range ack {
					p.acked.set(uint32(s))
				}
				p.ackedN.Store(int64(len(ack)))
			}
			now := time.Unix(1000, 0)
			chk := newChecker(run, 2, tt.m, nil, func() time.Time { return now })
			buf := newPayload(HeaderSize + 7)
			for i, a := range tt.arrivals {
				putHeader(buf, header{run: run, pub: uint32(a.pub), seq: uint32(a.seq), sent: now.Add(-time.Duration(i+1) * time.Millisecond).UnixNano()})
				chk.ingest(buf)
			}
			r := buildReport(&cfg, run, pubs, chk, nil, time.Second)
			got := r.PerPublisher[0]
			got.Publisher, got.Published, got.Acked, got.Errors, got.Reconnects = 0, 0, 0, 0, 0
			if got != tt.want {
				t.Errorf("publisher 0: got %+v\nwant %+v", got, tt.want)
			}
			if r.Ignored != tt.ignored {
				t.Errorf("ignored = %d, want %d", r.Ignored, tt.ignored)
			}
			if r.Received != r.PerPublisher[0].Received+r.PerPublisher[1].Received {
				t.Errorf("total received %d is not the per-publisher sum", r.Received)
			}
			if n := r.E2ELatency.Count; n != r.Received {
				t.Errorf("e2e latency count %d, want one per distinct message (%d)", n, r.Received)
			}
		})
	}
}

func TestCheckerIgnoresForeignAndStale(t *testing.T) {
	run, other := RunID{1}, RunID{2}
	chk := newChecker(run, 1, 10, nil, time.Now)
	buf := newPayload(50)
	putHeader(buf, header{run: other, pub: 0, seq: 1})
	chk.ingest(buf)
	chk.ingest([]byte(`{"temperature": 21.5}`))
	chk.ingest(nil)
	putHeader(buf, header{run: run, pub: 0, seq: 1})
	buf[20] ^= 1 // corrupt the seq: the CRC no longer matches
	chk.ingest(buf)
	if chk.stale != 1 || chk.ignored != 3 || chk.total != 0 {
		t.Fatalf("stale %d ignored %d received %d; want 1, 3, 0", chk.stale, chk.ignored, chk.total)
	}
}

func TestBitset(t *testing.T) {
	a, b := newBitset(130), newBitset(130)
	for _, i := range []uint32{0, 63, 64, 129} {
		a.set(i)
	}
	b.set(63)
	b.set(100)
	if !a.has(129) || a.has(128) || a.count() != 4 {
		t.Fatalf("bitset basics broken: %v", a)
	}
	if n := a.andNotCount(b); n != 3 {
		t.Fatalf("a\\b = %d, want 3", n)
	}
}
