// Package resend serves the cloud's resend requests: a request that
// arrived on the downlink session ({gateway_id}/cmd/ferry/resend, see
// uplink.ResendRequest) is checked against the gateway and handed to the
// uplink's Forwarder, which resends the events it still retains; the
// reply (uplink.ResendReply) goes back through the downlink session.
// The gateway wires it (gateway/downlink.go); it implements
// downlink.ResendSink.
package resend

import (
	"encoding/json"
	"errors"
	"log/slog"

	"github.com/ferrygw/ferry/uplink"
)

// Forwarder resends a stream's events (uplink.Forwarder).
type Forwarder interface {
	Resend(stream string, from, to uint64) (first uint64, err error)
}

// Refusal reasons, in ResendReply.Error (strings on the wire, not Go errors).
const (
	// ReasonGateway: the request names another gateway.
	ReasonGateway = "gateway"
	// ReasonStream: the stream is not forwarded (or the uplink is off).
	ReasonStream = "stream"
	// ReasonEpoch: the epoch is not the buffer file's current one.
	ReasonEpoch = "epoch"
	// ReasonRetained: every event asked for is older than the first retained
	// one (ResendReply.FirstSeq).
	ReasonRetained = "retained"
	// ReasonRange: more than uplink.MaxResendEvents retained events.
	ReasonRange = "range"
	// ReasonBusy: the stream's pending resend cannot take the range.
	ReasonBusy = "busy"
	// ReasonQueue: the buffer could not be read.
	ReasonQueue = "queue"
)

// Handler serves resend requests. Its fields are set once, before use.
type Handler struct {
	GatewayID string
	// Epoch returns the buffer's epoch (buffer.Log.Epoch).
	Epoch func() string
	// Fwd is the uplink's forwarder; nil when the uplink is off.
	Fwd Forwarder
	Log *slog.Logger
}

// Resend decodes a request and queues it (downlink.ResendSink). It does
// not wait for the network: Forwarder.Resend queues the range and reads
// one event of the buffer. The reply goes to responseTopic when the
// request came with one, else to its reply_to; an undecodable request
// gets none.
func (h *Handler) Resend(payload []byte, responseTopic string) (string, []byte, bool) {
	req, err := uplink.DecodeResendRequest(payload)
	if err != nil {
		h.Log.Warn("undecodable resend request", "bytes", len(payload), "err", err)
		return "", nil, true
	}
	topic := responseTopic
	if topic == "" {
		topic = req.ReplyTo
	}
	rep := uplink.ResendReply{ID: req.ID, Gateway: req.Gateway, Stream: req.Stream, Epoch: req.Epoch,
		FromSeq: req.FromSeq, ToSeq: req.ToSeq, Status: uplink.ReplyOK}
	first, code := h.serve(req)
	if code != "" {
		rep.Status, rep.Error = uplink.ReplyRefused, code
	}
	if code == "" && first > req.FromSeq || code == ReasonRetained {
		rep.FirstSeq = first
	}
	h.Log.Info("resend requested", "id", req.ID, "stream", req.Stream, "epoch", req.Epoch,
		"from_seq", req.FromSeq, "to_seq", req.ToSeq, "status", rep.Status, "first_seq", rep.FirstSeq, "error", rep.Error)
	b, err := json.Marshal(&rep)
	if err != nil { // strings and numbers: cannot fail
		return "", nil, code != ""
	}
	return topic, b, code != ""
}

// serve checks req and hands it to the forwarder; it returns the first
// retained offset and, when refused, why.
func (h *Handler) serve(req *uplink.ResendRequest) (uint64, string) {
	switch {
	case req.Gateway != h.GatewayID:
		return 0, ReasonGateway
	case h.Fwd == nil:
		return 0, ReasonStream
	case req.Epoch != h.Epoch():
		return 0, ReasonEpoch
	}
	first, err := h.Fwd.Resend(req.Stream, req.FromSeq, req.ToSeq)
	switch {
	case err == nil:
		return first, ""
	case errors.Is(err, uplink.ErrResendStream):
		return first, ReasonStream
	case errors.Is(err, uplink.ErrResendGone):
		return first, ReasonRetained
	case errors.Is(err, uplink.ErrResendRange):
		return first, ReasonRange
	case errors.Is(err, uplink.ErrResendBusy):
		return first, ReasonBusy
	default:
		h.Log.Error("resend request not served", "stream", req.Stream, "err", err)
		return first, ReasonQueue
	}
}
