package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ferrygw/ferry/gateway/config"
)

// TestCheckTooLargeConfig: `ferry check` refuses a file over
// config.MaxFileSize with a message naming it and its size (the issue: a
// 10 MB config took 964 MB to check).
func TestCheckTooLargeConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	big := "gateway_id: gw\n#" + strings.Repeat("x", 10<<20) + "\n"
	if err := os.WriteFile(path, []byte(big), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run([]string{"check", "-c", path}, nil, &out, &errb)
	msg := errb.String()
	if code != 1 || !strings.Contains(msg, path) || !strings.Contains(msg, strconv.Itoa(len(big))+" bytes") ||
		!strings.Contains(msg, strconv.Itoa(config.MaxFileSize)) {
		t.Fatalf("ferry check of a %d-byte file: exit %d, stderr %q; want exit 1 naming the file, its size and the cap", len(big), code, msg)
	}
}
