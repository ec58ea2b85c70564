package gateway

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/config"
)

// Outbox delivery: pipelines write MQTT and webhook results to outbox
// streams in the same transaction as their state (exactly once into the
// outbox); a deliverer drains each outbox and acknowledges an event only
// after it was delivered, so delivery is at least once across crashes and
// every delivery carries the event's stable ID as its idempotency key.

// outbox is the part of the buffer a deliverer uses.
type outbox interface {
	Read(stream string, from uint64, max int, fn func(off uint64, ev *event.Event) error) (uint64, error)
	Ack(stream, consumer string, through uint64) error
	Acked(stream, consumer string) uint64
	Changed() <-chan struct{}
	Append(ctx context.Context, ev *event.Event) error
}

var _ outbox = (*buffer.Log)(nil)

// outboxConsumer is the consumer name the deliverers (local MQTT publish,
// webhooks) ack their outbox streams under: buffer.DefaultConsumer, the
// consumer an outbox stream requires (bufferOptions lists none for it) and
// the name every outbox position has been stored under so far. A name of
// their own would need a migration of every installed buffer: without
// one, the deliverer would start again from the oldest event still
// stored (kept by retain, or not yet deleted under disk pressure) on
// upgrade, and a downgrade would skip or resend; and the stream would have
// to require the new name, or acks would delete nothing. Each outbox
// stream has one deliverer, so the shared name is unambiguous.
const outboxConsumer = buffer.DefaultConsumer

// Pauses before retrying what the buffer refused or failed: capped, so a
// deliverer resumes soon after space was freed, and long enough that a
// failing SD card is not hammered.
const (
	outboxRetryMin = 500 * time.Millisecond
	outboxRetryMax = 30 * time.Second
)

// drain calls deliver for each event of stream in order, acking after each
// one as consumer, until ctx ends. deliver returns only when the event is
// done with (delivered, or given up on and dead-lettered) or ctx ended.
// Only the end of ctx ends drain: a failed read or ack is logged and
// retried after a pause, so a full or failing disk stops delivery, not the
// gateway.
func drain(ctx context.Context, q outbox, stream, consumer string, lg *slog.Logger, deliver func(ctx context.Context, ev *event.Event) error) error {
	// After what a predecessor acknowledged (a reload restarts deliverers):
	// an ack may still wait for its commit, and those events must not be
	// delivered twice.
	next := q.Acked(stream, consumer) + 1
	pause := outboxRetryMin
	failed := func(msg string, err error) bool {
		lg.Error(msg, "stream", stream, "retry_in", pause, "err", err)
		ok := sleepCtx(ctx, pause)
		pause = min(2*pause, outboxRetryMax)
		return ok
	}
	for {
		changed := q.Changed()
		var evs []event.Event
		var offs []uint64
		n, err := q.Read(stream, next, 64, func(off uint64, ev *event.Event) error {
			evs = append(evs, *ev)
			offs = append(offs, off)
			return nil
		})
		// What was read before a failure is delivered first.
		for i := range evs {
			if err := deliver(ctx, &evs[i]); err != nil {
				return nil // only the end of ctx ends a delivery
			}
			for {
				err := q.Ack(stream, consumer, offs[i])
				if err == nil {
					break
				}
				if !failed("outbox ack failed: retrying", err) {
					return nil
				}
			}
		}
		if err != nil {
			next = n
			if !failed("outbox read failed: retrying", err) {
				return nil
			}
			continue
		}
		pause = outboxRetryMin
		if n != next {
			next = n
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// sleepCtx waits for d, or until ctx ends; it reports whether ctx is still
// live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// mqttPublisher publishes outbox events on the embedded broker.
type mqttPublisher interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
}

func deliverMQTT(pub mqttPublisher, lg *slog.Logger) func(context.Context, *event.Event) error {
	return func(ctx context.Context, ev *event.Event) error {
		if err := pub.Publish(ev.Topic, ev.Payload, false, 1); err != nil {
			lg.Warn("local publish failed: dropped", "topic", ev.Topic, "id", ev.ID.String(), "err", err)
		}
		return ctx.Err()
	}
}

// webhook delivers outbox events by HTTP POST.
type webhook struct {
	cfg        config.Webhook
	secret     []byte
	client     *http.Client
	q          outbox
	deadLetter string
	logger     *slog.Logger
	rand       func() float64
}

func newWebhook(cfg config.Webhook, q outbox, deadLetter string, logger *slog.Logger) (*webhook, error) {
	w := &webhook{cfg: cfg, q: q, deadLetter: deadLetter, logger: logger, rand: rand.Float64,
		client: &http.Client{Timeout: cfg.Timeout}}
	if cfg.SecretFile != "" {
		b, err := os.ReadFile(cfg.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("webhook secret_file: %w", err)
		}
		w.secret = bytes.TrimRight(b, "\r\n")
	}
	return w, nil
}

// errPermanent marks a response that retrying will not fix.
var errPermanent = errors.New("permanent failure")

// deliver POSTs ev, retrying with capped, jittered backoff; after
// cfg.Retries attempts (0: never give up) or a permanent failure the event
// goes to the dead-letter stream.
func (w *webhook) deliver(ctx context.Context, ev *event.Event) error {
	backoff := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := w.post(ctx, ev)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errPermanent) || (w.cfg.Retries > 0 && attempt >= w.cfg.Retries) {
			return w.deadLetterEvent(ctx, ev, attempt, err)
		}
		if attempt == 1 || attempt%10 == 0 {
			w.logger.Warn("webhook delivery failed: retrying", "url", w.cfg.URL, "id", ev.ID.String(), "attempt", attempt, "err", err)
		}
		sleep := time.Duration(float64(backoff) * (0.5 + w.rand()/2))
		backoff = min(backoff*2, time.Minute)
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// deadLetterEvent stores ev, which delivery gave up on after attempts
// because of why, in the dead-letter stream. While the buffer refuses it
// (full, below min_free_disk, a failing disk) the event stays in the
// outbox, unacknowledged, and the append is retried after a pause: nothing
// is lost, and a refusal does not stop the gateway. It returns only nil or
// the error of ctx.
func (w *webhook) deadLetterEvent(ctx context.Context, ev *event.Event, attempts int, why error) error {
	d := *ev
	d.Stream = w.deadLetter
	d.Attrs = map[string]string{"reason": "webhook: " + why.Error(), "original_stream": ev.Stream}
	pause := outboxRetryMin
	for {
		err := w.q.Append(ctx, &d)
		if err == nil {
			w.logger.Warn("webhook delivery failed: moved to dead letters", "url", w.cfg.URL, "id", ev.ID.String(), "attempts", attempts, "err", why)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		w.logger.Error("webhook dead letter refused by the buffer: keeping the event and retrying",
			"url", w.cfg.URL, "id", ev.ID.String(), "stream", w.deadLetter, "retry_in", pause, "err", err)
		if !sleepCtx(ctx, time.Duration(float64(pause)*(0.5+w.rand()/2))) {
			return ctx.Err()
		}
		pause = min(2*pause, outboxRetryMax)
	}
}

// Signature returns the X-Ferry-Signature header value for body:
// "sha256=" and the hex HMAC-SHA256 of the body under secret.
func Signature(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func (w *webhook) post(ctx context.Context, ev *event.Event) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(ev.Payload))
	if err != nil {
		return fmt.Errorf("%w: %v", errPermanent, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", ev.ID.String())
	req.Header.Set("X-Ferry-Event-Id", ev.ID.String())
	if p := ev.Attrs["pipeline"]; p != "" {
		req.Header.Set("X-Ferry-Pipeline", p)
	}
	if w.secret != nil {
		req.Header.Set("X-Ferry-Signature", Signature(w.secret, ev.Payload))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return fmt.Errorf("HTTP %s", resp.Status)
	default:
		return fmt.Errorf("%w: HTTP %s", errPermanent, strings.TrimSpace(resp.Status))
	}
}
