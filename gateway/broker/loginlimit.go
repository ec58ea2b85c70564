package broker

import (
	"net/netip"
	"sync"
	"time"
)

// LoginLimit configures failed-login limiting per remote address: an
// address that keeps failing is refused without its password being checked,
// so a password-guessing run costs the broker no bcrypt time that
// legitimate sensors need.
type LoginLimit struct {
	// Failures is how many failed logins an address may have within
	// Window; the Failures-th blocks it. 0 turns the limiter off.
	Failures int
	// Window is the period failures are counted over (default 1m). It
	// starts at an address's first failure.
	Window time.Duration
	// Block is how long a blocked address is refused without checking
	// its password (default 1m).
	Block time.Duration
	// MaxAddrs is how many addresses are tracked at most (default 4096);
	// beyond it, the address that failed least recently is forgotten.
	MaxAddrs int
}

// Login limit defaults.
const (
	DefaultLoginWindow   = time.Minute
	DefaultLoginBlock    = time.Minute
	DefaultLoginMaxAddrs = 4096
)

// ipv6LimitBits is the prefix IPv6 addresses are limited by. One host (or
// one customer's LAN) is given a whole /64 and can pick any address in it
// (privacy extensions change it all the time), so limiting single IPv6
// addresses would let one attacker have 2^64 fresh budgets.
const ipv6LimitBits = 64

// loginLimiter tracks failed logins per address (IPv6: per /64). Its table
// is a map plus a list ordered by last failure, so every call is O(1) and
// the oldest address is the one forgotten when the table is full. Memory is
// bounded by MaxAddrs entries, each about 100 bytes.
//
// Evicting a blocked address early unblocks it; an attacker can only force
// that by failing from MaxAddrs other addresses, each of which the limiter
// holds to Failures bcrypt checks, so the attacker's budget stays bounded
// by the addresses it controls.
type loginLimiter struct {
	failures int
	window   time.Duration
	block    time.Duration
	maxAddrs int
	now      func() time.Time

	mu    sync.Mutex
	addrs map[netip.Addr]*loginAddr
	// checking counts the passwords being checked per address: entries
	// exist only while one is, so it is bounded by the connections.
	checking map[netip.Addr]int
	freed    sync.Cond // broadcast when a check ends; L is &mu
	// head.next is the most recent failure, head.prev the oldest: a
	// circular list with a sentinel, so that no operation needs nil checks.
	head loginAddr
}

// loginAddr is one tracked address.
type loginAddr struct {
	key          netip.Addr
	windowStart  time.Time
	fails        int
	blockedUntil time.Time // zero: not blocked
	prev, next   *loginAddr
}

// newLoginLimiter returns a limiter for c, or nil when c.Failures is 0 (or
// negative): the nil limiter allows everything, so callers need no checks.
func newLoginLimiter(c LoginLimit, now func() time.Time) *loginLimiter {
	if c.Failures <= 0 {
		return nil
	}
	if c.Window <= 0 {
		c.Window = DefaultLoginWindow
	}
	if c.Block <= 0 {
		c.Block = DefaultLoginBlock
	}
	if c.MaxAddrs <= 0 {
		c.MaxAddrs = DefaultLoginMaxAddrs
	}
	if now == nil {
		now = time.Now
	}
	l := &loginLimiter{
		failures: c.Failures,
		window:   c.Window,
		block:    c.Block,
		maxAddrs: c.MaxAddrs,
		now:      now,
		addrs:    make(map[netip.Addr]*loginAddr),
		checking: make(map[netip.Addr]int),
	}
	l.freed.L = &l.mu
	l.head.prev, l.head.next = &l.head, &l.head
	return l
}

// allow reports whether ip may try to log in; false means it is blocked and
// is to be refused without checking its password.
func (l *loginLimiter) allow(ip netip.Addr) bool {
	if l == nil {
		return true
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.addrs[limitKey(ip)]
	return a == nil || !l.blocked(a, now)
}

// failed records a failed login from ip and reports whether this failure
// blocked it. A failure while already blocked (a login that was allowed
// just before the block) neither counts nor extends the block.
func (l *loginLimiter) failed(ip netip.Addr) (blocked bool) {
	if l == nil {
		return false
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failLocked(limitKey(ip), now)
}

// begin is called before a password from ip is checked; allowed is false
// when ip is blocked (refuse without checking). Every allowed begin must
// be followed by end with the check's result.
//
// A check in progress is not a failure: concurrent correct logins (a
// fleet reconnecting through one NAT address) are never refused for their
// number. But a check in progress could become one, so an address has at
// most Failures minus its failures so far checks in progress; the next
// waits for one of them to end. Concurrent guesses therefore cannot all
// pass a test made before any of them failed: at most Failures wrong
// passwords are checked per window, and a wait lasts at most a few bcrypt
// times (checks always end).
func (l *loginLimiter) begin(ip netip.Addr) (allowed bool) {
	if l == nil {
		return true
	}
	key := limitKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		now := l.now()
		a := l.addrs[key]
		if a != nil && l.blocked(a, now) {
			return false
		}
		if l.failsLocked(a, now)+l.checking[key] < l.failures {
			l.checking[key]++
			return true
		}
		l.freed.Wait()
	}
}

// end records the result of a check begin allowed: ok forgets ip's
// failures (see succeeded), a failure is counted; blocks reports that
// this failure blocked ip.
func (l *loginLimiter) end(ip netip.Addr, ok bool) (blocks bool) {
	if l == nil {
		return false
	}
	key := limitKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	defer l.freed.Broadcast()
	if n := l.checking[key]; n > 1 {
		l.checking[key] = n - 1
	} else {
		delete(l.checking, key)
	}
	if ok {
		l.forgetLocked(key)
		return false
	}
	return l.failLocked(key, l.now())
}

// failsLocked is a's failures counting at now: none once its window is
// over (or starts in the future: the clock was set back).
func (l *loginLimiter) failsLocked(a *loginAddr, now time.Time) int {
	if a == nil || now.Sub(a.windowStart) >= l.window || now.Before(a.windowStart) {
		return 0
	}
	return a.fails
}

// failLocked records a failure of key at now; l.mu is held.
func (l *loginLimiter) failLocked(key netip.Addr, now time.Time) (blocked bool) {
	a := l.addrs[key]
	switch {
	case a == nil:
		a = l.add(key)
	case l.blocked(a, now):
		return false
	default:
		l.unlink(a)
	}
	l.pushFront(a)
	// A window that is over, or that starts in the future because the
	// clock was set back, starts anew.
	if a.fails == 0 || now.Sub(a.windowStart) >= l.window || now.Before(a.windowStart) {
		a.windowStart, a.fails = now, 0
	}
	a.fails++
	if a.fails < l.failures {
		return false
	}
	a.blockedUntil = now.Add(l.block)
	a.fails = 0 // counting starts anew after the block
	return true
}

// succeeded forgets ip after a successful login. Behind a NAT this also
// clears failures another client of the same address made; it is the price
// of not locking out a sensor that mistyped once, and an attacker still
// needs a valid password to get there.
func (l *loginLimiter) succeeded(ip netip.Addr) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.forgetLocked(limitKey(ip))
	l.freed.Broadcast() // a waiting check may go ahead now
}

// forgetLocked drops key's entry; l.mu is held.
func (l *loginLimiter) forgetLocked(key netip.Addr) {
	if a := l.addrs[key]; a != nil {
		l.unlink(a)
		delete(l.addrs, key)
	}
}

// blocked reports whether a is blocked at now. A block ending further away
// than Block can only come from the clock having been set back (a Pi
// without a real-time clock setting its time from NTP); it is treated as
// over rather than blocking for as long as the clock jumped.
func (l *loginLimiter) blocked(a *loginAddr, now time.Time) bool {
	left := a.blockedUntil.Sub(now)
	return left > 0 && left <= l.block
}

// add makes an entry for key, reusing the oldest one when the table is
// full, so a full table allocates nothing.
func (l *loginLimiter) add(key netip.Addr) *loginAddr {
	var a *loginAddr
	if len(l.addrs) >= l.maxAddrs {
		a = l.head.prev
		l.unlink(a)
		delete(l.addrs, a.key)
		*a = loginAddr{}
	} else {
		a = new(loginAddr)
	}
	a.key = key
	l.addrs[key] = a
	return a
}

func (l *loginLimiter) pushFront(a *loginAddr) {
	a.prev, a.next = &l.head, l.head.next
	l.head.next.prev = a
	l.head.next = a
}

func (l *loginLimiter) unlink(a *loginAddr) {
	a.prev.next, a.next.prev = a.next, a.prev
	a.prev, a.next = nil, nil
}

// limitKey is the bucket ip is limited in: IPv4 addresses on their own,
// IPv6 addresses by their /64 (zone dropped). The zero Addr is a bucket of
// its own.
func limitKey(ip netip.Addr) netip.Addr {
	if !ip.Is6() {
		return ip
	}
	p, err := ip.WithZone("").Prefix(ipv6LimitBits)
	if err != nil {
		return ip // cannot happen: a valid IPv6 address has 128 bits
	}
	return p.Addr()
}

// remoteIP is the IP of a client's remote address, "ip:port" or
// "[ipv6]:port" (a bare IP is accepted too). An IPv4-mapped IPv6 address
// (a dual-stack listener's view of an IPv4 client) is unmapped, so the
// client is limited as the IPv4 address it is. An address that does not
// parse gives the zero Addr: such clients share one bucket, limited
// together rather than not at all.
func remoteIP(addr string) netip.Addr {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return ap.Addr().Unmap()
	}
	if ip, err := netip.ParseAddr(addr); err == nil {
		return ip.Unmap()
	}
	return netip.Addr{}
}
