// SPDX-License-Identifier: MIT

// ferry patch 5: deferred publishes (pipelined acknowledgements). This file
// is not part of mochi-mqtt v2.7.9; third_party/mochi-mqtt/PATCHES.md, 5,
// says why and what it changes elsewhere.

package mqtt

import (
	"sync"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Deferred is what an OnPublish hook returns, as its error, to decide the
// fate of a PUBLISH later without holding up the client's other packets.
// The server goes on reading the client's packets; a goroutine of the
// client calls Wait for each deferred PUBLISH, in the order the PUBLISHes
// arrived, and then does with Wait's result what it does with an OnPublish
// error when the hook returns at once: nil acknowledges and delivers the
// packet the hook returned, packets.ErrRejectPacket drops it without an
// acknowledgement, a packets.Code refuses it with that reason code (MQTT 5,
// QoS 1 and 2), and so on.
//
// The hook must return it unwrapped, and the hooks after it are not called
// for that PUBLISH (as after any error), so the deferring hook should be the
// last OnPublish hook. A publish of the inline client is not deferred: its
// Wait is called at once.
//
// While a client has deferred publishes, its later PUBLISHes are finished
// after them, deferred or not, so acknowledgements leave and subscribers
// receive messages in the order the PUBLISHes arrived; packets other than
// PUBLISH and the acknowledgements of QoS flows (PUBACK, PUBREC, PUBREL,
// PUBCOMP) are handled once the publishes before them are finished. A
// client has at most Capabilities.ReceiveMaximum publishes waiting (QoS 0
// ones included); the next one waits in its connection.
type Deferred interface {
	error
	// Wait returns the hook's decision, once it is known. The server calls
	// it exactly once, also when the client has gone meanwhile.
	Wait() error
}

// queuedPublish is a PUBLISH in a client's publishQueue.
type queuedPublish struct {
	pk    packets.Packet
	wait  Deferred // nil: err is the hooks' answer already
	err   error
	quota bool // took a unit of the receive quota when queued
}

var queuedPool = sync.Pool{New: func() any { return new(queuedPublish) }}

// publishQueue holds a client's deferred publishes, and the publishes behind
// them, in arrival order. Only the client's read loop queues, and it starts
// a goroutine to finish them whenever the queue was empty; that goroutine
// returns when it has emptied the queue.
type publishQueue struct {
	entries chan *queuedPublish
	pending atomic.Int32   // queued or being finished
	freed   chan struct{}  // signalled after each publish finished
	running sync.WaitGroup // the finishing goroutine
}

// busy says whether publishes are queued or being finished. For the read
// loop: nobody else adds any.
func (q *publishQueue) busy() bool { return q != nil && q.pending.Load() > 0 }

// waitFinished returns once every publish queued so far has been finished.
// For the read loop. It cannot wait forever: the finishing goroutine waits
// only for the hooks' answers, and writes time out with the client's
// keep-alive.
func (q *publishQueue) waitFinished() {
	for q.busy() {
		<-q.freed
	}
}

// waitQuota returns once the client's receive quota is not 0 or no queued
// publish is left to give some back: a PUBLISH that finds the quota taken
// by publishes still waiting for their hooks waits for them, as it would
// have waited for its turn in the read loop, before the client is found to
// exceed its Receive Maximum.
func (q *publishQueue) waitQuota(in *Inflight) {
	for atomic.LoadInt32(&in.receiveQuota) == 0 && q.busy() {
		<-q.freed
	}
}

// queuePublish puts a PUBLISH (pk, with the hooks' answer err, a Deferred
// or not) at the end of the client's queue, starting the goroutine that
// finishes them if none runs. It blocks while the queue is full.
func (s *Server) queuePublish(cl *Client, pk packets.Packet, err error) {
	q := cl.State.publishes
	if q == nil {
		n := int(s.Options.Capabilities.ReceiveMaximum)
		q = &publishQueue{entries: make(chan *queuedPublish, max(n, 1)), freed: make(chan struct{}, 1)}
		cl.State.publishes = q
	}
	e := queuedPool.Get().(*queuedPublish)
	e.pk = pk
	if d, ok := err.(Deferred); ok {
		e.wait = d
	} else {
		e.err = err
	}
	if pk.FixedHeader.Qos > 0 {
		// Taken now, given back as finishPublish ends the flow: with the
		// PUBACK (QoS 1), the refusal, or on PUBREL (QoS 2).
		cl.State.Inflight.DecreaseReceiveQuota()
		e.quota = true
	}
	if q.pending.Add(1) == 1 {
		q.running.Add(1)
		go s.finishPublishes(cl, q)
	}
	q.entries <- e
}

// finishPublishes finishes the client's queued publishes in order until
// the queue is empty.
func (s *Server) finishPublishes(cl *Client, q *publishQueue) {
	defer q.running.Done()
	for {
		e := <-q.entries
		err := e.err
		if e.wait != nil {
			err = e.wait.Wait()
		}
		if err := s.finishPublish(cl, e.pk, e.pk, err, e.quota); err != nil {
			s.publishFailed(cl, e.pk, err)
		}
		*e = queuedPublish{}
		queuedPool.Put(e)
		left := q.pending.Add(-1)
		select {
		case q.freed <- struct{}{}:
		default: // a signal is waiting to be taken already
		}
		if left == 0 {
			return
		}
	}
}

// publishFailed does for a queued PUBLISH that could not be finished what
// receivePacket does when processing a packet fails: a connection that is
// still open is closed, with an MQTT 5 DISCONNECT if the error is a reason
// code. A client that has gone meanwhile could not be told anyway: that
// is no news.
func (s *Server) publishFailed(cl *Client, pk packets.Packet, err error) {
	if cl.Closed() {
		s.Log.Debug("error processing packet", "error", err, "client", cl.ID, "listener", cl.Net.Listener,
			"type", packets.PacketNames[pk.FixedHeader.Type], "topic", pk.TopicName)
		return
	}
	if code, ok := err.(packets.Code); ok &&
		cl.Properties.ProtocolVersion == 5 &&
		code.Code >= packets.ErrUnspecifiedError.Code {
		_ = s.DisconnectClient(cl, code)
	}
	s.Log.Warn("error processing packet", "error", err, "client", cl.ID, "listener", cl.Net.Listener,
		"type", packets.PacketNames[pk.FixedHeader.Type], "topic", pk.TopicName)
	cl.Stop(err)
}

// waitPublishes waits until the client's queued publishes are finished
// and their goroutine has returned. attachClient calls it when the
// client's read loop has ended, before the will and the session's
// clean-up.
func (cl *Client) waitPublishes() {
	if q := cl.State.publishes; q != nil {
		q.running.Wait()
	}
}
