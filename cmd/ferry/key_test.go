package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestKey creates a key file, rotates it and lists it the way an operator
// would, through the command's entry point.
func TestKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.key")
	key := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(append([]string{"key"}, args...), strings.NewReader(""), &out, &errb)
		return code, out.String(), errb.String()
	}
	isID := regexp.MustCompile(`^[0-9a-f]{8}\n$`)

	code, id1, msg := key("new", "-f", path)
	if code != 0 || !isID.MatchString(id1) {
		t.Fatalf("key new: exit %d, stdout %q, stderr %q", code, id1, msg)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", fi, err)
	}
	code, id2, msg := key("new", "-f", path)
	if code != 0 || !isID.MatchString(id2) || id2 == id1 {
		t.Fatalf("key new again: exit %d, stdout %q (first %q), stderr %q", code, id2, id1, msg)
	}
	if !strings.Contains(msg, "older keys still open") {
		t.Errorf("rotation message %q does not say the old key still opens", msg)
	}

	code, list, msg := key("list", "-f", path)
	want := strings.TrimSpace(id1) + "\n" + strings.TrimSpace(id2) + " active\n"
	if code != 0 || list != want {
		t.Fatalf("key list: exit %d, stdout %q, stderr %q; want %q", code, list, msg, want)
	}

	// The key itself is never printed.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") && strings.Contains(id1+id2+list+msg, line) {
			t.Fatalf("a key was printed: %q", line)
		}
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"list", "new"} {
		code, out, msg := key(sub, "-f", path)
		if code != 1 || out != "" || !strings.Contains(msg, "mode 0644") || !strings.Contains(msg, "chmod 600") {
			t.Errorf("key %s on a 0644 file: exit %d, stdout %q, stderr %q; want exit 1 and the perms error", sub, code, out, msg)
		}
	}

	for _, tt := range []struct {
		args []string
		code int
		msg  string
	}{
		{nil, 2, "usage: ferry key"},
		{[]string{"bogus"}, 2, `unknown command "bogus"`},
		{[]string{"new"}, 2, "usage: ferry key"},
		{[]string{"list", "-f", path, "extra"}, 2, "usage: ferry key"},
		{[]string{"list", "-f", filepath.Join(t.TempDir(), "missing.key")}, 1, "no such file"},
	} {
		if code, _, msg := key(tt.args...); code != tt.code || !strings.Contains(msg, tt.msg) {
			t.Errorf("key %v: exit %d, stderr %q; want %d and %q", tt.args, code, msg, tt.code, tt.msg)
		}
	}
}
