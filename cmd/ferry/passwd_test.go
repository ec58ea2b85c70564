package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrygw/ferry/gateway/broker"
	"golang.org/x/crypto/bcrypt"
)

// TestPasswd pipes passwords to `ferry passwd` on stdin, as a script would.
func TestPasswd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	passwd := func(user, input string) (int, string) {
		var out, errb bytes.Buffer
		code := run([]string{"passwd", "-f", path, user}, strings.NewReader(input), &out, &errb)
		if strings.Contains(out.String()+errb.String(), "s3cret") || strings.Contains(out.String()+errb.String(), "changed") {
			t.Fatalf("the password was printed:\n%s%s", out.String(), errb.String())
		}
		return code, errb.String()
	}
	if code, msg := passwd("sensor-1", "s3cret\n"); code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	if code, msg := passwd("sensor-2", "other\r\n"); code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	if code, msg := passwd("sensor-1", "changed"); code != 0 { // no newline at EOF
		t.Fatalf("exit %d: %s", code, msg)
	}
	users, err := broker.LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	for user, pw := range map[string]string{"sensor-1": "changed", "sensor-2": "other"} {
		if bcrypt.CompareHashAndPassword(users[user], []byte(pw)) != nil {
			t.Errorf("%s: password %q does not match the stored hash", user, pw)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("users file mode: %v %v", fi, err)
	}

	for _, tt := range []struct {
		args  []string
		input string
		code  int
		msg   string
	}{
		{[]string{"passwd", "-f", path, "x"}, "\n", 1, "empty password"},
		{[]string{"passwd", "-f", path, "a:b"}, "pw\n", 1, "must not contain ':'"},
		{[]string{"passwd", "-f", path, "%c"}, "pw\n", 1, "ACL pattern characters"},
		{[]string{"passwd", "-f", path, "a/b"}, "pw\n", 1, "ACL pattern characters"},
		{[]string{"passwd", "-f", path, "a+"}, "pw\n", 1, "ACL pattern characters"},
		{[]string{"passwd", "-f", path, "a#b"}, "pw\n", 1, "ACL pattern characters"},
		{[]string{"passwd", "-f", path, "a\x01b"}, "pw\n", 1, "control characters"},
		{[]string{"passwd", "-f", path}, "pw\n", 2, "usage: ferry passwd"},
		{[]string{"passwd", "x"}, "pw\n", 2, "usage: ferry passwd"},
	} {
		var out, errb bytes.Buffer
		if code := run(tt.args, strings.NewReader(tt.input), &out, &errb); code != tt.code || !strings.Contains(errb.String(), tt.msg) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tt.args, code, errb.String(), tt.code, tt.msg)
		}
	}
}
