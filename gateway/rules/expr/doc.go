// Package expr compiles and evaluates the expressions of rules pipelines
// (filters, map assignments, dedup keys, detector conditions), written in
// the expr language (github.com/expr-lang/expr) over a record's fields.
//
// Compile checks an expression once, at config load, and reports a
// *CompileError with a line and column a config loader can point at. A
// Program evaluates per record: Eval for a Value, EvalBool for a
// condition. Evaluation reads no clock (now() is not available; use the
// record's time), cannot panic, and fails with an error wrapping ErrEval
// that names what the record lacks, so a bad record becomes a dead letter,
// not a crash. "/" by zero is an error rather than ±Inf or NaN.
//
// # Concurrency
//
// A Program may be evaluated from several goroutines at once; evaluating
// from one goroutine, as a stage does, reuses one scratch VM and does not
// allocate for the common cases.
package expr
