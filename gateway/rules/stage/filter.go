package stage

import (
	"fmt"
	"time"

	"github.com/ferrygw/ferry/gateway/rules/expr"
	"github.com/ferrygw/ferry/gateway/rules/record"
)

// Filter is a stage that keeps the records for which a Bool expression is
// true and drops the others. It is stateless.
type Filter struct {
	prog *expr.Program
}

// NewFilter compiles src as a Bool expression (see expr.Compile). A compile
// error is a *expr.CompileError.
func NewFilter(src string) (*Filter, error) {
	p, err := expr.Compile(src, expr.Bool)
	if err != nil {
		return nil, err
	}
	return &Filter{prog: p}, nil
}

// Process emits r unchanged if the expression is true for it. An
// evaluation failure (a missing field compared, a wrong type) is an error
// wrapping expr.ErrEval, so the event goes to the dead letters instead of being
// silently kept or dropped.
func (f *Filter) Process(r *record.Record, emit record.Emit) error {
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
func (f *Filter) Advance(time.Time, record.Emit) {}

// MarshalState returns nil: a filter holds no state.
func (f *Filter) MarshalState() ([]byte, error) { return nil, nil }

// UnmarshalState accepts only empty state: bytes for a filter mean the
// state belongs to some other stage.
func (f *Filter) UnmarshalState(b []byte) error {
	if len(b) != 0 {
		return fmt.Errorf("%w: filter has no state, got %d bytes", record.ErrState, len(b))
	}
	return nil
}
