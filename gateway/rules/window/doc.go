// Package window is the windowed-aggregation stage of rules pipelines:
// tumbling and hopping windows, in event time or processing time, grouped
// by fields of the records, computing count, sum, avg, min, max, stddev,
// first, last and percentiles (see Aggregate).
//
// Memory is bounded: O(1) per window, group and aggregate, a bounded
// sketch per percentile field, and at most Config.MaxGroups groups per
// window; a record beyond a bound is rejected (an error matching
// record.ErrField) rather than let it grow. Stats reports the estimate.
//
// Files: window.go has the stage and its windows; aggregate.go the
// aggregate functions and their accumulators; groupkey.go group keys;
// state.go the saved state.
//
// # Ordering and determinism
//
// Windows emit in order of end, groups within a window in order of key,
// and a window emits exactly once. The stage depends only on its records
// and the times it is advanced to, and its state encoding (deterministic
// CBOR, floats kept bit for bit) restores a Window that continues exactly
// as the original would have. See Window for lateness and clock jumps.
//
// # Concurrency
//
// A Window is not safe for concurrent use: one runner goroutine drives it.
package window
