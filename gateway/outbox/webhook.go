package outbox

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

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/config"
)

// errPermanent marks a response that retrying will not fix.
var errPermanent = errors.New("permanent failure")

// Webhook delivers outbox events by HTTP POST (see the package doc for
// its retries and headers). It is safe for concurrent use, though one
// outbox has one Drain, and so one delivery at a time.
type Webhook struct {
	cfg        config.Webhook
	secret     []byte
	client     *http.Client
	q          Log
	deadLetter string
	log        *slog.Logger
	rand       func() float64
}

// NewWebhook returns the deliverer of a webhook output: it POSTs to
// cfg.URL, signs with the key in cfg.SecretFile (read now) and moves what
// it gives up on to stream deadLetter of q.
func NewWebhook(cfg config.Webhook, q Log, deadLetter string, log *slog.Logger) (*Webhook, error) {
	w := &Webhook{cfg: cfg, q: q, deadLetter: deadLetter, log: log, rand: rand.Float64,
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

// Deliver POSTs ev, retrying with capped, jittered backoff; after
// cfg.Retries attempts (0: never give up) or a permanent failure the event
// goes to the dead-letter stream. It is a Deliver for Drain.
func (w *Webhook) Deliver(ctx context.Context, ev *event.Event) error {
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
			w.log.Warn("webhook delivery failed: retrying", "url", w.cfg.URL, "id", ev.ID.String(), "attempt", attempt, "err", err)
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
func (w *Webhook) deadLetterEvent(ctx context.Context, ev *event.Event, attempts int, why error) error {
	d := *ev
	d.Stream = w.deadLetter
	d.Attrs = map[string]string{"reason": "webhook: " + why.Error(), "original_stream": ev.Stream}
	pause := retryMin
	for {
		err := w.q.Append(ctx, &d)
		if err == nil {
			w.log.Warn("webhook delivery failed: moved to dead letters", "url", w.cfg.URL, "id", ev.ID.String(), "attempts", attempts, "err", why)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		w.log.Error("webhook dead letter refused by the buffer: keeping the event and retrying",
			"url", w.cfg.URL, "id", ev.ID.String(), "stream", w.deadLetter, "retry_in", pause, "err", err)
		if !sleepCtx(ctx, time.Duration(float64(pause)*(0.5+w.rand()/2))) {
			return ctx.Err()
		}
		pause = min(2*pause, retryMax)
	}
}

// Signature returns the X-Ferry-Signature header value for body:
// "sha256=" and the hex HMAC-SHA256 of the body under secret.
func Signature(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func (w *Webhook) post(ctx context.Context, ev *event.Event) error {
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
