package rules

import (
	"fmt"
	"time"
)

// Filter is a stage that keeps the records for which a Bool expression is
// true and drops the others. It is stateless.
type Filter struct {
	prog *Program
}

var _ Stage = (*Filter)(nil)

// NewFilter compiles src as a Bool expression (see Compile). A compile
// error is an *ExprError.
func NewFilter(src string) (*Filter, error) {
	p, err := Compile(src, Bool)
	if err != nil {
		return nil, err
	}
	return &Filter{prog: p}, nil
}

// Process emits r unchanged if the expression is true for it. An
// evaluation failure (a missing field compared, a wrong type) is an error
// wrapping ErrExpr, so the event goes to the dead letters instead of being
// silently kept or dropped.
func (f *Filter) Process(r *Record, emit Emit) error {
	keep, err := f.prog.EvalBool(r)
	if err != nil {
		return err
	}
	if keep {
		emit(r)
	}
	return nil
}

// Advance does nothing: a filter holds no state.
func (f *Filter) Advance(time.Time, Emit) {}

// MarshalState returns nil: a filter holds no state.
func (f *Filter) MarshalState() ([]byte, error) { return nil, nil }

// UnmarshalState accepts only empty state: bytes for a filter mean the
// state belongs to some other stage.
func (f *Filter) UnmarshalState(b []byte) error {
	if len(b) != 0 {
		return fmt.Errorf("%w: filter has no state, got %d bytes", ErrState, len(b))
	}
	return nil
}
