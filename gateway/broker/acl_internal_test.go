package broker

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestSubstituteOnePass: %u and %c are substituted in one pass, so a value
// that itself contains "%c" or "%u" stays literal; a value that would widen
// a filter makes it grant nothing.
func TestSubstituteOnePass(t *testing.T) {
	for _, tt := range []struct {
		filter, user, id string
		want             string
		ok               bool
	}{
		{"sensors/%u/#", "%c", "sensor1", "sensors/%c/#", true}, // not sensors/sensor1/#
		{"sensors/%c/%u", "%c", "%u", "sensors/%u/%c", true},
		{"sensors/%u/#", "s1", "id", "sensors/s1/#", true},
		{"cmd/%c", "s1", "a/b", "", false},
		{"cmd/%c", "s1", "+", "", false},
		{"cmd/%c", "s1", "#", "", false},
		{"cmd/%c", "s1", "a\x00b", "", false},
		{"%c/#", "s1", "$SYS", "", false},
		{"cmd/%c", "s1", "", "", false},
		{"sensors/%u/#", "", "id", "", false},
		{"sensors/#", "", "a/b", "sensors/#", true}, // uses neither: unaffected
	} {
		got, ok := substitute(tt.filter, tt.user, tt.id)
		if got != tt.want || ok != tt.ok {
			t.Errorf("substitute(%q, %q, %q) = %q, %v; want %q, %v", tt.filter, tt.user, tt.id, got, ok, tt.want, tt.ok)
		}
	}
}

// TestLoginLimitChecksInFlight: checks in progress are not failures (20
// concurrent correct logins all pass and leave the address unblocked),
// but at most Failures minus the failures so far are in progress at once,
// so concurrent wrong ones are checked at most Failures times.
func TestLoginLimitChecksInFlight(t *testing.T) {
	ip := netip.MustParseAddr("192.0.2.9")
	for _, tt := range []struct {
		name          string
		correct       bool
		allowed, fail int
	}{
		{"correct", true, 20, 0},
		{"wrong", false, 5, 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := newLoginLimiter(LoginLimit{Failures: 5, Window: time.Minute, Block: time.Minute}, nil)
			var mu sync.Mutex
			inFlight, most, allowed, fails := 0, 0, 0, 0
			var wg sync.WaitGroup
			for range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if !l.begin(ip) {
						return
					}
					mu.Lock()
					inFlight++
					most = max(most, inFlight)
					allowed++
					mu.Unlock()
					time.Sleep(2 * time.Millisecond) // a bcrypt check
					mu.Lock()
					inFlight--
					if !tt.correct {
						fails++
					}
					mu.Unlock()
					l.end(ip, tt.correct)
				}()
			}
			wg.Wait()
			if allowed != tt.allowed || fails != tt.fail || most > 5 {
				t.Fatalf("%d checked (%d failed), at most %d at once; want %d checked, %d failed, at most 5", allowed, fails, most, tt.allowed, tt.fail)
			}
			if blocked := !l.allow(ip); blocked != !tt.correct {
				t.Fatalf("blocked afterwards: %v", blocked)
			}
			if len(l.checking) != 0 {
				t.Fatalf("checks left in progress: %v", l.checking)
			}
		})
	}
}

func TestGlobMatch(t *testing.T) {
	for _, tt := range []struct {
		pattern, s string
		want       bool
	}{
		{"s1", "s1", true},
		{"s1", "s1x", false},
		{"s1-*", "s1-", true},
		{"s1-*", "s1-a/b", true},
		{"s1-*", "s1", false},
		{"*", "", true},
		{"*-x", "a-b-x", true},
		{"*-x", "a-b-y", false},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYbZ", false},
		{"", "", true},
		{"", "a", false},
	} {
		if got := globMatch(tt.pattern, tt.s); got != tt.want {
			t.Errorf("globMatch(%q, %q) = %v", tt.pattern, tt.s, got)
		}
	}
}
