package gateway

import (
	"errors"
	"sync/atomic"
)

// Ready returns nil when the gateway takes events safely now, or why not.
//
// Ready means both:
//
//   - the buffer is open and its commit loop runs: an event a sensor
//     publishes is written and acknowledged. Before Run and after it
//     returned a publisher would wait for a commit that never comes.
//   - the broker serves its listeners: mochi has started accepting
//     connections on them. Its sockets are bound from New on (New fails
//     otherwise), but nobody accepts before Run, and starting can take a
//     while (mochi first loads the persisted sessions).
//
// The broker's TCP listener is checked in the process, not by connecting
// to it: a connection that sends no CONNECT makes the broker log a warning,
// and a probe every few seconds must not fill the board's flash.
//
// Deliberately not part of it: the cloud link (store and forward exists for
// outages; without the cloud events are still taken safely), a full disk
// (events are refused and counted, ferry_buffer_disk_full shows it, and no
// restart or rerouting fixes it) and pipelines, drivers and webhooks.
func (g *Gateway) Ready() error {
	if !g.buf.Running() {
		return errors.New("buffer: commit loop not running")
	}
	// mochi refreshes its $SYS info for the first time right after it
	// started its listeners (Server.Serve), and exposes no other sign of
	// it; Info.Time stays zero until then.
	if atomic.LoadInt64(&g.broker.Server().Info.Time) == 0 {
		return errors.New("broker: not serving its listeners yet")
	}
	return nil
}
