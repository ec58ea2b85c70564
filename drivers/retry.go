package drivers

import (
	"context"
	"fmt"
)

// Retrying returns the Item of a driver whose construction failed with
// first for a reason that may pass (the bus or chip is not there yet):
// each Read or Watch builds it again until that succeeds, then uses it,
// and the Scheduler's backoff paces the attempts like any failing read.
// The first call reports first, so it is not lost. The item is a Watcher
// when spec's kind watches, else a Poller; an unknown kind is an
// ErrUnknownKind.
//
// Like any driver it is called from one goroutine at a time (the
// Scheduler's guarantee), so it needs no lock.
func Retrying(spec Spec, env Env, first error) (Item, error) {
	k, ok := Lookup(spec.Kind)
	if !ok {
		return Item{}, fmt.Errorf("%w %q (known: %v)", ErrUnknownKind, spec.Kind, KindNames())
	}
	r := &retry{kind: k, spec: spec, env: env, err: first}
	if k.Watches() {
		return WatchItem(spec, &retryWatcher{r}), nil
	}
	return PollItem(spec, &retryPoller{r}), nil
}

// retry builds a driver on demand.
type retry struct {
	kind Kind
	spec Spec
	env  Env
	it   Item  // the driver once built
	err  error // the construction error not yet reported
}

func (r *retry) get() (Item, error) {
	if r.it.driver() != nil {
		return r.it, nil
	}
	if r.err != nil {
		err := r.err
		r.err = nil // the first failure is reported once, then retried
		return Item{}, err
	}
	it, err := r.kind.New(r.spec, r.env)
	if err != nil {
		return Item{}, err
	}
	r.it = it
	return it, nil
}

// Halt halts the driver if it was built.
func (r *retry) Halt() error {
	if d := r.it.driver(); d != nil {
		return d.Halt()
	}
	return nil
}

type retryPoller struct{ *retry }

// Read builds the driver if need be and reads it.
func (r *retryPoller) Read(ctx context.Context) ([]Reading, error) {
	it, err := r.get()
	if err != nil {
		return nil, err
	}
	return it.Poller().Read(ctx)
}

type retryWatcher struct{ *retry }

// Watch builds the driver if need be and watches it.
func (r *retryWatcher) Watch(ctx context.Context, emit func(Sample)) error {
	it, err := r.get()
	if err != nil {
		return err
	}
	return it.Watcher().Watch(ctx, emit)
}
