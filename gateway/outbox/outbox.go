package outbox

import (
	"context"
	"log/slog"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/event"
)

// Log is the durable log as a deliverer sees it: the outbox streams it
// reads and acknowledges, and the dead-letter stream it appends to.
type Log interface {
	Read(stream string, from uint64, max int, fn func(off uint64, ev *event.Event) error) (uint64, error)
	Ack(stream, consumer string, through uint64) error
	Acked(stream, consumer string) uint64
	Changed() <-chan struct{}
	Append(ctx context.Context, ev *event.Event) error
}

var _ Log = (*buffer.Log)(nil)

// Consumer is the name a deliverer acknowledges its outbox stream under;
// each outbox stream has exactly one deliverer. Before ferry named it,
// outbox positions were stored under FormerConsumer (the buffer's default
// consumer, shared with the uplink); the gateway configures outbox
// streams to inherit that position (buffer.StreamConfig.Inherit), so an
// upgraded gateway neither delivers twice nor skips.
const (
	Consumer       = "outbox"
	FormerConsumer = buffer.DefaultConsumer
)

// Deliver delivers one event. It returns only once the event is done with
// (delivered, or given up on and dead-lettered), or with the error of ctx.
type Deliver func(ctx context.Context, ev *event.Event) error

// Pauses before retrying what the buffer refused or failed: capped, so a
// deliverer resumes soon after space was freed, and long enough that a
// failing SD card is not hammered.
const (
	retryMin = 500 * time.Millisecond
	retryMax = 30 * time.Second
)

// Drain calls deliver for each event of stream in order, acknowledging
// each one after deliver returned, until ctx ends; it returns nil then.
// Only the end of ctx ends it: a failed read or acknowledgement is logged
// and retried after a pause.
func Drain(ctx context.Context, q Log, stream string, log *slog.Logger, deliver Deliver) error {
	return DrainAs(ctx, q, stream, Consumer, log, func(ctx context.Context, _ uint64, ev *event.Event) error {
		return deliver(ctx, ev)
	})
}

// DrainAs is Drain for another reader of the log than the outbox
// deliverers: it acknowledges as consumer, and deliver is also given each
// event's offset.
func DrainAs(ctx context.Context, q Log, stream, consumer string, log *slog.Logger,
	deliver func(ctx context.Context, off uint64, ev *event.Event) error) error {
	// After what a predecessor acknowledged (a reload restarts deliverers):
	// an ack may still wait for its commit, and those events must not be
	// delivered twice.
	next := q.Acked(stream, consumer) + 1
	pause := retryMin
	failed := func(msg string, err error) bool {
		log.Error(msg, "stream", stream, "retry_in", pause, "err", err)
		ok := sleepCtx(ctx, pause)
		pause = min(2*pause, retryMax)
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
			if err := deliver(ctx, offs[i], &evs[i]); err != nil {
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
		pause = retryMin
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

// Publisher publishes on the embedded broker.
type Publisher interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
}

// MQTT returns a Deliver that publishes each event at QoS 1 on pub, to
// the event's topic. A publish pub refuses is logged and dropped.
func MQTT(pub Publisher, log *slog.Logger) Deliver {
	return func(ctx context.Context, ev *event.Event) error {
		if err := pub.Publish(ev.Topic, ev.Payload, false, 1); err != nil {
			log.Warn("local publish failed: dropped", "topic", ev.Topic, "id", ev.ID.String(), "err", err)
		}
		return ctx.Err()
	}
}
