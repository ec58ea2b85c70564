package payload

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/rules/record"
	"github.com/fxamacker/cbor/v2"
)

// smWant is one expected resolved SenML record.
type smWant struct {
	key    string
	time   time.Time
	fields map[string]any
}

// smAt returns the UTC time sec seconds and us microseconds after the epoch.
func smAt(sec, us int64) time.Time { return time.Unix(sec, us*1000).UTC() }

// smRel returns plBase().Time moved by d.
func smRel(d time.Duration) time.Time { return plBase().Time.Add(d) }

// smCheck checks recs against want, record by record and field by field.
func smCheck(t *testing.T, recs []*record.Record, want []smWant) {
	t.Helper()
	base := plBase()
	if len(recs) != len(want) {
		t.Fatalf("got %d records, want %d", len(recs), len(want))
	}
	for i, r := range recs {
		w := want[i]
		if r.Key != w.key {
			t.Errorf("record %d: Key = %q, want %q", i, r.Key, w.key)
		}
		if !r.Time.Equal(w.time) {
			t.Errorf("record %d: Time = %v, want %v", i, r.Time, w.time)
		}
		if r.Source != base.Source || r.Topic != base.Topic {
			t.Errorf("record %d: Source, Topic = %q, %q; want %q, %q", i, r.Source, r.Topic, base.Source, base.Topic)
		}
		for k, v := range w.fields {
			if got, ok := r.Fields[k]; !ok || !reflect.DeepEqual(got, v) {
				t.Errorf("record %d: Fields[%q] = %#v (present %v), want %#v", i, k, got, ok, v)
			}
		}
		for k, v := range r.Fields {
			if _, ok := w.fields[k]; !ok {
				t.Errorf("record %d: unexpected field %q = %#v", i, k, v)
			}
		}
	}
}

// smKey returns the Key of the n-th record of the event plBase().
func smKey(n int) string {
	if n == 0 {
		return plBase().Key
	}
	return fmt.Sprintf("%s#%d", plBase().Key, n)
}

// RFC 8428 section 5.1.2, second example: voltage and current at
// 2010-06-08T18:01:16.001Z and current for the 5 seconds before.
const smRFC512b = `[
  {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
   "bu":"A","bver":5,
   "n":"voltage","u":"V","v":120.1},
  {"n":"current","t":-5,"v":1.2},
  {"n":"current","t":-4,"v":1.3},
  {"n":"current","t":-3,"v":1.4},
  {"n":"current","t":-2,"v":1.5},
  {"n":"current","t":-1,"v":1.6},
  {"n":"current","v":1.7}
]`

func smWant512b() []smWant {
	const bn = "urn:dev:ow:10e2073a0108006:"
	w := []smWant{{smKey(0), smAt(1276020076, 1000), map[string]any{
		"name": bn + "voltage", "unit": "V", "value": 120.1, "time": 1276020076.001}}}
	for i, v := range []float64{1.2, 1.3, 1.4, 1.5, 1.6, 1.7} {
		sec := int64(1276020071 + i)
		w = append(w, smWant{smKey(i + 1), smAt(sec, 1000), map[string]any{
			"name": bn + "current", "unit": "A", "value": v, "time": float64(sec) + 0.001}})
	}
	return w
}

// RFC 8428 section 5.1.3: humidity and position of a mobile device, with
// times relative to an absolute base time.
const smRFC513 = `[
  {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,
   "bu":"%RH","v":20},
  {"u":"lon","v":24.30621},
  {"u":"lat","v":60.07965},
  {"t":60,"v":20.3},
  {"u":"lon","t":60,"v":24.30622},
  {"u":"lat","t":60,"v":60.07965},
  {"t":120,"v":20.7},
  {"u":"lon","t":120,"v":24.30623},
  {"u":"lat","t":120,"v":60.07966},
  {"u":"%EL","t":150,"v":98},
  {"t":180,"v":21.2},
  {"u":"lon","t":180,"v":24.30628},
  {"u":"lat","t":180,"v":60.07967}
]`

// RFC 8428 section 5.1.4: the records of section 5.1.3, resolved.
const smRFC514 = `[
  {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067464e+09,
   "v":20},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067464e+09,
   "v":24.30621},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067464e+09,
   "v":60.07965},
  {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067524e+09,
   "v":20.3},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067524e+09,
   "v":24.30622},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067524e+09,
   "v":60.07965},
  {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067584e+09,
   "v":20.7},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067584e+09,
   "v":24.30623},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067584e+09,
   "v":60.07966},
  {"n":"urn:dev:ow:10e2073a01080063","u":"%EL","t":1.320067614e+09,
   "v":98},
  {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067644e+09,
   "v":21.2},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067644e+09,
   "v":24.30628},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067644e+09,
   "v":60.07967}
]`

func smWant513() []smWant {
	const n = "urn:dev:ow:10e2073a01080063"
	var w []smWant
	for i, r := range []struct {
		unit string
		sec  int64
		v    float64
	}{
		{"%RH", 1320067464, 20}, {"lon", 1320067464, 24.30621}, {"lat", 1320067464, 60.07965},
		{"%RH", 1320067524, 20.3}, {"lon", 1320067524, 24.30622}, {"lat", 1320067524, 60.07965},
		{"%RH", 1320067584, 20.7}, {"lon", 1320067584, 24.30623}, {"lat", 1320067584, 60.07966},
		{"%EL", 1320067614, 98},
		{"%RH", 1320067644, 21.2}, {"lon", 1320067644, 24.30628}, {"lat", 1320067644, 60.07967},
	} {
		w = append(w, smWant{smKey(i), smAt(r.sec, 0), map[string]any{
			"name": n, "unit": r.unit, "value": r.v, "time": float64(r.sec)}})
	}
	return w
}

func TestSenMLRFC8428Examples(t *testing.T) {
	now := plBase().Time
	for _, tc := range []struct {
		name string
		pack string
		want []smWant
	}{
		{"5.1.1 single datapoint",
			`[
  {"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}
]`,
			[]smWant{{smKey(0), now, map[string]any{
				"name": "urn:dev:ow:10e2073a01080063", "unit": "Cel", "value": 23.1, "time": plBaseUnix}}}},
		{"5.1.2 multiple datapoints now",
			`[
  {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
  {"n":"current","u":"A","v":1.2}
]`,
			[]smWant{
				{smKey(0), now, map[string]any{
					"name": "urn:dev:ow:10e2073a01080063:voltage", "unit": "V", "value": 120.1, "time": plBaseUnix}},
				{smKey(1), now, map[string]any{
					"name": "urn:dev:ow:10e2073a01080063:current", "unit": "A", "value": 1.2, "time": plBaseUnix}},
			}},
		{"5.1.2 multiple datapoints with times", smRFC512b, smWant512b()},
		{"5.1.3 multiple measurements", smRFC513, smWant513()},
		{"5.1.4 resolved data", smRFC514, smWant513()},
		{"5.1.5 multiple data types",
			`[
  {"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
  {"n":"label","vs":"Machine Room"},
  {"n":"open","vb":false},
  {"n":"nfc-reader","vd":"aGkgCg"}
]`,
			[]smWant{
				{smKey(0), now, map[string]any{
					"name": "urn:dev:ow:10e2073a01080063:temp", "unit": "Cel", "value": 23.1, "time": plBaseUnix}},
				{smKey(1), now, map[string]any{
					"name": "urn:dev:ow:10e2073a01080063:label", "string_value": "Machine Room", "time": plBaseUnix}},
				{smKey(2), now, map[string]any{
					"name": "urn:dev:ow:10e2073a01080063:open", "bool_value": false, "time": plBaseUnix}},
				{smKey(3), now, map[string]any{
					"name": "urn:dev:ow:10e2073a01080063:nfc-reader", "data_value": "aGkgCg", "time": plBaseUnix}},
			}},
		{"5.1.6 collection of resources",
			`[
  {"bn":"2001:db8::2/","bt":1.320078429e+09,
   "n":"temperature","u":"Cel","v":25.2},
  {"n":"humidity","u":"%RH","v":30},
  {"bn":"2001:db8::1/","n":"temperature","u":"Cel","v":12.3},
  {"n":"humidity","u":"%RH","v":67}
]`,
			[]smWant{
				{smKey(0), smAt(1320078429, 0), map[string]any{
					"name": "2001:db8::2/temperature", "unit": "Cel", "value": 25.2, "time": 1320078429.0}},
				{smKey(1), smAt(1320078429, 0), map[string]any{
					"name": "2001:db8::2/humidity", "unit": "%RH", "value": 30.0, "time": 1320078429.0}},
				{smKey(2), smAt(1320078429, 0), map[string]any{
					"name": "2001:db8::1/temperature", "unit": "Cel", "value": 12.3, "time": 1320078429.0}},
				{smKey(3), smAt(1320078429, 0), map[string]any{
					"name": "2001:db8::1/humidity", "unit": "%RH", "value": 67.0, "time": 1320078429.0}},
			}},
		{"5.1.7 setting an actuator",
			`[
  {"bn":"urn:dev:ow:10e2073a01080063:"},
  {"n":"temp","u":"Cel","v":23.1},
  {"n":"heat","u":"/","v":1},
  {"n":"fan","u":"/","v":0}
]`,
			[]smWant{
				{smKey(0), now, map[string]any{
					"name": "urn:dev:ow:10e2073a01080063:temp", "unit": "Cel", "value": 23.1, "time": plBaseUnix}},
				{smKey(1), now, map[string]any{
					"name": "urn:dev:ow:10e2073a01080063:heat", "unit": "/", "value": 1.0, "time": plBaseUnix}},
				{smKey(2), now, map[string]any{
					"name": "urn:dev:ow:10e2073a01080063:fan", "unit": "/", "value": 0.0, "time": plBaseUnix}},
			}},
		{"5.1.7 synchronized lights off",
			`[
  {"bt":1.320078429e+09,"bu":"/","n":"2001:db8::3","v":0.5},
  {"n":"2001:db8::4","v":0.5},
  {"n":"2001:db8::3","t":0.1,"v":0},
  {"n":"2001:db8::4","t":0.1,"v":0}
]`,
			[]smWant{
				{smKey(0), smAt(1320078429, 0), map[string]any{
					"name": "2001:db8::3", "unit": "/", "value": 0.5, "time": 1320078429.0}},
				{smKey(1), smAt(1320078429, 0), map[string]any{
					"name": "2001:db8::4", "unit": "/", "value": 0.5, "time": 1320078429.0}},
				{smKey(2), smAt(1320078429, 100_000), map[string]any{
					"name": "2001:db8::3", "unit": "/", "value": 0.0, "time": 1320078429.1}},
				{smKey(3), smAt(1320078429, 100_000), map[string]any{
					"name": "2001:db8::4", "unit": "/", "value": 0.0, "time": 1320078429.1}},
			}},
		{"4.8 SenSML stream as a pack",
			`[
  {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,
   "bu":"%RH","v":21.2},
  {"t":10,"v":21.3},
  {"t":20,"v":21.4}
]`,
			[]smWant{
				{smKey(0), smAt(1320067464, 0), map[string]any{
					"name": "urn:dev:ow:10e2073a01080063", "unit": "%RH", "value": 21.2, "time": 1320067464.0}},
				{smKey(1), smAt(1320067474, 0), map[string]any{
					"name": "urn:dev:ow:10e2073a01080063", "unit": "%RH", "value": 21.3, "time": 1320067474.0}},
				{smKey(2), smAt(1320067484, 0), map[string]any{
					"name": "urn:dev:ow:10e2073a01080063", "unit": "%RH", "value": 21.4, "time": 1320067484.0}},
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := Decode(FormatSenMLJSON, "", []byte(tc.pack), plBase())
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			smCheck(t, recs, tc.want)
			// Without a content type, sniffing finds the pack too.
			auto, err := Decode(FormatAuto, "", []byte(tc.pack), plBase())
			if err != nil || !reflect.DeepEqual(auto, recs) {
				t.Errorf("auto-detected decode differs: %v", err)
			}
		})
	}
}

// TestSenMLRelativeTimes checks times below 2^28, which are relative to
// the time the gateway accepted the event (base.Time).
func TestSenMLRelativeTimes(t *testing.T) {
	for _, tc := range []struct {
		name string
		pack string
		want []smWant
	}{
		{"relative t, no bt",
			`[{"bn":"dev-7/","n":"temp","u":"Cel","v":20,"t":-10},
			  {"n":"temp","v":21,"t":-5.5},
			  {"n":"temp","v":22},
			  {"n":"temp","v":23,"t":2.25}]`,
			[]smWant{
				{smKey(0), smRel(-10 * time.Second), map[string]any{"name": "dev-7/temp", "unit": "Cel", "value": 20.0, "time": plBaseUnix - 10}},
				{smKey(1), smRel(-5500 * time.Millisecond), map[string]any{"name": "dev-7/temp", "value": 21.0, "time": plBaseUnix - 5.5}},
				{smKey(2), smRel(0), map[string]any{"name": "dev-7/temp", "value": 22.0, "time": plBaseUnix}},
				{smKey(3), smRel(2250 * time.Millisecond), map[string]any{"name": "dev-7/temp", "value": 23.0, "time": plBaseUnix + 2.25}},
			}},
		{"relative bt plus t",
			`[{"bt":-60,"bn":"d/","n":"a","v":1},
			  {"n":"a","t":30,"v":2},
			  {"bt":-1,"n":"a","t":-0.5,"v":3}]`,
			[]smWant{
				{smKey(0), smRel(-60 * time.Second), map[string]any{"name": "d/a", "value": 1.0, "time": plBaseUnix - 60}},
				{smKey(1), smRel(-30 * time.Second), map[string]any{"name": "d/a", "value": 2.0, "time": plBaseUnix - 30}},
				{smKey(2), smRel(-1500 * time.Millisecond), map[string]any{"name": "d/a", "value": 3.0, "time": plBaseUnix - 1.5}},
			}},
		{"rounded to the microsecond",
			`[{"n":"a","v":1,"t":-1.2345675},{"n":"a","v":2,"t":0.0000004},{"n":"a","v":3,"t":-0.0000006}]`,
			[]smWant{
				{smKey(0), smRel(-1234568 * time.Microsecond), map[string]any{"name": "a", "value": 1.0, "time": plBaseUnix - 2 + 0.765432}},
				{smKey(1), smRel(0), map[string]any{"name": "a", "value": 2.0, "time": plBaseUnix}},
				{smKey(2), smRel(-time.Microsecond), map[string]any{"name": "a", "value": 3.0, "time": plBaseUnix - 1 + 0.999999}},
			}},
		{"just below 2^28 is relative",
			`[{"n":"a","v":1,"t":268435455}]`,
			[]smWant{{smKey(0), smRel(268435455 * time.Second), map[string]any{"name": "a", "value": 1.0, "time": plBaseUnix + 268435455}}}},
		{"2^28 is absolute",
			`[{"n":"a","v":1,"t":268435456}]`,
			[]smWant{{smKey(0), smAt(268435456, 0), map[string]any{"name": "a", "value": 1.0, "time": 268435456.0}}}},
		{"relative bt, absolute sum",
			`[{"bt":-1e9,"n":"a","v":1,"t":1268435456}]`,
			[]smWant{{smKey(0), smAt(268435456, 0), map[string]any{"name": "a", "value": 1.0, "time": 268435456.0}}}},
		{"far past relative",
			`[{"n":"a","v":1,"t":-8.9e9}]`,
			[]smWant{{smKey(0), smRel(-8_900_000_000 * time.Second), map[string]any{"name": "a", "value": 1.0, "time": plBaseUnix - 8.9e9}}}},
		{"end of year 9999",
			`[{"n":"a","v":1,"t":253402300799}]`,
			[]smWant{{smKey(0), smAt(253402300799, 0), map[string]any{"name": "a", "value": 1.0, "time": 253402300799.0}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := Decode(FormatSenMLJSON, "", []byte(tc.pack), plBase())
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			smCheck(t, recs, tc.want)
		})
	}
}

// TestSenMLResolution checks base value, base sum, units, data values,
// versions, extensions and keys.
func TestSenMLResolution(t *testing.T) {
	now := plBase().Time
	for _, tc := range []struct {
		name string
		pack string
		want []smWant
	}{
		{"base value and base sum",
			`[{"bn":"meter/","bu":"kWh","bv":1000,"bs":10,"n":"e","v":5,"s":2},
			  {"n":"e","v":-1.5},
			  {"n":"s","s":0.5},
			  {"n":"label","vs":"x"}]`,
			[]smWant{
				{smKey(0), now, map[string]any{"name": "meter/e", "unit": "kWh", "value": 1005.0, "sum": 12.0, "time": plBaseUnix}},
				{smKey(1), now, map[string]any{"name": "meter/e", "unit": "kWh", "value": 998.5, "sum": 10.0, "time": plBaseUnix}},
				{smKey(2), now, map[string]any{"name": "meter/s", "unit": "kWh", "sum": 10.5, "time": plBaseUnix}},
				{smKey(3), now, map[string]any{"name": "meter/label", "unit": "kWh", "string_value": "x", "sum": 10.0, "time": plBaseUnix}},
			}},
		{"sum without base sum, value without base value",
			`[{"n":"a","s":3,"v":1},{"n":"b","v":2}]`,
			[]smWant{
				{smKey(0), now, map[string]any{"name": "a", "value": 1.0, "sum": 3.0, "time": plBaseUnix}},
				{smKey(1), now, map[string]any{"name": "b", "value": 2.0, "time": plBaseUnix}},
			}},
		{"unit overrides base unit, empty unit kept",
			`[{"bu":"Cel","n":"a","v":1},{"n":"b","u":"K","v":2},{"n":"c","u":"","v":3}]`,
			[]smWant{
				{smKey(0), now, map[string]any{"name": "a", "unit": "Cel", "value": 1.0, "time": plBaseUnix}},
				{smKey(1), now, map[string]any{"name": "b", "unit": "K", "value": 2.0, "time": plBaseUnix}},
				{smKey(2), now, map[string]any{"name": "c", "unit": "", "value": 3.0, "time": plBaseUnix}},
			}},
		{"base name alone is the name",
			`[{"bn":"urn:dev:mac:0024befffe804ff1","v":1}]`,
			[]smWant{{smKey(0), now, map[string]any{"name": "urn:dev:mac:0024befffe804ff1", "value": 1.0, "time": plBaseUnix}}}},
		{"later base fields apply to later records; keys count emitted records",
			`[{"bn":"a/"},{"n":"x","v":1},{"bn":"b/","bt":-2},{"n":"y","vb":true},{"bn":"c/","n":"z","v":3}]`,
			[]smWant{
				{smKey(0), now, map[string]any{"name": "a/x", "value": 1.0, "time": plBaseUnix}},
				{smKey(1), smRel(-2 * time.Second), map[string]any{"name": "b/y", "bool_value": true, "time": plBaseUnix - 2}},
				{smKey(2), smRel(-2 * time.Second), map[string]any{"name": "c/z", "value": 3.0, "time": plBaseUnix - 2}},
			}},
		{"data values: padding forgiven and removed, empty allowed",
			`[{"n":"a","vd":"aGkgCg=="},{"n":"b","vd":"-_8B"},{"n":"c","vd":""}]`,
			[]smWant{
				{smKey(0), now, map[string]any{"name": "a", "data_value": "aGkgCg", "time": plBaseUnix}},
				{smKey(1), now, map[string]any{"name": "b", "data_value": "-_8B", "time": plBaseUnix}},
				{smKey(2), now, map[string]any{"name": "c", "data_value": "", "time": plBaseUnix}},
			}},
		{"versions and update time",
			`[{"bver":10,"n":"a","v":1,"ut":60},{"bver":10,"n":"b","v":2}]`,
			[]smWant{
				{smKey(0), now, map[string]any{"name": "a", "value": 1.0, "time": plBaseUnix}},
				{smKey(1), now, map[string]any{"name": "b", "value": 2.0, "time": plBaseUnix}},
			}},
		{"unknown labels are ignored",
			`[{"n":"a","v":1,"foo":[1,{"x":null}],"l":"link","_x":1}]`,
			[]smWant{{smKey(0), now, map[string]any{"name": "a", "value": 1.0, "time": plBaseUnix}}}},
		{"all name characters",
			`[{"bn":"Az09-:./_","n":"-:./_zZ","v":1}]`,
			[]smWant{{smKey(0), now, map[string]any{"name": "Az09-:./_-:./_zZ", "value": 1.0, "time": plBaseUnix}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := Decode(FormatSenMLJSON, "", []byte(tc.pack), plBase())
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			smCheck(t, recs, tc.want)
		})
	}
}

// smCBORPack512b is the pack of RFC 8428 section 6's example (the second
// example of section 5.1.2), with the integer labels of table 4.
func smCBORPack512b() []map[int]any {
	p := []map[int]any{{
		-2: "urn:dev:ow:10e2073a0108006:", -3: 1276020076.001, -4: "A", -1: 5,
		0: "voltage", 1: "V", 2: 120.1,
	}}
	for i, v := range []float64{1.2, 1.3, 1.4, 1.5, 1.6, 1.7} {
		p = append(p, map[int]any{0: "current", 6: i - 5, 2: v})
	}
	return p
}

func TestSenMLCBORRFC8428Section6(t *testing.T) {
	pack := smCBORPack512b()
	plain, err := cbor.Marshal(pack) // floats as float64, like the RFC's bytes
	if err != nil {
		t.Fatal(err)
	}
	// The RFC's encoding starts with an array of 7 and a map of 7 whose
	// base name is a 27-byte text string.
	if !bytes.Contains(plain, []byte{0x21, 0x78, 0x1b}) || plain[0] != 0x87 || plain[1] != 0xa7 {
		t.Fatalf("unexpected encoding % x", plain[:8])
	}
	fromJSON, err := Decode(FormatSenMLJSON, "", []byte(smRFC512b), plBase())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		f       Format
		ct      string
		payload []byte
	}{
		{"float64", FormatSenMLCBOR, "", plain},
		{"shortest floats, sorted keys", FormatSenMLCBOR, "", plCBOR(t, pack)},
		{"content type", FormatAuto, "application/senml+cbor", plain},
		{"sniffed", FormatAuto, "", plain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := Decode(tc.f, tc.ct, tc.payload, plBase())
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			smCheck(t, recs, smWant512b())
			if !reflect.DeepEqual(recs, fromJSON) {
				t.Errorf("CBOR and JSON forms of the pack decode differently")
			}
		})
	}
}

func TestSenMLCBOR(t *testing.T) {
	now := plBase().Time
	for _, tc := range []struct {
		name string
		pack any
		want []smWant
	}{
		{"5.1.5 multiple data types", []map[int]any{
			{-2: "urn:dev:ow:10e2073a01080063:", 0: "temp", 1: "Cel", 2: 23.1},
			{0: "label", 3: "Machine Room"},
			{0: "open", 4: false},
			{0: "nfc-reader", 8: []byte("hi \n")},
		}, []smWant{
			{smKey(0), now, map[string]any{"name": "urn:dev:ow:10e2073a01080063:temp", "unit": "Cel", "value": 23.1, "time": plBaseUnix}},
			{smKey(1), now, map[string]any{"name": "urn:dev:ow:10e2073a01080063:label", "string_value": "Machine Room", "time": plBaseUnix}},
			{smKey(2), now, map[string]any{"name": "urn:dev:ow:10e2073a01080063:open", "bool_value": false, "time": plBaseUnix}},
			{smKey(3), now, map[string]any{"name": "urn:dev:ow:10e2073a01080063:nfc-reader", "data_value": "aGkgCg", "time": plBaseUnix}},
		}},
		{"all labels, integers and half floats", []map[int]any{
			{-1: 10, -2: "d/", -3: -10, -4: "W", -5: 100, -6: 0.5, 0: "p", 2: -1, 5: 1.5, 6: 4, 7: 60},
			{0: "q", 1: "V", 2: 2.5, 6: -0.5},
		}, []smWant{
			{smKey(0), smRel(-6 * time.Second), map[string]any{"name": "d/p", "unit": "W", "value": 99.0, "sum": 2.0, "time": plBaseUnix - 6}},
			{smKey(1), smRel(-10500 * time.Millisecond), map[string]any{"name": "d/q", "unit": "V", "value": 102.5, "sum": 0.5, "time": plBaseUnix - 10.5}},
		}},
		{"text keys and unknown labels are extensions", []map[any]any{
			{0: "a", 2: 1, "n": "ignored", "x": []any{1, "y"}, 9: "ignored", -7: "ignored"},
		}, []smWant{
			{smKey(0), now, map[string]any{"name": "a", "value": 1.0, "time": plBaseUnix}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := Decode(FormatSenMLCBOR, "", plCBOR(t, tc.pack), plBase())
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			smCheck(t, recs, tc.want)
		})
	}
}

func TestSenMLMalformed(t *testing.T) {
	records := func(n int) string {
		return "[" + strings.TrimSuffix(strings.Repeat(`{"n":"a","v":1},`, n), ",") + "]"
	}
	for _, tc := range []struct {
		name   string
		pack   string
		reason string
	}{
		{"not an array", `{"n":"a","v":1}`, "pack is not an array"},
		{"scalar", `1`, "pack is not an array"},
		{"empty pack", `[]`, "empty pack"},
		{"record not an object", `[{"n":"a","v":1},2]`, "record 1 is not an object"},
		{"empty record", `[{}]`, "record 0 has no SenML labels"},
		{"unknown labels only", `[{"foo":1}]`, "record 0 has no SenML labels"},
		{"base fields only", `[{"bn":"a","bt":1}]`, "no records with a value or sum"},
		{"no value", `[{"n":"a"}]`, "no value (v, vs, vb or vd) and no sum"},
		{"time but no value", `[{"n":"a","v":1},{"n":"a","t":1}]`, "record 1 has no value"},
		{"base value is not a value", `[{"n":"a","bv":1}]`, "record 0 has no value"},
		{"base sum is not a sum", `[{"n":"a","bs":1,"u":"W"}]`, "record 0 has no value"},
		{"too many records", records(1001), "pack has 1001 records, over the limit of 1000"},
		{"v and vb", `[{"n":"a","v":1,"vb":true}]`, "2 value fields"},
		{"vs and vd", `[{"n":"a","vs":"x","vd":"AA"}]`, "2 value fields"},
		{"name with space", `[{"n":"a b","v":1}]`, "has a character other than"},
		{"name with quote", `[{"n":"a\"b","v":1}]`, "has a character other than"},
		{"name with NUL", `[{"n":"a\u0000","v":1}]`, "has a character other than"},
		{"name starting with underscore", `[{"n":"_a","v":1}]`, "must start with a letter or digit"},
		{"empty name, empty base name", `[{"bn":"","n":"","v":1}]`, "empty name"},
		{"must-understand label", `[{"n":"a","v":1,"z_":1,"foo_":1}]`, "must-understand label \"foo_\""},
		{"n not a string", `[{"n":1,"v":1}]`, "n must be a string"},
		{"bn not a string", `[{"bn":null,"n":"a","v":1}]`, "bn must be a string"},
		{"bu not a string", `[{"bu":1,"n":"a","v":1}]`, "bu must be a string"},
		{"u not a string", `[{"u":true,"n":"a","v":1}]`, "u must be a string"},
		{"v not a number", `[{"n":"a","v":"1"}]`, "v must be a number"},
		{"bv not a number", `[{"n":"a","bv":null,"v":1}]`, "bv must be a number"},
		{"bt not a number", `[{"n":"a","bt":"now","v":1}]`, "bt must be a number"},
		{"bs not a number", `[{"n":"a","bs":[],"v":1}]`, "bs must be a number"},
		{"s not a number", `[{"n":"a","s":{}}]`, "s must be a number"},
		{"t not a number", `[{"n":"a","v":1,"t":"1"}]`, "t must be a number"},
		{"ut not a number", `[{"n":"a","v":1,"ut":false}]`, "ut must be a number"},
		{"vs not a string", `[{"n":"a","vs":1}]`, "vs must be a string"},
		{"vb not a boolean", `[{"n":"a","vb":"true"}]`, "vb must be a boolean"},
		{"vd not a string", `[{"n":"a","vd":1}]`, "vd must be a base64url string"},
		{"vd standard base64", `[{"n":"a","vd":"a+b/"}]`, "vd is not base64url"},
		{"vd non-canonical", `[{"n":"a","vd":"aGkgCh"}]`, "vd is not base64url"},
		{"vd with newline", `[{"n":"a","vd":"aGkg\nCg"}]`, "vd is not base64url"},
		{"vd impossible length", `[{"n":"a","vd":"aGkgC"}]`, "vd is not base64url"},
		{"vd too much padding", `[{"n":"a","vd":"aGkgCg==="}]`, "vd is not base64url"},
		{"bver zero", `[{"bver":0,"n":"a","v":1}]`, "bver must be a positive integer"},
		{"bver fraction", `[{"bver":1.5,"n":"a","v":1}]`, "bver must be a positive integer"},
		{"bver string", `[{"bver":"10","n":"a","v":1}]`, "bver must be a positive integer"},
		{"bver huge", `[{"bver":1e300,"n":"a","v":1}]`, "bver must be a positive integer"},
		{"bver newer", `[{"bver":11,"n":"a","v":1}]`, "version 11 is newer than the supported 10"},
		{"bver differs", `[{"bver":5,"n":"a","v":1},{"bver":6,"n":"a","v":1}]`, "record 1: version 6 differs from the pack's 5"},
		{"time after 9999", `[{"n":"a","v":1,"t":253402300800}]`, "after year 9999"},
		{"relative time too far back", `[{"n":"a","v":1,"t":-1e10}]`, "too far in the past"},
		{"bt + t overflows", `[{"bt":1.7e308,"n":"a","v":1,"t":1.7e308}]`, "bt + t overflows float64"},
		{"bv + v overflows", `[{"bv":-1.7e308,"n":"a","v":-1.7e308}]`, "bv + v overflows float64"},
		{"bs + s overflows", `[{"bs":1.7e308,"n":"a","s":1.7e308}]`, "bs + s overflows float64"},
		{"error names the record", `[{"n":"a","v":1},{"bn":"x"},{"n":"b c","v":1}]`, "record 2:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := Decode(FormatSenMLJSON, "", []byte(tc.pack), plBase())
			if !errors.Is(err, ErrMalformed) || recs != nil {
				t.Fatalf("Decode = %d records, %v; want ErrMalformed", len(recs), err)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q does not mention %q", err, tc.reason)
			}
		})
	}
	t.Run("1000 records", func(t *testing.T) {
		recs, err := Decode(FormatSenMLJSON, "", []byte(records(1000)), plBase())
		if err != nil || len(recs) != 1000 || recs[999].Key != smKey(999) {
			t.Fatalf("Decode = %d records, %v", len(recs), err)
		}
	})
}

// TestSenMLNameLimit is a regression test: a base name near 1 MiB shared
// by 1,000 records was copied into each record's name, so one payload cost
// a gigabyte and seconds of CPU time.
func TestSenMLNameLimit(t *testing.T) {
	name := func(n int) string { return strings.Repeat("a", n) }
	for _, tc := range []struct {
		name   string
		pack   string
		reason string // empty: accepted
	}{
		{"1024-byte name", `[{"n":"` + name(1024) + `","v":1}]`, ""},
		{"1024-byte name from bn and n", `[{"bn":"` + name(1000) + `","n":"` + name(24) + `","v":1}]`, ""},
		{"1025-byte name", `[{"n":"` + name(1025) + `","v":1}]`, "record 0: name of 1025 bytes is over the 1024-byte limit"},
		{"1025-byte name from bn and n", `[{"bn":"` + name(1000) + `"},{"n":"` + name(25) + `","v":1}]`, "record 1: name of 1025 bytes"},
		{"base name alone", `[{"bn":"` + name(1025) + `"},{"v":1}]`, "record 1: name of 1025 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := Decode(FormatSenMLJSON, "", []byte(tc.pack), plBase())
			if tc.reason == "" {
				if err != nil || len(recs) != 1 {
					t.Fatalf("Decode = %d records, %v", len(recs), err)
				}
				return
			}
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("Decode error = %v, want ErrMalformed mentioning %q", err, tc.reason)
			}
		})
	}

	t.Run("1 MiB base name shared by 1000 records", func(t *testing.T) {
		recs := strings.TrimSuffix(strings.Repeat(`{"n":"a","v":1},`, 999), ",")
		bn := name(maxBytes - len(recs) - 100)
		for _, tc := range []struct {
			f Format
			p []byte
		}{
			{FormatSenMLJSON, []byte(`[{"bn":"` + bn + `","n":"a","v":1},` + recs + `]`)},
			{FormatSenMLCBOR, plCBOR(t, append([]map[int]any{{-2: bn, 2: 1}}, smRepeat(map[int]any{0: "a", 2: 1}, 999)...))},
		} {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := Decode(tc.f, "", tc.p, plBase())
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s: Decode error = %v, want ErrMalformed", tc.f, err)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
				t.Errorf("%s: Decode allocated %d MB for a %d-byte payload", tc.f, alloc>>20, len(tc.p))
			}
		}
	})
}

// smRepeat returns n copies of v.
func smRepeat[T any](v T, n int) []T {
	s := make([]T, n)
	for i := range s {
		s[i] = v
	}
	return s
}

func TestSenMLCBORMalformed(t *testing.T) {
	enc := func(v any) []byte { return plCBOR(t, v) }
	h := func(s string) []byte { return plHex(t, s) }
	for _, tc := range []struct {
		name    string
		payload []byte
		reason  string
	}{
		{"empty", nil, "empty payload"},
		{"not an array", enc(map[int]any{0: "a", 2: 1}), "pack is not an array"},
		{"empty pack", h("80"), "empty pack"},
		{"record not a map", enc([]any{map[int]any{0: "a", 2: 1}, 1}), "record 1 is not a map"},
		{"indefinite-length array", h("9f a2 00 61 61 02 01 ff"), "indefinite-length"},
		{"indefinite-length map", h("81 bf 00 61 61 02 01 ff"), "indefinite-length"},
		{"indefinite-length text", h("81 a2 00 7f 61 61 ff 02 01"), "indefinite-length"},
		{"tagged value", h("81 a2 00 61 61 02 c1 01"), "tags are not accepted"},
		{"float key", h("81 a3 00 61 61 02 01 f9 3c 00 01"), "map key is not an integer label or a text string"},
		{"bool key", h("81 a3 00 61 61 02 01 f5 01"), "map key is not an integer label or a text string"},
		{"byte-string key", h("81 a3 00 61 61 02 01 41 00 01"), "cbor:"},
		{"array key", h("81 a3 00 61 61 02 01 80 01"), "map key is not an integer label or a text string"},
		{"two value fields", enc([]map[int]any{{0: "a", 2: 1, 3: "x"}}), "2 value fields"},
		{"n not text", enc([]map[int]any{{0: []byte("a"), 2: 1}}), "n must be a text string"},
		{"v not a number", enc([]map[int]any{{0: "a", 2: "1"}}), "v must be a number"},
		{"v null", enc([]map[int]any{{0: "a", 2: nil}}), "v must be a number"},
		{"vb not a bool", enc([]map[int]any{{0: "a", 4: 1}}), "vb must be a boolean"},
		{"vd text", enc([]map[int]any{{0: "a", 8: "aGkgCg"}}), "vd must be a byte string"},
		{"bver negative", enc([]map[int]any{{-1: -5, 0: "a", 2: 1}}), "bver must be a positive unsigned integer"},
		{"bver zero", enc([]map[int]any{{-1: 0, 0: "a", 2: 1}}), "bver must be a positive unsigned integer"},
		{"bver float", enc([]map[int]any{{-1: 5.0, 0: "a", 2: 1}}), "bver must be a positive unsigned integer"},
		{"bver newer", enc([]map[int]any{{-1: 11, 0: "a", 2: 1}}), "newer than the supported 10"},
		{"must-understand text label", enc([]map[any]any{{0: "a", 2: 1, "x_": 1}}), "must-understand label \"x_\""},
		{"invalid name", enc([]map[int]any{{-2: "a", 0: " b", 2: 1}}), "has a character other than"},
		{"no value", enc([]map[int]any{{0: "a", 6: 1}}), "no value"},
		{"base fields only", enc([]map[int]any{{-2: "a"}}), "no records with a value or sum"},
		{"time after 9999", enc([]map[int]any{{0: "a", 2: 1, 6: uint64(253402300800)}}), "after year 9999"},
		{"too many records", append([]byte{0x99, 0x03, 0xe9}, bytes.Repeat(h("a2 00 61 61 02 01"), 1001)...), "over the limit of 1000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := Decode(FormatSenMLCBOR, "", tc.payload, plBase())
			if !errors.Is(err, ErrMalformed) || recs != nil {
				t.Fatalf("Decode = %d records, %v; want ErrMalformed", len(recs), err)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q does not mention %q", err, tc.reason)
			}
		})
	}
}
