package uplink

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ferrygw/ferry/event"
)

func TestTopicSanitizing(t *testing.T) {
	long := strings.Repeat("x", 65530)
	tests := []struct {
		name, source, want string
	}{
		{"plain", "sensor-1", "gw/sensor-1"},
		{"wildcards and NUL", "a+b#c\x00d", "gw/a_b_c_d"},
		{"C0 control", "evil\x01", "gw/evil_"},
		{"tab and newline", "a\tb\nc", "gw/a_b_c"},
		{"DEL", "evil\x7f", "gw/evil_"},
		{"C1 control", "evil\u0085", "gw/evil_"},
		{"U+FFFF", "evil\uffff", "gw/evil_"},
		{"U+FFFE", "evil\ufffe", "gw/evil_"},
		{"non-character U+FDD0", "a\ufdd0b", "gw/a_b"},
		{"plane 1 non-character", "a\U0001FFFFb", "gw/a_b"},
		{"invalid UTF-8, one _ a byte", "a\xff\xfeb", "gw/a__b"},
		{"encoded surrogate", "a\xed\xa0\x80b", "gw/a___b"},
		{"truncated sequence", "a\xe2\x82", "gw/a__"},
		{"valid non-ASCII kept", "température/é", "gw/température/é"},
		{"replacement character kept", "a\ufffdb", "gw/a\ufffdb"},
	}
	tmpl, err := compileTopic("gw/{source}", "", DefaultMaxTopicBytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(tmpl.appendTopic(nil, &event.Event{Source: tt.source}))
			if got != tt.want {
				t.Errorf("source %q: topic %q, want %q", tt.source, got, tt.want)
			}
			checkTopic(t, got, DefaultMaxTopicBytes)
		})
	}
	t.Run("65530-byte source is shortened, not truncated silently", func(t *testing.T) {
		a := string(tmpl.appendTopic(nil, &event.Event{Source: long}))
		b := string(tmpl.appendTopic(nil, &event.Event{Source: long[:65529] + "y"}))
		if len(a) != DefaultMaxTopicBytes || !strings.HasPrefix(a, "gw/xxx") || a[len(a)-topicHashLen] != '~' {
			t.Errorf("topic of %d bytes %q, want %d bytes ending in ~hash", len(a), a[max(0, len(a)-40):], DefaultMaxTopicBytes)
		}
		if a == b {
			t.Errorf("sources that differ after the cut share the topic %q", a)
		}
		if again := string(tmpl.appendTopic(nil, &event.Event{Source: long})); again != a {
			t.Errorf("not deterministic: %q then %q", a, again)
		}
		checkTopic(t, a, DefaultMaxTopicBytes)
	})
	t.Run("cut on a character boundary", func(t *testing.T) {
		for pad := range 4 {
			src := strings.Repeat("a", pad) + strings.Repeat("€", 200)
			got := string(tmpl.appendTopic(nil, &event.Event{Source: src}))
			checkTopic(t, got, DefaultMaxTopicBytes)
		}
	})
	t.Run("leading $ from a field", func(t *testing.T) {
		tm, err := compileTopic("{source}/x", "", DefaultMaxTopicBytes)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(tm.appendTopic(nil, &event.Event{Source: "$SYS"})); got != "_SYS/x" {
			t.Errorf("topic %q, want _SYS/x", got)
		}
		tm, err = compileTopic("$aws/rules/r/{source}", "", DefaultMaxTopicBytes)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(tm.appendTopic(nil, &event.Event{Source: "$x"})); got != "$aws/rules/r/$x" {
			t.Errorf("topic %q, want the template's $ kept", got)
		}
	})
	t.Run("literal text is checked", func(t *testing.T) {
		for _, bad := range []string{"a\x01/{source}", "a\uffff/{source}", "a\xff/{source}", "a/\x7f"} {
			if _, err := compileTopic(bad, "", DefaultMaxTopicBytes); err == nil {
				t.Errorf("template %q accepted", bad)
			}
		}
	})
	t.Run("gateway ID is sanitized", func(t *testing.T) {
		tm, err := compileTopic("{gateway_id}/{stream}", "g\x01w+", DefaultMaxTopicBytes)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(tm.appendTopic(nil, &event.Event{Stream: "s"})); got != "g_w_/s" {
			t.Errorf("topic %q", got)
		}
	})
}

// checkTopic fails unless topic is a valid cloud topic name of at most max bytes.
func checkTopic(t testing.TB, topic string, max int) {
	t.Helper()
	if topic == "" || len(topic) > max {
		t.Fatalf("topic of %d bytes (1..%d)", len(topic), max)
	}
	if !utf8.ValidString(topic) {
		t.Fatalf("topic %q is not valid UTF-8", topic)
	}
	for _, r := range topic {
		if !topicRuneOK(r) {
			t.Fatalf("topic %q holds %U", topic, r)
		}
	}
}

// FuzzTopic renders topics from arbitrary event fields: every result must
// be a valid, bounded cloud topic, deterministically.
func FuzzTopic(f *testing.F) {
	for _, s := range []string{"sensor-1", "evil\x01", "evil\uffff", "evil\x7f", "a+b#c", "\xed\xa0\x80", "$SYS/x",
		strings.Repeat("€", 100), strings.Repeat("x", 300)} {
		f.Add("{gateway_id}/{stream}/{source}", s, "telemetry", "a/b", 64)
	}
	f.Add("$aws/rules/r/{topic}/{id}", "s", "t", "plant/+/temp", 256)
	f.Fuzz(func(t *testing.T, tmpl, source, stream, topic string, max int) {
		max = minTopicBytes + (max&0xffff)%512
		tm, err := compileTopic(tmpl, "gw", max)
		if err != nil {
			return
		}
		ev := &event.Event{Source: source, Stream: stream, Topic: topic}
		got := tm.appendTopic(nil, ev)
		checkTopic(t, string(got), max)
		if again := tm.appendTopic([]byte("prefix"), ev); string(again[6:]) != string(got) {
			t.Fatalf("not deterministic or depends on dst: %q vs %q", got, again[6:])
		}
	})
}

func TestTopicFuzzCorpusPresent(t *testing.T) {
	ents, err := os.ReadDir(filepath.Join("testdata", "fuzz", "FuzzTopic"))
	if err != nil || len(ents) == 0 {
		t.Fatalf("seed corpus missing: %v", err)
	}
}
