// Package testbin finds the programs that tests run for real (Mosquitto,
// nats-server): under CI=true a missing one fails the test, because
// .ci/run installs it; elsewhere the test is skipped with the package to
// install. Safe for concurrent use.
package testbin

import (
	"os"
	"os/exec"
	"testing"
)

// Find returns the first of candidates (names on PATH or paths) that
// exists, or "" when none does.
func Find(candidates ...string) string {
	for _, p := range candidates {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	return ""
}

// Require returns what Find finds. When nothing is found it fails t under
// CI=true and skips it otherwise; who prefixes the message and pkg is the
// Debian package that provides the program.
func Require(t testing.TB, who, pkg string, candidates ...string) string {
	t.Helper()
	p := Find(candidates...)
	if p == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s: %s is not installed; .ci/run must apt-get install %s", who, candidates[0], pkg)
		}
		t.Skipf("%s not installed (apt-get install %s); this test needs the real program", candidates[0], pkg)
	}
	return p
}
