package broker_test

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// mosquitto returns the path of a Debian mosquitto client (mosquitto_pub
// or mosquitto_sub): failing under CI=true when it is missing, skipping
// otherwise.
func mosquitto(t *testing.T, name string) string {
	t.Helper()
	return mqtttest.RequireClient(t, name)
}

// client runs a mosquitto client against b with args and returns its
// combined output and whether it exited with status 0.
func client(t *testing.T, b *broker.Broker, name string, args ...string) (string, bool) {
	t.Helper()
	host, port, _ := net.SplitHostPort(b.Addr())
	cmd := exec.Command(mosquitto(t, name), append([]string{"-h", host, "-p", port}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("%s: %v", name, err)
		}
	}
	return string(out), err == nil
}

// usersFile writes a users file with the given user:password pairs.
func usersFile(t *testing.T, pairs ...string) broker.Users {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users")
	for i := 0; i < len(pairs); i += 2 {
		if err := broker.SetUser(path, pairs[i], []byte(pairs[i+1])); err != nil {
			t.Fatal(err)
		}
	}
	u, err := broker.LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func refusedAuth(out string) bool {
	out = strings.ToLower(out)
	return strings.Contains(out, "not authorised") || strings.Contains(out, "not authorized")
}

func TestAuthenticate(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	users := usersFile(t, "s1", "right horse", "s2", "battery staple")
	b := start(t, l, func(c *broker.Config) { c.AllowAnonymous = false; c.Users = users })

	out, ok := client(t, b, "mosquitto_pub", "-q", "1", "-t", "sensors/a", "-m", "anon")
	if ok || !refusedAuth(out) {
		t.Errorf("anonymous publish: exit 0 = %v, want refused as not authorised:\n%s", ok, out)
	}
	out, ok = client(t, b, "mosquitto_pub", "-u", "s1", "-P", "wrong", "-q", "1", "-t", "sensors/a", "-m", "wrong")
	if ok || !refusedAuth(out) {
		t.Errorf("wrong password: exit 0 = %v, want refused:\n%s", ok, out)
	}
	out, ok = client(t, b, "mosquitto_pub", "-u", "nobody", "-P", "right horse", "-q", "1", "-t", "sensors/a", "-m", "unknown")
	if ok || !refusedAuth(out) {
		t.Errorf("unknown user: exit 0 = %v, want refused:\n%s", ok, out)
	}
	if ev := events(t, l, "telemetry"); len(ev) != 0 {
		t.Fatalf("refused clients ingested %+v", ev)
	}
	out, ok = client(t, b, "mosquitto_pub", "-u", "s1", "-P", "right horse", "-i", "dev-1", "-q", "1", "-t", "sensors/a", "-m", "hello")
	if !ok {
		t.Fatalf("right password refused:\n%s", out)
	}
	ev := events(t, l, "telemetry")
	if len(ev) != 1 || string(ev[0].Payload) != "hello" || ev[0].Source != "dev-1" {
		t.Fatalf("ingested %+v, want the one accepted publish", ev)
	}
}

func TestAnonymousAllowed(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, func(c *broker.Config) { c.Users = usersFile(t, "s1", "pw") })
	if out, ok := client(t, b, "mosquitto_pub", "-q", "1", "-t", "sensors/a", "-m", "anon"); !ok {
		t.Fatalf("anonymous refused with AllowAnonymous:\n%s", out)
	}
	if out, ok := client(t, b, "mosquitto_pub", "-u", "s1", "-P", "bad", "-q", "1", "-t", "sensors/a", "-m", "x"); ok || !refusedAuth(out) {
		t.Fatalf("wrong password accepted because anonymous is allowed:\n%s", out)
	}
	if n := len(events(t, l, "telemetry")); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
}

// notAuthorized says whether mosquitto's -d output shows an ack of kind
// (PUBACK, SUBACK) with reason 135 (0x87, not authorized). mosquitto_pub
// prints the reason on the PUBACK line, mosquitto_sub on the "Subscribed"
// line after the SUBACK.
func notAuthorized(out, kind string) bool {
	if !strings.Contains(out, kind) {
		return false
	}
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, kind) && !strings.HasPrefix(line, "Subscribed (") {
			continue
		}
		if strings.HasSuffix(strings.TrimSpace(line), ": 135") || strings.Contains(line, "rc:135") || strings.Contains(line, "RC:135") ||
			strings.Contains(line, "(135)") || strings.Contains(strings.ToLower(line), "0x87") {
			return true
		}
	}
	return false
}

func TestACL(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	users := usersFile(t, "s1", "pw1", "s2", "pw2", "ops", "pw3")
	// Users files refuse such a name; a client certificate's identity
	// (TLSConfig.UsernameFrom) can still have one.
	h, err := broker.HashPassword([]byte("pw4"))
	if err != nil {
		t.Fatal(err)
	}
	users["bad/name"] = h
	b := start(t, l, func(c *broker.Config) {
		c.AllowAnonymous = false
		c.Users = users
		c.ACL = []broker.ACLRule{
			{User: "ops", Subscribe: []string{"sensors/#"}},
			{User: "*", Publish: []string{"sensors/%u/#"}, Subscribe: []string{"cmd/%c"}},
		}
	})
	s1 := []string{"-V", "5", "-d", "-u", "s1", "-P", "pw1", "-i", "dev-1", "-q", "1"}

	if out, ok := client(t, b, "mosquitto_pub", append(s1, "-t", "sensors/s1/temp", "-m", "mine")...); !ok || notAuthorized(out, "PUBACK") {
		t.Fatalf("s1 publishing sensors/s1/temp:\n%s", out)
	}
	out, _ := client(t, b, "mosquitto_pub", append(s1, "-t", "sensors/s2/temp", "-m", "theirs")...)
	if !notAuthorized(out, "PUBACK") {
		t.Fatalf("s1 publishing sensors/s2/temp: want PUBACK reason 135 (not authorized):\n%s", out)
	}
	// ops's rule comes first and allows no publishing at all.
	out, _ = client(t, b, "mosquitto_pub", "-V", "5", "-d", "-u", "ops", "-P", "pw3", "-q", "1", "-t", "sensors/ops/x", "-m", "ops")
	if !notAuthorized(out, "PUBACK") {
		t.Fatalf("ops publishing (first matching rule allows none): want PUBACK 135:\n%s", out)
	}
	// A user name with '/' would widen sensors/%u/#: that rule grants nothing.
	out, _ = client(t, b, "mosquitto_pub", "-V", "5", "-d", "-u", "bad/name", "-P", "pw4", "-q", "1", "-t", "sensors/bad/name/x", "-m", "wide")
	if !notAuthorized(out, "PUBACK") {
		t.Fatalf("user with '/' in its name: want PUBACK 135:\n%s", out)
	}
	ev := events(t, l, "telemetry")
	if len(ev) != 1 || ev[0].Topic != "sensors/s1/temp" {
		t.Fatalf("ingested %+v, want only sensors/s1/temp", ev)
	}

	sub := func(user, pw, id, filter string) string {
		out, _ := client(t, b, "mosquitto_sub", "-V", "5", "-d", "-u", user, "-P", pw, "-i", id, "-t", filter, "-E")
		if !strings.Contains(out, "SUBACK") {
			t.Fatalf("subscribing %s as %s: no SUBACK:\n%s", filter, user, out)
		}
		return out
	}
	if out := sub("s1", "pw1", "dev-1", "#"); !notAuthorized(out, "SUBACK") {
		t.Fatalf("s1 subscribing to #: want SUBACK 135:\n%s", out)
	}
	if out := sub("s1", "pw1", "dev-1", "cmd/dev-1"); notAuthorized(out, "SUBACK") {
		t.Fatalf("s1 subscribing to its own cmd/%%c:\n%s", out)
	}
	if out := sub("s1", "pw1", "dev-1", "cmd/dev-2"); !notAuthorized(out, "SUBACK") {
		t.Fatalf("dev-1 subscribing to cmd/dev-2: want SUBACK 135:\n%s", out)
	}
	if out := sub("s1", "pw1", "dev-1", "cmd/+"); !notAuthorized(out, "SUBACK") {
		t.Fatalf("dev-1 subscribing to cmd/+: want SUBACK 135:\n%s", out)
	}
	if out := sub("ops", "pw3", "ops-1", "sensors/+/temp"); notAuthorized(out, "SUBACK") {
		t.Fatalf("ops subscribing to sensors/+/temp:\n%s", out)
	}
}

func TestCovers(t *testing.T) {
	tests := []struct {
		allowed, requested string
		want               bool
	}{
		{"#", "#", true},
		{"#", "a/b", true},
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"cmd/dev-1", "cmd/dev-1", true},
		{"cmd/dev-1", "cmd/dev-2", false},
		{"cmd/dev-1", "cmd/+", false},
		{"cmd/dev-1", "cmd/#", false},
		{"cmd/dev-1", "#", false},
		{"sensors/#", "sensors", true},
		{"sensors/#", "sensors/a/b", true},
		{"sensors/#", "sensors/+/temp", true},
		{"sensors/#", "sensors/#", true},
		{"sensors/#", "other/#", false},
		{"sensors/+", "sensors/a", true},
		{"sensors/+", "sensors/+", true},
		{"sensors/+", "sensors/#", false},
		{"sensors/+", "sensors/a/b", false},
		{"sensors/+", "sensors", false},
		{"sensors/+/temp", "sensors/+/temp", true},
		{"sensors/+/temp", "sensors/a/#", false},
		{"a/b", "a/b/c", false},
		{"", "a", false},
		{"a", "", false},
	}
	for _, tt := range tests {
		if got := broker.Covers(tt.allowed, tt.requested); got != tt.want {
			t.Errorf("covers(%q, %q) = %v, want %v", tt.allowed, tt.requested, got, tt.want)
		}
	}
}

func TestLoadUsersErrors(t *testing.T) {
	good, err := broker.HashPassword([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct{ content, want string }{
		"no colon":      {"# users\n\nalice\n", "line 3"},
		"not bcrypt":    {"alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", "line 1: user \"alice\": the password hash is not bcrypt"},
		"empty user":    {":" + string(good) + "\n", "line 1: user name must not be empty"},
		"space in name": {"al ice:" + string(good) + "\n", "line 1: user name \"al ice\" must not contain whitespace"},
		"duplicate":     {"a:" + string(good) + "\na:" + string(good) + "\n", "line 2: user \"a\" is listed twice"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "users")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := broker.LoadUsers(path)
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one naming %s and %q", err, path, tt.want)
			}
		})
	}
	if _, err := broker.LoadUsers(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestSetUser(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, []byte("# ferry users\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := broker.SetUser(path, "alice", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := broker.SetUser(path, "bob", []byte("two")); err != nil {
		t.Fatal(err)
	}
	if err := broker.SetUser(path, "alice", []byte("three")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 { // 0644 less access for others
		t.Fatalf("mode %v, want 0640", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if !bytes.HasPrefix(data, []byte("# ferry users\nalice:$2")) || bytes.Count(data, []byte("\n")) != 3 ||
		bytes.Contains(data, []byte("three")) {
		t.Fatalf("file:\n%s", data)
	}
	users, err := broker.LoadUsers(path)
	if err != nil || len(users) != 2 {
		t.Fatalf("load: %v %v", users, err)
	}
	for _, bad := range []string{"", "a:b", "a b", "a\tb"} {
		if err := broker.SetUser(path, bad, []byte("x")); err == nil {
			t.Errorf("SetUser accepted user name %q", bad)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
}

// TestSetUserKeepsModeAndOwner: root editing a packaged gateway's users
// file (root:ferry 0640) must leave it readable by the service.
func TestSetUserKeepsModeAndOwner(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, []byte("# users\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	gid := os.Getegid()
	if os.Geteuid() == 0 {
		gid = 4 // any group other than root's: chown needs root
		if err := os.Chown(path, 0, gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := broker.SetUser(path, "s1", []byte("pw")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v after SetUser, want 0640", fi.Mode().Perm())
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Gid) != gid {
		t.Errorf("group %d after SetUser, want %d", st.Gid, gid)
	}
}
