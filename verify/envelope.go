package verify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/uplink"
)

// Envelope is one event as a cloud message carries it, with the fields
// the gateway adds for the cloud (sequence, epoch, gap, replay): what
// uplink.DecodeEnvelopes returns.
type Envelope = uplink.Envelope

// Gap is an announced drop: Dropped offsets before the event carrying it,
// deleted by the gateway's policy, with how many for each reason.
type Gap = uplink.Gap

// MaxMessageBytes is the largest message DecodeJSON reads; MaxBatch the
// most envelopes it takes from one message; maxReasons the most reasons
// of one gap it keeps.
const (
	MaxMessageBytes = 16 << 20
	MaxBatch        = 1 << 16
	maxReasons      = 16
)

// jsonEnvelope is what DecodeJSON reads of a JSON envelope; the payload
// and the other fields are skipped.
type jsonEnvelope struct {
	ID      string `json:"id"`
	Gateway string `json:"gateway"`
	Stream  string `json:"stream"`
	Source  string `json:"source"`
	Topic   string `json:"topic"`
	TS      string `json:"ts"`
	Seq     uint64 `json:"seq"`
	Epoch   string `json:"epoch"`
	Gap     *struct {
		Dropped uint64            `json:"dropped"`
		Reasons map[string]uint64 `json:"reasons"`
	} `json:"gap"`
	Replay bool `json:"replay"`
}

// DecodeJSON decodes a JSON cloud message, a single envelope or an array
// of them, reading only what the Checker needs (id, gateway, stream,
// source, topic, ts, seq, epoch, gap, replay): the event's payload,
// content type and attributes are left empty. It is the decoder the
// checker falls back to when Config.Decode is nil; uplink.DecodeEnvelopes
// also reads CBOR, SenML-CBOR and compressed messages. The input is
// untrusted: DecodeJSON never panics, refuses messages over
// MaxMessageBytes and batches over MaxBatch, keeps at most 16 reasons of a
// gap, and returns an error wrapping ErrUndecodable for anything else.
func DecodeJSON(b []byte) ([]Envelope, error) {
	if len(b) > MaxMessageBytes {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrUndecodable, len(b), MaxMessageBytes)
	}
	t := bytes.TrimLeft(b, " \t\r\n")
	if len(t) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrUndecodable)
	}
	switch t[0] {
	case '{':
		var je jsonEnvelope
		if err := json.Unmarshal(b, &je); err != nil {
			return nil, fmt.Errorf("%w: json: %v", ErrUndecodable, err)
		}
		e, err := je.envelope()
		if err != nil {
			return nil, err
		}
		return []Envelope{e}, nil
	case '[':
		var jes []jsonEnvelope
		if err := json.Unmarshal(b, &jes); err != nil {
			return nil, fmt.Errorf("%w: json batch: %v", ErrUndecodable, err)
		}
		if len(jes) == 0 || len(jes) > MaxBatch {
			return nil, fmt.Errorf("%w: batch of %d envelopes", ErrUndecodable, len(jes))
		}
		out := make([]Envelope, len(jes))
		for i := range jes {
			var err error
			if out[i], err = jes[i].envelope(); err != nil {
				return nil, err
			}
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%w: not a JSON envelope (first byte %#x)", ErrUndecodable, t[0])
	}
}

func (je *jsonEnvelope) envelope() (Envelope, error) {
	id, err := event.ParseID(je.ID)
	if err != nil {
		return Envelope{}, fmt.Errorf("%w: id: %v", ErrUndecodable, err)
	}
	e := Envelope{
		Event:   event.Event{ID: id, Stream: je.Stream, Source: je.Source, Topic: je.Topic},
		Gateway: je.Gateway,
		Seq:     je.Seq,
		Epoch:   je.Epoch,
		Replay:  je.Replay,
	}
	if je.TS != "" {
		if e.Event.Time, err = time.Parse(time.RFC3339Nano, je.TS); err != nil {
			return Envelope{}, fmt.Errorf("%w: ts: %v", ErrUndecodable, err)
		}
	}
	if je.Gap != nil {
		if len(je.Gap.Reasons) > maxReasons {
			return Envelope{}, fmt.Errorf("%w: gap with %d reasons", ErrUndecodable, len(je.Gap.Reasons))
		}
		e.Gap = &Gap{Dropped: je.Gap.Dropped, Reasons: je.Gap.Reasons}
	}
	return e, nil
}
