package verify

import (
	"encoding/json"
	"fmt"
)

// ResendRequest asks a gateway to send a stream's events FromSeq to ToSeq
// (both included) of Epoch again. It is published, QoS 1, to
// {gateway_id}/cmd/ferry/resend as JSON:
//
//	{"id":"4f3c2a1b0e9d8c7a","gateway":"gw-1","stream":"telemetry",
//	 "epoch":"9b1f04c2d3e4a5b6","from_seq":120,"to_seq":129,
//	 "reply_to":"ferry-verify-host/resend-reply"}
//
// The gateway serves it from the events it retains
// (buffer.streams[].retain), sending them through its uplink as usual
// with "replay":true, and answers on reply_to with a ResendReply. The
// reply topic is in the payload because the checker speaks MQTT 3.1.1
// (NATS' MQTT interface has no MQTT 5); a gateway that received the
// request over MQTT 5 with a Response Topic answers there instead.
type ResendRequest struct {
	ID      string `json:"id"`
	Gateway string `json:"gateway"`
	Stream  string `json:"stream"`
	Epoch   string `json:"epoch"`
	FromSeq uint64 `json:"from_seq"`
	ToSeq   uint64 `json:"to_seq"`
	ReplyTo string `json:"reply_to,omitempty"`
}

// Topic is the request's topic: {gateway_id}/cmd/ferry/resend.
func (r *ResendRequest) Topic() string { return r.Gateway + ResendTopicSuffix }

// Resend reply statuses.
const (
	// ReplyOK: the gateway is resending the events it still has.
	ReplyOK = "ok"
	// ReplyRefused: it has none of them (FirstSeq is its first retained
	// one), or the epoch is not its current one.
	ReplyRefused = "refused"
)

// ResendReply is a gateway's answer to a ResendRequest, echoing its
// fields:
//
//	{"id":"4f3c2a1b0e9d8c7a","gateway":"gw-1","stream":"telemetry",
//	 "epoch":"9b1f04c2d3e4a5b6","from_seq":120,"to_seq":129,
//	 "status":"refused","first_seq":400,"error":"older than the first retained event"}
//
// With "ok", FirstSeq > FromSeq says that only FirstSeq..ToSeq are coming.
type ResendReply struct {
	ID       string `json:"id"`
	Gateway  string `json:"gateway"`
	Stream   string `json:"stream"`
	Epoch    string `json:"epoch"`
	FromSeq  uint64 `json:"from_seq"`
	ToSeq    uint64 `json:"to_seq"`
	Status   string `json:"status"`
	FirstSeq uint64 `json:"first_seq,omitempty"`
	Error    string `json:"error,omitempty"`
}

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
