package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/internal/keyring"
	bolt "go.etcd.io/bbolt"
)

// Tx is a caller's share of a group commit, given to the function passed
// to Log.Update. Everything done through it commits atomically, with
// nothing else in between that the caller could observe.
type Tx struct {
	ts *txState
}

// Append adds ev to the end of ev.Stream, like Log.Append. A refusal by
// the stream's bounds (ErrFull, ErrDiskFull, ErrTooLarge) is returned and
// does not abort the transaction; the caller decides.
func (tx *Tx) Append(ev *event.Event) error {
	val, err := event.Marshal(ev)
	if err != nil {
		return fmt.Errorf("buffer: encode event: %w", err)
	}
	val = sealValue(tx.ts.l.opts.Keys, val, "", ev.Stream)
	res, err := tx.ts.append(ev.Stream, ev.Source, val)
	if err != nil {
		return err
	}
	return res.err
}

// PutState stores opaque state under name (e.g. a pipeline's stage
// state), sealed with Options.Keys if set. Without keys, val must not
// start with keyring.Marker (0xFE, which neither CBOR nor UTF-8 text
// starts with): State would take it for a sealed value.
func (tx *Tx) PutState(name string, val []byte) error {
	keys := tx.ts.l.opts.Keys
	if keys == nil && keyring.IsSealed(val) {
		return fmt.Errorf("buffer: state %q starts with byte %#x, reserved for sealed values", name, keyring.Marker)
	}
	b, err := tx.ts.tx.CreateBucketIfNotExists(bktState)
	if err != nil {
		return err
	}
	val = sealValue(keys, val, stateAADPrefix, name)
	cost, _ := tx.ts.l.appendCost(len(name) + len(val))
	tx.ts.room.charge(cost)
	return b.Put([]byte(name), val)
}

// State returns the bytes last stored under name with PutState, or nil.
// A value sealed with a key Options.Keys lacks is an error wrapping
// ErrWrongKey, a damaged sealed value one wrapping keyring.ErrDecrypt.
func (l *Log) State(name string) ([]byte, error) {
	var out []byte
	err := l.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bktState)
		if b == nil {
			return nil
		}
		v := b.Get([]byte(name))
		if !keyring.IsSealed(v) {
			out = bytes.Clone(v) // nil stays nil: absent
			return nil
		}
		var err error
		out, err = openValue(l.opts.Keys, nil, v, []byte(stateAADPrefix+name), "state", name)
		if err != nil && !errors.Is(err, ErrWrongKey) { // ErrWrongKey's message names the state
			return fmt.Errorf("buffer: state %q: %w", name, err)
		}
		return err
	})
	return out, err
}

// Update runs fn in the next group commit and returns after that commit
// is on disk (per the log's durability, Batch excepted: Update always
// waits). An error from fn (or a panic, returned as ErrUpdatePanic)
// discards what fn wrote and is returned; it does not fail the other
// callers' appends: as with bbolt's DB.Batch, the group is committed
// again without fn, and fn is then run alone once more, its result final.
// So fn may run more than once and must only change state through the Tx
// (or reset what it changes outside, as each run starts over). Refusals
// from Tx.Append are for fn to handle.
func (l *Log) Update(ctx context.Context, fn func(*Tx) error) error {
	return l.update(ctx, fn, false)
}

func (l *Log) update(ctx context.Context, fn func(*Tx) error, lazy bool) error {
	r := &appendReq{fn: fn, done: make(chan error, 1), wait: true, lazy: lazy}
	select {
	case l.reqs <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-l.stopped:
		return ErrClosed
	}
	err, _ := l.wait(r)
	return err
}

// UpdateDeferred is Update without a commit of its own: fn runs in the
// next commit that appends events (or runs an Update), or in one after
// Options.AckInterval when nothing else is committed. For work whose
// commit can wait, such as a pipeline's position and state while it
// keeps up with a trickle of events: it then costs the flash no extra
// transaction. It returns after that commit, like Update.
func (l *Log) UpdateDeferred(ctx context.Context, fn func(*Tx) error) error {
	return l.update(ctx, fn, true)
}
