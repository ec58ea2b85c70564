package payload

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/rules/record"
	"github.com/fxamacker/cbor/v2"
)

// plBase is the event every payload test decodes against: whole seconds,
// so that relative SenML times resolve to exact float64 Unix times.
func plBase() record.Record {
	return record.Record{
		Key:    "ev-1",
		Time:   time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC), // Unix 1714564800
		Source: "dev-7",
		Topic:  "site/a/dev-7",
	}
}

const plBaseUnix = 1714564800.0

// plCBOR encodes v in deterministic CBOR (sorted keys, shortest floats).
func plCBOR(t testing.TB, v any) []byte {
	t.Helper()
	em, err := cbor.CanonicalEncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	b, err := em.Marshal(v)
	if err != nil {
		t.Fatalf("cbor.Marshal(%#v): %v", v, err)
	}
	return b
}

// plHex decodes a hex string with optional spaces.
func plHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// plCheckOne checks that recs is a single record copying base's identity
// with exactly the fields want.
func plCheckOne(t *testing.T, recs []*record.Record, base record.Record, want map[string]any) {
	t.Helper()
	if len(recs) != 1 {
		t.Fatalf("got %d records, want 1", len(recs))
	}
	r := recs[0]
	if r.Key != base.Key || !r.Time.Equal(base.Time) || r.Source != base.Source || r.Topic != base.Topic {
		t.Errorf("identity = %q %v %q %q, want %q %v %q %q", r.Key, r.Time, r.Source, r.Topic,
			base.Key, base.Time, base.Source, base.Topic)
	}
	if !reflect.DeepEqual(r.Fields, want) {
		t.Errorf("Fields =\n\t%#v\nwant\n\t%#v", r.Fields, want)
	}
}

func TestParseFormat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Format
		ok   bool
	}{
		{"", FormatAuto, true},
		{"auto", FormatAuto, true},
		{"json", FormatJSON, true},
		{"JSON", FormatJSON, true},
		{" cbor ", FormatCBOR, true},
		{"senml+json", FormatSenMLJSON, true},
		{"SenML+CBOR", FormatSenMLCBOR, true},
		{"number", FormatNumber, true},
		{"senml", "", false},
		{"xml", "", false},
		{"application/json", "", false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseFormat(tc.in)
			if tc.ok != (err == nil) || got != tc.want {
				t.Fatalf("ParseFormat(%q) = %q, %v; want %q, ok=%v", tc.in, got, err, tc.want, tc.ok)
			}
			if err != nil && errors.Is(err, ErrMalformed) {
				t.Errorf("configuration error wraps ErrMalformed: %v", err)
			}
		})
	}
}

func TestFormatFor(t *testing.T) {
	cborMap := plCBOR(t, map[string]any{"a": 1})
	senmlCBOR := plCBOR(t, []map[int]any{{0: "temp", 2: 21.5}})
	for _, tc := range []struct {
		name    string
		f       Format
		ct      string
		payload []byte
		want    Format
	}{
		// A configured format wins over content type and payload.
		{"configured json", FormatJSON, "application/cbor", cborMap, FormatJSON},
		{"configured cbor", FormatCBOR, "application/json", []byte(`{}`), FormatCBOR},
		{"configured senml+json", FormatSenMLJSON, "", []byte(`{}`), FormatSenMLJSON},
		{"configured senml+cbor", FormatSenMLCBOR, "", []byte(`{}`), FormatSenMLCBOR},
		{"configured number", FormatNumber, "", []byte(`{}`), FormatNumber},
		// Content types.
		{"ct json", FormatAuto, "application/json", []byte(`[{"n":"a","v":1}]`), FormatJSON},
		{"ct json charset", FormatAuto, "Application/JSON; charset=utf-8", []byte(`1`), FormatJSON},
		{"ct +json", FormatAuto, "application/vnd.acme+json", []byte(`1`), FormatJSON},
		{"ct cbor", FormatAuto, "application/cbor", []byte(`{}`), FormatCBOR},
		{"ct +cbor", FormatAuto, "application/vnd.acme+cbor", []byte(`{}`), FormatCBOR},
		{"ct senml+json", FormatAuto, "application/senml+json", []byte(`{}`), FormatSenMLJSON},
		{"ct senml+cbor", FormatAuto, " application/senml+cbor ;x=y", []byte(`{}`), FormatSenMLCBOR},
		{"ct text/plain", FormatAuto, "text/plain; charset=us-ascii", []byte(`{}`), FormatNumber},
		{"empty format is auto", "", "application/json", []byte(`1`), FormatJSON},
		// Unknown content types and none: sniffing.
		{"octet-stream json", FormatAuto, "application/octet-stream", []byte(` {"a":1}`), FormatJSON},
		{"sniff json object", FormatAuto, "", []byte("\r\n\t {\"a\":1}"), FormatJSON},
		{"sniff json array", FormatAuto, "", []byte(`[1,2]`), FormatJSON},
		{"sniff json array of plain objects", FormatAuto, "", []byte(`[{"x":1}]`), FormatJSON},
		{"sniff senml json", FormatAuto, "", []byte(`[{"n":"a","v":1}]`), FormatSenMLJSON},
		{"sniff senml json base only first", FormatAuto, "", []byte(`[{"bn":"a"},{"v":1}]`), FormatSenMLJSON},
		{"sniff senml json sum", FormatAuto, "", []byte(`[{"s":1}]`), FormatSenMLJSON},
		{"sniff broken json", FormatAuto, "", []byte(`[{"n":`), FormatJSON},
		{"sniff cbor map", FormatAuto, "", cborMap, FormatCBOR},
		{"sniff cbor array", FormatAuto, "", plCBOR(t, []any{1, 2}), FormatCBOR},
		{"sniff cbor array of text-key maps", FormatAuto, "", plCBOR(t, []any{map[string]any{"n": "a"}}), FormatCBOR},
		{"sniff senml cbor", FormatAuto, "", senmlCBOR, FormatSenMLCBOR},
		{"sniff senml cbor negative label", FormatAuto, "", plHex(t, "81 a1 21 61 61"), FormatSenMLCBOR},
		{"sniff senml cbor indefinite", FormatAuto, "", plHex(t, "9f bf 00 61 61 ff ff"), FormatSenMLCBOR},
		{"sniff number", FormatAuto, "", []byte("21.5\n"), FormatNumber},
		{"sniff negative number", FormatAuto, "", []byte(" -3e2 "), FormatNumber},
		{"sniff plus number", FormatAuto, "", []byte("+7"), FormatNumber},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FormatFor(tc.f, tc.ct, tc.payload)
			if err != nil || got != tc.want {
				t.Fatalf("FormatFor(%q, %q, %q) = %q, %v; want %q", tc.f, tc.ct, tc.payload, got, err, tc.want)
			}
		})
	}

	t.Run("errors", func(t *testing.T) {
		for _, p := range [][]byte{nil, {}, []byte("   "), []byte("hello"), []byte(`"str"`), []byte("NaN"), {0x01}, {0xff}, {0x9c}} {
			if f, err := FormatFor(FormatAuto, "", p); !errors.Is(err, ErrMalformed) {
				t.Errorf("FormatFor(auto, %q) = %q, %v; want ErrMalformed", p, f, err)
			}
		}
		if _, err := FormatFor("xml", "", []byte(`{}`)); err == nil || errors.Is(err, ErrMalformed) {
			t.Errorf("unknown format: err = %v, want a non-ErrMalformed error", err)
		}
	})
}

func TestDecode(t *testing.T) {
	base := plBase()
	for _, tc := range []struct {
		name    string
		f       Format
		ct      string
		payload []byte
		want    map[string]any
	}{
		// JSON.
		{"json object", FormatJSON, "", []byte(`{"temp_c":21.5,"hum":40}`),
			map[string]any{"temp_c": 21.5, "hum": 40.0}},
		{"json all types", FormatJSON, "", []byte(` { "s" : "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00é" , "t":true,"f":false,"z":null,` +
			`"a":[1,-2.5e3,0.125,[],{}],"o":{"p":{"q":-0}},"big":9007199254740992,"nbig":-9007199254740992,"e":1E2,"tiny":1e-400,"":"empty key"}` + "\n"),
			map[string]any{
				"s": "x\"\\/\b\f\n\r\té😀é", "t": true, "f": false, "z": nil,
				"a":   []any{1.0, -2500.0, 0.125, []any{}, map[string]any{}},
				"o":   map[string]any{"p": map[string]any{"q": 0.0}},
				"big": 9007199254740992.0, "nbig": -9007199254740992.0, "e": 100.0, "tiny": 0.0, "": "empty key",
			}},
		{"json empty object", FormatJSON, "", []byte(`{}`), map[string]any{}},
		{"json array", FormatJSON, "", []byte(`[1,"a",null]`), map[string]any{"value": []any{1.0, "a", nil}}},
		{"json string", FormatJSON, "", []byte(`"on"`), map[string]any{"value": "on"}},
		{"json number", FormatJSON, "", []byte(`42`), map[string]any{"value": 42.0}},
		{"json bool", FormatJSON, "", []byte(`true`), map[string]any{"value": true}},
		{"json null", FormatJSON, "", []byte(`null`), map[string]any{"value": nil}},
		{"json senml-shaped stays json", FormatJSON, "", []byte(`[{"n":"a","v":1}]`),
			map[string]any{"value": []any{map[string]any{"n": "a", "v": 1.0}}}},

		// CBOR.
		{"cbor map", FormatCBOR, "", plCBOR(t, map[string]any{"temp_c": 21.5, "hum": 40}),
			map[string]any{"temp_c": 21.5, "hum": 40.0}},
		{"cbor all types", FormatCBOR, "", plCBOR(t, map[string]any{
			"u": uint64(1 << 53), "n": int64(-1 << 53), "f16": 1.5, "f32": float32(0.1), "f64": 0.1,
			"s": "héllo", "b": []byte{0xfb, 0xff, 0x01}, "empty": []byte{}, "t": true, "f": false, "z": nil,
			"a": []any{1, "x", []any{}}, "m": map[string]any{"k": map[string]any{}},
		}), map[string]any{
			"u": 9007199254740992.0, "n": -9007199254740992.0, "f16": 1.5, "f32": float64(float32(0.1)), "f64": 0.1,
			"s": "héllo", "b": "-_8B", "empty": "", "t": true, "f": false, "z": nil,
			"a": []any{1.0, "x", []any{}}, "m": map[string]any{"k": map[string]any{}},
		}},
		// {_ "a": undefined, "b": (_ h'01', h'02'), "c": [_ 1], "d": (_ "x", "y")}
		{"cbor indefinite lengths and undefined", FormatCBOR, "", plHex(t, "bf 61 61 f7 61 62 5f 41 01 41 02 ff 61 63 9f 01 ff 61 64 7f 61 78 61 79 ff ff"),
			map[string]any{"a": nil, "b": "AQI", "c": []any{1.0}, "d": "xy"}},
		{"cbor half float", FormatCBOR, "", plHex(t, "a1 61 68 f9 3e 00"), map[string]any{"h": 1.5}},
		{"cbor single float", FormatCBOR, "", plHex(t, "a1 61 73 fa 3f c0 00 00"), map[string]any{"s": 1.5}},
		{"cbor double float", FormatCBOR, "", plHex(t, "a1 61 64 fb 3f f8 00 00 00 00 00 00"), map[string]any{"d": 1.5}},
		{"cbor array", FormatCBOR, "", plCBOR(t, []any{1, -1}), map[string]any{"value": []any{1.0, -1.0}}},
		{"cbor text", FormatCBOR, "", plCBOR(t, "on"), map[string]any{"value": "on"}},
		{"cbor integer", FormatCBOR, "", plHex(t, "18 2a"), map[string]any{"value": 42.0}},
		{"cbor bytes", FormatCBOR, "", plHex(t, "43 68 69 0a"), map[string]any{"value": "aGkK"}},
		{"cbor null", FormatCBOR, "", plHex(t, "f6"), map[string]any{"value": nil}},

		// Bare numbers.
		{"number", FormatNumber, "", []byte(`21.5`), map[string]any{"value": 21.5}},
		{"number whitespace", FormatNumber, "", []byte(" \t-3\r\n"), map[string]any{"value": -3.0}},
		{"number plus", FormatNumber, "", []byte(`+0.5e1`), map[string]any{"value": 5.0}},
		{"number zero", FormatNumber, "", []byte(`0`), map[string]any{"value": 0.0}},
		{"number 2^53", FormatNumber, "", []byte(`9007199254740992`), map[string]any{"value": 9007199254740992.0}},

		// Auto: content type decides.
		{"auto ct json", FormatAuto, "application/json", []byte(`{"a":1}`), map[string]any{"a": 1.0}},
		{"auto ct json keeps senml-shaped arrays", FormatAuto, "application/json", []byte(`[{"n":"a","v":1}]`),
			map[string]any{"value": []any{map[string]any{"n": "a", "v": 1.0}}}},
		{"auto ct vendor json", FormatAuto, "application/vnd.acme.v2+json; charset=utf-8", []byte(`{"a":1}`), map[string]any{"a": 1.0}},
		{"auto ct cbor", FormatAuto, "application/cbor", plCBOR(t, map[string]any{"a": 1}), map[string]any{"a": 1.0}},
		{"auto ct text/plain", FormatAuto, "text/plain", []byte("7\n"), map[string]any{"value": 7.0}},
		{"auto ct unknown sniffs", FormatAuto, "application/octet-stream", []byte(`{"a":1}`), map[string]any{"a": 1.0}},

		// Auto: sniffing.
		{"sniff json object", FormatAuto, "", []byte("\n {\"temp_c\":21.5}"), map[string]any{"temp_c": 21.5}},
		{"sniff json array", FormatAuto, "", []byte(`[1,2]`), map[string]any{"value": []any{1.0, 2.0}}},
		{"sniff cbor map", FormatAuto, "", plCBOR(t, map[string]any{"temp_c": 21.5}), map[string]any{"temp_c": 21.5}},
		{"sniff cbor array", FormatAuto, "", plCBOR(t, []any{"a"}), map[string]any{"value": []any{"a"}}},
		{"sniff number", FormatAuto, "", []byte("-40"), map[string]any{"value": -40.0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := Decode(tc.f, tc.ct, tc.payload, base)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			plCheckOne(t, recs, base, tc.want)
		})
	}
}

// TestDecodeAutoSenML checks that content type and sniffing route SenML
// packs to the SenML decoder (the fields are tested in senml_test.go).
func TestDecodeAutoSenML(t *testing.T) {
	base := plBase()
	want := map[string]any{"name": "urn:dev:ow:10e2073a01080063", "unit": "Cel", "value": 23.1, "time": plBaseUnix}
	js := []byte(`[{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}]`)
	cb := plCBOR(t, []map[int]any{{0: "urn:dev:ow:10e2073a01080063", 1: "Cel", 2: 23.1}})
	for _, tc := range []struct {
		name    string
		f       Format
		ct      string
		payload []byte
	}{
		{"senml+json", FormatSenMLJSON, "", js},
		{"senml+cbor", FormatSenMLCBOR, "", cb},
		{"ct senml+json", FormatAuto, "application/senml+json", js},
		{"ct senml+cbor", FormatAuto, "application/senml+cbor", cb},
		{"ct unknown", FormatAuto, "application/octet-stream", js},
		{"sniff json", FormatAuto, "", js},
		{"sniff cbor", FormatAuto, "", cb},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := Decode(tc.f, tc.ct, tc.payload, base)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			plCheckOne(t, recs, base, want)
		})
	}
}

func TestDecodeUnknownFormat(t *testing.T) {
	_, err := Decode("xml", "", []byte(`{}`), plBase())
	if err == nil || errors.Is(err, ErrMalformed) {
		t.Fatalf("Decode(xml) err = %v, want an error that is not ErrMalformed", err)
	}
}

// plNest returns open*n + mid + close*n.
func plNest(open, mid, close string, n int) []byte {
	return []byte(strings.Repeat(open, n) + mid + strings.Repeat(close, n))
}

// plCBORArray returns a definite CBOR array of n zeros.
func plCBORArray(n int) []byte {
	b := []byte{0x9a, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	return append(b, make([]byte, n)...)
}

// plCBORMap returns a definite CBOR map of n distinct text keys to 0.
func plCBORMap(n int) []byte {
	b := []byte{0xba, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	for i := range n {
		b = append(b, 0x64, 'k', byte('a'+i/676%26), byte('a'+i/26%26), byte('a'+i%26), 0x00)
	}
	return b
}

// plJSONArray returns a JSON array of n zeros.
func plJSONArray(n int) []byte {
	return []byte("[" + strings.TrimSuffix(strings.Repeat("0,", n), ",") + "]")
}

// plJSONObject returns a JSON object of n distinct keys.
func plJSONObject(n int) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"k`)
		b.WriteString(strings.Repeat("x", i/1000))
		b.WriteByte(byte('a' + i/100%10))
		b.WriteByte(byte('a' + i/10%10))
		b.WriteByte(byte('a' + i%10))
		b.WriteString(`":0`)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// plPadded returns a JSON object of exactly n bytes.
func plPadded(n int) []byte {
	return []byte(`{"a":"` + strings.Repeat("x", n-8) + `"}`)
}

func TestDecodeMalformed(t *testing.T) {
	const (
		fj  = FormatJSON
		fc  = FormatCBOR
		fsj = FormatSenMLJSON
		fsc = FormatSenMLCBOR
		fn  = FormatNumber
		fa  = FormatAuto
	)
	h := func(s string) []byte { return plHex(t, s) }
	for _, tc := range []struct {
		name    string
		f       Format
		payload []byte
		reason  string // a substring of the error
	}{
		// Malformed JSON.
		{"json empty", fj, nil, "unexpected end"},
		{"json blank", fj, []byte("  \n"), "unexpected end"},
		{"json unclosed object", fj, []byte(`{`), "expected a string object key"},
		{"json unclosed object after value", fj, []byte(`{"a":1`), "unterminated object"},
		{"json missing value", fj, []byte(`{"a":}`), "unexpected character"},
		{"json missing colon", fj, []byte(`{"a" 1}`), "expected ':'"},
		{"json trailing comma object", fj, []byte(`{"a":1,}`), "expected a string object key"},
		{"json trailing comma array", fj, []byte(`[1,]`), "unexpected character"},
		{"json unclosed array", fj, []byte(`[1`), "unterminated array"},
		{"json bad separator", fj, []byte(`[1;2]`), "expected ',' or ']'"},
		{"json single quotes", fj, []byte(`{'a':1}`), "expected a string object key"},
		{"json non-string key", fj, []byte(`{1:1}`), "expected a string object key"},
		{"json bad literal", fj, []byte(`tru`), "invalid literal"},
		{"json NaN", fj, []byte(`NaN`), "unexpected character"},
		{"json Infinity", fj, []byte(`{"a":Infinity}`), "unexpected character"},
		{"json negative Infinity", fj, []byte(`-Infinity`), "invalid number"},
		{"json leading zero", fj, []byte(`01`), "trailing data"},
		{"json dot without digits", fj, []byte(`1.`), "digit expected after '.'"},
		{"json leading dot", fj, []byte(`.5`), "unexpected character"},
		{"json empty exponent", fj, []byte(`1e+`), "digit expected in exponent"},
		{"json plus number", fj, []byte(`+1`), "unexpected character"},
		{"json hex number", fj, []byte(`0x10`), "trailing data"},
		{"json unterminated string", fj, []byte(`"abc`), "unterminated string"},
		{"json unterminated escaped string", fj, []byte(`"a\n`), "unterminated string"},
		{"json backslash at end", fj, []byte(`"a\`), "unterminated string"},
		{"json control character", fj, []byte("\"a\tb\""), "control character"},
		{"json escaped-string control character", fj, []byte("\"\\n\x01\""), "control character"},
		{"json bad escape", fj, []byte(`"\x41"`), "invalid escape"},
		{"json short unicode escape", fj, []byte(`"\u12"`), "invalid \\u escape"},
		{"json non-hex unicode escape", fj, []byte(`"\u12g4"`), "invalid \\u escape"},
		{"json float overflow", fj, []byte(`{"a":1e309}`), "overflows float64"},
		{"json negative float overflow", fj, []byte(`-1.7976931348623159e308`), "overflows float64"},
		{"json comment", fj, []byte(`{"a":1 /* c */}`), "expected ',' or '}'"},

		// Malformed CBOR.
		{"cbor empty", fc, nil, "empty payload"},
		{"cbor truncated map", fc, h("a1 61 61"), "truncated"},
		{"cbor truncated head", fc, h("1a 00 00"), "truncated"},
		{"cbor truncated string", fc, h("65 61 62"), "truncated"},
		{"cbor reserved additional info", fc, h("1c"), "cbor:"},
		{"cbor lone break", fc, h("ff"), "cbor:"},
		{"cbor indefinite text with byte chunk", fc, h("7f 41 00 ff"), "cbor:"},
		{"cbor unterminated indefinite array", fc, h("9f 01 02"), "truncated"},
		{"cbor tag", fc, h("c1 1a 5e 00 00 00"), "tags are not accepted"},
		{"cbor self-described tag", fc, h("d9 d9 f7 a0"), "tags are not accepted"},
		{"cbor bignum tag", fc, h("c2 49 01 00 00 00 00 00 00 00 00"), "tags are not accepted"},
		{"cbor unassigned simple value", fc, h("f0"), "simple value"},
		{"cbor two-byte simple value", fc, h("f8 ff"), "cbor:"},
		{"cbor integer map key", fc, h("a1 01 01"), "map key is not a text string"},
		{"cbor byte-string map key", fc, h("a1 41 61 01"), "cbor:"},
		{"cbor array map key", fc, h("a1 80 01"), "map key is not a text string"},

		// Deep nesting: 1,000 levels, and one past the limit.
		{"json 1000 nested arrays", fj, plNest("[", "", "]", 1000), "nesting deeper than 32"},
		{"json 1000 nested objects", fj, plNest(`{"a":`, "1", "}", 1000), "nesting deeper than 32"},
		{"json 33 nested arrays", fj, plNest("[", "", "]", 33), "nesting deeper than 32"},
		{"json 1000 unclosed arrays", fj, plNest("[", "", "", 1000), "nesting deeper than 32"},
		{"cbor 1000 nested arrays", fc, append(bytes.Repeat([]byte{0x81}, 1000), 0x00), "nesting deeper than 32"},
		{"cbor 1000 nested maps", fc, append(bytes.Repeat([]byte{0xa1, 0x61, 0x61}, 1000), 0x00), "nesting deeper than 32"},
		{"cbor 1000 nested indefinite arrays", fc, append(bytes.Repeat([]byte{0x9f}, 1000), bytes.Repeat([]byte{0xff}, 1000)...), "nesting deeper than 32"},
		{"cbor 33 nested arrays", fc, append(bytes.Repeat([]byte{0x81}, 33), 0x00), "nesting deeper than 32"},
		{"senml json 1000 nested", fsj, plNest("[", "", "]", 1000), "nesting deeper than 32"},
		{"senml cbor 1000 nested", fsc, append(bytes.Repeat([]byte{0x81}, 1000), 0x00), "nesting deeper than 32"},
		{"auto json 1000 nested", fa, plNest("[", "", "]", 1000), "nesting deeper than 32"},
		{"auto cbor 1000 nested", fa, append(bytes.Repeat([]byte{0x81}, 1000), 0x00), "nesting deeper than 32"},

		// Declared lengths beyond the payload or the limits.
		{"cbor array of 2^64-1", fc, h("9b ff ff ff ff ff ff ff ff"), "cbor:"},
		{"senml cbor array of 2^64-1", fsc, h("9b ff ff ff ff ff ff ff ff"), "cbor:"},
		{"auto array of 2^64-1", fa, h("9b ff ff ff ff ff ff ff ff"), "cbor:"},
		{"cbor map of 2^64-1", fc, h("bb ff ff ff ff ff ff ff ff"), "cbor:"},
		{"cbor text of 2^64-1", fc, h("7b ff ff ff ff ff ff ff ff"), "cbor:"},
		{"cbor bytes of 2^64-1", fc, h("5b ff ff ff ff ff ff ff ff"), "cbor:"},
		{"cbor array of 2^32-1", fc, h("9a ff ff ff ff 00"), "cbor:"},
		{"cbor nested array of 2^64-1", fc, h("a1 61 61 9b ff ff ff ff ff ff ff ff"), "cbor:"},
		{"json 100k array", fj, plJSONArray(100_000), "more than 10000 elements"},
		{"json 10001 array", fj, plJSONArray(10_001), "more than 10000 elements"},
		{"json 10001 object", fj, plJSONObject(10_001), "more than 10000 members"},
		{"cbor 100k array", fc, plCBORArray(100_000), "more than 10000 elements"},
		{"cbor 10001 array", fc, plCBORArray(10_001), "more than 10000 elements"},
		{"cbor 10001 map", fc, plCBORMap(10_001), "more than 10000 pairs"},
		{"senml json 100k array", fsj, plJSONArray(100_000), "more than 10000 elements"},
		{"senml cbor 100k array", fsc, plCBORArray(100_000), "more than 10000 elements"},

		// NaN and infinities, in every float width.
		{"cbor half NaN", fc, h("f9 7e 00"), "NaN"},
		{"cbor half NaN payload", fc, h("f9 7c 01"), "NaN"},
		{"cbor half +Inf", fc, h("f9 7c 00"), "infinity"},
		{"cbor half -Inf", fc, h("f9 fc 00"), "infinity"},
		{"cbor single NaN", fc, h("fa 7f c0 00 00"), "NaN"},
		{"cbor single +Inf", fc, h("fa 7f 80 00 00"), "infinity"},
		{"cbor single -Inf", fc, h("fa ff 80 00 00"), "infinity"},
		{"cbor double NaN", fc, h("fb 7f f8 00 00 00 00 00 00"), "NaN"},
		{"cbor double negative NaN", fc, h("fb ff f8 00 00 00 00 00 01"), "NaN"},
		{"cbor double +Inf", fc, h("fb 7f f0 00 00 00 00 00 00"), "infinity"},
		{"cbor double -Inf", fc, h("fb ff f0 00 00 00 00 00 00"), "infinity"},
		{"cbor NaN in map", fc, h("a2 61 61 01 61 62 f9 7e 00"), "NaN"},
		{"cbor Inf in nested array", fc, h("a1 61 61 82 01 fa 7f 80 00 00"), "infinity"},
		{"senml cbor half NaN value", fsc, h("81 a2 00 61 61 02 f9 7e 00"), "NaN"},
		{"senml cbor single Inf time", fsc, h("81 a3 00 61 61 02 01 06 fa 7f 80 00 00"), "infinity"},
		{"senml cbor double -Inf base value", fsc, h("81 a3 00 61 61 02 01 24 fb ff f0 00 00 00 00 00 00"), "infinity"},
		{"senml cbor NaN in extension", fsc, h("81 a3 00 61 61 02 01 61 78 f9 7e 00"), "NaN"},

		// Invalid UTF-8 and unpaired surrogates.
		{"json invalid utf-8 in string", fj, []byte("{\"a\":\"\xff\"}"), "invalid UTF-8"},
		{"json invalid utf-8 in key", fj, []byte("{\"\xc3\":1}"), "invalid UTF-8"},
		{"json invalid utf-8 after escape", fj, []byte("\"\\n\xfe\""), "invalid UTF-8"},
		{"json overlong encoding", fj, []byte("\"\xc0\xaf\""), "invalid UTF-8"},
		{"json utf-8 encoded surrogate", fj, []byte("\"\xed\xa0\x80\""), "invalid UTF-8"},
		{"json truncated utf-8", fj, []byte("\"\xe2\x82\""), "invalid UTF-8"},
		{"json lone high surrogate", fj, []byte(`"\ud83d"`), "unpaired surrogate"},
		{"json lone low surrogate", fj, []byte(`"\ude00"`), "unpaired surrogate"},
		{"json high surrogate then non-surrogate", fj, []byte(`"\ud83d\u0041"`), "unpaired surrogate"},
		{"json invalid utf-8 outside strings", fj, []byte("\xff"), "unexpected character"},
		{"cbor invalid utf-8 text", fc, h("62 ff fe"), "cbor:"},
		{"cbor invalid utf-8 key", fc, h("a1 61 ff 01"), "cbor:"},
		{"cbor utf-8 encoded surrogate", fc, h("63 ed a0 80"), "cbor:"},
		{"cbor invalid utf-8 in indefinite text", fc, h("7f 61 61 61 ff ff"), "cbor:"},
		{"senml json invalid utf-8 name", fsj, []byte("[{\"n\":\"\xff\",\"v\":1}]"), "invalid UTF-8"},
		{"senml cbor invalid utf-8 name", fsc, h("81 a2 00 61 ff 02 01"), "cbor:"},
		{"number invalid utf-8", fn, []byte("1\xff"), "not a decimal number"},

		// Duplicate keys.
		{"json duplicate key", fj, []byte(`{"a":1,"a":2}`), "duplicate object key \"a\""},
		{"json duplicate key via escape", fj, []byte(`{"a":1,"\u0061":1}`), "duplicate object key"},
		{"json nested duplicate key", fj, []byte(`[{"b":{"x":1,"y":2,"x":3}}]`), "duplicate object key \"x\""},
		{"cbor duplicate key", fc, h("a2 61 61 01 61 61 02"), "duplicate map key"},
		{"cbor indefinite duplicate key", fc, h("bf 61 61 01 61 61 01 ff"), "duplicate map key"},
		{"cbor nested duplicate key", fc, h("81 a2 61 61 01 61 61 01"), "duplicate map key"},
		{"senml json duplicate label", fsj, []byte(`[{"n":"a","v":1,"v":2}]`), "duplicate object key"},
		{"senml cbor duplicate label", fsc, h("81 a3 00 61 61 02 01 02 02"), "duplicate map key"},

		// Trailing data.
		{"json trailing garbage", fj, []byte(`{"a":1} x`), "trailing data"},
		{"json two values", fj, []byte(`{"a":1}{"b":2}`), "trailing data"},
		{"json trailing NUL", fj, []byte("{}\x00"), "trailing data"},
		{"json trailing close", fj, []byte(`[1]]`), "trailing data"},
		{"cbor trailing byte", fc, h("a0 00"), "trailing data"},
		{"cbor two items", fc, h("a1 61 61 01 a0"), "trailing data"},
		{"senml json trailing data", fsj, []byte(`[{"n":"a","v":1}],`), "trailing data"},
		{"senml cbor trailing data", fsc, h("81 a2 00 61 61 02 01 00"), "trailing data"},
		{"number two numbers", fn, []byte(`1 2`), "not a decimal number"},
		{"number unit suffix", fn, []byte(`21.5C`), "not a decimal number"},

		// SenML-specific.
		{"senml json two value fields", fsj, []byte(`[{"n":"a","v":1,"vs":"x"}]`), "2 value fields"},
		{"senml json four value fields", fsj, []byte(`[{"n":"a","v":1,"vs":"x","vb":true,"vd":"AA"}]`), "4 value fields"},
		{"senml cbor two value fields", fsc, h("81 a3 00 61 61 02 01 04 f5"), "2 value fields"},
		{"senml json invalid name", fsj, []byte(`[{"n":"temp C","v":1}]`), "has a character other than"},
		{"senml json name starting with dash", fsj, []byte(`[{"n":"-a","v":1}]`), "must start with a letter or digit"},
		{"senml json invalid base name", fsj, []byte(`[{"bn":"/dev/","n":"a","v":1}]`), "must start with a letter or digit"},
		{"senml json non-ascii name", fsj, []byte(`[{"n":"temp°","v":1}]`), "has a character other than"},
		{"senml json empty name", fsj, []byte(`[{"v":1}]`), "empty name"},
		{"senml cbor invalid name", fsc, h("81 a2 00 62 61 20 02 01"), "has a character other than"},
		{"auto senml json invalid name", fa, []byte(`[{"n":"a b","v":1}]`), "has a character other than"},

		// Size cap.
		{"json over size cap", fj, plPadded(maxBytes + 1), "over the 1048576-byte limit"},
		{"cbor over size cap", fc, append([]byte{0x5a, 0x00, 0x10, 0x00, 0x00}, make([]byte, 1<<20)...), "over the 1048576-byte limit"},
		{"auto over size cap", fa, plPadded(2 << 20), "over the 1048576-byte limit"},
		{"number over size cap", fn, append([]byte("1"), bytes.Repeat([]byte{' '}, maxBytes)...), "over the 1048576-byte limit"},

		// Huge integers.
		{"json 2^53+1", fj, []byte(`{"id":9007199254740993}`), "beyond ±2^53"},
		{"json -(2^53+1)", fj, []byte(`{"id":-9007199254740993}`), "beyond ±2^53"},
		{"json 2^64", fj, []byte(`18446744073709551616`), "beyond ±2^53"},
		{"json 100 digits", fj, []byte(strings.Repeat("9", 100)), "beyond ±2^53"},
		{"json 17 digits", fj, []byte(`[-10000000000000000]`), "beyond ±2^53"},
		{"number 2^53+1", fn, []byte(`9007199254740993`), "beyond ±2^53"},
		{"cbor uint 2^53+1", fc, h("1b 00 20 00 00 00 00 00 01"), "beyond ±2^53"},
		{"cbor uint max", fc, h("a1 61 61 1b ff ff ff ff ff ff ff ff"), "beyond ±2^53"},
		{"cbor nint -2^53-1", fc, h("3b 00 20 00 00 00 00 00 00"), "beyond ±2^53"},
		{"cbor nint beyond int64", fc, h("3b ff ff ff ff ff ff ff ff"), "beyond ±2^53"},
		{"senml json huge value", fsj, []byte(`[{"n":"a","v":12345678901234567890}]`), "beyond ±2^53"},
		{"senml cbor huge value", fsc, h("81 a2 00 61 61 02 1b 00 20 00 00 00 00 00 01"), "beyond ±2^53"},
		{"senml cbor huge negative time", fsc, h("81 a3 00 61 61 02 01 06 3b 00 20 00 00 00 00 00 00"), "beyond ±2^53"},
		{"senml cbor nint beyond int64", fsc, h("81 a2 00 61 61 02 3b ff ff ff ff ff ff ff ff"), "beyond ±2^53"},
		{"senml cbor huge version", fsc, h("81 a3 00 61 61 02 01 20 1b ff ff ff ff ff ff ff ff"), "senml:"},

		// Bare numbers.
		{"number empty", fn, nil, "empty payload"},
		{"number blank", fn, []byte(" \n"), "empty payload"},
		{"number NaN", fn, []byte(`NaN`), "invalid number"},
		{"number Inf", fn, []byte(`Inf`), "invalid number"},
		{"number plus minus", fn, []byte(`+-1`), "not a decimal number"},
		{"number plus only", fn, []byte(`+`), "invalid number"},
		{"number hex", fn, []byte(`0x1A`), "not a decimal number"},
		{"number underscore", fn, []byte(`1_000`), "not a decimal number"},
		{"number comma", fn, []byte(`1,5`), "not a decimal number"},
		{"number overflow", fn, []byte(`1e999`), "overflows float64"},
		{"number json", fn, []byte(`{"a":1}`), "invalid number"},

		// Auto: nothing recognisable.
		{"auto empty", fa, nil, "empty payload"},
		{"auto text", fa, []byte("hello"), "cannot tell the payload format"},
		{"auto json string", fa, []byte(`"hello"`), "cannot tell the payload format"},
		{"auto cbor integer", fa, h("01"), "cannot tell the payload format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := Decode(tc.f, "", tc.payload, plBase())
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode = %d records, %v; want ErrMalformed", len(recs), err)
			}
			if recs != nil {
				t.Errorf("Decode returned %d records with its error", len(recs))
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q does not mention %q", err, tc.reason)
			}
			if len(err.Error()) > 300 {
				t.Errorf("error is %d bytes long: %.100q...", len(err.Error()), err)
			}
			// The reason is deterministic: dead-lettered replays match.
			if _, err2 := Decode(tc.f, "", tc.payload, plBase()); err2 == nil || err2.Error() != err.Error() {
				t.Errorf("second decode: %v, first: %v", err2, err)
			}
		})
	}
}

// TestDecodeLimitBoundaries checks that each limit accepts its maximum.
func TestDecodeLimitBoundaries(t *testing.T) {
	for _, tc := range []struct {
		name    string
		f       Format
		payload []byte
	}{
		{"json 32 nested arrays", FormatJSON, plNest("[", "", "]", 32)},
		{"json 32 nested objects", FormatJSON, plNest(`{"a":`, "1", "}", 32)},
		{"cbor 32 nested arrays", FormatCBOR, append(bytes.Repeat([]byte{0x81}, 32), 0x00)},
		{"cbor 32 nested maps", FormatCBOR, append(bytes.Repeat([]byte{0xa1, 0x61, 0x61}, 32), 0x00)},
		{"json 10000 array", FormatJSON, plJSONArray(10_000)},
		{"json 10000 object", FormatJSON, plJSONObject(10_000)},
		{"cbor 10000 array", FormatCBOR, plCBORArray(10_000)},
		{"cbor 10000 map", FormatCBOR, plCBORMap(10_000)},
		{"json at size cap", FormatJSON, plPadded(maxBytes)},
		{"auto at size cap", FormatAuto, plPadded(maxBytes)},
		{"number at size cap", FormatNumber, append([]byte("1"), bytes.Repeat([]byte{' '}, maxBytes-1)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.payload) > maxBytes {
				t.Fatalf("test payload is %d bytes", len(tc.payload))
			}
			recs, err := Decode(tc.f, "", tc.payload, plBase())
			if err != nil || len(recs) != 1 {
				t.Fatalf("Decode = %d records, %v; want 1 record", len(recs), err)
			}
		})
	}
}

// TestDecodeCBORErrorCost is a regression test: a CBOR value failing deep
// inside nested maps was normalized again at every level to find the
// smallest failing key, doubling the work per level, so that 31 nested
// maps (a 102-byte payload) took about half an hour.
func TestDecodeCBORErrorCost(t *testing.T) {
	leaves := map[string][]byte{
		"huge integer":  plHex(t, "1b 00 20 00 00 00 00 00 01"),
		"simple value":  plHex(t, "f0"),
		"huge negative": plHex(t, "3b ff ff ff ff ff ff ff ff"),
	}
	for name, leaf := range leaves {
		t.Run(name, func(t *testing.T) {
			for _, p := range [][]byte{
				append(bytes.Repeat(plHex(t, "a1 61 61"), maxDepth-1), leaf...),
				// Siblings that decode fine at every level.
				append(bytes.Repeat(plHex(t, "a3 61 78 01 61 79 80 61 61"), maxDepth-1), leaf...),
				// Maps inside arrays.
				append(bytes.Repeat(plHex(t, "a1 61 61 81"), (maxDepth-1)/2), leaf...),
			} {
				start := time.Now()
				_, err := Decode(FormatCBOR, "", p, plBase())
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("Decode(% x) = %v, want ErrMalformed", p, err)
				}
				if d := time.Since(start); d > 2*time.Second {
					t.Fatalf("Decode took %v", d)
				}
			}
		})
	}
}

// TestDecodeCBORErrorDeterministic checks that a map with several bad
// values reports the same one, the smallest key's, whatever the map
// iteration order.
func TestDecodeCBORErrorDeterministic(t *testing.T) {
	// {"d": 2^53+1, "a": {"z": 2^64-1, "b": simple(16), "y": 1}, "c": -2^64}
	p := plHex(t, "a3 61 64 1b 00 20 00 00 00 00 00 01 61 61 a3 61 7a 1b ff ff ff ff ff ff ff ff 61 62 f0 61 79 01 61 63 3b ff ff ff ff ff ff ff ff")
	const want = "rules: malformed payload: cbor: unassigned simple value 16"
	for range 200 {
		if _, err := Decode(FormatCBOR, "", p, plBase()); err == nil || err.Error() != want {
			t.Fatalf("Decode error = %v, want %q", err, want)
		}
	}
}

// TestDecodeDoesNotRetainPayload checks that decoded strings do not alias
// the payload buffer, which the transport may reuse.
func TestDecodeDoesNotRetainPayload(t *testing.T) {
	for _, tc := range []struct {
		name    string
		f       Format
		payload []byte
	}{
		{"json", FormatJSON, []byte(`{"k":"abc","e":"a\nb"}`)},
		{"cbor", FormatCBOR, plCBOR(t, map[string]any{"k": "abc", "e": "a\nb"})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := bytes.Clone(tc.payload)
			recs, err := Decode(tc.f, "", p, plBase())
			if err != nil {
				t.Fatal(err)
			}
			for i := range p {
				p[i] = 'X'
			}
			plCheckOne(t, recs, plBase(), map[string]any{"k": "abc", "e": "a\nb"})
		})
	}
}

func BenchmarkDecodeJSON(b *testing.B) {
	payload := []byte(`{"temp_c":21.5,"hum":40}`)
	base := plBase()
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		recs, err := Decode(FormatJSON, "", payload, base)
		if err != nil || len(recs) != 1 {
			b.Fatal(err)
		}
	}
}
