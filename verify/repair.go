package verify

import (
	"encoding/json"
	"fmt"

	"github.com/ferrygw/ferry/uplink"
)

// ResendRequest asks a gateway to send a stream's events FromSeq to ToSeq
// (both included) of Epoch again, published QoS 1 to
// {gateway_id}/cmd/ferry/resend as JSON: uplink.ResendRequest, the
// gateway's side of the wire format (see there).
type ResendRequest = uplink.ResendRequest

// Resend reply statuses (uplink.ReplyOK, uplink.ReplyRefused).
const (
	// ReplyOK: the gateway is resending the events it still has.
	ReplyOK = uplink.ReplyOK
	// ReplyRefused: it has none of them (FirstSeq is its first retained
	// one), or the epoch is not its current one.
	ReplyRefused = uplink.ReplyRefused
)

// ResendReply is a gateway's answer to a ResendRequest, echoing its
// fields: uplink.ResendReply. With "ok", FirstSeq > FromSeq says that
// only FirstSeq..ToSeq are coming.
type ResendReply = uplink.ResendReply

// maxReplyBytes bounds a reply.
const maxReplyBytes = 4096

// DecodeReply decodes a ResendReply. The input is untrusted: it never
// panics, refuses more than 4 KiB, and returns an error wrapping
// ErrUndecodable for anything but a reply with a known status.
func DecodeReply(b []byte) (*ResendReply, error) {
	if len(b) > maxReplyBytes {
		return nil, fmt.Errorf("%w: reply of %d bytes", ErrUndecodable, len(b))
	}
	var r ResendReply
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: reply: %v", ErrUndecodable, err)
	}
	if r.Status != ReplyOK && r.Status != ReplyRefused {
		return nil, fmt.Errorf("%w: reply status %q", ErrUndecodable, r.Status)
	}
	if r.FromSeq > r.ToSeq {
		return nil, fmt.Errorf("%w: reply range %d-%d", ErrUndecodable, r.FromSeq, r.ToSeq)
	}
	return &r, nil
}
