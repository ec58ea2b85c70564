package payload

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ferrygw/ferry/gateway/rules/record"
	"github.com/fxamacker/cbor/v2"
)

// The seed corpora are in testdata/fuzz/FuzzDecode and
// testdata/fuzz/FuzzSenML (RFC 8428's examples, the malformed inputs of
// the unit tests, and any crashers found); the f.Add seeds here cover each
// format once so the fuzzers start from every decoder.

// plFuzzFormats maps FuzzDecode's format byte to a format.
var plFuzzFormats = [...]Format{FormatAuto, FormatJSON, FormatCBOR, FormatSenMLJSON, FormatSenMLCBOR, FormatNumber}

func plFuzzFormat(b byte) Format { return plFuzzFormats[int(b)%len(plFuzzFormats)] }

func FuzzDecode(f *testing.F) {
	f.Add(byte(0), "", []byte(`{"temp_c":21.5,"hum":40}`))
	f.Add(byte(1), "", []byte(`{"a":[1,"x",true,null,{"b":-2.5e-3}],"s":"\u00e9\ud83d\ude00"}`))
	f.Add(byte(2), "", plCBOR(f, map[string]any{"a": []any{1, -2, 1.5, "x", []byte{1}, true, nil}}))
	f.Add(byte(3), "", []byte(smRFC512b))
	f.Add(byte(4), "", plCBOR(f, smCBORPack512b()))
	f.Add(byte(5), "", []byte("21.5\n"))
	f.Add(byte(0), "application/senml+json", []byte(smRFC513))
	f.Add(byte(0), "application/cbor", plCBOR(f, map[string]any{"x": 1}))
	f.Add(byte(0), "text/plain; charset=utf-8", []byte("-7"))
	f.Add(byte(0), "", plCBOR(f, smCBORPack512b()))

	base := plBase()
	f.Fuzz(func(t *testing.T, fb byte, ct string, payload []byte) {
		format := plFuzzFormat(fb)
		start := time.Now()
		recs, err := Decode(format, ct, payload, base)
		plFuzzCheckCost(t, start, payload)
		recs2, err2 := Decode(format, ct, payload, base)
		if (err == nil) != (err2 == nil) || err != nil && err.Error() != err2.Error() {
			t.Fatalf("Decode is not deterministic: %v, then %v", err, err2)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			if recs != nil {
				t.Fatalf("%d records returned with error %v", len(recs), err)
			}
			if n := len(err.Error()); n > 400 {
				t.Fatalf("error is %d bytes: %.200q", n, err)
			}
			return
		}
		if len(recs) == 0 {
			t.Fatal("no records and no error")
		}
		for i, r := range recs {
			plFuzzCheckRecord(t, r, i, base)
		}
		if !reflect.DeepEqual(recs, recs2) {
			t.Fatal("Decode is not deterministic: records differ")
		}

		// FormatFor names the decoder Decode used, and that decoder alone
		// gives the same records.
		concrete, err := FormatFor(format, ct, payload)
		if err != nil {
			t.Fatalf("Decode succeeded but FormatFor failed: %v", err)
		}
		if concrete != format {
			again, err := Decode(concrete, "", payload, base)
			if err != nil || !reflect.DeepEqual(again, recs) {
				t.Fatalf("Decode(%q) = %v, differs from Decode(%q, %q)", concrete, err, format, ct)
			}
		}

		switch concrete {
		case FormatJSON:
			// The strict parser accepts nothing encoding/json rejects and
			// yields the same values.
			var v any
			if err := json.Unmarshal(payload, &v); err != nil {
				t.Fatalf("accepted JSON that encoding/json rejects: %v", err)
			}
			want, ok := v.(map[string]any)
			if !ok {
				want = map[string]any{"value": v}
			}
			if !reflect.DeepEqual(recs[0].Fields, want) {
				t.Fatalf("Fields = %#v, encoding/json gives %#v", recs[0].Fields, want)
			}
		case FormatCBOR:
			if err := cbor.Wellformed(payload); err != nil {
				t.Fatalf("accepted CBOR that is not well-formed: %v", err)
			}
		case FormatNumber:
			s := strings.TrimPrefix(strings.Trim(string(payload), " \t\r\n"), "+")
			n, err := strconv.ParseFloat(s, 64)
			if err != nil || recs[0].Fields["value"] != n {
				t.Fatalf("number %q: Fields %v, strconv gives %v, %v", payload, recs[0].Fields, n, err)
			}
		case FormatSenMLJSON, FormatSenMLCBOR:
			for i, r := range recs {
				smFuzzCheckRecord(t, r, i)
			}
		}
	})
}

// plFuzzCheckCost fails if decoding payload took far longer than a linear
// decoder could: a megabyte decodes in milliseconds, and fuzz inputs are
// small. (Decoding a 102-byte CBOR payload once took half an hour.)
func plFuzzCheckCost(t *testing.T, start time.Time, payload []byte) {
	t.Helper()
	if d := time.Since(start); d > time.Second+time.Duration(len(payload))*time.Microsecond {
		t.Fatalf("decoding %d bytes took %v", len(payload), d)
	}
}

// plFuzzCheckRecord checks the invariants of every decoded record.
func plFuzzCheckRecord(t *testing.T, r *record.Record, i int, base record.Record) {
	t.Helper()
	if r == nil || r.Fields == nil {
		t.Fatalf("record %d is nil or has nil Fields", i)
	}
	wantKey := base.Key
	if i > 0 {
		wantKey = fmt.Sprintf("%s#%d", base.Key, i)
	}
	if r.Key != wantKey || r.Source != base.Source || r.Topic != base.Topic {
		t.Fatalf("record %d: identity %q %q %q", i, r.Key, r.Source, r.Topic)
	}
	plFuzzCheckValue(t, r.Fields, fmt.Sprintf("record %d", i), 0)
	// A record always re-encodes as JSON (which refuses NaN and ±Inf).
	if _, err := json.Marshal(r.Fields); err != nil {
		t.Fatalf("record %d does not re-encode as JSON: %v", i, err)
	}
}

// plFuzzCheckValue checks that v is in the Fields model, recursively: no
// NaN or infinite number anywhere, only valid UTF-8, bounded nesting. The
// path to a bad value is built only when there is one.
func plFuzzCheckValue(t *testing.T, v any, path string, depth int) {
	t.Helper()
	if where, what := plFuzzBadValue(v, depth); what != "" {
		t.Fatalf("%s%s: %s", path, where, what)
	}
}

// plFuzzBadValue returns the path below v to a value outside the Fields
// model, and what is wrong with it; what is empty if all is well.
func plFuzzBadValue(v any, depth int) (where, what string) {
	if depth > maxDepth+1 {
		return "", fmt.Sprintf("nested %d levels deep", depth)
	}
	switch x := v.(type) {
	case nil, bool:
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "", fmt.Sprintf("non-finite number %v", x)
		}
	case string:
		if !utf8.ValidString(x) {
			return "", fmt.Sprintf("invalid UTF-8 %q", x)
		}
	case []any:
		if len(x) > maxElems {
			return "", fmt.Sprintf("%d elements", len(x))
		}
		for i, e := range x {
			if where, what := plFuzzBadValue(e, depth+1); what != "" {
				return fmt.Sprintf("[%d]%s", i, where), what
			}
		}
	case map[string]any:
		if len(x) > maxElems {
			return "", fmt.Sprintf("%d members", len(x))
		}
		for k, e := range x {
			if !utf8.ValidString(k) {
				return "", fmt.Sprintf("invalid UTF-8 key %q", k)
			}
			if where, what := plFuzzBadValue(e, depth+1); what != "" {
				return "." + strconv.Quote(k) + where, what
			}
		}
	default:
		return "", fmt.Sprintf("%T is not in the Fields model", v)
	}
	return "", ""
}

// smFuzzCheckRecord checks a resolved SenML record's Fields.
func smFuzzCheckRecord(t *testing.T, r *record.Record, i int) {
	t.Helper()
	name, ok := r.Fields["name"].(string)
	if !ok || senmlCheckName(name) != nil || name == "" {
		t.Fatalf("record %d: bad name %#v", i, r.Fields["name"])
	}
	values := 0
	for k, v := range r.Fields {
		var ok bool
		switch k {
		case "name":
			ok = true
		case "unit", "string_value":
			_, ok = v.(string)
		case "value", "sum":
			_, ok = v.(float64)
		case "bool_value":
			_, ok = v.(bool)
		case "data_value":
			var s string
			if s, ok = v.(string); ok {
				_, err := base64.RawURLEncoding.Strict().DecodeString(s)
				ok = err == nil
			}
		case "time":
			var f float64
			if f, ok = v.(float64); ok {
				want := float64(r.Time.Unix()) + float64(r.Time.Nanosecond())/1e9
				ok = math.Abs(f-want) <= 1e-6*math.Max(1, math.Abs(want))
			}
		}
		if !ok {
			t.Fatalf("record %d: bad field %q = %#v", i, k, v)
		}
		if k == "value" || k == "string_value" || k == "bool_value" || k == "data_value" {
			values++
		}
	}
	if _, hasTime := r.Fields["time"]; !hasTime {
		t.Fatalf("record %d: no time", i)
	}
	if _, hasSum := r.Fields["sum"]; values > 1 || values == 0 && !hasSum {
		t.Fatalf("record %d: %d values in %v", i, values, r.Fields)
	}
	if r.Time.Nanosecond()%1000 != 0 {
		t.Fatalf("record %d: time %v is not whole microseconds", i, r.Time)
	}
	if y := r.Time.Year(); y < 1700 || y > 9999 {
		t.Fatalf("record %d: time %v out of range", i, r.Time)
	}
}

func FuzzSenML(f *testing.F) {
	f.Add([]byte(smRFC512b), false)
	f.Add([]byte(smRFC513), false)
	f.Add([]byte(`[{"bn":"d/","bv":1,"bs":2,"bu":"W","bver":10,"n":"a","v":1,"s":1,"t":-1,"ut":5},{"n":"b","vs":"x"},{"n":"c","vb":true},{"n":"d","vd":"aGkgCg=="}]`), false)
	f.Add(plCBOR(f, smCBORPack512b()), true)
	f.Add(plCBOR(f, []map[any]any{{-1: 10, -2: "d/", -3: -10, -4: "W", -5: 100, -6: 0.5, 0: "p", 2: -1, 5: 1.5, 6: 4, 7: 60, "x": 1}, {0: "q", 8: []byte("hi")}}), true)

	base := plBase()
	f.Fuzz(func(t *testing.T, payload []byte, asCBOR bool) {
		format := FormatSenMLJSON
		if asCBOR {
			format = FormatSenMLCBOR
		}
		start := time.Now()
		recs, err := Decode(format, "", payload, base)
		plFuzzCheckCost(t, start, payload)
		if err != nil {
			if !errors.Is(err, ErrMalformed) || recs != nil {
				t.Fatalf("Decode = %d records, %v; want ErrMalformed and none", len(recs), err)
			}
			return
		}
		if len(recs) == 0 || len(recs) > senmlMaxRecords {
			t.Fatalf("%d records", len(recs))
		}
		for i, r := range recs {
			plFuzzCheckRecord(t, r, i, base)
			smFuzzCheckRecord(t, r, i)
		}
		if asCBOR {
			return
		}
		// The same pack in CBOR, with integer labels, resolves the same.
		c, ok := smJSONPackToCBOR(t, payload)
		if !ok {
			return
		}
		crecs, err := Decode(FormatSenMLCBOR, "", c, base)
		if err != nil {
			t.Fatalf("JSON pack decodes, its CBOR form % x does not: %v", c, err)
		}
		if !reflect.DeepEqual(crecs, recs) {
			t.Fatalf("JSON and CBOR forms decode differently:\n%v\n%v", smFuzzDump(recs), smFuzzDump(crecs))
		}
	})
}

// smJSONPackToCBOR transcodes a valid SenML JSON pack to SenML CBOR:
// labels to their integers, vd to a byte string, bver to an unsigned
// integer. ok is false if the CBOR form is over the size limit.
func smJSONPackToCBOR(t *testing.T, payload []byte) (_ []byte, ok bool) {
	t.Helper()
	var pack []map[string]any
	if err := json.Unmarshal(payload, &pack); err != nil {
		t.Fatalf("decoded SenML JSON that encoding/json rejects: %v", err)
	}
	labels := make(map[string]int64, senmlLabels)
	for _, info := range senmlLabel {
		labels[info.json] = info.cbor
	}
	out := make([]map[any]any, len(pack))
	for i, rec := range pack {
		m := make(map[any]any, len(rec))
		for k, v := range rec {
			l, known := labels[k]
			if !known {
				m[k] = v
				continue
			}
			switch k {
			case "vd":
				s := strings.TrimRight(v.(string), "=")
				b, err := base64.RawURLEncoding.DecodeString(s)
				if err != nil {
					t.Fatalf("accepted vd %q: %v", v, err)
				}
				v = b
			case "bver":
				v = uint64(v.(float64))
			}
			m[l] = v
		}
		out[i] = m
	}
	b, err := cbor.Marshal(out)
	if err != nil {
		t.Fatalf("cbor.Marshal: %v", err)
	}
	return b, len(b) <= maxBytes
}

func smFuzzDump(recs []*record.Record) string {
	var b bytes.Buffer
	for _, r := range recs {
		fmt.Fprintf(&b, "%s %v %v\n", r.Key, r.Time, r.Fields)
	}
	return b.String()
}
