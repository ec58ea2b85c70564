// Package audit keeps an audit log of security events (connections, failed
// and blocked logins, ACL denials, configuration and key changes) as JSON
// lines in a size-rotated file set, for gateways that log to SD cards.
//
// # Format
//
// One JSON object per line:
//
//	{"time":"2025-01-02T03:04:05.123456789Z","event":"auth_failure","client_id":"s1","username":"u","remote":"192.0.2.7:50312","listener":"tcp","reason":"bad password"}
//
// time is when Record was called, RFC 3339 with nanoseconds, UTC. Empty
// fields are omitted. Strings are escaped as encoding/json escapes them
// (without HTML escaping), so a client id from the network with quotes,
// newlines, control characters or invalid UTF-8 stays one valid line;
// invalid UTF-8 becomes U+FFFD. Each field is cut to MaxFieldLen bytes
// (Detail to MaxDetailLen), at a UTF-8 boundary, with "..." appended, so one
// hostile client id cannot make a line large.
//
// The log writes lines of its own:
//
//	{"time":...,"event":"audit_dropped","count":12}
//	{"time":...,"event":"suppressed","remote":"127.0.0.2","count":532,"detail":"auth_failure x 532 from 127.0.0.2"}
//
// audit_dropped says that count entries are missing at that point: the
// queue was full when they were recorded, or the file could not be written.
// suppressed is flood control's summary, below.
//
// # Cost to the caller and concurrency
//
// Record is safe for concurrent use and never blocks: it puts the entry on a
// bounded queue (a buffered channel of values, so no allocation) and
// returns. A single writer goroutine, Run, formats, writes and rotates. When
// the queue is full the entry is counted as dropped instead of waiting, so a
// slow or failing SD card never stalls a client's read loop. A nil *Log
// records nothing, so callers need not check whether auditing is on.
//
// # Ordering
//
// Entries recorded by one goroutine are written in the order recorded.
// Entries from different goroutines are written in the order their Record
// calls reached the queue. A suppressed summary is written after the entries
// it covers.
//
// # Flood control
//
// At most FloodLimit entries per second with the same event and remote IP
// (the port ignored) are written; the rest are counted and summarised by one
// "suppressed" line per second per (event, IP), so a password-guessing run
// does not rotate the useful history out of the log. Seconds are measured on
// the entries' own times (Options.Now), so tests are deterministic. The
// writer tracks at most 4096 (event, IP) pairs per second; beyond that, new
// addresses share one limit per event, summarised "from other addresses".
//
// # Disk use and durability
//
// When writing a line would take the file past MaxSize, the file is rotated:
// Path.(N-1) is renamed to Path.N, ..., Path to Path.1, and a new Path is
// opened. At most MaxFiles rotated files are kept, so the log uses at most
// (MaxFiles+1)*MaxSize bytes (a file holds more than MaxSize only when a
// single line is larger than MaxSize).
//
// Lines are batched in a buffer and written when the queue runs empty or
// the buffer fills, and never fsynced: SD cards wear with every small
// synchronous write. The audit log is therefore best-effort on power loss:
// the last few seconds of entries (those the kernel had not yet written
// back) may be lost, and the last line may be cut short. On the next Open a
// cut-short last line is ended with a newline, so the lines that follow it
// are still valid JSON. When a write fails the writer logs the error (at
// most once a minute), counts the lines it lost as dropped, and retries the
// file a second later. The log is best effort: no write failure, not even
// the last one at shutdown, is returned to the caller, so a full disk
// cannot stop the program that audits.
package audit
