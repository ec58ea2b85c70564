// Package record holds what a rules pipeline passes from stage to stage: a
// Record (one event's identity and decoded payload fields), the Emit
// callback a stage hands its outputs to, and the errors stages of every
// kind return.
//
// Field values follow JSON's model (float64, string, bool, nil, []any,
// map[string]any) whatever the payload format; Number accepts the other Go
// numeric types that expressions can produce.
//
// A Record is not safe for concurrent use. Stages treat a record's field
// values as immutable and must not use a record after emitting it; Clone
// gives a stage a copy whose Fields map it may change.
package record
