// Package rules is ferry's rules pipeline: it turns ingested events into
// the few streams the cloud needs, with filters, transforms, windowed
// aggregates, pattern detectors and deduplication, and fans the results out
// to uplink streams, local MQTT topics and webhooks.
//
// A Pipeline is a list of Stages. Stages are deterministic functions of the
// records they are given and of the times they are advanced to: they read
// no clock and no randomness of their own, so replaying the same input from
// the same saved state gives the same outputs, record for record. That is
// what the runner relies on for exactly-once processing across crashes: it
// commits a batch's outputs, every stage's state and its read cursor in one
// buffer transaction.
//
// Stages are not safe for concurrent use; one runner goroutine drives a
// pipeline.
package rules
