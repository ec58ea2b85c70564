// SPDX-License-Identifier: MIT

// ferry patch 6: the ACL on every delivery path. This file is not part of
// mochi-mqtt v2.7.9; third_party/mochi-mqtt/PATCHES.md, 6, says why and
// what it changes elsewhere.

package mqtt

import (
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// OnConnectAuthorize is the Provides byte of the OnConnectAuthorize hook
// method. It is far from the iota list of the other events so that events
// upstream adds there cannot take its value.
const OnConnectAuthorize byte = 0xC0

// ConnectAuthorizer is a hook that authorizes a CONNECT once it is
// authenticated: its will and the session it would take over or resume.
type ConnectAuthorizer interface {
	// OnConnectAuthorize is called after OnConnectAuthenticate allowed cl,
	// before any session is taken over or resumed. session is the client
	// (connected, or a stored session offline) holding cl's client ID, or
	// nil. A nil error allows the CONNECT; a packets.Code refuses it with
	// that code in the CONNACK (mapped to a 3.1.1 return code for older
	// clients), any other error with packets.ErrNotAuthorized. A refused
	// CONNECT leaves session untouched.
	OnConnectAuthorize(cl *Client, pk packets.Packet, session *Client) error
}

// OnConnectAuthorize allows everything.
func (h *HookBase) OnConnectAuthorize(cl *Client, pk packets.Packet, session *Client) error {
	return nil
}

// OnConnectAuthorize calls the hooks providing OnConnectAuthorize in order;
// the first refusal is the answer.
func (h *Hooks) OnConnectAuthorize(cl *Client, pk packets.Packet, session *Client) packets.Code {
	for _, hook := range h.GetAll() {
		a, ok := hook.(ConnectAuthorizer)
		if !ok || !hook.Provides(OnConnectAuthorize) {
			continue
		}
		if err := a.OnConnectAuthorize(cl, pk, session); err != nil {
			if code, ok := err.(packets.Code); ok && code.Code >= packets.ErrUnspecifiedError.Code {
				return code
			}
			return packets.ErrNotAuthorized
		}
	}
	return packets.CodeSuccess
}

// authorizeConnect runs the OnConnectAuthorize hooks against the session
// holding cl's client ID.
func (s *Server) authorizeConnect(cl *Client, pk packets.Packet) packets.Code {
	session, _ := s.Clients.Get(cl.ID)
	return s.hooks.OnConnectAuthorize(cl, pk, session)
}

// willAllowed asks the OnWill hooks about a delayed will about to be sent:
// a hook clearing the will's Flag drops it (as in sendLWT).
func (s *Server) willAllowed(cl *Client, pk packets.Packet) bool {
	w := s.hooks.OnWill(cl, Will{
		Payload:   pk.Payload,
		User:      pk.Properties.User,
		TopicName: pk.TopicName,
		Flag:      1,
		Qos:       pk.FixedHeader.Qos,
		Retain:    pk.FixedHeader.Retain,
	})
	return w.Flag != 0
}

// publishTopic is the topic name a client's PUBLISH goes to: its own, or
// for an MQTT 5 PUBLISH with an empty topic and a topic alias, the topic
// the client set for that alias earlier ("" if none), so that the ACL is
// checked against where the message really goes.
func publishTopic(cl *Client, pk packets.Packet) string {
	if pk.TopicName != "" || !pk.Properties.TopicAliasFlag || pk.Properties.TopicAlias == 0 {
		return pk.TopicName
	}
	a := cl.State.TopicAliases.Inbound
	a.RLock()
	defer a.RUnlock()
	return a.internal[pk.Properties.TopicAlias]
}

// deliveryTopic is the topic name of a PUBLISH in flight to cl. A packet
// sent with an outbound topic alias has an empty topic name; the alias's
// topic is looked up ("" if the alias is unknown, e.g. on a new
// connection, where the packet could not be understood anyway).
func deliveryTopic(cl *Client, pk packets.Packet) string {
	if pk.TopicName != "" || pk.Properties.TopicAlias == 0 {
		return pk.TopicName
	}
	a := cl.State.TopicAliases.Outbound
	a.RLock()
	defer a.RUnlock()
	for topic, id := range a.internal {
		if id == pk.Properties.TopicAlias {
			return topic
		}
	}
	return ""
}

// deliveryAllowed re-checks a queued or in-flight PUBLISH against the
// client's read ACL before it is (re)sent: the ACL may have changed (a
// reload) since it was queued, and a resumed session may hold messages
// queued under other rules. A PUBREL is always allowed. A denied message
// is removed from the client's in-flight messages and counted as
// dropped; ok is false.
func (cl *Client) deliveryAllowed(pk packets.Packet) bool {
	if pk.FixedHeader.Type != packets.Publish || cl.ops.hooks.OnACLCheck(cl, deliveryTopic(cl, pk), false) {
		return true
	}
	if cl.State.Inflight.Delete(pk.PacketID) {
		cl.ops.hooks.OnQosDropped(cl, pk)
		atomic.AddInt64(&cl.ops.info.Inflight, -1)
	}
	atomic.AddInt64(&cl.ops.info.InflightDropped, 1)
	return false
}
