// Package tcpproxy is a test harness: a TCP proxy between an MQTT client
// and a real broker that fails the network on purpose (refuses
// connections, holds back or discards the broker's bytes, cuts every
// connection). It is safe for concurrent use.
package tcpproxy

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a TCP proxy to a broker that can refuse connections (a gate),
// hold back broker-to-client bytes (to withhold PUBACKs) and drop each
// connection right after the broker's first bytes (the CONNACK). It counts
// the connections it accepted.
type Proxy struct {
	ln       net.Listener
	target   string
	done     chan struct{}
	wg       sync.WaitGroup
	Accepted atomic.Int64 // connections accepted

	mu   sync.Mutex
	open bool
	kick bool // close each connection after the broker's first write
	// mute: after the broker's first write, discard what it sends and
	// close the connection this long after.
	mute   time.Duration
	resume chan struct{} // closed while not paused
	conns  map[net.Conn]bool
}

// Start runs a proxy to target (host:port) until the test ends.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, done: make(chan struct{}), open: true,
		resume: make(chan struct{}), conns: map[net.Conn]bool{}}
	close(p.resume)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// URL is the proxy as an MQTT endpoint.
func (p *Proxy) URL() string { return "tcp://" + p.ln.Addr().String() }

// SetKick makes the proxy drop each connection right after it passed the
// broker's first bytes on: the CONNACK arrives, then the connection is lost.
func (p *Proxy) SetKick(kick bool) {
	p.mu.Lock()
	p.kick = kick
	p.mu.Unlock()
}

// SetOpen opens or closes the gate: a closed one refuses new connections.
func (p *Proxy) SetOpen(open bool) {
	p.mu.Lock()
	p.open = open
	p.mu.Unlock()
}

// Pause holds broker-to-client traffic until Unpause.
func (p *Proxy) Pause() {
	p.mu.Lock()
	p.resume = make(chan struct{})
	p.mu.Unlock()
}

// Unpause lets held traffic through.
func (p *Proxy) Unpause() {
	p.mu.Lock()
	close(p.resume)
	p.mu.Unlock()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.Accepted.Add(1)
		p.mu.Lock()
		open := p.open
		p.mu.Unlock()
		if !open {
			c.Close()
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[s] = true, true
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(s, c, false)
		go p.pipe(c, s, true)
	}
}

func (p *Proxy) pipe(dst, src net.Conn, down bool) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && down {
			p.mu.Lock()
			ch := p.resume
			p.mu.Unlock()
			select {
			case <-ch:
			case <-p.done:
				return
			}
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			p.mu.Lock()
			kick, mute := p.kick, p.mute
			p.mu.Unlock()
			if down && kick {
				return
			}
			if down && mute > 0 {
				t := time.AfterFunc(mute, func() { dst.Close(); src.Close() })
				defer t.Stop()
				_, _ = io.Copy(io.Discard, src)
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Close stops the proxy and every connection it carries.
func (p *Proxy) Close() {
	select {
	case <-p.done:
		return
	default:
	}
	close(p.done)
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// SetMute makes the proxy pass each connection's CONNACK, then discard
// everything else the broker sends (PUBACKs) and close the connection
// after d: a cloud that accepts connections and drops them soon after.
func (p *Proxy) SetMute(d time.Duration) {
	p.mu.Lock()
	p.mute = d
	p.mu.Unlock()
}

// CutAll closes every connection the proxy carries: the network to the
// cloud fails.
func (p *Proxy) CutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}
