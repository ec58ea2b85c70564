// Package gateway wires ferry together and supervises it: the embedded
// broker ingests into the durable buffer, pipelines and their outbox
// deliverers (package outbox) process it, the uplink drains it to the
// cloud, drivers feed it (and actuator drivers take commands from topics
// of the embedded broker), and the status listener (package opsapi) reports
// on all of them. gateway builds these from the configuration, owns their
// lifecycle and swaps the replaceable ones on a reload; the work itself is
// done in those packages.
//
// Supervision: Gateway.Run starts every component under one supervisor
// (supervise); the first to fail is logged with its name and stops the
// rest, and Run returns only after every goroutine it started has ended
// and the buffer file is closed. The replaceable parts (uplink, pipelines,
// outbox deliverers, drivers) run under a supervisor of their own, one per
// configuration: Reload and Replay stop and wait for the old parts before
// the new ones start, so no two readers ever share a stream, and a part
// failing stops the gateway as any component does. Shutdown order follows
// from the contracts: the broker stops taking PUBLISHes (a refused append
// is never acknowledged), the uplink disconnects, and the buffer commits
// whatever was queued before it closes.
//
// Remote configuration (remote.go): with remote_config enabled in the
// local file, New starts from the stored pushed configuration in force
// (remoteconfig.AtStart) and Reload re-reads the file and applies it with
// that configuration (remoteconfig.Effective). The remote configuration
// manager runs under the gateway's supervisor, not the parts', so a reload
// does not restart it; it applies through Apply, which Reload shares, so
// a pushed configuration passes the same checks and hand-over as a reload,
// one at a time with reloads and replays.
package gateway
