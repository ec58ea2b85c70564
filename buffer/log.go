package buffer

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/internal/durable"
	"github.com/ferrygw/ferry/internal/keyring"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Bucket layout (all keys big-endian):
//
//	streams/<name>/meta          first(8) next(8) count(8) bytes(8)
//	streams/<name>/ev/<offset>   CBOR event, sealed with Options.Keys if set
//	streams/<name>/drops/<why>   count(8)
//	streams/<name>/consumers/<c> offset(8) processed through
//	streams/<name>/holdings, srcdrops/<source>  per-source state (fair.go)
//	streams/<name>/gaps/<from>   to(8) dropped reasons: offsets deleted unprocessed (gaps.go)
//	streams/<name>/replay/<c>    offset(8): c's position before its last Rewind (replay.go)
//	state/<name>                 opaque bytes written with Tx.PutState, sealed likewise
//	meta/epoch                   8 random bytes: the file's epoch (epoch.go)
//	meta/usage/<link>            period start(8) bytes(8): a link's data budget usage (usage.go)
//
// A sealed value starts with keyring.Marker, which no CBOR event starts
// with: values written in the clear before encryption was turned on are
// told apart by their first byte (see seal.go).
var (
	bktStreams   = []byte("streams")
	bktEvents    = []byte("ev")
	bktDrops     = []byte("drops")
	bktConsumers = []byte("consumers")
	bktState     = []byte("state")
	keyMeta      = []byte("meta")
)

const metaLen = 32

// Log is a durable, bounded, multi-stream event log. See the package doc.
type Log struct {
	db     *bolt.DB
	path   string
	opts   Options
	logger *slog.Logger

	reqs    chan *appendReq
	kick    chan struct{}
	acked   chan struct{} // an ack was recorded (see Options.AckInterval)
	stopped chan struct{}
	running atomic.Bool

	mu      sync.Mutex
	streams map[string]*stream // committed state, mirrored from the file
	acks    map[ackKey]uint64  // pending acks, applied by the next commit
	// committing holds the acks the running commit took from acks until
	// they are in streams (or back in acks), so Acked never goes back.
	committing map[ackKey]uint64
	// usage holds the links' usage saved since the last commit took it
	// (usage.go); usageTx what the running commit writes (set and cleared
	// by the commit loop under mu).
	usage, usageTx map[string]linkUsage
	changed        chan struct{} // closed and replaced after a commit that appends
	// retired lists, per stream, the consumers Configure dropped: a late
	// Ack or Tx.Ack of theirs (a pipeline still stopping) is ignored.
	retired map[string]map[string]bool
	cfgGen  uint64            // incremented by Configure
	unsaved map[string]uint64 // disk_full refusals of failed commits, per stream

	diskFull    atomic.Bool
	damaged     atomic.Bool // bbolt panicked in a commit (see state.go)
	behind      atomic.Bool // a commit left deletions for the next one
	pageSize    int
	growStep    int
	noRuns      bool     // commit loop only: see learnRuns
	freedSince  int64    // commit loop only: bytes deleted since noRuns was set
	statFile    *os.File // the bbolt file again, for fstatfs (nil where unused)
	quarantined string
	epoch       string // see epoch.go
	commits     atomic.Uint64
	commitNanos atomic.Uint64
}

type streamMeta struct {
	First uint64 // oldest kept offset; equals Next when empty
	Next  uint64 // offset the next event gets
	Count int64
	Bytes int64
}

type stream struct {
	cfg       StreamConfig
	meta      streamMeta
	drops     map[string]uint64
	consumers map[string]uint64 // consumer -> processed through offset
	prune     bool              // positions were forgotten: rewrite them in the file
	src       sources           // per-source holdings and drops (fair.go)
	gaps      gapIndex          // the stream's drop records (gaps.go)
	// dropping lists the offsets this transaction deleted unprocessed
	// (gaps.go); always empty in the committed state.
	dropping []dropRun
	replay   replayState // positions before rewinds (replay.go)
}

func newStream(cfg StreamConfig) *stream {
	return &stream{cfg: cfg, meta: streamMeta{First: 1, Next: 1}, drops: map[string]uint64{}, consumers: map[string]uint64{}}
}

func (s *stream) clone() *stream {
	c := &stream{cfg: s.cfg, meta: s.meta, prune: s.prune, drops: make(map[string]uint64, len(s.drops)+1),
		consumers: make(map[string]uint64, len(s.consumers)+1), src: s.src.clone(), gaps: s.gaps,
		replay: s.replay.clone()}
	for k, v := range s.drops {
		c.drops[k] = v
	}
	for k, v := range s.consumers {
		c.consumers[k] = v
	}
	return c
}

type appendReq struct {
	stream string
	val    []byte
	fn     func(*Tx) error // Log.Update
	wait   bool            // the caller waits for done even with DurabilityBatch
	lazy   bool            // UpdateDeferred: rides the next commit, starts none
	src    string          // the event's source: who may be waiting on the commit
	err    error
	done   chan error
}

var reqPool = sync.Pool{New: func() any { return &appendReq{done: make(chan error, 1)} }}

// Open opens or creates the log at path. The caller must run Log.Run for
// appends and acks to be committed, and Close the log after Run returned.
func Open(path string, opts Options) (*Log, error) {
	opts.setDefaults()
	l := &Log{
		path:    path,
		opts:    opts,
		logger:  opts.Logger,
		reqs:    make(chan *appendReq, opts.QueueLen),
		kick:    make(chan struct{}, 1),
		acked:   make(chan struct{}, 1),
		stopped: make(chan struct{}),
		streams: make(map[string]*stream),
		acks:    make(map[ackKey]uint64),
		changed: make(chan struct{}),
	}
	err := l.open()
	if err != nil && errors.Is(err, ErrCorrupt) && opts.OnCorrupt == CorruptQuarantine {
		q := fmt.Sprintf("%s.corrupt-%d", path, opts.Now().Unix())
		if rerr := os.Rename(path, q); rerr != nil {
			return nil, fmt.Errorf("quarantine %s: %w (after: %w)", path, rerr, err)
		}
		l.logger.Error("buffer file corrupt: moved aside, starting an EMPTY buffer; events in the old file are NOT forwarded",
			"path", path, "quarantined_to", q, "err", err)
		l.quarantined = q
		l.streams = make(map[string]*stream)
		_ = os.Remove(l.statePath()) // it described the old file
		err = l.open()
	}
	if err != nil {
		return nil, err
	}
	for _, sc := range opts.Streams {
		s := l.streamLocked(sc.Name)
		s.cfg = sc
		s.forgetUnrequired() // consumers dropped from the config while stopped
	}
	l.setState(l.runningState())
	return l, nil
}

func (l *Log) open() (err error) {
	db, err := l.openBolt()
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return fmt.Errorf("open buffer %s: %w", l.path, ErrLocked)
		}
		if os.IsPermission(err) || errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("open buffer %s: %w", l.path, err)
		}
		return fmt.Errorf("open buffer %s: %w: %v", l.path, ErrCorrupt, err)
	}
	l.growStep = growStep(l.opts.MinFreeDisk)
	db.AllocSize = l.growStep
	l.pageSize = db.Info().PageSize
	why := l.checkDue()
	if why != "" {
		if err := durable.CheckBolt(db); err != nil {
			_ = db.Close()
			return fmt.Errorf("open buffer %s: %w: %s: %v", l.path, ErrCorrupt, why, err)
		}
		l.logger.Warn("buffer file checked page by page: intact", "path", l.path, "why", why)
	}
	if err := l.load(db, why != ""); err != nil {
		_ = db.Close()
		if errors.Is(err, ErrWrongKey) || errors.Is(err, errNoEpoch) { // the file is fine
			return fmt.Errorf("open buffer %s: %w", l.path, err)
		}
		return fmt.Errorf("open buffer %s: %w: %v", l.path, ErrCorrupt, err)
	}
	l.db = db
	// A second descriptor, read-only, for fstatfs: unlike statfs on the
	// path it costs no allocation per commit, and bbolt does not expose
	// its own.
	if l.statFile, err = openStatFile(l.path); err != nil {
		_ = db.Close()
		return fmt.Errorf("open buffer %s: %w", l.path, err)
	}
	return nil
}

// openBolt opens the file. bbolt writes its freelist, one id per free
// page, whole in every commit: after a cloud outage the pages the drained
// backlog freed stay in the file, and a 2 MB backlog tripled the bytes
// written per reading from then on (BenchmarkWear after-backlog: 8,888 B
// against 2,621). So commits leave the freelist out of the file
// (NoFreelistSync, as etcd does) while it is longer than a page
// (freelistOff), and bbolt rebuilds it at open by walking the pages in
// use: few, when many are free. While it is short it is written, so a
// file holding a large backlog still opens without reading it. bbolt's
// walk runs in a goroutine of its own, where a damaged page crashes the
// process instead of failing Open; walkFile reads the same pages first,
// where a failure is an error.
func (l *Log) openBolt() (*bolt.DB, error) {
	synced := true
	if _, err := os.Stat(l.path); err == nil {
		synced = freelistInFile(l.path)
	}
	if !synced {
		if err := walkFile(l.path); err != nil {
			return nil, err
		}
	}
	return boltOpen(l.path, &bolt.Options{
		Timeout:        time.Second,
		NoSync:         l.opts.Durability == DurabilityNone,
		NoFreelistSync: !synced, // as the file is: no rewrite at open
		FreelistType:   bolt.FreelistMapType,
		PageSize:       l.opts.PageSize,
	})
}

// freelistOff reports whether the next commit leaves bbolt's freelist out
// of the file: when its ids no longer fit in one page.
func (l *Log) freelistOff() bool {
	if l.opts.syncFreelist {
		return false
	}
	st := l.db.Stats()
	return (st.FreePageN+st.PendingPageN)*8+16 > l.pageSize
}

// boltOpen is bolt.Open that turns a panic into an error: bbolt panics
// in Open on some damaged files (a freelist page that is not one, after a
// power cut without fsync), which must quarantine the file, not crash the
// gateway into a restart loop (found by gateway.TestPowerCut).
func boltOpen(path string, opts *bolt.Options) (db *bolt.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, fmt.Errorf("bbolt: %v", p)
		}
	}()
	return bolt.Open(path, 0o600, opts)
}

// load reads the per-stream metadata: one small record per stream, so
// start-up does not depend on the backlog's size. A file shorter than its
// own metadata says, or whose pages make bbolt panic, is reported as corrupt
// instead of crashing the gateway later. It then checks that Options.Keys
// can open what the file holds (checkKeys: ErrWrongKey), and reads the
// file's epoch (creating it for a file that has none). deep (after an
// unclean stop) also removes records with malformed keys.
func (l *Log) load(db *bolt.DB, deep bool) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("reading metadata: %v", r)
		}
	}()
	fi, err := os.Stat(l.path)
	if err != nil {
		return err
	}
	return db.Update(func(tx *bolt.Tx) error {
		if tx.Size() > fi.Size() {
			return fmt.Errorf("file is %d bytes but its metadata needs %d (truncated)", fi.Size(), tx.Size())
		}
		root, err := tx.CreateBucketIfNotExists(bktStreams)
		if err != nil {
			return err
		}
		err = root.ForEachBucket(func(name []byte) error {
			b := root.Bucket(name)
			m, err := decodeMeta(b.Get(keyMeta))
			if err != nil {
				return fmt.Errorf("stream %q: %w", name, err)
			}
			if ev := b.Bucket(bktEvents); ev != nil && deep {
				// Pages a power cut left half written can hold keys no
				// commit wrote (CheckBolt checks the page structure, not
				// the keys); offsets are 8 bytes, anything else goes.
				if n, err := dropMalformedKeys(ev); err != nil {
					return fmt.Errorf("stream %q: %w", name, err)
				} else if n > 0 {
					l.logger.Warn("buffer records with malformed keys removed (power cut without fsync?)",
						"stream", string(name), "records", n)
					m = recount(ev)
					buf := make([]byte, metaLen)
					m.encode(buf)
					if err := b.Put(keyMeta, buf); err != nil {
						return err
					}
				}
			}
			if ev := b.Bucket(bktEvents); ev != nil {
				if k, _ := ev.Cursor().Last(); len(k) == 8 && binary.BigEndian.Uint64(k) >= m.Next {
					// Events past the metadata's next offset: a power cut
					// with durability none kept pages of a later commit
					// but not its meta. New appends would reuse their
					// offsets, and the uplink skip them: recount.
					old := m
					m = recount(ev)
					l.logger.Warn("buffer stream metadata behind its events (power cut without fsync?): recounted",
						"stream", string(name), "was_next", old.Next, "next", m.Next, "events", m.Count)
					buf := make([]byte, metaLen)
					m.encode(buf)
					if err := b.Put(keyMeta, buf); err != nil {
						return err
					}
				}
			}
			s := newStream(l.opts.DefaultStream)
			s.meta = m
			s.cfg.Name = string(name)
			readCounters(b, s)
			l.readSources(name, b, s)
			l.streams[string(name)] = s
			return nil
		})
		if err != nil {
			return err
		}
		if err := l.loadEpoch(tx); err != nil {
			return err
		}
		return l.checkKeys(tx)
	})
}

// readCounters reads a stream's consumer positions, drop counts, the
// index of its drop records and its replay marks.
func readCounters(b *bolt.Bucket, s *stream) {
	s.gaps = readGapIndex(b)
	s.replay = readReplay(b)
	if c := b.Bucket(bktConsumers); c != nil {
		_ = c.ForEach(func(k, v []byte) error {
			if len(v) == 8 {
				s.consumers[string(k)] = binary.BigEndian.Uint64(v)
			}
			return nil
		})
	}
	if d := b.Bucket(bktDrops); d != nil {
		_ = d.ForEach(func(k, v []byte) error {
			if len(v) == 8 {
				s.drops[string(k)] = binary.BigEndian.Uint64(v)
			}
			return nil
		})
	}
}

// reread replaces the committed state of every stream with what the file
// holds. After a commit that failed in its last fsync, bbolt may already
// show that commit (its meta page is in the page cache, and bbolt reads
// through it: etcd-io/bbolt#233): the events the caller was told were
// refused are in the file, and the offsets they took must not be given
// out again (found by gateway.TestStorageFaults: acknowledged events
// took those offsets and the uplink, already past them, never sent them).
func (l *Log) reread() error {
	fresh := map[string]*stream{}
	err := l.db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bktStreams)
		if root == nil {
			return nil
		}
		return root.ForEachBucket(func(name []byte) error {
			b := root.Bucket(name)
			m, err := decodeMeta(b.Get(keyMeta))
			if err != nil {
				return fmt.Errorf("stream %q: %w", name, err)
			}
			s := newStream(StreamConfig{})
			s.meta = m
			readCounters(b, s)
			l.readSources(name, b, s)
			fresh[string(name)] = s
			return nil
		})
	})
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for name, s := range fresh {
		s.cfg = l.streamLocked(name).cfg
		l.streams[name] = s
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return nil
}

// dropMalformedKeys deletes the records of ev whose key is not an 8-byte
// offset, and returns how many it deleted.
func dropMalformedKeys(ev *bolt.Bucket) (int, error) {
	var bad [][]byte
	_ = ev.ForEach(func(k, _ []byte) error {
		if len(k) != 8 {
			bad = append(bad, bytes.Clone(k))
		}
		return nil
	})
	for _, k := range bad {
		if err := ev.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(bad), nil
}

// recount rebuilds a stream's metadata from its events.
func recount(ev *bolt.Bucket) streamMeta {
	m := streamMeta{}
	_ = ev.ForEach(func(k, v []byte) error {
		if len(k) != 8 {
			return nil
		}
		off := binary.BigEndian.Uint64(k)
		if m.Count == 0 {
			m.First = off
		}
		m.Next = off + 1
		m.Count++
		m.Bytes += int64(len(v))
		return nil
	})
	if m.Count == 0 {
		m.First, m.Next = 1, 1
	}
	return m
}

func decodeMeta(b []byte) (streamMeta, error) {
	if b == nil {
		return streamMeta{First: 1, Next: 1}, nil
	}
	if len(b) != metaLen {
		return streamMeta{}, fmt.Errorf("meta record has %d bytes, want %d", len(b), metaLen)
	}
	m := streamMeta{
		First: binary.BigEndian.Uint64(b[0:]),
		Next:  binary.BigEndian.Uint64(b[8:]),
		Count: int64(binary.BigEndian.Uint64(b[16:])),
		Bytes: int64(binary.BigEndian.Uint64(b[24:])),
	}
	if m.First == 0 || m.First > m.Next || m.Count < 0 || m.Bytes < 0 || uint64(m.Count) > m.Next-m.First {
		return streamMeta{}, fmt.Errorf("meta record inconsistent: %+v", m)
	}
	return m, nil
}

func (m streamMeta) encode(b []byte) {
	binary.BigEndian.PutUint64(b[0:], m.First)
	binary.BigEndian.PutUint64(b[8:], m.Next)
	binary.BigEndian.PutUint64(b[16:], uint64(m.Count))
	binary.BigEndian.PutUint64(b[24:], uint64(m.Bytes))
}

// streamLocked returns the committed state of name, creating it (not yet in
// the file) with the default config. l.mu must be held or the Log unshared.
func (l *Log) streamLocked(name string) *stream {
	s, ok := l.streams[name]
	if !ok {
		s = newStream(l.opts.DefaultStream)
		for _, sc := range l.opts.Streams {
			if sc.Name == name {
				s.cfg = sc
			}
		}
		s.cfg.Name = name
		l.streams[name] = s
	}
	return s
}

// Path returns the file's path.
func (l *Log) Path() string { return l.path }

// Quarantined returns where a corrupt file was moved at Open, or "".
func (l *Log) Quarantined() string { return l.quarantined }

// Close closes the file. Call it after Run has returned.
func (l *Log) Close() error {
	if l.running.Load() {
		return errors.New("buffer: Close while Run is running")
	}
	if l.statFile != nil {
		_ = l.statFile.Close()
	}
	// Without fsync per commit (DurabilityNone), the file is only
	// complete on disk after this Sync: only then may it be called clean.
	err := l.db.Sync()
	if cerr := l.db.Close(); err == nil {
		err = cerr
	}
	if err == nil && !l.damaged.Load() {
		l.setState(stateClean)
	}
	return err
}

// Append adds ev to the end of ev.Stream, assigning ev.Time if it is zero.
// With DurabilitySync it returns after the event is on disk; see Durability
// for the other modes. Errors: ErrFull, ErrDiskFull, ErrTooLarge, ErrClosed,
// or the context's error if ctx ends before the event was queued.
func (l *Log) Append(ctx context.Context, ev *event.Event) error {
	p, err := l.Enqueue(ctx, ev)
	if err != nil {
		return err
	}
	return p.Wait()
}

// Pending is an append queued by Enqueue.
type Pending struct {
	l *Log
	r *appendReq // nil: nothing to wait for (DurabilityBatch)
}

// Enqueue queues ev like Append and returns without waiting for its
// commit; Pending.Wait then returns what Append would have. Events are
// committed in the order they were queued, so a caller that enqueues
// several events and waits for each in turn (a client with several QoS 1
// publishes in flight) gets them into as few commits as the log can make,
// in order. Errors are Append's that come before the commit: encoding,
// ErrClosed, the context's.
func (l *Log) Enqueue(ctx context.Context, ev *event.Event) (Pending, error) {
	if ev.Time.IsZero() {
		ev.Time = l.opts.Now()
	}
	val, err := event.Marshal(ev)
	if err != nil {
		return Pending{}, fmt.Errorf("buffer: encode event: %w", err)
	}
	// Sealed here, in the caller's goroutine, like the encoding: the
	// commit loop's transaction only copies bytes.
	val = sealValue(l.opts.Keys, val, "", ev.Stream)
	r := reqPool.Get().(*appendReq)
	r.stream, r.val, r.err, r.src = ev.Stream, val, nil, ev.Source
	select {
	case l.reqs <- r:
	case <-ctx.Done():
		reqPool.Put(r)
		return Pending{}, ctx.Err()
	case <-l.stopped:
		reqPool.Put(r)
		return Pending{}, ErrClosed
	}
	if l.opts.Durability == DurabilityBatch {
		return Pending{}, nil // the commit loop recycles r
	}
	return Pending{l: l, r: r}, nil
}

// Wait returns the outcome of the append: nil once the event is committed
// (with DurabilitySync, on disk), or why it was refused. Call it once.
func (p Pending) Wait() error {
	if p.r == nil {
		return nil
	}
	err, answered := p.l.wait(p.r)
	if answered {
		reqPool.Put(p.r)
	}
	return err
}

// wait returns the commit loop's answer to a queued request, or ErrClosed
// for one queued after the loop's last drain (never written); answered
// says whether the loop is done with r.
func (l *Log) wait(r *appendReq) (err error, answered bool) {
	select {
	case err := <-r.done:
		return err, true
	case <-l.stopped:
		select {
		case err := <-r.done:
			return err, true
		default:
			return ErrClosed, false
		}
	}
}

// Changed returns a channel that is closed after the next commit that
// appends at least one event.
func (l *Log) Changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// Streams returns the names of the streams in the log, configured ones
// included.
func (l *Log) Streams() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	names := make([]string, 0, len(l.streams))
	for n := range l.streams {
		names = append(names, n)
	}
	sortStrings(names)
	return names
}

// Read calls fn, in offset order, for up to max events of stream whose
// offset is >= from, and returns the offset after the last one passed to fn
// (from when there was none). Events already deleted are skipped. A record
// that does not decode (or, sealed, fails authentication) is logged and
// skipped, never returned as an event and never allowed to block the stream.
// A record sealed with a key Options.Keys lacks is not skipped: Read stops
// before it with an error wrapping ErrWrongKey, since the right key file
// would read it. fn must not keep ev after it returns.
func (l *Log) Read(stream string, from uint64, max int, fn func(off uint64, ev *event.Event) error) (uint64, error) {
	next := from
	err := l.db.View(func(tx *bolt.Tx) error {
		b := eventsBucket(tx, stream)
		if b == nil {
			return nil
		}
		var key [8]byte
		binary.BigEndian.PutUint64(key[:], from)
		c := b.Cursor()
		var ev event.Event
		var aad, plain []byte // plain is reused: Unmarshal copies what it keeps
		if l.opts.Keys != nil {
			aad = []byte(stream)
		}
		n := 0
		for k, v := c.Seek(key[:]); k != nil && n < max; k, v = c.Next() {
			if len(k) != 8 {
				// Only damage writes such a key; Open removes them after
				// an unclean stop. Never a panic on what the disk holds.
				l.logger.Error("buffer record with a malformed key, skipped", "stream", stream, "key_len", len(k))
				continue
			}
			off := binary.BigEndian.Uint64(k)
			if keyring.IsSealed(v) {
				p, err := openValue(l.opts.Keys, plain[:0], v, aad, "stream", stream)
				if errors.Is(err, ErrWrongKey) {
					return err // next stays before it: nothing is skipped
				}
				if err != nil {
					next = off + 1
					l.logger.Error("buffer record unreadable, skipped", "stream", stream, "offset", off, "err", err)
					continue
				}
				plain, v = p, p
			}
			next = off + 1
			if err := event.Unmarshal(v, &ev); err != nil {
				l.logger.Error("buffer record unreadable, skipped", "stream", stream, "offset", off, "err", err)
				continue
			}
			n++
			if err := fn(off, &ev); err != nil {
				return err
			}
		}
		return nil
	})
	return next, err
}

func eventsBucket(tx *bolt.Tx, stream string) *bolt.Bucket {
	root := tx.Bucket(bktStreams)
	if root == nil {
		return nil
	}
	sb := root.Bucket([]byte(stream))
	if sb == nil {
		return nil
	}
	return sb.Bucket(bktEvents)
}

// StreamStats describes one stream.
type StreamStats struct {
	Name      string            `json:"name"`
	First     uint64            `json:"first"` // oldest kept offset
	Next      uint64            `json:"next"`  // offset of the next append
	Events    int64             `json:"events"`
	Bytes     int64             `json:"bytes"`
	Oldest    time.Time         `json:"oldest,omitzero"` // accept time of the oldest kept event
	Drops     map[string]uint64 `json:"drops,omitempty"`
	MaxEvents int64             `json:"max_events,omitempty"`
	MaxBytes  int64             `json:"max_bytes,omitempty"`
	// SourceDrops counts events deleted by overflow per source (the
	// first 16 sources to lose one, the rest under OtherSources).
	SourceDrops map[string]uint64 `json:"source_drops,omitempty"`
}

// Stats returns the state of every stream.
func (l *Log) Stats() []StreamStats {
	l.mu.Lock()
	out := make([]StreamStats, 0, len(l.streams))
	for name, s := range l.streams {
		st := StreamStats{Name: name, First: s.meta.First, Next: s.meta.Next, Events: s.meta.Count,
			Bytes: s.meta.Bytes, MaxEvents: s.cfg.MaxEvents, MaxBytes: s.cfg.MaxBytes}
		if len(s.drops) > 0 {
			st.Drops = make(map[string]uint64, len(s.drops))
			for k, v := range s.drops {
				st.Drops[k] = v
			}
		}
		if len(s.src.drops) > 0 {
			st.SourceDrops = maps.Clone(s.src.drops)
		}
		out = append(out, st)
	}
	l.mu.Unlock()
	sortStats(out)
	_ = l.db.View(func(tx *bolt.Tx) error {
		for i := range out {
			if b := eventsBucket(tx, out[i].Name); b != nil {
				if _, v := b.Cursor().First(); v != nil {
					var ev event.Event
					v, err := openValue(l.opts.Keys, nil, v, []byte(out[i].Name), "stream", out[i].Name)
					if err == nil && event.Unmarshal(v, &ev) == nil {
						out[i].Oldest = ev.Time
					}
				}
			}
		}
		return nil
	})
	return out
}

// CommitStats reports the number of commits and their total duration.
func (l *Log) CommitStats() (commits uint64, total time.Duration) {
	return l.commits.Load(), time.Duration(l.commitNanos.Load())
}

// DiskFull reports whether appends are refused for lack of disk space.
func (l *Log) DiskFull() bool { return l.diskFull.Load() }

// Check runs bbolt's consistency check over the whole file and verifies
// that each stream's metadata matches its events. It reads everything: for
// tests and operators, not for start-up.
func (l *Log) Check() error {
	return l.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		for name, s := range l.streams {
			b := eventsBucket(tx, name)
			var n, bytes int64
			first := s.meta.Next
			if b != nil {
				_ = b.ForEach(func(k, v []byte) error {
					if len(k) != 8 {
						return nil // counted below as a metadata mismatch
					}
					off := binary.BigEndian.Uint64(k)
					if n == 0 {
						first = off
					}
					n++
					bytes += int64(len(v))
					return nil
				})
			}
			if n != s.meta.Count || bytes != s.meta.Bytes || (n > 0 && first < s.meta.First) {
				return fmt.Errorf("stream %q: meta %+v, file has %d events, %d bytes, first %d", name, s.meta, n, bytes, first)
			}
			if err := l.checkSources(tx, name, s); err != nil {
				return err
			}
			if err := checkGaps(tx, name, s); err != nil {
				return err
			}
			if err := checkReplay(tx, name, s); err != nil {
				return err
			}
		}
		return nil
	})
}
