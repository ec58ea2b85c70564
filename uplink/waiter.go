package uplink

import (
	"fmt"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"time"
)

// wait is the session's one token waiter. It takes the published records in
// publish order, waits for each one's token and then acks the record's
// events in the queue, so a stream's acked offset only ever advances over a
// contiguous prefix of acknowledged messages. It returns each record to the
// free slots, and exits when the publisher closed c.pending.
//
// Paho v1.5.1 completes every outstanding QoS 1 token when a connection
// ends: on loss (internalConnLost with CleanSession and no auto-reconnect)
// and on Disconnect, messageIds.cleanUp sets "connection lost before
// Publish completed" on each. A QoS 0 token whose packet was never written,
// or one registered in a race with that cleanup, may however never
// complete; so once the connection is dead the waiter gives paho
// tokenDrainTimeout to finish and treats what is still open as failed.
// On a live connection a publish not acknowledged within ackTimeout fails
// too, so a broker that drops a PUBACK cannot stall the window forever.
func (f *Forwarder) wait(c *conn) {
	defer close(c.waiterDone)
	var w tokenWait
	defer w.stop()
	for r := range c.pending {
		var err error
		switch {
		case r.drop != "":
		case r.unsent:
			err = errUnsent
		default:
			err = w.await(c, r.tok, f.ackTimeout())
		}
		f.complete(c, r, err)
	}
}

// tokenWait waits for tokens, one at a time, with the waiter's deadlines.
type tokenWait struct {
	ack    *time.Timer // PUBACK deadline while the connection is up
	drain  *time.Timer // started once the connection is gone
	gaveUp bool        // drain expired: fail every token not already done
}

// await returns the outcome of tok: nil once it is acknowledged (QoS 1) or
// written (QoS 0), else why not.
func (w *tokenWait) await(c *conn, tok mqtt.Token, ackTimeout time.Duration) error {
	select {
	case <-tok.Done():
		return tok.Error()
	default:
	}
	if w.gaveUp {
		return errTokenTimeout
	}
	if !c.isDead() {
		if w.ack == nil {
			w.ack = time.NewTimer(ackTimeout)
		} else {
			w.ack.Reset(ackTimeout)
		}
		select {
		case <-tok.Done():
			w.ack.Stop()
			return tok.Error()
		case <-w.ack.C:
			return errNoPuback
		case <-c.dead:
			w.ack.Stop()
		}
	}
	if w.drain == nil {
		w.drain = time.NewTimer(tokenDrainTimeout)
	}
	select {
	case <-tok.Done():
		return tok.Error()
	case <-w.drain.C:
		w.gaveUp = true
		return errTokenTimeout
	}
}

func (w *tokenWait) stop() {
	for _, t := range []*time.Timer{w.ack, w.drain} {
		if t != nil {
			t.Stop()
		}
	}
}

// complete acks a finished record, or stops acking its stream for the rest
// of the session when it failed, and frees its slot.
func (f *Forwarder) complete(c *conn, r *record, err error) {
	st := r.stream
	published := r.drop == "" && !r.unsent
	if err == nil && published {
		f.puback(c, r) // evidence for poison.go, even when the queue ack below must wait
	}
	if r.probe {
		f.completeProbe(c, r, err, published)
		return
	}
	if r.replay {
		f.completeReplay(c, r, err, published)
		return
	}
	switch {
	case err != nil:
		if err != errUnsent && published {
			c.failed(r) // evidence for poison.go
		}
		st.failedIn = c.id
		if err != errUnsent {
			c.fail(fmt.Errorf("%w: publish to %s: %v", ErrConnectionLost, c.url, err))
		}
	case st.failedIn == c.id:
		// An earlier message of the stream failed in this session: acking
		// this one would skip it. Both are resent on the next connection.
	default:
		if aerr := f.q.Ack(st.name, Consumer, r.through); aerr != nil {
			aerr = fmt.Errorf("%w: ack %s through %d: %w", ErrQueue, st.name, r.through, aerr)
			f.setError(aerr)
			f.log.Error("ack failed", "err", aerr)
			break
		}
		now := f.cfg.Now()
		f.mu.Lock()
		st.ackedNext = r.through + 1
		f.status.Acked[st.name] = r.through
		switch {
		case r.drop != "":
			f.status.Dropped[r.drop] += uint64(r.events)
			if f.drec == nil {
				st.unannounced.add(r.from, r.through, r.drop)
			}
		default:
			if len(st.unannounced.reasons) > 0 && r.through > st.unannounced.through {
				st.unannounced = dropRun{} // its announcement reached the cloud
			}
			f.status.ForwardedEvents += uint64(r.events)
			f.status.ForwardedMessages++
			f.status.ForwardedBytes += uint64(r.bytes)
			f.meter.add(now, uint64(r.events))
		}
		f.mu.Unlock()
	}
	if published {
		f.mu.Lock()
		f.status.Inflight--
		f.mu.Unlock()
	}
	if r.solo {
		select {
		case c.soloDone <- struct{}{}:
		default:
		}
	}
	r.tok = nil
	f.slots <- r
}

// ackTimeout is how long a publish may wait for its PUBACK on a connection
// that is still up (its keepalive is answered).
func (f *Forwarder) ackTimeout() time.Duration { return 2*f.cfg.Keepalive + f.cfg.ConnectTimeout }
