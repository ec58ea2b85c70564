// Package event defines the Event that flows through ferry, from the broker
// or a driver through the durable log to the cloud, and its compact CBOR
// encoding.
//
// An Event is a plain value: it is not safe to mutate one concurrently, and
// the Payload and Attrs of a decoded Event alias nothing shared, so callers
// may keep them. Encoding is deterministic (core deterministic CBOR), so the
// same Event always has the same bytes; decoding treats its input as
// untrusted and bounds every length, nesting level and map size.
package event
