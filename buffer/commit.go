package buffer

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"slices"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Run is the commit loop: it groups queued appends and pending acks into
// one transaction each time around, starting the next commit as soon as the
// previous one ended. It returns nil after ctx ends, once what was already
// queued (deferred updates and pending acks included) is committed.
//
// What starts a commit: an append or an Update (at once, or after the
// grouping below); acks and deferred updates (UpdateDeferred) only ride
// along, or are committed on their own once the oldest of them has waited
// AckInterval; a sweep that has something to delete.
func (l *Log) Run(ctx context.Context) error {
	if !l.running.CompareAndSwap(false, true) {
		return fmt.Errorf("buffer: Run called twice")
	}
	defer l.running.Store(false)
	defer close(l.stopped)

	sweep := time.NewTicker(l.opts.SweepInterval)
	defer sweep.Stop()
	l.checkDisk()

	// ackTimer is armed while acks or deferred updates wait for a commit.
	ackTimer := time.NewTimer(time.Hour)
	ackTimer.Stop()
	armed := false
	arm := func() {
		if !armed {
			armed = true
			ackTimer.Reset(l.opts.AckInterval)
		}
	}
	disarm := func() {
		if armed {
			armed = false
			ackTimer.Stop()
		}
	}
	defer disarm()

	batch := make([]*appendReq, 0, l.opts.MaxBatch)
	var deferred []*appendReq
	var rate arrivalRate
	lastSrc := map[string]struct{}{} // sources of the last commit
	var lastCommit time.Time         // when the last commit ended
	var lastTook time.Duration
	lastSize := 0
	for {
		sweepDue, ackDue := false, false
		select {
		case <-ctx.Done():
			for {
				batch, deferred = l.collect(batch, deferred)
				batch = append(batch, deferred...)
				deferred = deferred[:0]
				if len(batch) == 0 {
					l.commit(nil, false) // pending acks
					return nil
				}
				l.commit(batch, false)
				clear(batch)
				batch = batch[:0]
			}
		case r := <-l.reqs:
			if r.lazy {
				deferred = append(deferred, r)
			} else {
				batch = append(batch, r)
			}
		case <-l.kick:
		case <-l.acked:
			// Short of disk, deletions are what frees room: at once.
			if l.opts.AckInterval > 0 && !l.diskFull.Load() {
				arm()
				continue
			}
			ackDue = true
		case <-ackTimer.C:
			armed = false
			ackDue = true
		case <-sweep.C:
			sweepDue = true
			l.checkDisk()
		}
		arrived := time.Now()
		if l.opts.Durability == DurabilityBatch && len(batch) > 0 {
			// Callers do not wait: commit every BatchInterval, or as soon
			// as a batch is full.
			batch, deferred = l.gather(ctx, batch, deferred, lastCommit.Add(l.opts.BatchInterval), l.opts.MaxBatch)
		}
		batch, deferred = l.collect(batch, deferred)
		if l.opts.Durability == DurabilitySync && len(batch) > 0 {
			if hold := rate.hold(l.opts.CommitInterval); hold > 0 && !returning(batch[0], arrived.Sub(lastCommit), lastTook, lastSrc) {
				// Sparse traffic: sensors publishing every few seconds.
				// Nobody is waiting for the commit to send the next
				// event, so holding it open a little collects the
				// readings of other sensors into the same fsync.
				batch, deferred = l.gather(ctx, batch, deferred, arrived.Add(hold), groupTarget)
			} else if len(batch) < lastSize {
				batch, deferred = l.linger(ctx, batch, deferred, lastSize, lastTook)
			}
		}
		rate.observe(arrived, len(batch))
		if l.behind.Swap(false) {
			sweepDue = true // deletions a bounded commit left
		}
		if len(batch) == 0 && !ackDue && (!sweepDue || !l.anyExpired(l.opts.Now())) {
			if len(deferred) > 0 || l.acksPending() {
				arm()
			}
			continue // acks and deferred updates wait for a commit
		}
		batch = append(batch, deferred...)
		clear(deferred)
		deferred = deferred[:0]
		disarm()
		// Before the commit: answered requests go back to their callers
		// (and the pool), and commit may reorder batch.
		clear(lastSrc)
		if len(batch) <= groupTarget {
			for _, r := range batch {
				if r.src != "" {
					lastSrc[r.src] = struct{}{}
				}
			}
		}
		lastSize = len(batch)
		start := time.Now()
		l.commit(batch, sweepDue)
		if l.damaged.Load() {
			return fmt.Errorf("buffer %s: %w: bbolt failed in a commit; the next start checks the file", l.path, ErrCorrupt)
		}
		lastCommit = time.Now()
		lastTook = lastCommit.Sub(start)
		clear(batch)
		batch = batch[:0]
	}
}

// returning reports whether r, the first request after a commit that
// ended gap ago, is a writer coming back from that commit rather than new
// sparse traffic: it came sooner than the commit took (or minBusyGap), or
// its source was in that commit and came back within returnGap (a
// publisher sending its next message on its PUBACK, also on a loaded
// machine where that takes milliseconds). Such writers are not held.
func returning(r *appendReq, gap, took time.Duration, lastSrc map[string]struct{}) bool {
	if gap <= max(took, minBusyGap) {
		return true
	}
	_, back := lastSrc[r.src]
	return back && gap < returnGap
}

// returnGap bounds how long after its commit a writer counts as coming
// back: far shorter than the interval of any sensor worth holding a
// commit for.
const returnGap = 50 * time.Millisecond

// minBusyGap is the shortest quiet time before a sync commit counts as
// starting sparse traffic (see Options.CommitInterval): writers that
// were waiting for the previous commit come back sooner than this.
const minBusyGap = 2 * time.Millisecond

// arrivalRate estimates how many appends arrive per second, from the
// appends of each commit over the time since the previous one
// (exponentially weighted, so a burst or a lull counts within seconds).
type arrivalRate struct {
	last   time.Time
	perSec float64
}

// rateWeight is the weight of the newest commit in the estimate.
const rateWeight = 0.2

func (a *arrivalRate) observe(now time.Time, n int) {
	if n == 0 {
		return
	}
	if !a.last.IsZero() {
		if dt := now.Sub(a.last).Seconds(); dt > 0 {
			a.perSec = rateWeight*float64(n)/dt + (1-rateWeight)*a.perSec
		}
	}
	a.last = now
}

// hold is how long to hold a commit open for more writers: as long as it
// takes, at the current rate, for groupTarget events to arrive, at most
// max; nothing when not even one more is expected within max (a lone
// sensor would only wait for nobody).
func (a *arrivalRate) hold(max time.Duration) time.Duration {
	if max <= 0 || a.perSec*max.Seconds() < 1 {
		return 0
	}
	return min(max, time.Duration(float64(groupTarget)/a.perSec*float64(time.Second)))
}

// gather collects requests into batch until deadline, or until the batch
// holds target requests (at most MaxBatch).
func (l *Log) gather(ctx context.Context, batch, deferred []*appendReq, deadline time.Time, target int) ([]*appendReq, []*appendReq) {
	wait := time.Until(deadline)
	if wait <= 0 {
		return batch, deferred
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for len(batch) < target && len(batch) < l.opts.MaxBatch {
		select {
		case r := <-l.reqs:
			if r.lazy {
				deferred = append(deferred, r)
			} else {
				batch = append(batch, r)
			}
		case <-t.C:
			return batch, deferred
		case <-ctx.Done():
			return batch, deferred
		}
	}
	return batch, deferred
}

// groupTarget is how many events a held-open sync commit collects before
// it commits anyway: at that size its fixed cost (the pages from the root
// to the leaves and the meta page, two fdatasyncs) is a small share.
const groupTarget = 64

// linger waits a little for the rest of the writers that shared the last
// commit. Without it, writers released together by a commit come back a few
// microseconds apart, the first few start the next commit alone and the
// rest wait a whole commit for the one after: the group splits into small
// commits, each paying a full fsync. The wait is bounded by a quarter of the
// last commit's duration (at most MaxLinger) and ends as soon as as many
// writers as last time are back, so one writer never waits at all and the
// loop has no fixed timer ceiling (unlike bbolt's db.Batch). Only sync
// commits linger: without an fsync a commit is cheaper than the wait.
func (l *Log) linger(ctx context.Context, batch, deferred []*appendReq, want int, took time.Duration) ([]*appendReq, []*appendReq) {
	return l.gather(ctx, batch, deferred, time.Now().Add(min(took/4, l.opts.MaxLinger)), want)
}

// collect adds queued requests to batch (deferred ones to deferred)
// without waiting.
func (l *Log) collect(batch, deferred []*appendReq) ([]*appendReq, []*appendReq) {
	for len(batch) < l.opts.MaxBatch {
		select {
		case r := <-l.reqs:
			if r.lazy {
				deferred = append(deferred, r)
			} else {
				batch = append(batch, r)
			}
		default:
			return batch, deferred
		}
	}
	return batch, deferred
}

// txState is the working copy of the streams a transaction touches; it
// replaces the committed state only if the transaction commits.
type txState struct {
	l        *Log
	tx       *bolt.Tx
	root     *bolt.Bucket
	streams  map[string]*stream
	buckets  map[string]*bolt.Bucket
	appended int
	txid     int // the transaction's ID (bbolt's meta txid once it commits)
	// room is what this commit's appends may still take from the disk
	// (see disk.go); noRoom is set at the first append refused for it,
	// and refuses the rest of the commit's appends.
	room   room
	noRoom bool
	// delBudget is how many bytes of events this commit may still delete
	// (see disk.go); behind is set when it stopped deleting for it.
	delBudget int64
	behind    bool
	scratch   []byte // sourceOf's plaintext buffer
	// hwm0 is the file's high-water mark (bytes) when the transaction
	// began, and freed the bytes of events it deleted: see learnRuns.
	hwm0  int64
	freed int64
}

// mayDelete reports whether the commit may delete an event of size
// bytes, taking it from the budget.
func (ts *txState) mayDelete(size int64) bool {
	if ts.delBudget == unlimited {
		return true
	}
	if ts.delBudget <= 0 {
		ts.behind = true
		return false
	}
	ts.delBudget -= size
	return true
}

func (ts *txState) get(name string) (*stream, *bolt.Bucket, error) {
	if s, ok := ts.streams[name]; ok {
		return s, ts.buckets[name], nil
	}
	ts.l.mu.Lock()
	s := ts.l.streamLocked(name).clone()
	ts.l.mu.Unlock()
	s.reconcileSources() // the configuration may have changed the policy
	sb, err := ts.root.CreateBucketIfNotExists([]byte(name))
	if err != nil {
		return nil, nil, fmt.Errorf("stream %q: %w", name, err)
	}
	eb, err := sb.CreateBucketIfNotExists(bktEvents)
	if err != nil {
		return nil, nil, fmt.Errorf("stream %q: %w", name, err)
	}
	eb.FillPercent = 0.95 // keys only ever grow: pack pages tightly
	ts.room.charge(streamPages * ts.l.unit())
	ts.streams[name] = s
	ts.buckets[name] = eb
	return s, eb, nil
}

// commit runs one group commit of batch, the pending acks and, if sweep,
// the TTL and retain sweep, and answers every request of batch.
//
// A function passed to Update that fails (or panics) aborts the
// transaction; like bbolt's DB.Batch, the commit is retried without it and
// the function then runs alone (solo), so one caller's error never fails
// the others' appends. A commit that fails for lack of space is retried
// with its appends refused (ErrDiskFull), so acks and drop counts still
// commit and the log goes on.
func (l *Log) commit(batch []*appendReq, sweep bool) {
	l.mu.Lock()
	acks := l.acks // taken whole: Ack writes a fresh map meanwhile
	if len(acks) > 0 {
		l.acks = make(map[ackKey]uint64)
	} else {
		acks = nil
	}
	l.committing = acks
	unsaved := l.unsaved
	l.unsaved = nil
	l.usageTx, l.usage = l.usage, nil
	l.mu.Unlock()
	if len(batch) == 0 && len(acks) == 0 && len(unsaved) == 0 && len(l.usageTx) == 0 && (!sweep || !l.anyExpired(l.opts.Now())) {
		return
	}
	var solo []*appendReq
	batch, solo = l.commitGroup(batch, acks, unsaved, sweep, false)
	l.mu.Lock()
	l.committing = nil // installed in l.streams, or back in l.acks
	l.usageTx = nil    // in the file, or back in l.usage
	l.mu.Unlock()
	l.answer(batch)
	for _, r := range solo {
		one, _ := l.commitGroup([]*appendReq{r}, nil, nil, false, true)
		l.answer(one)
	}
}

// commitGroup commits batch (with acks, unsaved drop counts and a sweep)
// and sets each request's err. It returns the requests it answered and,
// unless solo, those whose function failed, to be run alone. In a solo
// commit a failing function's error is its answer.
func (l *Log) commitGroup(batch []*appendReq, acks map[ackKey]uint64, unsaved map[string]uint64, sweep, solo bool) (done, failedFns []*appendReq) {
	lim := l.commitLimits()
	l.mu.Lock()
	gen := l.cfgGen
	l.mu.Unlock()
	start := time.Now()
	var ts *txState
	var err, noSpaceErr error
	for {
		var failed *appendReq
		ts, failed, err = l.attempt(batch, acks, unsaved, sweep, lim)
		if failed != nil {
			if solo {
				return batch, nil // failed.err is the function's error
			}
			batch = slices.DeleteFunc(batch, func(r *appendReq) bool { return r == failed })
			failedFns = append(failedFns, failed)
			continue
		}
		if noSpaceErr == nil && noSpace(err) {
			// The estimate missed, or another program filled the disk:
			// once more with this commit's appends refused and its
			// deletions bounded, so acks and drop counts still commit.
			l.setDiskFull(true, 0)
			noSpaceErr = err
			lim = limits{delBudget: min(lim.delBudget, deleteChunkBytes)}
			continue
		}
		break
	}
	if err != nil {
		l.commitFailed(err, len(batch))
		if l.committedAnyway(ts) {
			// The last fsync failed after bbolt had written the meta page:
			// the commit shows in the file although it returned an error.
			// Its events stay refused (they may not be on disk), but the
			// log's state follows the file.
			l.logger.Error("buffer commit failed in its last fsync but shows in the file: state re-read from the file; its events are refused and may still be forwarded",
				"events", len(batch), "err", err)
			if rerr := l.reread(); rerr != nil {
				l.logger.Error("buffer state not re-read", "err", rerr)
			}
		}
		if noSpace(err) {
			err = fmt.Errorf("buffer: commit: %w: %w", ErrDiskFull, err)
		} else {
			err = fmt.Errorf("buffer: commit: %w", err)
		}
		l.mu.Lock()
		for k, through := range acks { // retry with the next commit
			if through > l.acks[k] {
				l.acks[k] = through
			}
		}
		for name, n := range unsaved {
			l.addUnsavedLocked(name, n)
		}
		for link, u := range l.usageTx { // unless saved again meanwhile
			if _, newer := l.usage[link]; !newer {
				if l.usage == nil {
					l.usage = map[string]linkUsage{}
				}
				l.usage[link] = u
			}
		}
		if errors.Is(err, ErrDiskFull) {
			for _, r := range batch {
				if r.fn == nil {
					l.addUnsavedLocked(r.stream, 1)
				}
			}
		}
		l.mu.Unlock()
		for _, r := range batch {
			r.err = err
		}
		return batch, failedFns
	}
	l.install(ts, gen)
	l.learnRuns(ts, lim)
	if ts.noRoom {
		l.setDiskFull(true, ts.room.total())
	}
	if ts.behind {
		// Deletions were bounded: the next loop round goes on with them.
		l.behind.Store(true)
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	if noSpaceErr != nil {
		for _, r := range batch {
			if r.fn == nil && errors.Is(r.err, ErrDiskFull) {
				r.err = fmt.Errorf("buffer: commit: %w: %w", ErrDiskFull, noSpaceErr)
			}
		}
	}
	took := time.Since(start)
	l.commits.Add(1)
	l.commitNanos.Add(uint64(took))
	l.observeCommit(ts.appended, took)
	return batch, failedFns
}

// committedAnyway reports whether the file shows the failed transaction ts.
func (l *Log) committedAnyway(ts *txState) bool {
	if ts == nil || ts.txid == 0 {
		return false
	}
	seen := false
	_ = l.db.View(func(tx *bolt.Tx) error {
		seen = tx.ID() >= ts.txid
		return nil
	})
	return seen
}

// commitFailed logs a failed commit. Commits that keep failing (acks
// retry every commit) log a line each: the gateway's one rate-limited
// handler (internal/logging) keeps a full SD card from filling with them,
// as it does for every component.
func (l *Log) commitFailed(err error, events int) {
	l.logger.Error("buffer commit failed", "events", events, "err", err)
}

// attempt runs one transaction over batch. failed is the request whose
// function returned an error or panicked (the transaction is then rolled
// back, and failed.err holds that error).
func (l *Log) attempt(batch []*appendReq, acks map[ackKey]uint64, unsaved map[string]uint64, sweep bool, lim limits) (ts *txState, failed *appendReq, err error) {
	ts = &txState{l: l, streams: map[string]*stream{}, buckets: map[string]*bolt.Bucket{},
		room: lim.room, delBudget: lim.delBudget}
	defer func() {
		// bbolt panics on a damaged file (a freelist handing out live
		// pages after a power cut without fsync). Update has rolled the
		// transaction back; the log stops (Run returns the error) and the
		// next Open checks the file.
		if p := recover(); p != nil {
			if !l.damaged.Swap(true) {
				l.setState(stateDamaged)
				l.logger.Error("buffer file damaged: bbolt failed in a commit; stopping, the next start checks the file", "path", l.path, "err", p)
			}
			failed, err = nil, errDamaged(p)
		}
	}()
	l.db.NoFreelistSync = l.freelistOff() // read by Commit, set by its only caller
	err = l.db.Update(func(tx *bolt.Tx) error {
		ts.tx, ts.txid, ts.hwm0 = tx, tx.ID(), tx.Size()
		ts.root = tx.Bucket(bktStreams)
		for name, n := range unsaved {
			s, _, err := ts.get(name)
			if err != nil {
				return err
			}
			s.drops[DropDiskFull] += n
		}
		// Acks first: they name offsets committed before this batch.
		for k, through := range acks {
			if err := ts.ack(k.stream, k.consumer, through); err != nil {
				return err
			}
		}
		for _, r := range batch {
			r.err = nil
			if r.fn != nil {
				// A transaction of the caller's own (Log.Update), atomic
				// with itself: its error aborts this attempt.
				if err := l.call(r.fn, &Tx{ts: ts}); err != nil {
					failed, r.err = r, err
					return err
				}
				continue
			}
			ok, err := ts.append(r.stream, r.src, r.val)
			if err != nil {
				return err
			}
			if !ok.ok {
				r.err = ok.err
			}
		}
		if sweep {
			if err := ts.expire(l.opts.Now()); err != nil {
				return err
			}
		}
		if err := writeUsage(tx, l.usageTx); err != nil {
			return err
		}
		return ts.writeMeta()
	})
	return ts, failed, err
}

// call runs a caller's function, turning a panic into an error so that
// it cannot stop the commit loop.
func (l *Log) call(fn func(*Tx) error, tx *Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			l.logger.Error("update function panicked", "stack", string(debug.Stack()))
			err = fmt.Errorf("%w: %v", ErrUpdatePanic, p)
		}
	}()
	return fn(tx)
}

// install makes a committed transaction's streams the committed state.
func (l *Log) install(ts *txState, gen uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for name, s := range ts.streams {
		if cur, ok := l.streams[name]; ok {
			s.cfg = cur.cfg // Configure may have run during the commit
		}
		if l.cfgGen != gen {
			s.forgetUnrequired() // and forgotten positions this commit read
		}
		l.streams[name] = s
	}
	if ts.appended > 0 {
		close(l.changed)
		l.changed = make(chan struct{})
	}
}

func (l *Log) addUnsavedLocked(stream string, n uint64) {
	if l.unsaved == nil {
		l.unsaved = map[string]uint64{}
	}
	l.unsaved[stream] += n
}

// answer hands each request its result.
func (l *Log) answer(batch []*appendReq) {
	for _, r := range batch {
		if l.opts.Durability == DurabilityBatch && !r.wait {
			r.val = nil
			reqPool.Put(r)
			continue
		}
		r.done <- r.err
	}
}

type appendResult struct {
	ok  bool
	err error // why the event was refused (ErrFull, ErrDiskFull, ErrTooLarge)
}

// append adds one encoded event of source src to stream under its bounds
// and the commit's disk room. A refusal is a result, not an error: errors
// abort the transaction.
func (ts *txState) append(stream, src string, val []byte) (appendResult, error) {
	s, b, err := ts.get(stream)
	if err != nil {
		return appendResult{}, err
	}
	size := int64(len(val))
	if s.cfg.MaxBytes > 0 && size > s.cfg.MaxBytes {
		s.drops[DropTooLarge]++
		return appendResult{err: ErrTooLarge}, nil
	}
	if over(s, size) && s.cfg.Overflow == Reject {
		s.drops[DropFull]++
		return appendResult{err: ErrFull}, nil
	}
	// Checked before drop_oldest deletes anything for this event.
	if cost, large := ts.l.appendCost(len(val)); ts.noRoom || !ts.room.take(cost, large, ts.l.pageSize) {
		ts.noRoom = true
		s.drops[DropDiskFull]++
		return appendResult{err: ErrDiskFull}, nil
	}
	for over(s, size) {
		if s.cfg.Overflow == Rollup {
			rolled, err := ts.rollup(stream, s, b, size)
			if err != nil {
				return appendResult{}, err
			}
			if rolled {
				continue
			}
			// Nothing to roll up: the oldest event goes, as with
			// drop_oldest.
		}
		var victim string
		var off uint64
		deleted := true
		if fair(s.cfg) {
			victim, off, err = ts.evictLargest(stream, s, b, src, size)
		} else {
			victim, off, deleted, err = ts.deleteFirst(stream, s, b, math.MaxUint64, true)
		}
		if err != nil {
			return appendResult{}, err
		}
		s.drops[DropOverflow]++
		s.dropped(victim)
		if deleted {
			s.recordDrop(off, DropOverflow)
		}
	}
	if err := ts.put(stream, s, b, src, val); err != nil {
		return appendResult{}, err
	}
	ts.appended++
	return appendResult{ok: true}, nil
}

// put stores val as the next event of s (stream name, events bucket b),
// of source src, outside the bounds (append checked them).
func (ts *txState) put(stream string, s *stream, b *bolt.Bucket, src string, val []byte) error {
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], s.meta.Next)
	if err := b.Put(key[:], val); err != nil {
		return fmt.Errorf("stream %q: put: %w", stream, err)
	}
	size := int64(len(val))
	s.added(src, s.meta.Next, size)
	s.meta.Next++
	s.meta.Count++
	s.meta.Bytes += size
	return nil
}

func over(s *stream, size int64) bool {
	return s.meta.Count > 0 && ((s.cfg.MaxEvents > 0 && s.meta.Count+1 > s.cfg.MaxEvents) ||
		(s.cfg.MaxBytes > 0 && s.meta.Bytes+size > s.cfg.MaxBytes))
}

// deleteFirst removes the oldest event of s (stream name), unless its
// offset is past limit: then it only moves meta.First up to it. It
// returns the event's source (read when wantSrc or when holdings are
// tracked), its offset and whether it deleted one.
func (ts *txState) deleteFirst(name string, s *stream, b *bolt.Bucket, limit uint64, wantSrc bool) (src string, off uint64, deleted bool, err error) {
	// Seek to the known first offset rather than Cursor.First: within a
	// transaction that already deleted many events, First walks every
	// emptied leaf again, which made a large ack quadratic.
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], s.meta.First)
	c := b.Cursor()
	k, v := c.Seek(key[:])
	if k == nil {
		s.meta.Count, s.meta.Bytes, s.meta.First = 0, 0, s.meta.Next
		return "", 0, false, nil
	}
	if len(k) != 8 {
		// Damage (see dropMalformedKeys): not an event; remove it.
		return "", s.meta.First, false, c.Delete()
	}
	off = binary.BigEndian.Uint64(k)
	if off > limit {
		// A gap left by fair eviction (see fair.go): First is exact again.
		s.meta.First = off
		return "", off, false, nil
	}
	size := int64(len(v))
	if wantSrc || len(s.src.held) > 0 {
		if src, err = ts.sourceOf(name, v); err != nil {
			src = "\x00unreadable" // pooled: it cannot be attributed
		}
	}
	if err := c.Delete(); err != nil {
		return "", 0, false, err
	}
	ts.freed += size
	s.meta.Count--
	s.meta.Bytes -= size
	s.removed(src, off, size)
	// A lower bound: fair eviction may have left a gap after off.
	s.meta.First = off + 1
	if s.meta.Count == 0 {
		s.meta.First = s.meta.Next
	}
	return src, off, true, nil
}

// writeMeta stores the metadata of every stream the transaction touched.
// Each value gets its own slice: bbolt keeps a reference to a value until
// the transaction commits, so a reused buffer would leave every key with
// the last value written.
func (ts *txState) writeMeta() error {
	for name, s := range ts.streams {
		sb := ts.root.Bucket([]byte(name))
		buf := make([]byte, metaLen)
		s.meta.encode(buf)
		if err := sb.Put(keyMeta, buf); err != nil {
			return err
		}
		if s.prune {
			if err := pruneCounters(sb, bktConsumers, s.consumers); err != nil {
				return err
			}
			s.prune = false
		}
		if err := putCounters(sb, bktConsumers, s.consumers); err != nil {
			return err
		}
		if err := putCounters(sb, bktDrops, s.drops); err != nil {
			return err
		}
		if err := writeSources(sb, s); err != nil {
			return err
		}
		if err := writeGaps(sb, s); err != nil {
			return fmt.Errorf("stream %q drop records: %w", name, err)
		}
		if err := writeReplay(sb, s); err != nil {
			return err
		}
	}
	return nil
}

func putCounters(sb *bolt.Bucket, name []byte, m map[string]uint64) error {
	if len(m) == 0 {
		return nil
	}
	b, err := sb.CreateBucketIfNotExists(name)
	if err != nil {
		return err
	}
	vals := make([]byte, 8*len(m))
	i := 0
	for k, n := range m {
		v := vals[i : i+8 : i+8]
		i += 8
		binary.BigEndian.PutUint64(v, n)
		if err := b.Put([]byte(k), v); err != nil {
			return err
		}
	}
	return nil
}

// pruneCounters deletes the counters of bucket name that m lacks.
func pruneCounters(sb *bolt.Bucket, name []byte, m map[string]uint64) error {
	b := sb.Bucket(name)
	if b == nil {
		return nil
	}
	var gone [][]byte
	_ = b.ForEach(func(k, _ []byte) error {
		if _, ok := m[string(k)]; !ok {
			gone = append(gone, bytes.Clone(k))
		}
		return nil
	})
	for _, k := range gone {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func sortStrings(s []string) { sort.Strings(s) }

func sortStats(s []StreamStats) {
	sort.Slice(s, func(i, j int) bool { return s[i].Name < s[j].Name })
}
