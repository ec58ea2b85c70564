// Package outbox delivers what pipelines wrote to their outbox streams: a
// local MQTT publish on the embedded broker (the "_mqtt" outbox) or an HTTP
// POST to a webhook (one outbox per webhook output), signed with HMAC-SHA256
// and retried with capped, jittered backoff.
//
// Pipelines write their results to an outbox in the same transaction as
// their state, so a result is in its outbox exactly once. Drain then reads
// the outbox and acknowledges an event only after its delivery is done
// with, which makes delivery at least once:
//
//   - Order: one Drain per outbox delivers that outbox's events one at a
//     time, in log (offset) order; the next event is not attempted before
//     the previous one was delivered or given up on. Different outboxes
//     are independent of each other.
//   - Retry: a webhook POST that fails with a network error, 408, 429 or a
//     5xx is retried (the event blocks its outbox meanwhile); after
//     config.Webhook.Retries attempts (0: never give up), or at once on any
//     other status, the event goes to the dead-letter stream with the
//     reason, and only then is it acknowledged. A local publish that fails
//     is logged and dropped (the broker refused it; retrying cannot help).
//   - Restart: a crash, kill or reload between a delivery and its
//     acknowledgement delivers that event again, so every webhook POST
//     carries the event's stable ID as Idempotency-Key (and
//     X-Ferry-Event-Id) for the receiver to drop duplicates. A new Drain
//     starts after what its predecessor acknowledged, including
//     acknowledgements not yet committed.
//   - Failures of the buffer (a read or an acknowledgement fails, the
//     dead-letter stream refuses) are logged and retried after a pause;
//     only the end of the context ends a Drain, so a full or failing disk
//     stops delivery, never the gateway.
//
// Drain and the deliverers are safe to run concurrently with each other
// on different outboxes; one outbox must have one Drain at a time.
package outbox
