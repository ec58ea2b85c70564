package commands

import (
	"bytes"
	"maps"
	"strconv"
	"strings"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/downlink"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/config"
)

// Log is the durable log as Replies reads it.
type Log interface {
	Read(stream string, from uint64, max int, fn func(off uint64, ev *event.Event) error) (uint64, error)
	Ack(stream, consumer string, through uint64) error
	Acked(stream, consumer string) uint64
	Changed() <-chan struct{}
}

var _ Log = (*buffer.Log)(nil)

// Replies is the reply stream as the downlink reads it: each reply
// carries the response topic and correlation data of the command it
// answers (see the package doc), whatever the device put in its own
// properties.
type Replies struct {
	Log      Log
	Commands string // the command stream
}

var _ downlink.Queue = (*Replies)(nil)

// Read reads replies like Log.Read, resolving each against its command.
func (r *Replies) Read(stream string, from uint64, max int, fn func(off uint64, ev *event.Event) error) (uint64, error) {
	type reply struct {
		off uint64
		ev  event.Event
	}
	// Collected first: looking the commands up inside the read would nest
	// two bbolt read transactions in one goroutine, which can deadlock
	// against a writer remapping the file.
	var got []reply
	next, err := r.Log.Read(stream, from, max, func(off uint64, ev *event.Event) error {
		c := *ev
		c.Payload = bytes.Clone(ev.Payload)
		c.Attrs = maps.Clone(ev.Attrs)
		got = append(got, reply{off, c})
		return nil
	})
	for i := range got {
		r.resolve(&got[i].ev)
		if ferr := fn(got[i].off, &got[i].ev); ferr != nil {
			return got[i].off, ferr
		}
	}
	return next, err
}

// resolve sets ev's response topic and correlation data from the command
// its topic names, or removes them when there is none to answer.
func (r *Replies) resolve(ev *event.Event) {
	// A device's user properties land in Attrs: one named like ours must
	// not choose the cloud topic.
	delete(ev.Attrs, downlink.AttrResponseTopic)
	delete(ev.Attrs, downlink.AttrCorrelationData)
	s, ok := strings.CutPrefix(ev.Topic, config.ReplyTopicPrefix)
	if !ok {
		return
	}
	off, err := strconv.ParseUint(s, 10, 64)
	if err != nil || off == 0 {
		return
	}
	_, _ = r.Log.Read(r.Commands, off, 1, func(o uint64, cmd *event.Event) error {
		if o != off { // deleted: the reply came after the reply window
			return nil
		}
		if t := cmd.Attrs[downlink.AttrResponseTopic]; t != "" {
			if ev.Attrs == nil {
				ev.Attrs = map[string]string{}
			}
			ev.Attrs[downlink.AttrResponseTopic] = t
			if cd, ok := cmd.Attrs[downlink.AttrCorrelationData]; ok {
				ev.Attrs[downlink.AttrCorrelationData] = cd
			}
		}
		return nil
	})
}

// Ack records the downlink's position in the reply stream.
func (r *Replies) Ack(stream, consumer string, through uint64) error {
	return r.Log.Ack(stream, consumer, through)
}

// Acked returns the downlink's position in the reply stream.
func (r *Replies) Acked(stream, consumer string) uint64 { return r.Log.Acked(stream, consumer) }

// Changed is the log's Changed.
func (r *Replies) Changed() <-chan struct{} { return r.Log.Changed() }
