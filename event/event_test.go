package event

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

// golden is a table of events and their exact encodings (as in mochi's
// tpackets.go): a change of these bytes is a change of the on-disk format
// and must be deliberate.
var golden = []struct {
	name string
	ev   Event
	hex  string
}{
	{
		name: "minimal",
		ev:   Event{},
		hex:  "88" + "50" + strings.Repeat("00", 16) + "60" + "60" + "60" + "00" + "60" + "40" + "f6",
	},
	{
		name: "full",
		ev: Event{
			ID:          ID{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10},
			Stream:      "t",
			Source:      "s1",
			Topic:       "a/b",
			Time:        time.Unix(0, 1700000000000000000),
			ContentType: "application/json",
			Payload:     []byte(`{"v":1}`),
			Attrs:       map[string]string{"unit": "C"},
		},
		hex: "88" +
			"50" + "0102030405060708090a0b0c0d0e0f10" +
			"61" + "74" +
			"62" + "7331" +
			"63" + "612f62" +
			"1b" + "17979cfe362a0000" +
			"70" + hex.EncodeToString([]byte("application/json")) +
			"47" + hex.EncodeToString([]byte(`{"v":1}`)) +
			"a1" + "64" + hex.EncodeToString([]byte("unit")) + "61" + "43",
	},
}

func TestGoldenEncoding(t *testing.T) {
	for _, tt := range golden {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Marshal(&tt.ev)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(b); got != tt.hex {
				t.Fatalf("encoding\n got %s\nwant %s", got, tt.hex)
			}
			var back Event
			if err := Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if back.ID != tt.ev.ID || back.Stream != tt.ev.Stream || back.Source != tt.ev.Source ||
				back.Topic != tt.ev.Topic || !back.Time.Equal(tt.ev.Time) || back.ContentType != tt.ev.ContentType ||
				!bytes.Equal(back.Payload, tt.ev.Payload) || len(back.Attrs) != len(tt.ev.Attrs) {
				t.Fatalf("round trip: got %+v want %+v", back, tt.ev)
			}
		})
	}
}

func TestUnmarshalRejects(t *testing.T) {
	tests := []struct {
		name string
		hex  string
	}{
		{"empty", ""},
		{"not an array", "a0"},
		{"short array", "83" + "50" + strings.Repeat("00", 16) + "6061"},
		{"id too short", "88" + "43010203" + "60606000604" + "0f6"},
		{"indefinite length", "9f" + "ff"},
		{"invalid utf-8 stream", "88" + "50" + strings.Repeat("00", 16) + "61ff" + "60600060" + "40f6"},
		{"tagged", "c0" + "88" + "50" + strings.Repeat("00", 16) + "606060006040f6"},
		{"huge declared payload", "88" + "50" + strings.Repeat("00", 16) + "606060006060" + "5bffffffffffffffff"},
		{"nested attrs", "88" + "50" + strings.Repeat("00", 16) + "6060600060" + "40" + "a1" + "6161" + "a0"},
		{"trailing bytes", "88" + "50" + strings.Repeat("00", 16) + "606060006040f6" + "00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := hex.DecodeString(tt.hex)
			if err != nil {
				t.Fatalf("bad test hex: %v", err)
			}
			var e Event
			if err := Unmarshal(b, &e); !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
}

func TestID(t *testing.T) {
	ts := time.UnixMilli(1700000000123)
	id, err := NewID(ts, bytes.NewReader(bytes.Repeat([]byte{0xab}, 10)))
	if err != nil {
		t.Fatal(err)
	}
	if !id.Time().Equal(ts) {
		t.Fatalf("time %v, want %v", id.Time(), ts)
	}
	s := id.String()
	if len(s) != 26 {
		t.Fatalf("text %q", s)
	}
	back, err := ParseID(s)
	if err != nil || back != id {
		t.Fatalf("parse %q: %v %v", s, back, err)
	}
	if string(id.AppendText(nil)) != s {
		t.Fatal("AppendText differs from String")
	}
	// IDs sort by time, as text too.
	later, _ := NewID(ts.Add(time.Millisecond), nil)
	if later.String() <= s {
		t.Fatalf("%s should sort after %s", later, s)
	}
	for _, bad := range []string{"", "8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "01ARZ3NDEKTSV4RRFFQ69G5FAU", "01ARZ3NDEKTSV4RRFFQ69G5FA"} {
		if _, err := ParseID(bad); !errors.Is(err, ErrBadID) {
			t.Errorf("ParseID(%q) = %v, want ErrBadID", bad, err)
		}
	}
}

func FuzzUnmarshal(f *testing.F) {
	for _, g := range golden {
		b, _ := hex.DecodeString(g.hex)
		f.Add(b)
	}
	f.Add([]byte{0x88})
	f.Add([]byte{0x9f, 0x9f, 0x9f})
	f.Fuzz(func(t *testing.T, data []byte) {
		var e Event
		if err := Unmarshal(data, &e); err != nil {
			return
		}
		// Whatever decodes must encode and decode to the same event.
		b, err := Marshal(&e)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var e2 Event
		if err := Unmarshal(b, &e2); err != nil {
			t.Fatalf("decode of re-encoding: %v", err)
		}
		if e2.ID != e.ID || e2.Stream != e.Stream || !bytes.Equal(e2.Payload, e.Payload) || !e2.Time.Equal(e.Time) {
			t.Fatalf("round trip differs")
		}
	})
}

func BenchmarkMarshal(b *testing.B) {
	e := golden[1].ev
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Marshal(&e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	data, _ := Marshal(&golden[1].ev)
	b.ReportAllocs()
	var e Event
	for b.Loop() {
		if err := Unmarshal(data, &e); err != nil {
			b.Fatal(err)
		}
	}
}
