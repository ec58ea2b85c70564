package uplink

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/ferrygw/ferry/event"
)

func fixedEvent(t testing.TB) event.Event {
	t.Helper()
	id, err := event.ParseID("01ARZ3NDEKTSV4RRFFQ69G5FAV")
	if err != nil {
		t.Fatal(err)
	}
	return event.Event{
		ID:          id,
		Stream:      "telemetry",
		Source:      "sensor-7",
		Topic:       "plant/line1/temp",
		Time:        time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("CEST", 2*3600)),
		ContentType: "application/json",
		Payload:     []byte(`{"t":21.5,"unit":"C"}`),
		Attrs:       map[string]string{"unit": "C", "b": "x\"y"},
	}
}

func TestJSONGolden(t *testing.T) {
	ev := fixedEvent(t)
	got := AppendJSON(nil, "gw-1", &ev)
	want := `{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","gateway":"gw-1","stream":"telemetry","source":"sensor-7","topic":"plant/line1/temp","ts":"2024-05-06T05:08:09.123456789Z","content_type":"application/json","payload":{"t":21.5,"unit":"C"},"attrs":{"b":"x\"y","unit":"C"}}`
	if string(got) != want {
		t.Fatalf("golden mismatch\n got %s\nwant %s", got, want)
	}
	ev.Payload = []byte{0xff, 0x00, 'a'}
	ev.Attrs = nil
	ev.Time = time.Time{}
	got = AppendJSON(nil, "gw-1", &ev)
	want = `{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","gateway":"gw-1","stream":"telemetry","source":"sensor-7","topic":"plant/line1/temp","content_type":"application/json","payload_b64":"/wBh"}`
	if string(got) != want {
		t.Fatalf("golden (binary) mismatch\n got %s\nwant %s", got, want)
	}
}

// sameEvent compares events by value, treating nil and empty payloads and
// attrs alike and times by instant.
func sameEvent(a, b *event.Event) bool {
	if a.ID != b.ID || a.Stream != b.Stream || a.Source != b.Source || a.Topic != b.Topic ||
		a.ContentType != b.ContentType || !bytes.Equal(a.Payload, b.Payload) || !a.Time.Equal(b.Time) {
		return false
	}
	if len(a.Attrs) == 0 && len(b.Attrs) == 0 {
		return true
	}
	return reflect.DeepEqual(a.Attrs, b.Attrs)
}

func roundTripEvents(t testing.TB) []event.Event {
	base := fixedEvent(t)
	mk := func(f func(e *event.Event)) event.Event {
		e := base
		f(&e)
		return e
	}
	return []event.Event{
		base,
		mk(func(e *event.Event) { e.Payload = nil; e.Attrs = nil }),
		mk(func(e *event.Event) { e.Payload = []byte(" 1 ") }),
		mk(func(e *event.Event) { e.Payload = []byte("null") }),
		mk(func(e *event.Event) { e.Payload = []byte(`[1, 2 ,{"a" : "b"}]`) }),
		mk(func(e *event.Event) { e.Payload = []byte("plain text") }),
		mk(func(e *event.Event) { e.Payload = []byte{0, 1, 2, 0xfe, 0xff} }),
		mk(func(e *event.Event) { e.Payload = []byte(`"\xff"`) }),
		mk(func(e *event.Event) { e.Topic = "a/\"b\"/\\c\n\u2028\x01ü"; e.Time = time.Time{} }),
		mk(func(e *event.Event) { e.Stream = ""; e.Source = ""; e.ContentType = "" }),
	}
}

func TestRoundTrip(t *testing.T) {
	evs := roundTripEvents(t)
	for _, f := range []Format{FormatJSON, FormatCBOR} {
		for i := range evs {
			msg, err := EncodeMessage(nil, f, "gw", evs[i:i+1], false)
			if err != nil {
				t.Fatalf("%s #%d: encode: %v", f, i, err)
			}
			got, err := DecodeMessage(msg)
			if err != nil {
				t.Fatalf("%s #%d: decode %q: %v", f, i, msg, err)
			}
			if len(got) != 1 || !sameEvent(&got[0], &evs[i]) {
				t.Fatalf("%s #%d: got %+v want %+v", f, i, got, evs[i])
			}
		}
		for _, n := range []int{1, 2, len(evs)} {
			msg, err := EncodeMessage(nil, f, "gw", evs[:n], true)
			if err != nil {
				t.Fatalf("%s batch %d: encode: %v", f, n, err)
			}
			got, err := DecodeMessage(msg)
			if err != nil {
				t.Fatalf("%s batch %d: decode: %v", f, n, err)
			}
			if len(got) != n {
				t.Fatalf("%s batch %d: got %d events", f, n, len(got))
			}
			for i := range got {
				if !sameEvent(&got[i], &evs[i]) {
					t.Fatalf("%s batch %d #%d: got %+v want %+v", f, n, i, got[i], evs[i])
				}
			}
		}
	}
}

func TestCBORSingleIsEventMarshal(t *testing.T) {
	ev := fixedEvent(t)
	want, err := event.Marshal(&ev)
	if err != nil {
		t.Fatal(err)
	}
	got, err := AppendCBOR(nil, &ev)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("AppendCBOR = %x, %v; want %x", got, err, want)
	}
}

func TestEncodeMessageErrors(t *testing.T) {
	ev := fixedEvent(t)
	tests := []struct {
		name  string
		f     Format
		evs   []event.Event
		batch bool
		want  error
	}{
		{"empty", FormatJSON, nil, true, ErrBatchShape},
		{"two single", FormatJSON, []event.Event{ev, ev}, false, ErrBatchShape},
		{"format", Format("xml"), []event.Event{ev}, false, ErrFormat},
	}
	for _, tt := range tests {
		if _, err := EncodeMessage(nil, tt.f, "gw", tt.evs, tt.batch); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestDecodeMessageRejects(t *testing.T) {
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"spaces", "  \n"},
		{"bad id", `{"id":"nope"}`},
		{"both payloads", `{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","payload":1,"payload_b64":"AA=="}`},
		{"bad b64", `{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","payload_b64":"!!"}`},
		{"bad ts", `{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","ts":"yesterday"}`},
		{"empty batch", `[]`},
		{"trailing", `{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV"} x`},
		{"cbor empty", "\x80"},
		{"cbor int", "\x01"},
		{"cbor truncated", "\x88\x50\x01"},
		{"cbor batch of ints", "\x82\x01\x02"},
	}
	for _, tt := range tests {
		if _, err := DecodeMessage([]byte(tt.in)); !errors.Is(err, ErrMalformedMessage) {
			t.Errorf("%s: err = %v, want ErrMalformedMessage", tt.name, err)
		}
	}
}

// FuzzDecodeMessage checks that DecodeMessage never panics and that whatever
// it accepts re-encodes to messages that decode to the same events.
func FuzzDecodeMessage(f *testing.F) {
	for _, ev := range roundTripEvents(f) {
		for _, fm := range []Format{FormatJSON, FormatCBOR} {
			for _, batch := range []bool{false, true} {
				msg, err := EncodeMessage(nil, fm, "gw", []event.Event{ev}, batch)
				if err != nil {
					f.Fatal(err)
				}
				f.Add(msg)
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, err := DecodeMessage(b)
		if err != nil {
			return
		}
		for _, fm := range []Format{FormatJSON, FormatCBOR} {
			msg, err := EncodeMessage(nil, fm, "gw", evs, true)
			if err != nil {
				continue // e.g. a JSON time CBOR cannot carry
			}
			again, err := DecodeMessage(msg)
			if err != nil {
				if y := evs[0].Time.Year(); fm == FormatJSON && (y < 0 || y > 9999) {
					continue
				}
				t.Fatalf("%s re-encoding of %q does not decode: %v", fm, b, err)
			}
			if len(again) != len(evs) {
				t.Fatalf("%s: %d events became %d", fm, len(evs), len(again))
			}
		}
	})
}

func TestFuzzCorpusPresent(t *testing.T) {
	for _, name := range []string{"FuzzDecodeMessage", "FuzzDecodeEnvelopes"} {
		ents, err := os.ReadDir(filepath.Join("testdata", "fuzz", name))
		if err != nil || len(ents) == 0 {
			t.Fatalf("%s seed corpus missing: %v", name, err)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	ev := fixedEvent(b)
	evs := make([]event.Event, 50)
	for i := range evs {
		evs[i] = ev
	}
	bin := ev
	bin.Payload = bytes.Repeat([]byte{0xfe}, 64)
	env := Envelope{Event: ev, Gateway: "gw", Seq: 123456, Epoch: "00c0ffee12345678"}
	sensors := sensorBatch(10)
	comp, err := NewCompressor()
	if err != nil {
		b.Fatal(err)
	}
	cases := []struct {
		name string
		fn   func(dst []byte) ([]byte, error)
	}{
		{"json", func(dst []byte) ([]byte, error) { return AppendJSON(dst, "gw", &ev), nil }},
		{"json-b64", func(dst []byte) ([]byte, error) { return AppendJSON(dst, "gw", &bin), nil }},
		{"json-batch50", func(dst []byte) ([]byte, error) { return AppendJSONBatch(dst, "gw", evs), nil }},
		{"cbor", func(dst []byte) ([]byte, error) { return AppendCBOR(dst, &ev) }},
		{"cbor-batch50", func(dst []byte) ([]byte, error) { return AppendCBORBatch(dst, evs) }},
		{"json-seq", func(dst []byte) ([]byte, error) { return AppendEnvelopeJSON(dst, &env), nil }},
		{"cbor-seq", func(dst []byte) ([]byte, error) { return AppendEnvelopeCBOR(dst, &env) }},
		{"senml-batch10", func(dst []byte) ([]byte, error) { return EncodeEnvelopes(dst, FormatSenMLCBOR, sensors, true) }},
		{"senml-batch10-zstd", func(dst []byte) ([]byte, error) {
			msg, err := EncodeEnvelopes(dst, FormatSenMLCBOR, sensors, true)
			return comp.Append(msg[len(msg):], msg), err
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 64<<10)
			for b.Loop() {
				var err error
				if buf, err = c.fn(buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

// TestEncodeAllocs: the forwarder's encoders stay allocation-free when the
// buffer has room (a gap's reasons aside).
func TestEncodeAllocs(t *testing.T) {
	ev := fixedEvent(t)
	env := Envelope{Event: ev, Gateway: "gw", Seq: 123456, Epoch: "00c0ffee12345678", Replay: true}
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { buf = AppendEnvelopeJSON(buf[:0], &env) }); n != 0 {
		t.Errorf("AppendEnvelopeJSON: %v allocations", n)
	}
	sensors := sensorBatch(10)
	var p senmlPack
	var fields [senmlMaxFields]senmlField
	m := seqMeta{seq: 7, epoch: "00c0ffee12345678"}
	if n := testing.AllocsPerRun(100, func() {
		p.reset()
		buf = buf[:0]
		for i := range sensors {
			buf, _ = p.encode(buf, "gw", &sensors[i].Event, &m, &fields)
			p.commit(&sensors[i].Event, &m)
		}
	}); n != 0 {
		t.Errorf("SenML records: %v allocations", n)
	}
}
