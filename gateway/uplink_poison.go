package gateway

import (
	"context"
	"fmt"
	"strconv"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/uplink"
)

// uplinkDeadLetters stores the messages the cloud refused (uplink poison)
// in the dead-letter stream, next to the pipelines' and webhooks' failures.
// Unlike the pipelines' dead letters (undecodable input, cut to
// dead_letters.max_payload), it keeps the whole payload: these are events
// a client published and the gateway acknowledged, and the dead letter is
// their only copy once the uplink acks them. Their size is already bounded
// by the broker's maximum message size.
type uplinkDeadLetters struct {
	buf    *buffer.Log
	stream string
}

func newUplinkDeadLetters(buf *buffer.Log, cfg *config.Config) *uplinkDeadLetters {
	return &uplinkDeadLetters{buf: buf, stream: cfg.DeadLetters.Stream}
}

var _ uplink.DeadLetterer = (*uplinkDeadLetters)(nil)

// DeadLetter appends a copy of ev to the dead-letter stream in a commit of
// its own and returns once it is committed (Update waits, whatever the
// durability), so the uplink acks ev only after the copy is safe.
func (d *uplinkDeadLetters) DeadLetter(ctx context.Context, ev *event.Event, reason string) error {
	if ev.Stream == d.stream {
		// dead_letters.forward: storing it again would send it again.
		return fmt.Errorf("%w: stream %s", uplink.ErrDeadLetterLoop, ev.Stream)
	}
	dl := *ev
	dl.Stream = d.stream
	dl.Attrs = map[string]string{"reason": reason, "original_id": ev.ID.String(), "original_stream": ev.Stream,
		"original_size": strconv.Itoa(len(ev.Payload))}
	if err := d.buf.Update(ctx, func(tx *buffer.Tx) error { return tx.Append(&dl) }); err != nil {
		return fmt.Errorf("gateway: dead-letter stream %s: %w", d.stream, err)
	}
	return nil
}
