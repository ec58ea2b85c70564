// Package opsapi is the gateway's status listener (status.listen): the
// HTTP API that `ferry status`, `ferry buffer`, `ferry deadletters` and
// `ferry reload` call, Prometheus metrics, health probes and the live
// status page. It serves what the gateway hands it through small
// interfaces (Reporter for snapshots, Operator for reload and replay,
// Readiness, and the durable Log it reads), never the gateway itself.
//
// Endpoints:
//
//	GET  /status          Status as JSON (Reporter.Status)
//	GET  /deadletters     a page of dead letters (n, from; DeadLettersNextHeader)
//	GET  /buffer/stats    every stream with its consumers' positions
//	GET  /buffer/peek     up to PeekMax events of a stream (stream, from, n)
//	GET  /buffer/export   a stream as JSON lines or a CBOR sequence, with trailers
//	POST /buffer/replay   the uplink forwards a stream again from an offset
//	POST /reload          re-read the configuration (OpResult)
//	GET  /metrics         Prometheus text format
//	GET  /healthz         "ok"
//	GET  /readyz          "ready", or 503 and why not (Readiness.Ready)
//	GET  /debug/pprof/    Go's profiler, with Config.Pprof
//	GET  /, /events       the status page and its server-sent events
//
// Security: the listener is loopback only and unauthenticated. Every
// endpoint that returns data refuses (403) a Host that is a DNS name other
// than localhost (DNS rebinding); the two that change the gateway are POST
// only and refuse an Origin other than the listener's own (CSRF). /healthz
// and /readyz stay open for probes.
//
// Limits (limits.go): at most StatusMaxConns connections, one more is
// answered 503 and closed at once; a request header within
// StatusReadHeaderTimeout and at most StatusMaxHeaderBytes, a whole request
// within StatusReadTimeout, an idle connection closed after
// StatusIdleTimeout; at most 8 status page streams, each ended after
// SSEMaxLifetime. Responses that can grow with the buffer are paged
// (PeekPageBytes, DeadLettersPageBytes) or streamed in bounded pages (an
// export), so a large backlog costs no more memory than a small one, and a
// page is encoded inside a read transaction but written after it, so a slow
// client never holds up a commit. ListenerStats counts connections and
// refusals.
//
// Concurrency: Server.Run serves each request on its own goroutine, so the
// interfaces are called concurrently, from any number of requests; Reporter
// and Log must be safe for that, and Operator serializes its own changes.
// Run returns after the server shut down, once its context ended. Metrics
// are safe for concurrent use; OnCommit is called on the buffer's commit
// loop.
package opsapi
