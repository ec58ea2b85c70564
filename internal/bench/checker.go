package bench

import (
	"math/bits"
	"sync"
	"time"
)

// bitset is a fixed-size set of sequence numbers, one bit each.
type bitset []uint64

func newBitset(n int) bitset { return make(bitset, (n+63)/64) }

func (b bitset) set(i uint32)      { b[i/64] |= 1 << (i % 64) }
func (b bitset) has(i uint32) bool { return b[i/64]&(1<<(i%64)) != 0 }

func (b bitset) count() int64 {
	var n int
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return int64(n)
}

// andNotCount returns |b \ o|.
func (b bitset) andNotCount(o bitset) int64 {
	var n int
	for i, w := range b {
		n += bits.OnesCount64(w &^ o[i])
	}
	return int64(n)
}

// pubCheck is the receive-side state of one publisher.
type pubCheck struct {
	seen       bitset
	maxSeq     int64 // highest distinct seq received, -1 before the first
	received   int64 // distinct seqs
	duplicated int64
	outOfOrder int64
}

// checker accounts for what arrives at the cloud side. ingest runs on
// paho's ordered callback goroutine; snapshots are taken by Run, hence the
// (uncontended) mutex.
type checker struct {
	run    RunID
	unwrap func([]byte) [][]byte
	now    func() time.Time

	mu       sync.Mutex
	pubs     []pubCheck
	messages uint32
	total    int64 // distinct messages received, all publishers
	ignored  int64 // messages with no bench header, or out-of-range indices
	stale    int64 // bench headers from another run
	latency  histogram
	scratch  []header
}

func newChecker(run RunID, publishers, messages int, unwrap func([]byte) [][]byte, now func() time.Time) *checker {
	c := &checker{run: run, unwrap: unwrap, now: now, messages: uint32(messages), pubs: make([]pubCheck, publishers)}
	for i := range c.pubs {
		c.pubs[i] = pubCheck{seen: newBitset(messages), maxSeq: -1}
	}
	return c
}

// ingest accounts for one message as it arrived at the cloud broker.
func (c *checker) ingest(msg []byte) {
	at := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.scratch = findHeaders(c.scratch[:0], msg, c.unwrap)
	if len(c.scratch) == 0 {
		c.ignored++
		return
	}
	for _, h := range c.scratch {
		if h.run != c.run {
			c.stale++
			continue
		}
		c.record(h, at)
	}
}

// record accounts for one bench message of this run; c.mu is held.
func (c *checker) record(h header, at time.Time) {
	if int64(h.pub) >= int64(len(c.pubs)) || h.seq >= c.messages {
		c.ignored++
		return
	}
	p := &c.pubs[h.pub]
	if p.seen.has(h.seq) {
		p.duplicated++
		return
	}
	p.seen.set(h.seq)
	p.received++
	c.total++
	if int64(h.seq) < p.maxSeq {
		p.outOfOrder++
	} else {
		p.maxSeq = int64(h.seq)
	}
	c.latency.add(at.Sub(time.Unix(0, h.sent)))
}

// distinct returns the number of distinct messages received so far.
func (c *checker) distinct() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}
