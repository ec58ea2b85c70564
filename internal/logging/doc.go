// Package logging builds ferry's one logger: text or JSON lines, filtered
// by level, with repeated lines rate-limited so that a flapping uplink, a
// failing sensor or a hostile client cannot fill a board's SD card.
//
// There is one rate limit in the process, and it is here. The gateway
// builds one logger with New and hands each component a child of it scoped
// with a "component" attribute (logger.With("component", "uplink")). A
// component logs plain lines, each with a constant message, and does not
// count, gate or summarise them itself: a second limiter in front of this
// one suppresses lines twice, and its count of what it suppressed
// disagrees with this one's. Components must not build a handler of their
// own; a library that wants a filter (the broker keeps mochi's warnings
// only) wraps the handler it was given.
//
// # Policy
//
// The Limiter (see NewLimiter for the details and Limits for the knobs)
// applies, in this order:
//
//   - Truncation: every string or error attribute value longer than 256
//     bytes (DefaultMaxValue) is cut at a rune boundary and ends in
//     "…(<n> bytes)", including values given to With. A line's size is so
//     bounded whatever a client puts in its ID or topic.
//   - Per-key limit: a key is the level, the message and the values of the
//     IdentityKeys attributes (component, pipeline, stream, driver,
//     endpoint, client), the logger's own (from With) and the line's. Of
//     the lines with one key, 5 (DefaultBurst) pass per minute
//     (DefaultInterval, counted from the key's first line); the rest are
//     counted, and after the minute one SuppressedMsg line with
//     suppressed_msg=<message> and count=<n> (and the key's identity
//     attributes) reports them. At most 256 keys (DefaultMaxKeys) are
//     tracked; the least recently seen is forgotten first, its count
//     reported. A value that is unbounded (a client ID chosen by the
//     client, an offset) must therefore not be logged under an identity
//     key: the broker logs client IDs as "client_id" for that reason.
//   - Total limit: all keys together pass 300 lines a minute
//     (DefaultTotal), summaries included; what it holds back is reported in
//     one TotalSuppressedMsg line with count=<n> after the minute.
//   - Unlimited messages (WithUnlimited: lines with a cadence of their own,
//     such as the gateway's health line) are neither limited nor counted.
//
// Every suppressed line is counted exactly once: in its key's summary when
// the per-key limit held it back, in the total summary when the total
// limit did (also for a summary line the total limit held back, which
// adds its count). A summary is written with the first line logged after
// its interval ended (any line: the health line comes every few seconds),
// or when its key is evicted, and before that line.
//
// # What is never logged
//
// Message payloads (sensor readings, cloud messages, webhook bodies) are
// never logged, at any level, by ferry or by the patched mochi (patch 3 in
// third_party/mochi-mqtt/PATCHES.md): sensor data does not belong in logs,
// and neither do secrets (passwords, keys). A line names what an event is
// (stream, offset, client ID, topic), not what it holds. The handler
// cannot tell a payload from another string: this is a rule for the code
// that logs, and truncation bounds the damage of a mistake.
//
// # Concurrency and ordering
//
// A Limiter is safe for concurrent use, and the handlers its WithAttrs and
// WithGroup return share its state (keys, windows, counts): the limits are
// per process, not per component logger. The decision for a line is taken
// under one mutex; the writing is done outside it, so a slow writer (a
// full pipe to journald) does not hold up the decision for other lines.
// Lines from one goroutine are written in the order they were logged, a
// line's due summaries before it; lines from different goroutines may be
// written in either order, as the wrapped handler serialises them.
package logging
