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
	receiveQuota        int32                     // remaining inbound qos quota for flow control
	sendQuota           int32                     // remaining outbound qos quota for flow control
	maximumReceiveQuota int32                     // maximum allowed receive quota
	maximumSendQuota    int32                     // maximum allowed send quota
	bytes               int64                     // ferry patch 7: payload bytes in internal; under the lock
	total               *atomic.Int64             // ferry patch 7: all clients' bytes (Budget); nil: none
	seq                 uint64                    // ferry patch 10: the last Seq given; under the lock
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
	}
}

// Set adds or updates an inflight packet by packet id.
func (i *Inflight) Set(m packets.Packet) bool {
	i.Lock()
	defer i.Unlock()

	old, ok := i.internal[m.PacketID]
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
	i.internal[m.PacketID] = m
	i.addBytes(int64(len(m.Payload) - len(old.Payload))) // ferry patch 7
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
// sent) (ferry patch 10). The map also holds the server's messages to the
// client, whose packet IDs are the server's: MQTT lets each side assign
// its own independently, so a SUBSCRIBE reusing one of them is not in use.
// Upstream refused it (SUBACK 0x91/0x80 for every filter), and a resumed
// session's queued messages take IDs from 1: mosquitto_sub -c quit with
// "All subscription requests were denied" right after its backlog.
func (i *Inflight) inboundInUse(id uint16) bool {
	i.RLock()
	defer i.RUnlock()
	m, ok := i.internal[id]
	return ok && m.FixedHeader.Type != packets.Publish && m.FixedHeader.Type != packets.Pubrel
}

// Get returns an inflight packet by packet id.
func (i *Inflight) Get(id uint16) (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()

	if m, ok := i.internal[id]; ok {
		return m, true
	}

	return packets.Packet{}, false
}

// Len returns the size of the inflight messages map.
func (i *Inflight) Len() int {
	i.RLock()
	defer i.RUnlock()
	return len(i.internal)
}

// Clone returns a new instance of Inflight with the same message data.
// This is used when transferring inflights from a taken-over session.
func (i *Inflight) Clone() *Inflight {
	c := NewInflights()
	i.RLock()
	defer i.RUnlock()
	c.total = i.total // ferry patch 7: the original is cleared after, giving its bytes back
	c.seq = i.seq     // ferry patch 10
	for k, v := range i.internal {
		c.internal[k] = v
	}
	c.addBytes(i.bytes)
	return c
}

// GetAll returns all the inflight messages.
func (i *Inflight) GetAll(immediate bool) []packets.Packet {
	i.RLock()
	defer i.RUnlock()
	return i.getAll(immediate)
}

// getAll is GetAll for a caller holding the lock (ferry patch 1).
func (i *Inflight) getAll(immediate bool) []packets.Packet {
	m := []packets.Packet{}
	for _, v := range i.internal {
		if !immediate || (immediate && v.Expiry < 0) {
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

// Delete removes an in-flight message from the map. Returns true if the message existed.
func (i *Inflight) Delete(id uint16) bool {
	i.Lock()
	defer i.Unlock()

	old, ok := i.internal[id]
	delete(i.internal, id)
	i.addBytes(-int64(len(old.Payload))) // ferry patch 7

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
