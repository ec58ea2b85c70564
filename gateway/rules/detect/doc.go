// Package detect is the pattern-detector stage of rules pipelines: per
// group of records it runs a small state machine (threshold with
// hysteresis, a condition holding for consecutive records, a sensor gone
// absent, a rate of change too high) and emits an alert record when the
// state changes, raise or clear.
//
// The number of groups is bounded (Config.MaxGroups); a record that would
// start one more is rejected with an error matching record.ErrField.
//
// # Ordering and determinism
//
// A Detector emits a record's alerts when Process is called with it, and
// absence raises when Advance is called, in deadline order, then group
// key order. It
// depends only on its records and the times it is advanced to, and its
// state encoding (deterministic CBOR) restores a Detector that continues
// as the original would have. See Detector for records out of time order.
//
// # Concurrency
//
// A Detector is not safe for concurrent use: one runner goroutine drives
// it.
package detect
