package audit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/ferrygw/ferry/internal/jsonstr"
)

// Entry is one audit record. Empty fields are left out of the line.
type Entry struct {
	// Event names what happened: connect, disconnect, auth_failure,
	// login_blocked, acl_deny, config_reload, config_refused, key_loaded,
	// key_rotated, ...
	Event    string
	ClientID string
	Username string
	Remote   string // remote address ip:port
	Listener string // tcp, tls, ws
	Topic    string // acl_deny: the topic or filter
	Action   string // acl_deny: publish, subscribe, will, session or client_id
	Reason   string
	Detail   string
}

// Options configures a Log; zero fields take their defaults.
type Options struct {
	// Path is the log file; rotated files are Path.1 (newest) to
	// Path.MaxFiles (oldest). Its directory must exist.
	Path string
	// MaxSize is the size in bytes at which a file is rotated (default
	// DefaultMaxSize).
	MaxSize int64
	// MaxFiles is how many rotated files are kept (default
	// DefaultMaxFiles), so the log takes at most (MaxFiles+1)*MaxSize
	// bytes.
	MaxFiles int
	// QueueLen is how many entries may wait for the writer (default
	// DefaultQueueLen). When the queue is full, Record counts the entry
	// as dropped instead of waiting.
	QueueLen int
	// Now is the clock (default time.Now); it stamps entries and drives
	// flood control.
	Now func() time.Time
	// Logger receives the writer's own errors, at most one a minute
	// (default: discarded).
	Logger *slog.Logger
}

// Stats counts what a Log did since Open.
type Stats struct {
	Written    uint64 // lines written to the file, the log's own lines included
	Dropped    uint64 // entries lost: queue full, or the file could not be written
	Suppressed uint64 // entries left out by flood control
	Rotations  uint64 // files rotated
	Errors     uint64 // failed file operations (open, write, rotate, close)
}

// Defaults and limits.
const (
	DefaultMaxSize  = 1 << 20
	DefaultMaxFiles = 3
	DefaultQueueLen = 1024

	// MaxFieldLen caps every field but Detail, in bytes; longer values
	// are cut and end in "...".
	MaxFieldLen = 256
	// MaxDetailLen caps Detail, which may carry an error message.
	MaxDetailLen = 1024

	// FloodLimit is how many entries with the same event and remote IP
	// are written per second; the rest are summarised.
	FloodLimit = 10
)

const (
	// floodKeys bounds the flood-control table. Beyond it, new addresses
	// share one bucket per event: the table's memory stays bounded while
	// a flood from many addresses is still limited.
	floodKeys    = 4096
	overflowHost = "other addresses"

	// bufSize is the write batch. It must hold the largest line (nine
	// capped fields, each byte escaped to at most six: about 19 KiB), so
	// that a line never straddles two writes and the writer knows
	// exactly which lines a failed write lost.
	bufSize = 32 << 10

	retryDelay = time.Second // between attempts to reopen a failed file
)

// item is a queued entry with the time it was recorded: the line carries
// when the event happened, not when the writer got to it.
type item struct {
	t time.Time
	e Entry
}

// Log is an audit log. Record may be called from any goroutine; Run is the
// single writer.
type Log struct {
	path     string
	maxSize  int64
	maxFiles int
	now      func() time.Time
	logger   *slog.Logger

	queue   chan item
	running atomic.Bool
	closed  atomic.Bool

	written, dropped, suppressed, rotations, errs atomic.Uint64

	w writer // owned by Run (and Open before it)
}

// Open opens the log file, creating it with mode 0600, to append to it. The
// file's directory must exist. Run must be called to write entries; it also
// closes the file.
func Open(o Options) (*Log, error) {
	switch {
	case o.Path == "":
		return nil, errors.New("audit: no path")
	case o.MaxSize < 0:
		return nil, fmt.Errorf("audit: negative max size %d", o.MaxSize)
	case o.MaxFiles < 0:
		return nil, fmt.Errorf("audit: negative max files %d", o.MaxFiles)
	case o.QueueLen < 0:
		return nil, fmt.Errorf("audit: negative queue length %d", o.QueueLen)
	}
	if o.MaxSize == 0 {
		o.MaxSize = DefaultMaxSize
	}
	if o.MaxFiles == 0 {
		o.MaxFiles = DefaultMaxFiles
	}
	if o.QueueLen == 0 {
		o.QueueLen = DefaultQueueLen
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Log{
		path:     o.Path,
		maxSize:  o.MaxSize,
		maxFiles: o.MaxFiles,
		now:      o.Now,
		logger:   o.Logger,
		queue:    make(chan item, o.QueueLen),
	}
	l.w = writer{
		l:     l,
		bw:    bufio.NewWriterSize(io.Discard, bufSize),
		flood: make(map[floodKey]floodState),
	}
	if err := l.w.open(); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return l, nil
}

// Record queues e to be written and returns at once. It does not allocate.
// When the queue is full, or Run has returned, e is counted as dropped. A
// nil *Log does nothing.
func (l *Log) Record(e Entry) {
	if l == nil {
		return
	}
	// A full queue is checked first so that a flood pays nothing for the
	// clock it would not use; the select below still handles a race.
	if l.closed.Load() || len(l.queue) == cap(l.queue) {
		l.dropped.Add(1)
		return
	}
	select {
	case l.queue <- item{t: l.now(), e: e}:
	default:
		l.dropped.Add(1)
	}
}

// Stats returns the counts so far; it is safe for concurrent use. A nil
// *Log returns zeros.
func (l *Log) Stats() Stats {
	if l == nil {
		return Stats{}
	}
	return Stats{
		Written:    l.written.Load(),
		Dropped:    l.dropped.Load(),
		Suppressed: l.suppressed.Load(),
		Rotations:  l.rotations.Load(),
		Errors:     l.errs.Load(),
	}
}

// Run is the writer: it drains the queue, writes lines, rotates files, and
// writes the buffered lines out whenever the queue runs empty. When ctx
// ends it writes what was queued, the pending flood summaries and a last
// audit_dropped line if needed, closes the file, and returns nil. The log
// is best effort: a failure of that final write or close (a full disk, a
// dead SD card) is counted in Stats (Errors, and the lines lost in
// Dropped) and logged like any other write failure, never returned, so it
// cannot fail the program that is shutting down. Entries recorded after
// that are counted as dropped; an entry whose Record races with the
// shutdown may be lost uncounted. Run returns an error only when called
// while another Run of l is active. A nil *Log returns nil at once.
func (l *Log) Run(ctx context.Context) error {
	if l == nil {
		return nil
	}
	if !l.running.CompareAndSwap(false, true) {
		return errors.New("audit: Run called twice")
	}
	w := &l.w
	// The ticker summarises floods from addresses that went quiet and
	// retries a failed file even when no entries arrive.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			l.closed.Store(true)
			w.shutdown()
			return nil
		case it := <-l.queue:
			w.entry(&it)
			// Take what else is queued before writing the batch out,
			// but at most a queue's worth, so that a steady stream
			// cannot keep Run from seeing ctx end.
			for n := cap(l.queue); n > 0; n-- {
				select {
				case it = <-l.queue:
					w.entry(&it)
					continue
				default:
				}
				break
			}
			w.idle(l.now())
		case <-tick.C:
			w.idle(l.now())
		}
	}
}

// floodKey is what flood control counts entries by.
type floodKey struct {
	event, host string
}

// floodState is one key's current one-second window.
type floodState struct {
	start, last   time.Time // window start; last suppressed entry
	n, suppressed uint64
}

// writer is Run's state.
type writer struct {
	l       *Log
	f       *os.File // nil after a failure, until reopened
	bw      *bufio.Writer
	size    int64 // of the file, buffered bytes included
	lines   uint64
	entries uint64 // lines and entries in bw, for Stats when it is written or lost
	line    []byte // reused to format each line

	retryAt time.Time // when f is nil: no reopening before

	flood     map[floodKey]floodState
	lastSweep time.Time

	droppedSeen uint64 // dropped count already reported in a line
}

// entry writes it unless flood control suppresses it.
func (w *writer) entry(it *item) {
	if w.suppress(it) {
		return
	}
	w.line = appendEntry(w.line[:0], it.t, &it.e, 0)
	if !w.write(w.line, true, it.t) {
		w.l.dropped.Add(1)
	}
}

// idle runs when the queue is empty (or after a queue's worth of entries):
// it summarises floods whose second is over, reports drops, and writes the
// batch out. Drops are reported here rather than per entry because an entry
// is dropped when the queue is full: the audit_dropped line then follows
// the entries that filled the queue, near where the lost ones belong.
func (w *writer) idle(now time.Time) {
	if due(now, w.lastSweep) {
		w.sweep(now, false)
	}
	w.noteDropped(now)
	w.flush(now)
}

// shutdown writes everything out and closes the file. A failure is
// counted and logged, not returned: see Run.
func (w *writer) shutdown() {
	now := w.l.now()
	w.retryAt = time.Time{} // one last attempt, however recent a failure
	for {
		select {
		case it := <-w.l.queue:
			w.entry(&it)
			continue
		default:
		}
		break
	}
	w.sweep(now, true)
	w.noteDropped(now)
	if w.f == nil {
		return // the failure was counted and logged
	}
	op := "write"
	var err error
	if w.bw.Buffered() > 0 {
		if err = w.bw.Flush(); err == nil {
			w.l.written.Add(w.lines)
		} else {
			w.l.dropped.Add(w.entries)
		}
	}
	if cerr := w.f.Close(); err == nil && cerr != nil {
		op, err = "close", cerr
	}
	w.f = nil
	w.lines, w.entries = 0, 0
	if err != nil {
		w.l.errs.Add(1)
		w.logErr(op, err)
	}
}

// due reports whether a second has passed since last, or the clock went
// back (so a clock set back at boot does not stop flood summaries).
func due(now, last time.Time) bool {
	return now.Sub(last) >= time.Second || now.Before(last)
}

// suppress applies flood control to it and reports whether it is
// suppressed.
func (w *writer) suppress(it *item) bool {
	if due(it.t, w.lastSweep) {
		// Summarise quiet keys and bound the table even when the
		// queue never runs empty.
		w.sweep(it.t, false)
	}
	k := floodKey{event: capped(it.e.Event), host: host(it.e.Remote)}
	st, ok := w.flood[k]
	if !ok && len(w.flood) >= floodKeys {
		k.host = overflowHost
		st, ok = w.flood[k]
	}
	if ok && due(it.t, st.start) {
		w.summarise(k, st)
		ok = false
	}
	if !ok {
		st = floodState{start: it.t}
	}
	st.n++
	if st.n > FloodLimit {
		st.suppressed++
		st.last = it.t
		w.l.suppressed.Add(1)
	}
	w.flood[k] = st
	return st.n > FloodLimit
}

// sweep forgets the keys whose second is over (all keys if all),
// summarising those that suppressed entries.
func (w *writer) sweep(now time.Time, all bool) {
	for k, st := range w.flood {
		if all || due(now, st.start) {
			w.summarise(k, st)
			delete(w.flood, k)
		}
	}
	w.lastSweep = now
}

// summarise writes k's suppressed line, if it suppressed anything.
func (w *writer) summarise(k floodKey, st floodState) {
	if st.suppressed == 0 {
		return
	}
	e := Entry{Event: "suppressed", Detail: k.event + " x " + strconv.FormatUint(st.suppressed, 10)}
	if k.host != "" {
		e.Detail += " from " + k.host
		if k.host != overflowHost {
			e.Remote = k.host
		}
	}
	w.line = appendEntry(w.line[:0], st.last, &e, st.suppressed)
	w.write(w.line, false, st.last)
}

// noteDropped writes an audit_dropped line when entries were dropped since
// the last one.
func (w *writer) noteDropped(now time.Time) {
	d := w.l.dropped.Load()
	if d == w.droppedSeen {
		return
	}
	e := Entry{Event: "audit_dropped"}
	w.line = appendEntry(w.line[:0], now, &e, d-w.droppedSeen)
	if w.write(w.line, false, now) {
		w.droppedSeen = d
	}
}

// write adds line to the batch, rotating first if the file would grow
// past MaxSize, and reports whether it did. entry says whether the line is
// an entry (counted as dropped if lost later) or one of the log's own.
func (w *writer) write(line []byte, entry bool, now time.Time) bool {
	if w.f == nil {
		if (now.Before(w.retryAt) && w.retryAt.Sub(now) <= retryDelay) || !w.reopen(now) {
			return false
		}
	}
	if w.size > 0 && w.size+int64(len(line)) > w.l.maxSize && !w.rotate(now) {
		return false
	}
	// Write the batch out before it would overflow rather than let bufio
	// do it mid-line: a failed write then loses whole lines, counted.
	if len(line) > w.bw.Available() && !w.flush(now) {
		return false
	}
	w.bw.Write(line) // fits in the buffer: cannot fail
	w.size += int64(len(line))
	w.lines++
	if entry {
		w.entries++
	}
	return true
}

// flush writes the batch to the file.
func (w *writer) flush(now time.Time) bool {
	if w.f == nil || w.bw.Buffered() == 0 {
		return w.f != nil
	}
	if err := w.bw.Flush(); err != nil {
		w.l.dropped.Add(w.entries)
		w.fail("write", err, now)
		return false
	}
	w.l.written.Add(w.lines)
	w.lines, w.entries = 0, 0
	return true
}

// rotate shifts Path.(N-1) to Path.N, ..., Path to Path.1 and opens a new
// Path.
func (w *writer) rotate(now time.Time) bool {
	if !w.flush(now) {
		return false
	}
	if err := w.f.Close(); err != nil {
		w.fail("close", err, now)
		return false
	}
	w.f = nil
	for i := w.l.maxFiles - 1; i >= 1; i-- {
		// A missing file is a gap in the sequence, not an error. Other
		// failures leave Path.i where it is; the renames below still
		// replace, so the file count stays bounded.
		err := os.Rename(w.l.path+"."+strconv.Itoa(i), w.l.path+"."+strconv.Itoa(i+1))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			w.logErr("rotate", err)
		}
	}
	if err := os.Rename(w.l.path, w.l.path+".1"); err != nil {
		// Writing on would grow the file past MaxSize; lines are
		// dropped instead until a retry manages to rotate.
		w.fail("rotate", err, now)
		return false
	}
	w.l.rotations.Add(1)
	if err := w.open(); err != nil {
		w.fail("open", err, now)
		return false
	}
	return true
}

// reopen retries the file after a failure.
func (w *writer) reopen(now time.Time) bool {
	if err := w.open(); err != nil {
		w.fail("open", err, now)
		return false
	}
	return true
}

// open opens Path for appending. When the file's last line was cut short
// (power loss, failed write) it ends that line, so the next line is valid
// JSON on its own.
func (w *writer) open() error {
	f, err := os.OpenFile(w.l.path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, fi.Size()
	w.bw.Reset(f)
	if w.size > 0 {
		var last [1]byte
		if _, err := f.ReadAt(last[:], w.size-1); err == nil && last[0] != '\n' {
			w.bw.WriteByte('\n')
			w.size++
		}
	}
	return nil
}

// fail counts and logs a failed file operation, drops the batch and closes
// the file; the next line after retryDelay reopens it.
func (w *writer) fail(op string, err error, now time.Time) {
	w.l.errs.Add(1)
	w.logErr(op, err)
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	w.bw.Reset(io.Discard) // also clears bufio's sticky error
	w.lines, w.entries = 0, 0
	w.retryAt = now.Add(retryDelay)
}

// logErr logs a failed file operation. A dead SD card fails every write:
// the gateway's one rate-limited handler (internal/logging) keeps that
// from flooding its own log, as it does for every component.
func (w *writer) logErr(op string, err error) {
	w.l.logger.Error("audit log write failed", "op", op, "path", w.l.path, "err", err)
}

// host returns the IP of an "ip:port" or "[ip]:port" address (capped), or
// addr itself when it has no port. Unlike net.SplitHostPort it does not
// allocate on a malformed address.
func host(addr string) string {
	if strings.HasPrefix(addr, "[") {
		if i := strings.IndexByte(addr, ']'); i > 0 {
			return capped(addr[1:i])
		}
	} else if i := strings.IndexByte(addr, ':'); i >= 0 && strings.LastIndexByte(addr, ':') == i {
		return capped(addr[:i])
	}
	return capped(addr)
}

// capped cuts s to MaxFieldLen bytes, so flood-control keys are bounded.
func capped(s string) string {
	if len(s) > MaxFieldLen {
		return s[:MaxFieldLen]
	}
	return s
}

// appendEntry appends e's line (count > 0 adds a count field).
func appendEntry(b []byte, t time.Time, e *Entry, count uint64) []byte {
	b = append(b, `{"time":"`...)
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = appendField(b, "event", e.Event, MaxFieldLen)
	b = appendField(b, "client_id", e.ClientID, MaxFieldLen)
	b = appendField(b, "username", e.Username, MaxFieldLen)
	b = appendField(b, "remote", e.Remote, MaxFieldLen)
	b = appendField(b, "listener", e.Listener, MaxFieldLen)
	b = appendField(b, "topic", e.Topic, MaxFieldLen)
	b = appendField(b, "action", e.Action, MaxFieldLen)
	b = appendField(b, "reason", e.Reason, MaxFieldLen)
	if count > 0 {
		b = append(b, `,"count":`...)
		b = strconv.AppendUint(b, count, 10)
	}
	b = appendField(b, "detail", e.Detail, MaxDetailLen)
	return append(b, '}', '\n')
}

// appendField appends `,"name":"value"`, or nothing for an empty value.
func appendField(b []byte, name, v string, max int) []byte {
	if v == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, v, max)
}

// appendString appends s as a JSON string, cut to max bytes (at a UTF-8
// boundary, then "..." appended) when longer.
func appendString(b []byte, s string, max int) []byte {
	b = append(b, '"')
	if len(s) > max {
		cut := max
		// Back off to the start of the rune the cut would split; at
		// most UTFMax-1 bytes, so invalid UTF-8 cannot make it go far.
		for k := 0; k < utf8.UTFMax-1 && cut > 0 && !utf8.RuneStart(s[cut]); k++ {
			cut--
		}
		b = jsonstr.AppendEscaped(b, s[:cut])
		b = append(b, "..."...)
	} else {
		b = jsonstr.AppendEscaped(b, s)
	}
	return append(b, '"')
}
