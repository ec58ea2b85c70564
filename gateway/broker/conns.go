package broker

import (
	"net"
	"sync"
)

// connSet is what the TCP/TLS and websocket listeners share: it tracks
// each connection from accept until mochi's establish returns, so Close
// can drop those that never sent CONNECT, and counts the serving
// goroutines, so Close returns only after every one of them has.
type connSet struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{} // accepted, establish not returned yet
	closed bool
	wg     sync.WaitGroup // the serve loop and connection goroutines
	// budget, shared by all listeners, caps the connections that have not
	// completed CONNECT; nil: no cap.
	budget *budget
}

// start counts a serving goroutine, which must call wg.Done; false once
// closed (the goroutine must not run).
func (s *connSet) start() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// track adds c and counts its goroutine; false once closed, or when the
// budget's connections before CONNECT are all taken (the connection must
// then be dropped; isClosed tells the two apart).
func (s *connSet) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.budget != nil && !s.budget.admit(c) {
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// untrack removes and closes c (mochi closes it too; this covers early
// returns).
func (s *connSet) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	if s.budget != nil {
		s.budget.connected(c)
	}
	_ = c.Close()
}

func (s *connSet) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// markClosed refuses new connections; false if it was closed already.
func (s *connSet) markClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.closed = true
	return true
}

// dropAndWait closes the connections left and waits for every goroutine.
func (s *connSet) dropAndWait() {
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}
