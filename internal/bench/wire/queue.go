package wire

import (
	"sync"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/uplink"
)

// queue is an in-memory uplink.Queue with uplink.Sequenced: the uplink's
// view of the buffer, without the disk, whose cost is not what this
// measures.
type queue struct {
	mu      sync.Mutex
	evs     map[string][]event.Event // offset i+1 at index i
	acked   map[string]uint64
	changed chan struct{}
	ackCh   chan struct{} // closed on the next Ack
	epoch   string
}

var (
	_ uplink.Queue     = (*queue)(nil)
	_ uplink.Sequenced = (*queue)(nil)
)

func newQueue(epoch string) *queue {
	return &queue{evs: map[string][]event.Event{}, acked: map[string]uint64{}, changed: make(chan struct{}),
		ackCh: make(chan struct{}), epoch: epoch}
}

// append adds events and returns the offset of the last.
func (q *queue) append(stream string, evs ...event.Event) uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.evs[stream] = append(q.evs[stream], evs...)
	close(q.changed)
	q.changed = make(chan struct{})
	return uint64(len(q.evs[stream]))
}

func (q *queue) Streams() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []string
	for s := range q.evs {
		out = append(out, s)
	}
	return out
}

func (q *queue) Read(stream string, from uint64, max int, fn func(uint64, *event.Event) error) (uint64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	evs := q.evs[stream]
	off := max64(from, q.acked[stream]+1)
	next := from
	for n := 0; n < max && off <= uint64(len(evs)); n++ {
		ev := evs[off-1]
		if err := fn(off, &ev); err != nil {
			return next, err
		}
		off++
		next = off
	}
	return next, nil
}

func (q *queue) Ack(stream, _ string, through uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.acked[stream] = max64(q.acked[stream], through)
	close(q.ackCh)
	q.ackCh = make(chan struct{})
	return nil
}

// ackedCh returns stream's acked offset and a channel closed on the next Ack.
func (q *queue) ackedCh(stream string) (uint64, <-chan struct{}) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.acked[stream], q.ackCh
}

func (q *queue) Acked(stream, _ string) uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.acked[stream]
}

func (q *queue) Changed() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.changed
}

func (q *queue) Epoch() string { return q.epoch }

func (q *queue) Dropped(string, uint64, uint64) (uint64, map[string]uint64) { return 0, nil }

func (q *queue) ReplayedThrough(string, string) uint64 { return 0 }

func max64(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}
