// Package rules runs ferry's rules pipelines: it turns ingested events into
// the few streams the cloud needs, with filters, transforms, windowed
// aggregates, pattern detectors and deduplication, and fans the results out
// to uplink streams, local MQTT topics and webhooks.
//
// This package is the part bound to the durable log: a Runner reads a
// Pipeline's input stream from a Store (a *buffer.Log), decodes each event
// into records, pushes them through the pipeline's Stages and commits the
// results. It is the only package of the rules tree that imports buffer.
// The pieces it drives live in packages of their own, each pure (no clock,
// no I/O, no buffer):
//
//   - record: the Record that flows between stages, and the errors every
//     stage uses;
//   - payload: decoding event payloads (JSON, CBOR, SenML, bare numbers)
//     into records, and encoding results as SenML;
//   - expr: the expressions of filters, maps, dedup keys and detector
//     conditions;
//   - stage: the filter, map and dedup stages;
//   - window: windowed aggregates;
//   - detect: pattern detectors that raise and clear alerts.
//
// # Determinism
//
// Stages are deterministic functions of the records they are given and of
// the times they are advanced to: they read no clock and no randomness of
// their own, so replaying the same input from the same saved state gives
// the same outputs, record for record. That is what the runner relies on
// for exactly-once processing across crashes: it commits a batch's
// outputs, every stage's state and its read cursor in one buffer
// transaction, and derives output event IDs from record keys (DerivedID),
// so a replayed output has the ID it had the first time.
//
// # Ordering
//
// A runner processes its input in offset order, one event at a time; the
// records of one event go through the stages in the order Decode returned
// them, each record through every stage before the next record. Outputs
// are appended in the order they were produced, one event per configured
// Output, in the order of Outputs.
//
// # Concurrency
//
// Stages are not safe for concurrent use; one runner goroutine (Run)
// drives a pipeline. Runner.Stats may be called from other goroutines.
package rules
