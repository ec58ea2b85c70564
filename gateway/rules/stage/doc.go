// Package stage holds the small pipeline stages: Filter (keep records for
// which a condition holds), Map (compute, rename and drop fields) and
// Dedup (drop repeats of a key within a horizon of record time). The
// bigger stages, windows and detectors, are packages of their own
// (window, detect).
//
// Each stage has the methods the rules runner drives: Process, Advance,
// MarshalState and UnmarshalState. Filter and Map are stateless; Dedup's
// state is bounded and encoded deterministically.
//
// # Ordering and determinism
//
// A stage emits its outputs for a record before Process returns, in a
// fixed order, and depends only on its input records and the times it is
// advanced to: replaying the same records from the same state emits the
// same records (Dedup's evictions included).
//
// # Concurrency
//
// Stages are not safe for concurrent use: one runner goroutine drives a
// pipeline's stages.
package stage
