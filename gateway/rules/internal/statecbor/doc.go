// Package statecbor is the state encoding the detect and dedup stages
// share: deterministic CBOR (Core Deterministic Encoding: sorted map keys,
// shortest forms), so equal states are equal bytes, decoded strictly,
// since state bytes come from disk and may be damaged.
//
// Its functions are safe for concurrent use; encoding is a pure function
// of the value.
package statecbor
