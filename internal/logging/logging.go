package logging

import (
	"context"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Defaults of the rate limiter.
const (
	// DefaultBurst is how many lines with the same key pass per interval.
	DefaultBurst = 5
	// DefaultInterval is the limiter's window.
	DefaultInterval = time.Minute
	// DefaultMaxKeys bounds the keys tracked at once (about 200 bytes each).
	DefaultMaxKeys = 256
	// DefaultTotal bounds the lines of all keys together per interval:
	// a client that changes its ID for every refused attempt makes a new
	// key each time, so per-key bursts alone do not bound the log. 300 a
	// minute of ~200-byte lines is at most ~86 MB a day on the card under
	// a sustained attack, and far above a healthy gateway's few lines.
	DefaultTotal = 300
	// DefaultMaxValue bounds a string attribute's value in bytes (a
	// 65,530-byte client ID made 65 KB lines); longer values are cut at a
	// rune boundary and marked with their length.
	DefaultMaxValue = 256
)

// TotalSuppressedMsg is the message of the line that reports, once an
// interval is over, how many lines the total limit suppressed.
const TotalSuppressedMsg = "log lines suppressed: total limit"

// SuppressedMsg is the message of the line that reports, once the interval
// of a key is over, how many of its lines were suppressed.
const SuppressedMsg = "log lines suppressed"

// IdentityKeys are the attribute keys whose values, together with the level
// and the message, tell one kind of line from another: "uplink connect
// failed" for two endpoints are two keys, each with its own burst.
var IdentityKeys = []string{"component", "pipeline", "stream", "driver", "endpoint", "client"}

// Option tunes New and NewLimiter.
type Option func(*Limits)

// Limits configures a Limiter. Zero fields take the defaults.
type Limits struct {
	Burst    int           // lines per key and interval that pass (default 5; < 0: no limit)
	Interval time.Duration // window of each key, from its first line (default 1 min)
	MaxKeys  int           // keys tracked at once; the least recently seen is evicted (default 256)
	// Total is how many lines of all keys together pass per Interval
	// (default 300; < 0: no total limit). Summaries count toward it;
	// what it suppresses is reported in one TotalSuppressedMsg line per
	// interval. Unlimited messages neither count nor are suppressed.
	Total int
	// MaxValue is the longest string (or error) attribute value written,
	// in bytes (default 256; < 0: no limit).
	MaxValue int
	// Now is the limiter's clock. Nil: the time of each record (which
	// slog.Logger reads anyway; reading the clock again would double the
	// limiter's cost on boards whose clock source is slow), time.Now for
	// records without one.
	Now func() time.Time
	// Unlimited lists messages that are never limited: lines that have a
	// cadence of their own, such as the gateway's health line (one per
	// status.log_interval, which the operator chose). They still let
	// pending summaries out.
	Unlimited []string
}

// WithLimits sets the rate limiter's parameters.
func WithLimits(l Limits) Option { return func(o *Limits) { *o = l } }

// WithUnlimited exempts lines with these messages from the limit.
func WithUnlimited(msgs ...string) Option {
	return func(o *Limits) { o.Unlimited = append(o.Unlimited, msgs...) }
}

// WithNow injects the limiter's clock.
func WithNow(now func() time.Time) Option { return func(o *Limits) { o.Now = now } }

// New returns a logger writing to w. level is debug, info (also ""), warn
// or error. format is text, json, or auto (also ""): JSON when running
// under systemd, which sets JOURNAL_STREAM or INVOCATION_ID in the
// environment (read with env; nil means os.Getenv), text otherwise. Lines
// are rate-limited per key (see NewLimiter).
func New(w io.Writer, level, format string, env func(string) string, opts ...Option) (*slog.Logger, error) {
	var lvl slog.Level
	switch strings.ToLower(level) {
	case "debug":
		lvl = slog.LevelDebug
	case "info", "":
		lvl = slog.LevelInfo
	case "warn", "warning":
		lvl = slog.LevelWarn
	case "error":
		lvl = slog.LevelError
	default:
		return nil, fmt.Errorf("logging: level %q: must be debug, info, warn or error", level)
	}
	if env == nil {
		env = os.Getenv
	}
	switch strings.ToLower(format) {
	case "auto", "":
		format = "text"
		if env("JOURNAL_STREAM") != "" || env("INVOCATION_ID") != "" {
			format = "json"
		}
	case "text", "json":
		format = strings.ToLower(format)
	default:
		return nil, fmt.Errorf("logging: format %q: must be auto, text or json", format)
	}
	var l Limits
	for _, o := range opts {
		o(&l)
	}
	hopts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	if format == "json" {
		h = slog.NewJSONHandler(w, hopts)
	} else {
		h = slog.NewTextHandler(w, hopts)
	}
	return slog.New(NewLimiter(h, l)), nil
}

// Limiter is a slog.Handler that passes at most Burst lines per key and
// Interval to the handler it wraps, where the key is the level, the message
// and the values of the IdentityKeys attributes (the logger's own, from
// With, and the line's). The rest are counted, and once the key's interval
// is over one line SuppressedMsg with suppressed_msg=<message> and
// count=<n> reports them: it is written with the first line logged after
// that moment (any line: the gateway's health line comes every few
// seconds) or when the key is evicted, never dropped while the process
// runs. (The original message goes in "suppressed_msg", not "msg": JSON
// lines with two "msg" keys are ambiguous to every log shipper.)
//
// Memory is bounded: at most MaxKeys keys are tracked, and the least
// recently seen is evicted (its pending count reported first). Keys are
// 64-bit hashes; two kinds of line whose hashes collide (about 1 in 10^17
// per pair) would share a burst. A Limiter is safe for concurrent use, and
// the handlers WithAttrs and WithGroup return share its state.
type Limiter struct {
	next  slog.Handler
	st    *limitState
	ident []slog.Attr // identity attributes from WithAttrs, in order
	seed  uint64      // hash of ident, chained into each key
}

// limitState is what a Limiter and its derived handlers share.
type limitState struct {
	lim  Limits
	seed maphash.Seed

	mu      sync.Mutex
	keys    map[uint64]*entry
	lru     entry     // sentinel of the recency list: lru.next is the newest
	nextDue time.Time // earliest end of an interval with a pending count; zero: none

	// The total limit's window, shared by all keys.
	totalStart      time.Time
	totalN          int // lines passed in the window
	totalSuppressed int
	totalH          *Limiter // writes the total summary (the root limiter)
}

// entry is one key's window.
type entry struct {
	key        uint64
	prev, next *entry
	start      time.Time // of the current interval
	n          int       // lines in the current interval, passed or not
	suppressed int
	// For the summary: the handler (with its With attributes and groups),
	// level, message and identity attributes of the key's lines.
	h     *Limiter
	level slog.Level
	msg   string
	attrs []slog.Attr
}

// NewLimiter wraps next with the rate limiter lim.
func NewLimiter(next slog.Handler, lim Limits) *Limiter {
	if lim.Burst == 0 {
		lim.Burst = DefaultBurst
	}
	if lim.Interval <= 0 {
		lim.Interval = DefaultInterval
	}
	if lim.MaxKeys <= 0 {
		lim.MaxKeys = DefaultMaxKeys
	}
	if lim.Total == 0 {
		lim.Total = DefaultTotal
	}
	if lim.MaxValue == 0 {
		lim.MaxValue = DefaultMaxValue
	}
	st := &limitState{lim: lim, seed: maphash.MakeSeed(), keys: make(map[uint64]*entry)}
	st.lru.prev, st.lru.next = &st.lru, &st.lru
	l := &Limiter{next: next, st: st}
	st.totalH = l
	return l
}

// Enabled implements slog.Handler: the wrapped handler's level decides.
func (l *Limiter) Enabled(ctx context.Context, level slog.Level) bool {
	return l.next.Enabled(ctx, level)
}

// WithAttrs implements slog.Handler.
func (l *Limiter) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *l
	attrs = l.st.cutAll(attrs)
	c.next = l.next.WithAttrs(attrs)
	for _, a := range attrs {
		if isIdentity(a.Key) {
			c.ident = append(c.ident[:len(c.ident):len(c.ident)], a)
		}
	}
	if len(c.ident) != len(l.ident) {
		var h maphash.Hash
		h.SetSeed(l.st.seed)
		for _, a := range c.ident {
			writeAttr(&h, a)
		}
		c.seed = h.Sum64()
	}
	return &c
}

// WithGroup implements slog.Handler.
func (l *Limiter) WithGroup(name string) slog.Handler {
	c := *l
	c.next = l.next.WithGroup(name)
	return &c
}

// Handle implements slog.Handler.
func (l *Limiter) Handle(ctx context.Context, r slog.Record) error {
	st := l.st
	r = st.cut(r)
	if st.lim.Burst < 0 {
		return l.next.Handle(ctx, r)
	}
	now := r.Time
	if st.lim.Now != nil || now.IsZero() {
		now = st.now()
	}
	unlimited := false
	for _, m := range st.lim.Unlimited {
		unlimited = unlimited || r.Message == m
	}

	st.mu.Lock()
	var due []summary
	if !st.nextDue.IsZero() && !now.Before(st.nextDue) {
		due = st.sweep(now, due)
	}
	due = st.totalWindow(now, due)
	if unlimited {
		st.mu.Unlock()
		return l.emit(ctx, due, &r)
	}
	key := l.key(&r)
	e := st.keys[key]
	if e == nil {
		e = st.add(key, l, &r)
		if len(st.keys) > st.lim.MaxKeys {
			due = st.evictOldest(now, due)
		}
	} else {
		st.touch(e)
	}
	if e.n > 0 && now.Sub(e.start) >= st.lim.Interval {
		if e.suppressed > 0 {
			due = append(due, e.summary(now))
		}
		e.n, e.suppressed = 0, 0
	}
	if e.n == 0 {
		e.start = now
	}
	e.n++
	pass := e.n <= st.lim.Burst
	if pass && !st.takeTotal() {
		// Counted in the total summary, not the key's: a key-less line
		// per interval, whatever the number of keys.
		st.mu.Unlock()
		return l.emit(ctx, due, nil)
	}
	if !pass {
		e.suppressed++
		e.h = l // the summary goes out with the latest logger's attributes
		if end := e.start.Add(st.lim.Interval); st.nextDue.IsZero() || end.Before(st.nextDue) {
			st.nextDue = end
		}
	}
	st.mu.Unlock()
	if !pass {
		return l.emit(ctx, due, nil)
	}
	return l.emit(ctx, due, &r)
}

// takeTotal counts one line against the total limit, or the suppressed
// ones when it is spent. st.mu is held.
func (st *limitState) takeTotal() bool {
	if st.lim.Total < 0 {
		return true
	}
	if st.totalN >= st.lim.Total {
		st.totalSuppressed++
		return false
	}
	st.totalN++
	return true
}

// totalWindow starts a new total window once the current one is over,
// reporting what the last one suppressed, and lets through only the
// summaries due that fit in the total (the rest are added to its count).
// st.mu is held.
func (st *limitState) totalWindow(now time.Time, due []summary) []summary {
	if st.totalStart.IsZero() || now.Sub(st.totalStart) >= st.lim.Interval {
		if st.totalSuppressed > 0 {
			due = append(due, summary{h: st.totalH, level: slog.LevelWarn, msg: TotalSuppressedMsg, count: st.totalSuppressed, at: now, total: true})
		}
		st.totalStart, st.totalN, st.totalSuppressed = now, 0, 0
	}
	kept := due[:0]
	for _, s := range due {
		if s.total || st.takeTotal() {
			kept = append(kept, s)
			continue
		}
		st.totalSuppressed += s.count - 1 // takeTotal counted the summary line itself
	}
	return kept
}

// cut returns r with string and error attribute values longer than
// MaxValue shortened (r itself when none is).
func (st *limitState) cut(r slog.Record) slog.Record {
	if st.lim.MaxValue < 0 {
		return r
	}
	long := false
	r.Attrs(func(a slog.Attr) bool {
		long = st.tooLong(a.Value)
		return !long
	})
	if !long {
		return r
	}
	c := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		c.AddAttrs(st.cutAttr(a))
		return true
	})
	return c
}

// cutAll is cut for the attributes given to WithAttrs.
func (st *limitState) cutAll(attrs []slog.Attr) []slog.Attr {
	if st.lim.MaxValue < 0 {
		return attrs
	}
	var out []slog.Attr
	for i, a := range attrs {
		if !st.tooLong(a.Value) {
			if out != nil {
				out = append(out, a)
			}
			continue
		}
		if out == nil {
			out = append(make([]slog.Attr, 0, len(attrs)), attrs[:i]...)
		}
		out = append(out, st.cutAttr(a))
	}
	if out == nil {
		return attrs
	}
	return out
}

func (st *limitState) tooLong(v slog.Value) bool {
	switch v.Kind() {
	case slog.KindString:
		return len(v.String()) > st.lim.MaxValue
	case slog.KindGroup:
		for _, a := range v.Group() {
			if st.tooLong(a.Value) {
				return true
			}
		}
	case slog.KindAny:
		if err, ok := v.Any().(error); ok && err != nil {
			return len(err.Error()) > st.lim.MaxValue
		}
	}
	return false
}

func (st *limitState) cutAttr(a slog.Attr) slog.Attr {
	v := a.Value
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, cutString(v.String(), st.lim.MaxValue))
	case slog.KindGroup:
		g := v.Group()
		c := make([]slog.Attr, len(g))
		for i, ga := range g {
			c[i] = st.cutAttr(ga)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(c...)}
	case slog.KindAny:
		if err, ok := v.Any().(error); ok && err != nil && len(err.Error()) > st.lim.MaxValue {
			return slog.String(a.Key, cutString(err.Error(), st.lim.MaxValue))
		}
	}
	return a
}

// cutString keeps the first max bytes of s, at a rune boundary, and says
// how long s was.
func cutString(s string, max int) string {
	if len(s) <= max {
		return s
	}
	n := max
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return fmt.Sprintf("%s…(%d bytes)", s[:n], len(s))
}

// emit writes the summaries due, then r unless it is nil. It runs outside
// the lock: the wrapped handler may be slow (a full pipe), and lines of
// other keys need not wait for it.
func (l *Limiter) emit(ctx context.Context, due []summary, r *slog.Record) error {
	var err error
	for _, s := range due {
		if serr := s.emit(ctx); serr != nil && err == nil {
			err = serr
		}
	}
	if r != nil {
		if herr := l.next.Handle(ctx, *r); herr != nil {
			err = herr
		}
	}
	return err
}

// key hashes the level, the message and the identity attributes of r and
// of the logger. It does not allocate for string and integer values.
func (l *Limiter) key(r *slog.Record) uint64 {
	var h maphash.Hash
	h.SetSeed(l.st.seed)
	var b [8]byte
	putUint64(&b, l.seed)
	_, _ = h.Write(b[:])
	putUint64(&b, uint64(int64(r.Level)))
	_, _ = h.Write(b[:])
	_, _ = h.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		if isIdentity(a.Key) {
			writeAttr(&h, a)
		}
		return true
	})
	return h.Sum64()
}

func isIdentity(k string) bool {
	for _, id := range IdentityKeys {
		if k == id {
			return true
		}
	}
	return false
}

// writeAttr hashes a's key and value; a separator byte keeps "a"+"bc" and
// "ab"+"c" apart.
func writeAttr(h *maphash.Hash, a slog.Attr) {
	_, _ = h.WriteString(a.Key)
	_ = h.WriteByte(0)
	v := a.Value.Resolve()
	var b [8]byte
	switch v.Kind() {
	case slog.KindString:
		_, _ = h.WriteString(v.String())
	case slog.KindInt64:
		putUint64(&b, uint64(v.Int64()))
		_, _ = h.Write(b[:])
	case slog.KindUint64:
		putUint64(&b, v.Uint64())
		_, _ = h.Write(b[:])
	case slog.KindBool:
		if v.Bool() {
			_ = h.WriteByte(1)
		}
	case slog.KindFloat64:
		putUint64(&b, math.Float64bits(v.Float64()))
		_, _ = h.Write(b[:])
	default:
		_, _ = h.WriteString(v.String())
	}
	_ = h.WriteByte(0)
}

func putUint64(b *[8]byte, v uint64) {
	for i := range b {
		b[i] = byte(v >> (8 * i))
	}
}

// add tracks a new key, newest in the recency list. st.mu is held.
func (st *limitState) add(key uint64, l *Limiter, r *slog.Record) *entry {
	e := &entry{key: key, h: l, level: r.Level, msg: r.Message}
	r.Attrs(func(a slog.Attr) bool {
		if isIdentity(a.Key) {
			e.attrs = append(e.attrs, a)
		}
		return true
	})
	st.keys[key] = e
	e.prev, e.next = &st.lru, st.lru.next
	e.prev.next, e.next.prev = e, e
	return e
}

// touch makes e the most recently seen key. st.mu is held.
func (st *limitState) touch(e *entry) {
	if st.lru.next == e {
		return
	}
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = &st.lru, st.lru.next
	e.prev.next, e.next.prev = e, e
}

// evictOldest forgets the least recently seen key, reporting what it
// suppressed. st.mu is held.
func (st *limitState) evictOldest(now time.Time, due []summary) []summary {
	e := st.lru.prev
	if e == &st.lru {
		return due
	}
	e.prev.next, e.next.prev = e.next, e.prev
	delete(st.keys, e.key)
	if e.suppressed > 0 {
		due = append(due, e.summary(now))
	}
	return due
}

// sweep reports every key whose interval ended with lines suppressed, and
// starts a fresh interval for it at its next line. st.mu is held.
func (st *limitState) sweep(now time.Time, due []summary) []summary {
	st.nextDue = time.Time{}
	for _, e := range st.keys {
		if e.suppressed == 0 {
			continue
		}
		end := e.start.Add(st.lim.Interval)
		if now.Before(end) {
			if st.nextDue.IsZero() || end.Before(st.nextDue) {
				st.nextDue = end
			}
			continue
		}
		due = append(due, e.summary(now))
		e.n, e.suppressed = 0, 0
	}
	return due
}

// summary is one SuppressedMsg line to write.
type summary struct {
	h     *Limiter
	level slog.Level
	msg   string
	count int
	attrs []slog.Attr
	at    time.Time
	total bool // the total limit's summary: TotalSuppressedMsg, no suppressed_msg
}

func (e *entry) summary(now time.Time) summary {
	return summary{h: e.h, level: e.level, msg: e.msg, count: e.suppressed, attrs: e.attrs, at: now}
}

// now reads the limiter's clock.
func (st *limitState) now() time.Time {
	if st.lim.Now != nil {
		return st.lim.Now()
	}
	return time.Now()
}

func (s summary) emit(ctx context.Context) error {
	if !s.h.next.Enabled(ctx, s.level) {
		return nil
	}
	if s.total {
		r := slog.NewRecord(s.at, s.level, s.msg, 0)
		r.AddAttrs(slog.Int("count", s.count))
		return s.h.next.Handle(ctx, r)
	}
	r := slog.NewRecord(s.at, s.level, SuppressedMsg, 0)
	r.AddAttrs(s.attrs...)
	r.AddAttrs(slog.String("suppressed_msg", s.msg), slog.Int("count", s.count))
	return s.h.next.Handle(ctx, r)
}
