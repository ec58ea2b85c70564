package rules

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/rules/payload"
	"github.com/ferrygw/ferry/gateway/rules/record"
	"github.com/ferrygw/ferry/gateway/rules/window"
	"github.com/ferrygw/ferry/gateway/topic"
	"github.com/fxamacker/cbor/v2"
)

// Store is the runner's view of the durable log: it reads a pipeline's
// input stream and waits for it to grow, reads the committed position and
// state, and commits a batch's outputs, state and position in one
// transaction.
type Store interface {
	Read(stream string, from uint64, max int, fn func(off uint64, ev *event.Event) error) (uint64, error)
	Changed() <-chan struct{}
	Position(stream, consumer string) uint64
	State(name string) ([]byte, error)
	Update(ctx context.Context, fn func(*buffer.Tx) error) error
	// UpdateDeferred is Update riding the next commit that stores events
	// (or one after the log's ack interval): a trickle's commits cost the
	// flash no transaction of their own.
	UpdateDeferred(ctx context.Context, fn func(*buffer.Tx) error) error
}

var _ Store = (*buffer.Log)(nil)

// Output is where a pipeline's results go: a stream of the log. Uplink
// outputs are streams the uplink forwards; MQTT and webhook outputs are
// outbox streams their deliverers drain.
type Output struct {
	Stream string
	// Topic, if set, is a template ({source}, {topic}, {pipeline}) for the
	// output event's Topic (the local MQTT topic for an MQTT outbox).
	Topic string
	// SenML sends each result as a SenML pack (application/senml+json)
	// instead of a JSON object.
	SenML bool
}

// Pipeline is a configured pipeline, ready to run.
type Pipeline struct {
	Name       string
	Input      string   // stream to read
	Topics     []string // topic filters over input events; empty: all
	Format     payload.Format
	EventTime  bool // stages see event time; Advance follows the watermark
	Stages     []Stage
	Outputs    []Output
	DeadLetter string // stream for events that fail
	// DeadLetterPayload is how many bytes of a failed event's payload its
	// dead letter keeps; when that cuts it, the attributes "truncated"
	// and "original_size" say so. 0 keeps none.
	DeadLetterPayload int
	// Fingerprint identifies the pipeline's configuration; saved state of
	// a differently configured pipeline is discarded, not misapplied.
	Fingerprint string
}

// ConsumerName is the name under which the read position of the pipeline
// named pipeline is kept in its input stream.
func ConsumerName(pipeline string) string { return "pipeline:" + pipeline }

// Consumer is the name under which the pipeline's read position is kept
// in the input stream: ConsumerName(p.Name).
func (p *Pipeline) Consumer() string { return ConsumerName(p.Name) }

// RunnerConfig tunes a Runner.
type RunnerConfig struct {
	BatchSize    int           // input events per transaction (default 1024)
	AdvanceEvery uint64        // event time: advance stages every N input offsets (default 64)
	Tick         time.Duration // processing time: advance interval (default 1s)
	// CommitInterval bounds how long processed events wait for their
	// commit when input trickles in (default 1s); a full batch commits at
	// once.
	CommitInterval time.Duration
	Now            func() time.Time
	Logger         *slog.Logger
	// Committed, if set, is called after each commit with the events it
	// wrote (outputs and dead letters); it must not keep the slice and must
	// return quickly.
	Committed func(events []event.Event)
	// RetryMin and RetryMax bound the wait before the runner starts over
	// after a failed read or commit (defaults 100ms and 30s): RetryMin
	// after the first failure, doubling with each failure in a row up to
	// RetryMax, of which a random part (Rand) spreads the retries.
	RetryMin, RetryMax time.Duration
	// Rand returns a random number in [0, 1) for that spread; nil uses
	// math/rand/v2.
	Rand func() float64
}

// Runner drives one pipeline over the durable log, exactly once: each
// transaction holds a batch's outputs, dead letters, every stage's state
// and the input position, so after a crash the pipeline resumes from the
// last committed batch with the state of that moment. With event time the
// outputs are a function of the input sequence alone (stages are advanced
// at input offsets, not at wall-clock moments), so a crashed and restarted
// run produces exactly the outputs of an uninterrupted one.
//
// A failed read or commit (a full disk, an output stream that refuses its
// events) ends nothing but the attempt: the runner logs it, waits (see
// RunnerConfig.RetryMin) and starts over as after a crash, from the last
// committed position with the state of that moment, so no output is lost
// or doubled. Only the end of Run's context ends Run.
type Runner struct {
	p   *Pipeline
	log Store
	cfg RunnerConfig
	lg  *slog.Logger

	watermark time.Time
	pending   []event.Event
	// pend counts the work since the last commit; a commit adds it to
	// in, out and dead, a failure forgets it with the work it counts.
	pend     struct{ in, out, dead uint64 }
	in, out  atomic.Uint64
	dead     atomic.Uint64
	position atomic.Uint64
}

// RunnerStats counts a runner's work since start.
type RunnerStats struct {
	Name        string `json:"name"`
	In          uint64 `json:"in"`           // input events matched since start
	Out         uint64 `json:"out"`          // output events since start
	DeadLetters uint64 `json:"dead_letters"` // input events dead-lettered since start
	Position    uint64 `json:"position"`     // input offset processed through
}

// NewRunner prepares p to run on log.
func NewRunner(p *Pipeline, log Store, cfg RunnerConfig) *Runner {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1024
	}
	if cfg.AdvanceEvery == 0 {
		cfg.AdvanceEvery = 64
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	if cfg.CommitInterval <= 0 {
		cfg.CommitInterval = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 100 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 30 * time.Second
	}
	cfg.RetryMax = max(cfg.RetryMax, cfg.RetryMin)
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	return &Runner{p: p, log: log, cfg: cfg, lg: cfg.Logger.With("pipeline", p.Name)}
}

// savedState is what a runner commits with each batch.
type savedState struct {
	_           struct{} `cbor:",toarray"`
	Fingerprint string
	Watermark   int64
	Stages      [][]byte
}

func (r *Runner) stateKey() string { return "pipeline/" + r.p.Name }

// restore sets every stage's state and the watermark to the last
// committed ones (none committed: the initial, empty state) and forgets
// the work done since.
func (r *Runner) restore() error {
	clear(r.pending)
	r.pending = r.pending[:0]
	r.pend.in, r.pend.out, r.pend.dead = 0, 0, 0
	b, err := r.log.State(r.stateKey())
	if err != nil {
		return fmt.Errorf("pipeline %s: read state: %w", r.p.Name, err)
	}
	var s savedState
	if b != nil {
		if err := cbor.Unmarshal(b, &s); err != nil || s.Fingerprint != r.p.Fingerprint || len(s.Stages) != len(r.p.Stages) {
			r.lg.Warn("saved pipeline state does not match this configuration: starting with empty windows and detectors")
			s = savedState{}
		}
	}
	for i, st := range r.p.Stages {
		var b []byte
		if i < len(s.Stages) {
			b = s.Stages[i]
		}
		if err := st.UnmarshalState(b); err != nil {
			return fmt.Errorf("pipeline %s: restore stage %d: %w", r.p.Name, i, err)
		}
	}
	r.watermark = time.Time{}
	if s.Watermark != 0 {
		r.watermark = time.Unix(0, s.Watermark)
	}
	return nil
}

func (r *Runner) snapshot() ([]byte, error) {
	s := savedState{Fingerprint: r.p.Fingerprint, Stages: make([][]byte, len(r.p.Stages))}
	if !r.watermark.IsZero() {
		s.Watermark = r.watermark.UnixNano()
	}
	for i, st := range r.p.Stages {
		b, err := st.MarshalState()
		if err != nil {
			return nil, fmt.Errorf("stage %d: %w", i, err)
		}
		s.Stages[i] = b
	}
	return cbor.Marshal(s)
}

// Stats returns the runner's counters; safe concurrently with Run.
func (r *Runner) Stats() RunnerStats {
	return RunnerStats{Name: r.p.Name, In: r.in.Load(), Out: r.out.Load(), DeadLetters: r.dead.Load(), Position: r.position.Load()}
}

// Run processes the input until ctx ends; it returns nil then. Other
// errors do not end it: it logs them and starts over from the last commit
// after a pause (see Runner).
func (r *Runner) Run(ctx context.Context) error {
	failures := 0
	for {
		err := r.run(ctx, &failures)
		if ctx.Err() != nil {
			return nil // uncommitted work is redone from the last commit
		}
		failures++
		wait := r.backoff(failures)
		r.lg.Error("pipeline failed: starting over from its last commit", "err", err, "failures", failures, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// backoff is the wait after the given number of failures in a row:
// RetryMin doubled for each failure after the first, at most RetryMax, of
// which the second half is random.
func (r *Runner) backoff(failures int) time.Duration {
	d := r.cfg.RetryMin
	for i := 1; i < failures && d < r.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, r.cfg.RetryMax)
	return d/2 + time.Duration(r.cfg.Rand()*float64(d-d/2))
}

// run processes the input from the last commit, with the state of that
// commit, until ctx ends or a read or commit fails. *failures counts the
// failures in a row; run resets it once it gets on again.
func (r *Runner) run(ctx context.Context, failures *int) error {
	if err := r.restore(); err != nil {
		return err
	}
	pos := r.log.Position(r.p.Input, r.p.Consumer()) // committed
	r.position.Store(pos)
	read := pos    // processed, maybe not yet committed
	dirty := false // state or outputs not yet committed
	lastCommit := time.Now()
	if *failures > 0 {
		lastCommit = time.Time{} // after the pause, commit what is redone at once
	}
	tick := time.NewTicker(r.cfg.Tick)
	defer tick.Stop()
	commit := func(full bool) error {
		if err := r.commit(ctx, read, !full); err != nil {
			return err
		}
		pos, dirty, lastCommit = read, false, time.Now()
		r.position.Store(pos)
		if *failures > 0 {
			r.lg.Info("pipeline going on after failures", "failures", *failures)
			*failures = 0
		}
		return nil
	}
	for {
		changed := r.log.Changed()
		next, n, err := r.batch(ctx, read)
		if ctx.Err() != nil {
			return nil // uncommitted work is redone from the last commit
		}
		if err != nil {
			return err
		}
		if n > 0 {
			read, dirty = next-1, true
		} else if !dirty && *failures > 0 {
			// Nothing to commit: a read that works is getting on again.
			r.lg.Info("pipeline going on after failures", "failures", *failures)
			*failures = 0
		}
		// Commit a full batch at once; a trickle at most every
		// CommitInterval, so a quiet gateway does not rewrite its window
		// state to flash for every reading.
		if dirty && (n == r.cfg.BatchSize || time.Since(lastCommit) >= r.cfg.CommitInterval) {
			if err := commit(n == r.cfg.BatchSize); err != nil {
				return err
			}
		}
		if n == r.cfg.BatchSize {
			continue
		}
		var due <-chan time.Time
		var timer *time.Timer
		if dirty {
			timer = time.NewTimer(r.cfg.CommitInterval - time.Since(lastCommit))
			due = timer.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-due:
		case <-tick.C:
			if !r.p.EventTime {
				before := len(r.pending)
				r.advance(r.cfg.Now())
				dirty = dirty || len(r.pending) != before
			}
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// batch processes up to BatchSize events after pos, collecting outputs in
// r.pending. It returns the offset after the last event read.
func (r *Runner) batch(ctx context.Context, pos uint64) (uint64, int, error) {
	n := 0
	next, err := r.log.Read(r.p.Input, pos+1, r.cfg.BatchSize, func(off uint64, ev *event.Event) error {
		n++
		r.process(off, ev)
		return nil
	})
	if err != nil {
		return pos + 1, 0, fmt.Errorf("pipeline %s: read %s: %w", r.p.Name, r.p.Input, err)
	}
	if !r.p.EventTime && n > 0 {
		r.advance(r.cfg.Now())
	}
	return next, n, ctx.Err()
}

func (r *Runner) process(off uint64, ev *event.Event) {
	if !r.matches(ev.Topic) {
		return
	}
	r.pend.in++
	base := record.Record{Key: ev.ID.String(), Time: ev.Time, Source: ev.Source, Topic: ev.Topic}
	recs, err := payload.Decode(r.p.Format, ev.ContentType, ev.Payload, base)
	if err != nil {
		r.deadLetter(ev, "decode: "+err.Error())
		return
	}
	for _, rec := range recs {
		if r.p.EventTime {
			switch {
			case rec.Time.After(ev.Time.Add(window.MaxClockJump)):
				// A payload timestamp far ahead of when the event arrived
				// is a broken clock: it must not close every window.
				r.deadLetter(ev, fmt.Sprintf("clock jump: event time %s is more than %s after its arrival %s",
					rec.Time.UTC().Format(time.RFC3339), window.MaxClockJump, ev.Time.UTC().Format(time.RFC3339)))
				return
			case !r.watermark.IsZero() && rec.Time.After(r.watermark.Add(window.MaxClockJump)):
				// A plausible time after a long gap in the input (the
				// gateway was off for days): close everything before it.
				r.watermark = rec.Time
				r.advance(rec.Time)
			case rec.Time.After(r.watermark):
				r.watermark = rec.Time
			}
		}
		if err := r.push(0, rec); err != nil {
			r.deadLetter(ev, err.Error())
			break
		}
	}
	if r.p.EventTime && off%r.cfg.AdvanceEvery == 0 && !r.watermark.IsZero() {
		r.advance(r.watermark)
	}
}

func (r *Runner) matches(t string) bool {
	if len(r.p.Topics) == 0 {
		return true
	}
	for _, f := range r.p.Topics {
		if topic.Match(f, t) {
			return true
		}
	}
	return false
}

// push runs rec through stages i.. and queues what comes out.
func (r *Runner) push(i int, rec *record.Record) error {
	if i == len(r.p.Stages) {
		r.output(rec)
		return nil
	}
	var outs []*record.Record
	if err := r.p.Stages[i].Process(rec, func(o *record.Record) { outs = append(outs, o) }); err != nil {
		return fmt.Errorf("stage %d: %w", i+1, err)
	}
	for _, o := range outs {
		if err := r.push(i+1, o); err != nil {
			return err
		}
	}
	return nil
}

// advance moves every stage to now, in order, pushing what a stage emits
// through the stages after it before advancing those.
func (r *Runner) advance(now time.Time) {
	for i, st := range r.p.Stages {
		var outs []*record.Record
		st.Advance(now, func(o *record.Record) { outs = append(outs, o) })
		for _, o := range outs {
			if err := r.push(i+1, o); err != nil {
				r.lg.Warn("record emitted on advance failed a later stage: dropped", "stage", i+1, "err", err)
			}
		}
	}
}

// output turns a result record into one event per output.
func (r *Runner) output(rec *record.Record) {
	jsonBody, err := json.Marshal(rec.Fields) // map keys sorted: deterministic bytes
	if err != nil {
		r.lg.Warn("result not encodable: dropped", "key", rec.Key, "err", err)
		return
	}
	var senml []byte
	for i, o := range r.p.Outputs {
		body, ct := jsonBody, "application/json"
		if o.SenML {
			if senml == nil {
				senml = payload.EncodeSenML(rec)
			}
			body, ct = senml, "application/senml+json"
		}
		ev := event.Event{
			ID:          DerivedID(fmt.Sprintf("%s/%d/%s", r.p.Name, i, rec.Key), rec.Time),
			Stream:      o.Stream,
			Source:      rec.Source,
			Topic:       rec.Topic,
			Time:        rec.Time,
			ContentType: ct,
			Payload:     body,
			Attrs:       map[string]string{"pipeline": r.p.Name},
		}
		if o.Topic != "" {
			ev.Topic = renderTopic(o.Topic, r.p.Name, rec)
		}
		r.pending = append(r.pending, ev)
		r.pend.out++
	}
}

func (r *Runner) deadLetter(ev *event.Event, reason string) {
	r.pend.dead++
	d := *ev
	d.ID = DerivedID("dead/"+r.p.Name+"/"+ev.ID.String(), ev.Time)
	d.Stream = r.p.DeadLetter
	d.Attrs = map[string]string{"pipeline": r.p.Name, "reason": cutReason(reason), "original_id": ev.ID.String(),
		"original_stream": ev.Stream}
	// A dead letter is for seeing why an event failed: a bounded part of
	// its payload does that, and a flood of large undecodable payloads
	// then cannot fill memory (GET /deadletters) or the disk with copies.
	keep := ev.Payload[:min(len(ev.Payload), max(r.p.DeadLetterPayload, 0))]
	if len(keep) < len(ev.Payload) {
		d.Attrs["truncated"] = "true"
		d.Attrs["original_size"] = strconv.Itoa(len(ev.Payload))
	}
	d.Payload = append([]byte(nil), keep...)
	r.pending = append(r.pending, d)
}

// MaxReason bounds the reason a dead letter keeps, in bytes: an error may
// quote its input.
const MaxReason = 1024

// cutReason cuts reason to MaxReason bytes, on a character boundary.
func cutReason(reason string) string {
	if len(reason) <= MaxReason {
		return reason
	}
	cut := MaxReason - len("…")
	for cut > 0 && !utf8.RuneStart(reason[cut]) {
		cut--
	}
	return reason[:cut] + "…"
}

// commit writes the pending outputs, the stages' state and the position
// through in one transaction. An output its stream or the disk has no
// room for (ErrFull, ErrDiskFull) fails the whole commit: its input stays
// unprocessed, to be processed again once there is room. An output larger
// than its stream's byte bound could never be stored: it is left out, as
// the buffer counts (drops "too_large") and the log says.
//
// The buffer may run the transaction's function more than once: it
// changes nothing but the Tx and what it resets on each run.
//
// deferred (a trickle, not a full batch) lets the commit ride the log's
// next commit instead of starting one: a pipeline keeping up with a few
// sensors then costs the SD card no transaction of its own. A full batch
// (catching up on a backlog) commits at once.
func (r *Runner) commit(ctx context.Context, through uint64, deferred bool) error {
	state, err := r.snapshot()
	if err != nil {
		return fmt.Errorf("pipeline %s: snapshot: %w", r.p.Name, err)
	}
	var tooLarge int
	var tooLargeStream string
	update := r.log.Update
	if deferred {
		update = r.log.UpdateDeferred
	}
	err = update(ctx, func(tx *buffer.Tx) error {
		tooLarge, tooLargeStream = 0, ""
		for i := range r.pending {
			ev := &r.pending[i]
			if err := tx.Append(ev); err != nil {
				if errors.Is(err, buffer.ErrTooLarge) {
					tooLarge++
					tooLargeStream = ev.Stream
					continue
				}
				return fmt.Errorf("stream %s: %w", ev.Stream, err)
			}
		}
		if err := tx.PutState(r.stateKey(), state); err != nil {
			return err
		}
		return tx.Ack(r.p.Input, r.p.Consumer(), through)
	})
	if err != nil {
		return fmt.Errorf("pipeline %s: commit: %w", r.p.Name, err)
	}
	if tooLarge > 0 {
		r.lg.Warn("pipeline outputs larger than their stream's max_bytes: dropped", "events", tooLarge, "stream", tooLargeStream)
	}
	r.in.Add(r.pend.in)
	r.out.Add(r.pend.out)
	r.dead.Add(r.pend.dead)
	r.pend.in, r.pend.out, r.pend.dead = 0, 0, 0
	if r.cfg.Committed != nil && len(r.pending) > 0 {
		r.cfg.Committed(r.pending)
	}
	clear(r.pending)
	r.pending = r.pending[:0]
	return nil
}

// DerivedID returns a deterministic event ID for a derived event: the
// timestamp of t followed by 80 bits of SHA-256 over key, so a replay after
// a crash yields the same ID and the cloud can drop the duplicate.
func DerivedID(key string, t time.Time) event.ID {
	var id event.ID
	ms := uint64(t.UnixMilli())
	id[0], id[1] = byte(ms>>40), byte(ms>>32)
	binary.BigEndian.PutUint32(id[2:6], uint32(ms))
	sum := sha256.Sum256([]byte(key))
	copy(id[6:], sum[:10])
	return id
}

func renderTopic(tmpl, pipeline string, rec *record.Record) string {
	out := make([]byte, 0, len(tmpl)+16)
	for i := 0; i < len(tmpl); {
		if tmpl[i] == '{' {
			if j := indexByte(tmpl[i:], '}'); j > 0 {
				switch tmpl[i+1 : i+j] {
				case "source":
					out = append(out, rec.Source...)
				case "topic":
					out = append(out, rec.Topic...)
				case "pipeline":
					out = append(out, pipeline...)
				default:
					out = append(out, tmpl[i:i+j+1]...)
				}
				i += j + 1
				continue
			}
		}
		out = append(out, tmpl[i])
		i++
	}
	return string(out)
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}
