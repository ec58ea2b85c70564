package jsonstr

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// encode is encoding/json's answer, without HTML escaping.
func encode(s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func FuzzAppendQuoted(f *testing.F) {
	for _, s := range []string{"", "plain", `"\`, "\x00\x08\x0c\x1f\x7f", "\xff\xfe", "\u2028\u2029", "<&>", "é\xc3", strings.Repeat("🌡", 10)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := AppendQuoted([]byte("x"), s), append([]byte("x"), encode(s)...); !bytes.Equal(got, want) {
			t.Fatalf("AppendQuoted(%q) = %s, encoding/json: %s", s, got, want)
		}
	})
}

func TestAppendQuotedAllocs(t *testing.T) {
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { _ = AppendQuoted(buf[:0], "sensors/a\n\"b\"") }); n != 0 {
		t.Fatalf("%v allocations, want 0", n)
	}
}
