// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

package mqtt

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Inflight is a map of InflightMessage keyed on packet id.
type Inflight struct {
	sync.RWMutex
	internal            map[uint16]packets.Packet // internal contains the inflight packets
	inbound             map[uint16]packets.Packet // ferry patch 12: the client's own flows, by the client's packet IDs
	receiveQuota        int32                     // remaining inbound qos quota for flow control
	sendQuota           int32                     // remaining outbound qos quota for flow control
	maximumReceiveQuota int32                     // maximum allowed receive quota
	maximumSendQuota    int32                     // maximum allowed send quota
	bytes               int64                     // ferry patch 7: payload bytes in internal; under the lock
	total               *atomic.Int64             // ferry patch 7: all clients' bytes (Budget); nil: none
	seq                 uint64                    // ferry patch 10: the last Seq given; under the lock
	waiting             int                       // ferry patch 14: messages in internal marked Waiting; under the lock
}

// Bytes returns the payload bytes of the in-flight messages (ferry patch 7).
func (i *Inflight) Bytes() int64 {
	i.RLock()
	defer i.RUnlock()
	return i.bytes
}

// addBytes keeps the byte counts; the caller holds the lock (ferry patch 7).
func (i *Inflight) addBytes(n int64) {
	i.bytes += n
	if i.total != nil {
		i.total.Add(n)
	}
}

// NewInflights returns a new instance of an Inflight packets map.
func NewInflights() *Inflight {
	return &Inflight{
		internal: map[uint16]packets.Packet{},
		inbound:  map[uint16]packets.Packet{},
	}
}

// InboundFlow reports whether pk, a packet kept in flight, belongs to a
// flow the client started (its QoS 1 or 2 PUBLISH): the server's PUBACK,
// PUBREC or PUBCOMP, under the client's packet ID. The others (PUBLISH,
// PUBREL) are the server's messages to the client, under the server's
// packet IDs (ferry patch 12).
//
// MQTT lets each side number its packets independently, so the same
// packet ID can be in use in both directions at once. Upstream kept both
// in one map (and the bolt store under one key): the client's QoS 1
// PUBLISH with packet ID 5 replaced, then deleted, the message queued for
// it under ID 5, which was lost.
func InboundFlow(pk packets.Packet) bool {
	switch pk.FixedHeader.Type {
	case packets.Puback, packets.Pubrec, packets.Pubcomp:
		return true
	}
	return false
}

// mapFor returns the map holding packets like pk; the caller holds the
// lock (ferry patch 12).
func (i *Inflight) mapFor(pk packets.Packet) map[uint16]packets.Packet {
	if InboundFlow(pk) {
		if i.inbound == nil {
			i.inbound = map[uint16]packets.Packet{}
		}
		return i.inbound
	}
	return i.internal
}

// Set adds or updates an inflight packet by packet id.
func (i *Inflight) Set(m packets.Packet) bool {
	i.Lock()
	defer i.Unlock()

	in := i.mapFor(m) // ferry patch 12
	old, ok := in[m.PacketID]
	// ferry patch 10: every message has its place in the queue (Seq): a
	// new one takes the next, a replacement (PUBREL for PUBLISH, a
	// re-marked message) keeps the one it had, and a stored one (Seq set)
	// keeps its own, the counter moving past it.
	switch {
	case m.Seq != 0:
		i.seq = max(i.seq, m.Seq)
	case ok && old.Seq != 0:
		m.Seq = old.Seq
	default:
		i.seq++
		m.Seq = i.seq
	}
	in[m.PacketID] = m
	i.addBytes(int64(len(m.Payload) - len(old.Payload))) // ferry patch 7
	i.countWaiting(old, ok, -1)                          // ferry patch 14
	i.countWaiting(m, true, 1)
	return !ok
}

// NextSeq returns the next place in the queue, for a message about to be
// Set whose Seq the caller also needs (the store's copy) (ferry patch 10).
func (i *Inflight) NextSeq() uint64 {
	i.Lock()
	defer i.Unlock()
	i.seq++
	return i.seq
}

// inboundInUse reports whether id is held by one of the client's own
// flows (its QoS 2 PUBLISH awaiting PUBREL, or an acknowledgement being
// sent) (ferry patch 10). The server's messages to the client have the
// server's packet IDs: MQTT lets each side assign its own independently,
// so a SUBSCRIBE reusing one of them is not in use. Upstream refused it
// (SUBACK 0x91/0x80 for every filter), and a resumed session's queued
// messages take IDs from 1: mosquitto_sub -c quit with "All subscription
// requests were denied" right after its backlog.
func (i *Inflight) inboundInUse(id uint16) bool {
	i.RLock()
	defer i.RUnlock()
	_, ok := i.inbound[id] // ferry patch 12: a map of their own
	return ok
}

// GetInbound returns the packet of the client's own flow with the
// client's packet ID id (ferry patch 12).
func (i *Inflight) GetInbound(id uint16) (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()
	m, ok := i.inbound[id]
	return m, ok
}

// DeleteInbound ends the client's own flow with packet ID id; it returns
// true if there was one (ferry patch 12).
func (i *Inflight) DeleteInbound(id uint16) bool {
	i.Lock()
	defer i.Unlock()
	_, ok := i.inbound[id]
	delete(i.inbound, id)
	return ok
}

// Remove deletes pk, a packet returned by GetAll, from the map it is in
// (ferry patch 12); it returns true if it was there.
func (i *Inflight) Remove(pk packets.Packet) bool {
	if InboundFlow(pk) {
		return i.DeleteInbound(pk.PacketID)
	}
	return i.Delete(pk.PacketID)
}

// Get returns the server's in-flight or queued message to the client with
// packet id (the client's own flows: GetInbound).
func (i *Inflight) Get(id uint16) (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()

	if m, ok := i.internal[id]; ok {
		return m, true
	}

	return packets.Packet{}, false
}

// Len returns the number of the server's messages in flight to or queued
// for the client (its own flows not counted: InboundLen).
func (i *Inflight) Len() int {
	i.RLock()
	defer i.RUnlock()
	return len(i.internal)
}

// InboundLen returns the number of the client's own flows in progress
// (ferry patch 12).
func (i *Inflight) InboundLen() int {
	i.RLock()
	defer i.RUnlock()
	return len(i.inbound)
}

// Clone returns a new instance of Inflight with the same message data.
// This is used when transferring inflights from a taken-over session.
func (i *Inflight) Clone() *Inflight {
	c := NewInflights()
	i.RLock()
	defer i.RUnlock()
	c.total = i.total     // ferry patch 7: the original is cleared after, giving its bytes back
	c.seq = i.seq         // ferry patch 10
	c.waiting = i.waiting // ferry patch 14
	for k, v := range i.internal {
		c.internal[k] = v
	}
	for k, v := range i.inbound { // ferry patch 12
		c.inbound[k] = v
	}
	c.addBytes(i.bytes)
	return c
}

// GetAll returns all the inflight messages, the client's own flows
// included, in the order they were queued; with immediate, only the
// server's messages waiting for the client's receive quota.
func (i *Inflight) GetAll(immediate bool) []packets.Packet {
	i.RLock()
	defer i.RUnlock()
	return i.getAll(immediate)
}

// getAll is GetAll for a caller holding the lock (ferry patch 1).
func (i *Inflight) getAll(immediate bool) []packets.Packet {
	m := []packets.Packet{}
	for _, v := range i.internal {
		if !immediate || v.Waiting { // ferry patch 13: Waiting, not Expiry -1
			m = append(m, v)
		}
	}
	if !immediate {
		for _, v := range i.inbound { // ferry patch 12
			m = append(m, v)
		}
	}

	// ferry patch 10: in the order they were queued. Upstream sorted by
	// uint16(Created), whole seconds cut to 16 bits, with an unstable
	// sort: messages queued in the same second came out in map order, and
	// the order turned over every 18 hours.
	sort.Slice(m, func(i, j int) bool {
		return m[i].Seq < m[j].Seq
	})

	return m
}

// countWaiting adds d to the waiting count if pk, present when ok, is
// marked Waiting; the caller holds the lock (ferry patch 14).
func (i *Inflight) countWaiting(pk packets.Packet, ok bool, d int) {
	if ok && pk.Waiting && !InboundFlow(pk) {
		i.waiting += d
	}
}

// Waiting returns how many of the server's messages to the client are
// queued, waiting to be sent (ferry patch 14).
func (i *Inflight) Waiting() int {
	i.RLock()
	defer i.RUnlock()
	return i.waiting
}

// markAllWaiting marks every message of the server's to the client
// waiting, to be sent again (DUP) by the write loop, in order, within the
// client's Receive Maximum: the session was inherited by a new connection
// (ferry patch 14).
func (i *Inflight) markAllWaiting() {
	i.Lock()
	defer i.Unlock()
	for id, v := range i.internal {
		if v.FixedHeader.Type == packets.Publish && !v.Waiting {
			v.Waiting = true
			v.FixedHeader.Dup = true // [MQTT-3.3.1-1] [MQTT-3.3.1-3]
			i.internal[id] = v
			i.waiting++
		}
	}
}

// moveOut empties the map after Clone moved its messages to a new
// connection's session (ferry patch 14): no hook is called, as the
// messages are still in flight, and stored, under the same client ID.
// Upstream cleared it with ClearInflights, which deleted them from the
// store, and counted on sending them again to store them again.
func (i *Inflight) moveOut() {
	i.Lock()
	defer i.Unlock()
	i.addBytes(-i.bytes)
	i.internal = map[uint16]packets.Packet{}
	i.inbound = map[uint16]packets.Packet{}
	i.waiting = 0
}

// takeWaiting returns the oldest message waiting to be sent, marked sent
// (ferry patch 14); ok is false when none waits.
func (i *Inflight) takeWaiting() (packets.Packet, bool) {
	i.Lock()
	defer i.Unlock()
	if i.waiting == 0 {
		return packets.Packet{}, false
	}
	var next packets.Packet
	found := false
	for _, v := range i.internal {
		if v.Waiting && (!found || v.Seq < next.Seq) {
			next, found = v, true
		}
	}
	if !found {
		return packets.Packet{}, false
	}
	next.Waiting = false
	i.internal[next.PacketID] = next
	i.waiting--
	return next, true
}

// NextImmediate returns the next inflight packet which is indicated to be sent immediately.
// This typically occurs when the quota has been exhausted, and we need to wait until new quota
// is free to continue sending.
func (i *Inflight) NextImmediate() (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()

	// ferry patch 1: getAll, not GetAll: a second RLock while a writer
	// waits deadlocks.
	m := i.getAll(true)
	if len(m) > 0 {
		return m[0], true
	}

	return packets.Packet{}, false
}

// Delete removes the server's in-flight message with packet id (the
// client's own flows: DeleteInbound). Returns true if the message existed.
func (i *Inflight) Delete(id uint16) bool {
	i.Lock()
	defer i.Unlock()

	old, ok := i.internal[id]
	delete(i.internal, id)
	i.addBytes(-int64(len(old.Payload))) // ferry patch 7
	i.countWaiting(old, ok, -1)          // ferry patch 14

	return ok
}

// TakeRecieveQuota reduces the receive quota by 1.
func (i *Inflight) DecreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) > 0 {
		atomic.AddInt32(&i.receiveQuota, -1)
	}
}

// TakeRecieveQuota increases the receive quota by 1.
func (i *Inflight) IncreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) < atomic.LoadInt32(&i.maximumReceiveQuota) {
		atomic.AddInt32(&i.receiveQuota, 1)
	}
}

// ResetReceiveQuota resets the receive quota to the maximum allowed value.
func (i *Inflight) ResetReceiveQuota(n int32) {
	atomic.StoreInt32(&i.receiveQuota, n)
	atomic.StoreInt32(&i.maximumReceiveQuota, n)
}

// takeSendQuota takes a unit of the send quota if one is left, or if the
// client has no Receive Maximum (quota 0 of 0); it reports whether the
// message may be sent (ferry patch 14).
func (i *Inflight) takeSendQuota() bool {
	if atomic.LoadInt32(&i.maximumSendQuota) == 0 {
		return true
	}
	for {
		q := atomic.LoadInt32(&i.sendQuota)
		if q <= 0 {
			return false
		}
		if atomic.CompareAndSwapInt32(&i.sendQuota, q, q-1) {
			return true
		}
	}
}

// DecreaseSendQuota reduces the send quota by 1.
func (i *Inflight) DecreaseSendQuota() {
	if atomic.LoadInt32(&i.sendQuota) > 0 {
		atomic.AddInt32(&i.sendQuota, -1)
	}
}

// IncreaseSendQuota increases the send quota by 1.
func (i *Inflight) IncreaseSendQuota() {
	if atomic.LoadInt32(&i.sendQuota) < atomic.LoadInt32(&i.maximumSendQuota) {
		atomic.AddInt32(&i.sendQuota, 1)
	}
}

// ResetSendQuota resets the send quota to the maximum allowed value.
func (i *Inflight) ResetSendQuota(n int32) {
	atomic.StoreInt32(&i.sendQuota, n)
	atomic.StoreInt32(&i.maximumSendQuota, n)
}
