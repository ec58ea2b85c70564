// Package payload decodes event payloads into pipeline records and
// encodes results as SenML.
//
// Decode takes one payload in a configured Format (or FormatAuto, which
// picks the format per event from the MQTT 5 content type or by sniffing
// the bytes; see FormatFor) and returns its records: one for a JSON
// document, a CBOR item or a bare number, one per measurement for a
// SenML pack (RFC 8428, in JSON or CBOR). Payloads come from the network,
// so decoding is strict and bounded: every limit and refusal is listed on
// Decode, and every failure is an error wrapping ErrMalformed whose text
// is the same for the same payload (it becomes a dead letter's reason).
// EncodeSenML renders a result record as a SenML JSON pack with
// deterministic bytes.
//
// Files: decode.go has the formats, sniffing and Decode; json.go the
// strict JSON parser; cbor.go plain CBOR; senml.go SenML resolution for
// both encodings; senml_encode.go EncodeSenML.
//
// # Ordering and determinism
//
// Records come back in the order of the payload (a SenML pack's records
// in pack order, the n-th keyed base.Key+"#n"); decoding is a pure
// function of the format, content type, payload and base record.
//
// # Concurrency
//
// Every function is safe for concurrent use. Decode does not retain the
// payload it is given: the caller may reuse the bytes.
package payload
