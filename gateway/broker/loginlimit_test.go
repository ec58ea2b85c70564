package broker

import (
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeNow is a settable clock for the limiter.
type fakeNow struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeNow) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeNow) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newFakeNow() *fakeNow {
	return &fakeNow{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// checkList checks the limiter's map and list agree and returns the number
// of entries.
func checkList(t *testing.T, l *loginLimiter) int {
	t.Helper()
	n := 0
	for a := l.head.next; a != &l.head; a = a.next {
		if a.next.prev != a {
			t.Fatal("list links broken")
		}
		if l.addrs[a.key] != a {
			t.Fatalf("listed %v is not in the map", a.key)
		}
		n++
	}
	if n != len(l.addrs) {
		t.Fatalf("list has %d entries, map %d", n, len(l.addrs))
	}
	return n
}

func TestLoginLimit(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("192.0.2.2")
	// A step does one call (after advancing the clock) and checks its
	// result: allow returns whether allowed, fail whether it blocked.
	type step struct {
		advance time.Duration
		op      string // allow, fail, ok (succeeded)
		ip      netip.Addr
		want    bool
	}
	fails := func(ip netip.Addr, n int) []step {
		s := make([]step, n)
		for i := range s {
			s[i] = step{op: "fail", ip: ip}
		}
		return s
	}
	cat := func(parts ...[]step) []step {
		var s []step
		for _, p := range parts {
			s = append(s, p...)
		}
		return s
	}
	tests := []struct {
		name  string
		limit LoginLimit
		steps []step
	}{
		{
			name:  "the Failures-th failure blocks",
			limit: LoginLimit{Failures: 3},
			steps: cat(
				[]step{{op: "allow", ip: a, want: true}},
				fails(a, 2),
				[]step{
					{op: "allow", ip: a, want: true},
					{op: "fail", ip: a, want: true},
					{op: "allow", ip: a, want: false},
					{op: "allow", ip: b, want: true},
				},
			),
		},
		{
			name:  "block ends after Block",
			limit: LoginLimit{Failures: 2, Block: 30 * time.Second},
			steps: cat(
				fails(a, 1),
				[]step{
					{op: "fail", ip: a, want: true},
					{advance: 29 * time.Second, op: "allow", ip: a, want: false},
					{advance: time.Second, op: "allow", ip: a, want: true},
					// Counting starts anew after a block.
					{op: "fail", ip: a, want: false},
					{op: "fail", ip: a, want: true},
				},
			),
		},
		{
			name:  "failures while blocked do not extend the block",
			limit: LoginLimit{Failures: 1, Block: 10 * time.Second},
			steps: []step{
				{op: "fail", ip: a, want: true},
				{advance: 9 * time.Second, op: "fail", ip: a, want: false},
				{advance: time.Second, op: "allow", ip: a, want: true},
			},
		},
		{
			name:  "failures older than Window are forgotten",
			limit: LoginLimit{Failures: 3, Window: 10 * time.Second},
			steps: []step{
				{op: "fail", ip: a},
				{advance: 5 * time.Second, op: "fail", ip: a},
				{advance: 5 * time.Second, op: "fail", ip: a, want: false}, // a new window
				{op: "fail", ip: a, want: false},
				{op: "fail", ip: a, want: true},
			},
		},
		{
			name:  "success clears",
			limit: LoginLimit{Failures: 3},
			steps: cat(
				fails(a, 2),
				[]step{{op: "ok", ip: a}},
				fails(a, 2),
				[]step{{op: "fail", ip: a, want: true}},
			),
		},
		{
			name:  "addresses are counted apart",
			limit: LoginLimit{Failures: 2},
			steps: []step{
				{op: "fail", ip: a},
				{op: "fail", ip: b},
				{op: "allow", ip: a, want: true},
				{op: "fail", ip: b, want: true},
				{op: "allow", ip: a, want: true},
				{op: "allow", ip: b, want: false},
			},
		},
		{
			name:  "one IPv6 /64 is one bucket",
			limit: LoginLimit{Failures: 2},
			steps: []step{
				{op: "fail", ip: netip.MustParseAddr("2001:db8:1:2::1")},
				{op: "fail", ip: netip.MustParseAddr("2001:db8:1:2:ffff:ffff:ffff:ffff"), want: true},
				{op: "allow", ip: netip.MustParseAddr("2001:db8:1:2:abcd::9"), want: false},
				{op: "allow", ip: netip.MustParseAddr("fe80::1%eth0"), want: true},
				{op: "allow", ip: netip.MustParseAddr("2001:db8:1:3::1"), want: true},
			},
		},
		{
			name:  "the zero Addr is one bucket",
			limit: LoginLimit{Failures: 2},
			steps: []step{
				{op: "fail", ip: remoteIP("pipe")},
				{op: "fail", ip: remoteIP("garbage:x"), want: true},
				{op: "allow", ip: netip.Addr{}, want: false},
				{op: "allow", ip: a, want: true},
			},
		},
		{
			name:  "clock set back ends a block",
			limit: LoginLimit{Failures: 1, Block: time.Minute},
			steps: []step{
				{op: "fail", ip: a, want: true},
				{advance: -time.Hour, op: "allow", ip: a, want: true},
			},
		},
		{
			name:  "clock set back starts a new window",
			limit: LoginLimit{Failures: 2, Window: time.Minute},
			steps: []step{
				{op: "fail", ip: a},
				{advance: -time.Hour, op: "fail", ip: a, want: false},
				{op: "fail", ip: a, want: true},
			},
		},
		{
			name:  "off",
			limit: LoginLimit{},
			steps: cat(fails(a, 100), []step{{op: "allow", ip: a, want: true}}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newFakeNow()
			l := newLoginLimiter(tt.limit, c.now)
			for i, s := range tt.steps {
				c.add(s.advance)
				var got bool
				switch s.op {
				case "allow":
					got = l.allow(s.ip)
				case "fail":
					got = l.failed(s.ip)
				case "ok":
					l.succeeded(s.ip)
					got = s.want
				default:
					t.Fatalf("step %d: op %q", i, s.op)
				}
				if got != s.want {
					t.Fatalf("step %d: %s(%v) = %v, want %v", i, s.op, s.ip, got, s.want)
				}
			}
			if l != nil {
				checkList(t, l)
			}
		})
	}
}

func TestLoginLimitOffIsNil(t *testing.T) {
	for _, f := range []int{0, -1} {
		if l := newLoginLimiter(LoginLimit{Failures: f}, nil); l != nil {
			t.Errorf("Failures %d: limiter %v, want nil (off)", f, l)
		}
	}
	var l *loginLimiter
	l.succeeded(netip.Addr{})
	if !l.allow(netip.Addr{}) || l.failed(netip.Addr{}) {
		t.Error("nil limiter limits")
	}
}

func TestLoginLimitDefaults(t *testing.T) {
	l := newLoginLimiter(LoginLimit{Failures: 5}, nil)
	if l.window != time.Minute || l.block != time.Minute || l.maxAddrs != 4096 || l.now == nil {
		t.Errorf("defaults: window %v block %v max %d", l.window, l.block, l.maxAddrs)
	}
}

func TestLoginLimitMaxAddrs(t *testing.T) {
	const max, n = 1000, 100_000
	c := newFakeNow()
	l := newLoginLimiter(LoginLimit{Failures: 2, MaxAddrs: max}, c.now)
	ip := func(i int) netip.Addr {
		return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	// Block the first address, then fail once from 100,000 others.
	l.failed(ip(0))
	if !l.failed(ip(0)) {
		t.Fatal("not blocked")
	}
	for i := 1; i <= n; i++ {
		l.failed(ip(i))
		if len(l.addrs) > max {
			t.Fatalf("%d addresses tracked, max %d", len(l.addrs), max)
		}
	}
	if got := checkList(t, l); got != max {
		t.Errorf("%d tracked, want %d", got, max)
	}
	// The oldest were forgotten (the blocked one too: see loginLimiter),
	// the most recent kept in order of their last failure.
	if !l.allow(ip(0)) {
		t.Error("oldest address still blocked")
	}
	i := n
	for a := l.head.next; a != &l.head; a = a.next {
		if a.key != ip(i) {
			t.Fatalf("listed %v, want %v", a.key, ip(i))
		}
		i--
	}
	if !l.failed(ip(n)) {
		t.Error("most recent address forgotten")
	}

	// A full table allocates nothing.
	i = n
	if allocs := testing.AllocsPerRun(1000, func() { i++; l.failed(ip(i)) }); allocs != 0 {
		t.Errorf("failed allocates %v times on a full table", allocs)
	}
}

func TestLoginLimitRecentFailureKeepsAddress(t *testing.T) {
	c := newFakeNow()
	l := newLoginLimiter(LoginLimit{Failures: 3, MaxAddrs: 2}, c.now)
	a, b, d := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	l.failed(a)
	l.failed(b)
	l.failed(a) // a is now the most recent: b is the one to go
	l.failed(d)
	if _, ok := l.addrs[b]; ok {
		t.Error("b kept")
	}
	if l.addrs[a] == nil || l.addrs[a].fails != 2 {
		t.Errorf("a: %+v", l.addrs[a])
	}
	checkList(t, l)
}

func TestLoginLimitRemoteIP(t *testing.T) {
	tests := []struct{ in, want string }{
		{"192.0.2.1:1883", "192.0.2.1"},
		{"[2001:db8::1]:1883", "2001:db8::1"},
		{"[::ffff:192.0.2.1]:1883", "192.0.2.1"},
		{"[fe80::1%eth0]:1883", "fe80::1%eth0"},
		{"192.0.2.1", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"2001:db8::1", "2001:db8::1"},
		{"", "invalid IP"},
		{"pipe", "invalid IP"},
		{"host.example:1883", "invalid IP"},
		{"192.0.2.1:port", "invalid IP"},
		{"[2001:db8::1]", "invalid IP"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := remoteIP(tt.in).String(); got != tt.want {
				t.Errorf("remoteIP(%q) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestLoginLimitKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"192.0.2.1", "192.0.2.1"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"},
		{"fe80::1%eth0", "fe80::"},
		{"::ffff:192.0.2.1", "::"}, // why remoteIP unmaps first
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := limitKey(netip.MustParseAddr(tt.in)).String(); got != tt.want {
				t.Errorf("limitKey(%s) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
	if got := limitKey(netip.Addr{}); got.IsValid() {
		t.Errorf("limitKey(zero) = %v", got)
	}
}

func TestLoginLimitConcurrent(t *testing.T) {
	c := newFakeNow()
	l := newLoginLimiter(LoginLimit{Failures: 5, MaxAddrs: 64}, c.now)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				ip := remoteIP(fmt.Sprintf("10.0.%d.%d:1", g, i%100))
				if l.allow(ip) {
					if i%7 == 0 {
						l.succeeded(ip)
					} else {
						l.failed(ip)
					}
				}
				if i%500 == 0 {
					c.add(time.Minute)
				}
			}
		})
	}
	wg.Wait()
	if n := checkList(t, l); n > 64 {
		t.Errorf("%d tracked", n)
	}
}

func BenchmarkLoginLimitFailed(b *testing.B) {
	l := newLoginLimiter(LoginLimit{Failures: 5}, nil)
	ips := make([]netip.Addr, 10000)
	for i := range ips {
		ips[i] = remoteIP("10.1." + strconv.Itoa(i/250) + "." + strconv.Itoa(i%250) + ":1")
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		ip := ips[i%len(ips)]
		if l.allow(ip) {
			l.failed(ip)
		}
		i++
	}
}
