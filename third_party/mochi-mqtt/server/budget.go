// ferry patch 7: memory bounds. This file is ferry's, not upstream's; see
// ../PATCHES.md, 7.

package mqtt

import (
	"io"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Budget bounds the memory clients can make the server hold beyond what
// Capabilities bound. A zero field is no bound. Set it in Options.Budget
// before the server starts; its counters are safe to read at any time.
type Budget struct {
	// MaxConnectSize bounds the CONNECT packet (fixed header byte plus
	// remaining length, as MaximumPacketSize): until a client is
	// authenticated it may make the server hold no more than this.
	MaxConnectSize uint32
	// MaxClientSubscriptions bounds each client's subscriptions; one more
	// filter gets the SUBACK reason code 0x97 (MQTT 3.1.1: 0x80).
	MaxClientSubscriptions int
	// MaxSubscriptions bounds all clients' subscriptions together.
	MaxSubscriptions int64
	// MaxOfflineSessions bounds the disconnected sessions kept: beyond it a
	// client asking for a new persistent session is refused (CONNACK 0x97,
	// MQTT 3.1.1 0x03); resuming an existing session is not.
	MaxOfflineSessions int
	// MaxSessionQueueBytes bounds the payload bytes of each client's
	// outbound QoS 1/2 messages in flight or queued for it while offline.
	MaxSessionQueueBytes int64
	// MaxQueueBytes bounds those bytes for all clients together.
	MaxQueueBytes int64
	// MaxSessionQueue bounds the number of each client's outbound QoS 1/2
	// messages in flight or queued for it while offline (ferry patch 10).
	// 0: Capabilities.MaximumInflight, as upstream, which also bounds the
	// messages in flight to a connected client (its Receive Maximum), so
	// the offline queue could not be longer than the in-flight window.
	MaxSessionQueue int
	// OnQueueDrop, if set, is called for each outbound message dropped
	// because a queue bound (these or Capabilities.MaximumInflight) was
	// reached; reason is "session_count", "session_bytes" or "total_bytes",
	// or "write_buffer" for a QoS 0 message to a connected client whose
	// write buffer is full (ferry patch 14).
	// It runs in the publisher's goroutine and must not block.
	OnQueueDrop func(cl *Client, pk packets.Packet, reason string)

	queued atomic.Int64 // payload bytes in all clients' Inflight maps

	// Refusals and drops.
	SubscriptionsRefused atomic.Uint64
	SessionsRefused      atomic.Uint64
	QueueDropped         atomic.Uint64
	// QueueDropped by reason (ferry patch 10): count, session bytes, total
	// bytes.
	QueueDroppedCount, QueueDroppedSessionBytes, QueueDroppedTotalBytes atomic.Uint64
	// QueueDroppedWriteBuffer counts QoS 0 messages dropped for a
	// connected client whose write buffer
	// (Capabilities.MaximumClientWritesPending) was full (ferry patch 14).
	QueueDroppedWriteBuffer atomic.Uint64
}

// QueuedBytes returns the payload bytes in all clients' in-flight maps.
func (b *Budget) QueuedBytes() int64 { return b.queued.Load() }

// readRemaining reads a packet's n remaining bytes into a buffer that
// grows as they arrive (doubling from 4 KiB), so that a declared length
// is never allocated before the bytes are there: a client declaring
// 256 MB and sending nothing makes the server hold 4 KiB, not 256 MB.
func readRemaining(r io.Reader, n int) ([]byte, error) {
	const first = 4096
	if n <= first {
		p := make([]byte, n)
		_, err := io.ReadFull(r, p)
		return p, err
	}
	p := make([]byte, 0, first)
	for len(p) < n {
		if len(p) == cap(p) {
			q := make([]byte, len(p), min(n, 2*cap(p)))
			copy(q, p)
			p = q
		}
		k, err := io.ReadFull(r, p[len(p):cap(p)])
		p = p[:len(p)+k]
		if err != nil {
			return p, err
		}
	}
	return p, nil
}

// connectTooLarge reports whether a CONNECT's fixed header declares more
// than the budget allows.
func (s *Server) connectTooLarge(fh *packets.FixedHeader) bool {
	b := s.Options.Budget
	return b != nil && b.MaxConnectSize > 0 && uint32(fh.Remaining+1) > b.MaxConnectSize
}

// subscriptionAllowed reports whether cl may add filter: a filter it
// already has (a renewal) always may.
func (s *Server) subscriptionAllowed(cl *Client, filter string) bool {
	b := s.Options.Budget
	if b == nil {
		return true
	}
	if _, ok := cl.State.Subscriptions.Get(filter); ok {
		return true
	}
	if (b.MaxClientSubscriptions > 0 && cl.State.Subscriptions.Len() >= b.MaxClientSubscriptions) ||
		(b.MaxSubscriptions > 0 && atomic.LoadInt64(&s.Info.Subscriptions) >= b.MaxSubscriptions) {
		b.SubscriptionsRefused.Add(1)
		return false
	}
	return true
}

// sessionAllowed returns the CONNACK code for a client asking for a new
// persistent session while MaxOfflineSessions sessions are kept offline,
// or CodeSuccess. A client resuming its session, or not keeping one, is
// never refused.
func (s *Server) sessionAllowed(cl *Client) packets.Code {
	b := s.Options.Budget
	if b == nil || b.MaxOfflineSessions <= 0 {
		return packets.CodeSuccess
	}
	if (cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval == 0) ||
		(cl.Properties.ProtocolVersion < 5 && cl.Properties.Clean) {
		return packets.CodeSuccess
	}
	if _, ok := s.Clients.Get(cl.ID); ok {
		return packets.CodeSuccess
	}
	if s.OfflineSessions() < int64(b.MaxOfflineSessions) {
		return packets.CodeSuccess
	}
	b.SessionsRefused.Add(1)
	if cl.Properties.ProtocolVersion < 5 {
		return packets.ErrServerUnavailable
	}
	return packets.ErrQuotaExceeded
}

// queueDrop returns the reason the outbound message pk may not be added
// to cl's in-flight map, or "": the message would take the client's, or
// all clients', queued bytes past the budget.
func (s *Server) queueDrop(cl *Client, pk packets.Packet) string {
	b := s.Options.Budget
	if b == nil {
		return ""
	}
	n := int64(len(pk.Payload))
	switch {
	case b.MaxSessionQueueBytes > 0 && cl.State.Inflight.Bytes()+n > b.MaxSessionQueueBytes:
		return "session_bytes"
	case b.MaxQueueBytes > 0 && b.queued.Load()+n > b.MaxQueueBytes:
		return "total_bytes"
	}
	return ""
}

// queueDropped counts and reports a dropped outbound message.
func (s *Server) queueDropped(cl *Client, pk packets.Packet, reason string) {
	b := s.Options.Budget
	if b == nil {
		return
	}
	b.QueueDropped.Add(1)
	switch reason { // ferry patch 10
	case "session_count":
		b.QueueDroppedCount.Add(1)
	case "session_bytes":
		b.QueueDroppedSessionBytes.Add(1)
	case "total_bytes":
		b.QueueDroppedTotalBytes.Add(1)
	case "write_buffer": // ferry patch 14
		b.QueueDroppedWriteBuffer.Add(1)
	}
	if b.OnQueueDrop != nil {
		b.OnQueueDrop(cl, pk, reason)
	}
}

// queueLimit returns how many outbound QoS 1/2 messages a client may have
// in flight or queued (ferry patch 10).
func (s *Server) queueLimit() int {
	if b := s.Options.Budget; b != nil && b.MaxSessionQueue > 0 {
		return b.MaxSessionQueue
	}
	return int(s.Options.Capabilities.MaximumInflight)
}

// budgetBytes returns the counter of all clients' queued bytes, or nil.
func (s *Server) budgetBytes() *atomic.Int64 {
	if s.Options.Budget == nil {
		return nil
	}
	return &s.Options.Budget.queued
}

// OfflineSessions returns the number of sessions kept whose clients are
// not connected: the clients known but for the connected ones and the
// inline client.
func (s *Server) OfflineSessions() int64 {
	n := int64(s.Clients.Len()) - atomic.LoadInt64(&s.Info.ClientsConnected)
	if s.inlineClient != nil {
		n--
	}
	return max(n, 0)
}
