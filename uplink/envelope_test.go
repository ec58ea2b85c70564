package uplink

import (
	"bytes"
	"compress/flate"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/ferrygw/ferry/event"
)

// h concatenates annotated hex pieces and strips the spaces.
func h(parts ...string) string { return strings.ReplaceAll(strings.Join(parts, ""), " ", "") }

// goldenEvent is the event of the golden tables: small, every field set
// but attrs.
func goldenEvent() event.Event {
	return event.Event{
		ID:      event.ID{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10},
		Stream:  "t",
		Source:  "s1",
		Topic:   "a/b",
		Time:    time.Unix(1700000000, 0),
		Payload: []byte(`{"v":1}`),
	}
}

// goldenEventCBOR is event.Marshal(goldenEvent()) without its array head.
var goldenEventCBOR = h(
	"50 0102030405060708090a0b0c0d0e0f10", // id
	"61 74",                               // stream "t"
	"62 7331",                             // source "s1"
	"63 612f62",                           // topic "a/b"
	"1b 17979cfe362a0000",                 // time, Unix ns
	"60",                                  // content type ""
	"47 7b2276223a317d",                   // payload {"v":1}
	"f6",                                  // attrs: none
)

const goldenEpoch = "00c0ffee12345678"

var goldenGap = &Gap{Dropped: 3, Reasons: map[string]uint64{"overflow": 2, "ttl": 1}}

// goldenEnvelopes are the exact bytes of each form of envelope (as in
// mochi's tpackets.go): a change is a change of the wire format every
// cloud consumer reads, and must be deliberate.
var goldenEnvelopes = []struct {
	name   string
	format Format
	batch  bool
	envs   []Envelope
	want   string // JSON text, or hex for CBOR
}{
	{
		name: "json", format: FormatJSON,
		envs: []Envelope{{Event: goldenEvent(), Gateway: "gw-1", Seq: 42, Epoch: goldenEpoch}},
		want: `{"id":"01081G81860W40J2GB1G6GW3RG","gateway":"gw-1","stream":"t","seq":42,"epoch":"00c0ffee12345678",` +
			`"source":"s1","topic":"a/b","ts":"2023-11-14T22:13:20Z","content_type":"","payload":{"v":1}}`,
	},
	{
		name: "json gap and replay", format: FormatJSON,
		envs: []Envelope{{Event: goldenEvent(), Gateway: "gw-1", Seq: 45, Epoch: goldenEpoch, Gap: goldenGap, Replay: true}},
		want: `{"id":"01081G81860W40J2GB1G6GW3RG","gateway":"gw-1","stream":"t","seq":45,"epoch":"00c0ffee12345678",` +
			`"gap":{"dropped":3,"reasons":{"ttl":1,"overflow":2}},"replay":true,` +
			`"source":"s1","topic":"a/b","ts":"2023-11-14T22:13:20Z","content_type":"","payload":{"v":1}}`,
	},
	{
		name: "json batch", format: FormatJSON, batch: true,
		envs: []Envelope{
			{Event: goldenEvent(), Gateway: "gw-1", Seq: 42, Epoch: goldenEpoch},
			{Event: goldenEvent(), Gateway: "gw-1", Seq: 43, Epoch: goldenEpoch},
		},
		want: `[{"id":"01081G81860W40J2GB1G6GW3RG","gateway":"gw-1","stream":"t","seq":42,"epoch":"00c0ffee12345678",` +
			`"source":"s1","topic":"a/b","ts":"2023-11-14T22:13:20Z","content_type":"","payload":{"v":1}},` +
			`{"id":"01081G81860W40J2GB1G6GW3RG","gateway":"gw-1","stream":"t","seq":43,"epoch":"00c0ffee12345678",` +
			`"source":"s1","topic":"a/b","ts":"2023-11-14T22:13:20Z","content_type":"","payload":{"v":1}}]`,
	},
	{
		name: "cbor", format: FormatCBOR,
		envs: []Envelope{{Event: goldenEvent(), Gateway: "gw-1", Seq: 42, Epoch: goldenEpoch}},
		want: h("8b", goldenEventCBOR,
			"64 67772d31",                          // gateway "gw-1"
			"18 2a",                                // seq 42
			"70 30306330666665653132333435363738"), // epoch
	},
	{
		name: "cbor gap", format: FormatCBOR,
		envs: []Envelope{{Event: goldenEvent(), Gateway: "gw-1", Seq: 45, Epoch: goldenEpoch, Gap: goldenGap}},
		want: h("8c", goldenEventCBOR, "64 67772d31", "18 2d", "70 30306330666665653132333435363738",
			"82 03 a2",                // gap: [3, {2 reasons}]
			"63 74746c 01",            // "ttl": 1 (shorter keys first)
			"68 6f766572666c6f77 02"), // "overflow": 2
	},
	{
		name: "cbor replay without gap", format: FormatCBOR,
		envs: []Envelope{{Event: goldenEvent(), Gateway: "gw-1", Seq: 1, Epoch: goldenEpoch, Replay: true}},
		want: h("8d", goldenEventCBOR, "64 67772d31", "01", "70 30306330666665653132333435363738",
			"f6",  // no gap
			"f5"), // replay
	},
	{
		name: "cbor batch", format: FormatCBOR, batch: true,
		envs: []Envelope{
			{Event: goldenEvent(), Gateway: "gw-1", Seq: 42, Epoch: goldenEpoch},
			{Event: goldenEvent(), Gateway: "gw-1", Seq: 43, Epoch: goldenEpoch},
		},
		want: h("82",
			"8b", goldenEventCBOR, "64 67772d31 18 2a 70 30306330666665653132333435363738",
			"8b", goldenEventCBOR, "64 67772d31 18 2b 70 30306330666665653132333435363738"),
	},
	{
		name: "senml pack", format: FormatSenMLCBOR, batch: true,
		envs: []Envelope{
			{Event: event.Event{Stream: "env", Source: "bme-1", Topic: "env/bme-1", Time: time.UnixMilli(1700000000500),
				Payload: []byte(`{"t":21.37,"h":45.2}`)}, Gateway: "gw-1", Seq: 7, Epoch: goldenEpoch},
			{Event: event.Event{Stream: "env", Source: "bme-1", Topic: "env/bme-1", Time: time.UnixMilli(1700000010500),
				Payload: []byte(`{ "t": 21.4, "h": 45 }`)}, Gateway: "gw-1", Seq: 8, Epoch: goldenEpoch},
			{Event: event.Event{Stream: "env", Source: "bme-2", Topic: "env/bme-2", Time: time.UnixMilli(1700000020000),
				Payload: []byte(`-3`)}, Gateway: "gw-1", Seq: 11, Epoch: goldenEpoch,
				Gap: &Gap{Dropped: 2, Reasons: map[string]uint64{"overflow": 2}}, Replay: true},
		},
		want: h("85", // 5 records
			// event 7, record 1 of 2: base name, base time, the first
			// field, the pack's and the event's ferry labels
			"a9",
			"21 66 626d652d312f",              // bn "bme-1/"
			"22 c4 82 22 1b 0000018bcfe569f4", // bt 1700000000500e-3
			"00 61 74",                        // n "t"
			"02 c4 82 21 19 0859",             // v 2137e-2
			"63 5f6777 64 67772d31",           // _gw "gw-1"
			"63 5f7374 63 656e76",             // _st "env"
			"63 5f6570 48 00c0ffee12345678",   // _ep, 8 bytes
			"63 5f7371 07",                    // _sq 7
			"63 5f7474 82 64 656e762f 60",     // _tt ["env/", ""]: topic "env/" + source
			"a2 00 61 68 02 c4 82 20 19 01c4", // n "h", v 452e-1
			// event 8: seq, source and topic follow from event 7
			"a3 22 c4 82 22 1b 0000018bcfe59104 00 61 74 02 c4 82 20 18 d6", // bt, n "t", v 214e-1
			"a2 00 61 68 02 18 2d", // n "h", v 45
			// event 11: a bare value after a gap, replayed; its topic
			// follows from _tt
			"a6",
			"21 66 626d652d322f", // bn "bme-2/"
			"22 1a 6553f114",     // bt 1700000020 (whole seconds)
			"02 22",              // v -3 (no name: the payload is the value)
			"63 5f7371 0b",       // _sq 11
			"63 5f6770 82 02 a1 68 6f766572666c6f77 02", // _gp [2, {"overflow": 2}]
			"63 5f7270 f5"), // _rp true
	},
}

func TestGoldenEnvelopes(t *testing.T) {
	for _, tt := range goldenEnvelopes {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EncodeEnvelopes(nil, tt.format, tt.envs, tt.batch)
			if err != nil {
				t.Fatal(err)
			}
			gotS := string(got)
			if tt.format != FormatJSON {
				gotS = hex.EncodeToString(got)
			}
			if gotS != tt.want {
				t.Fatalf("encoding\n got %s\nwant %s", gotS, tt.want)
			}
			back, err := DecodeEnvelopes(got)
			if err != nil {
				t.Fatal(err)
			}
			checkEnvelopes(t, back, tt.envs, tt.format == FormatSenMLCBOR)
		})
	}
}

// checkEnvelopes compares decoded envelopes with what was encoded. A SenML
// pack carries no ID and times to the millisecond, and its payloads come
// back as compact JSON.
func checkEnvelopes(t *testing.T, got, want []Envelope, senml bool) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d envelopes, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		wev := w.Event
		if senml {
			wev.ID = event.ID{}
			wev.Time = wev.Time.Truncate(time.Millisecond)
			wev.Payload = compactJSON(t, wev.Payload)
		}
		if !sameEvent(&g.Event, &wev) {
			t.Errorf("#%d: event\n got %+v (payload %s)\nwant %+v (payload %s)", i, g.Event, g.Event.Payload, wev, wev.Payload)
		}
		if g.Gateway != w.Gateway || g.Seq != w.Seq || g.Epoch != w.Epoch || g.Replay != w.Replay || !reflect.DeepEqual(g.Gap, w.Gap) {
			t.Errorf("#%d: sequence fields %q %d %q %v %s, want %q %d %q %v %s", i, g.Gateway, g.Seq, g.Epoch, g.Replay, gapString(g.Gap),
				w.Gateway, w.Seq, w.Epoch, w.Replay, gapString(w.Gap))
		}
	}
}

func compactJSON(t *testing.T, p []byte) []byte {
	var b bytes.Buffer
	b.Write(bytes.ReplaceAll(bytes.ReplaceAll(p, []byte(" "), nil), []byte("\n"), nil))
	return b.Bytes()
}

// TestOldMessagesDecode: messages from before sequence numbers decode
// with Seq 0 and no epoch; old CBOR ones without a gateway.
func TestOldMessagesDecode(t *testing.T) {
	ev := goldenEvent()
	for _, f := range []Format{FormatJSON, FormatCBOR} {
		for _, batch := range []bool{false, true} {
			msg, err := EncodeMessage(nil, f, "gw-1", []event.Event{ev, ev}[:map[bool]int{false: 1, true: 2}[batch]], batch)
			if err != nil {
				t.Fatal(err)
			}
			envs, err := DecodeEnvelopes(msg)
			if err != nil {
				t.Fatalf("%s batch %v: %v", f, batch, err)
			}
			for _, e := range envs {
				wantGW := "gw-1"
				if f == FormatCBOR {
					wantGW = ""
				}
				if e.Seq != 0 || e.Epoch != "" || e.Gap != nil || e.Replay || e.Gateway != wantGW || !sameEvent(&e.Event, &ev) {
					t.Errorf("%s batch %v: %+v", f, batch, e)
				}
			}
		}
	}
}

// TestSenMLEligibility: which payloads go in a SenML pack, and what comes
// back.
func TestSenMLEligibility(t *testing.T) {
	tests := []struct {
		payload string
		back    string // "" = not eligible
	}{
		{`{"temperature":21.37,"humidity":45.2,"pressure":1013.25}`, `{"temperature":21.37,"humidity":45.2,"pressure":1013.25}`},
		{"{\n  \"t\" : -0.5 ,\t\"ok\": true, \"off\":false }\n", `{"t":-0.5,"ok":true,"off":false}`},
		{`{"v":0.000}`, `{"v":0.000}`},
		{`{"v":-0.001,"w":10,"x":0}`, `{"v":-0.001,"w":10,"x":0}`},
		{`{"big":123456789012345678}`, `{"big":123456789012345678}`},
		{`21.5`, `21.5`},
		{` true `, `true`},
		{`{"a:b/c_d.e-f":1}`, `{"a:b/c_d.e-f":1}`},
		{`{"big":1234567890123456789}`, ""}, // 19 digits
		{`{"v":1e3}`, ""},
		{`{"v":-0}`, ""},
		{`{"v":-0.0}`, ""},
		{`{"v":01}`, ""},
		{`{"v":1.}`, ""},
		{`{"v":.5}`, ""},
		{`{"v":"21"}`, ""},
		{`{"v":null}`, ""},
		{`{"v":{"w":1}}`, ""},
		{`{"v":[1]}`, ""},
		{`{}`, ""},
		{`{"":1}`, ""},
		{`{"a b":1}`, ""},
		{`{"\u0061":1}`, ""},
		{`{"v":1,}`, ""},
		{`{"v":1} x`, ""},
		{`{"v":1`, ""},
		{`"text"`, ""},
		{``, ""},
		{`nul`, ""},
	}
	for _, tt := range tests {
		ev := event.Event{Stream: "s", Source: "dev-1", Time: time.UnixMilli(1700000000123), Payload: []byte(tt.payload)}
		var fields [senmlMaxFields]senmlField
		n, _ := senmlEligible(&ev, &fields)
		if (n > 0) != (tt.back != "") {
			t.Errorf("%q: %d fields, want eligible %v", tt.payload, n, tt.back != "")
			continue
		}
		if n == 0 {
			continue
		}
		msg, err := EncodeEnvelopes(nil, FormatSenMLCBOR, []Envelope{{Event: ev, Gateway: "g", Seq: 1}}, false)
		if err != nil {
			t.Fatal(err)
		}
		envs, err := DecodeEnvelopes(msg)
		if err != nil {
			t.Fatalf("%q: %v", tt.payload, err)
		}
		if string(envs[0].Event.Payload) != tt.back {
			t.Errorf("%q came back as %q, want %q", tt.payload, envs[0].Event.Payload, tt.back)
		}
	}
	// Fields of an event that are not payload.
	base := event.Event{Stream: "s", Source: "dev-1", Time: time.UnixMilli(1700000000123), Payload: []byte(`1`)}
	for name, mut := range map[string]func(*event.Event){
		"attrs":            func(e *event.Event) { e.Attrs = map[string]string{"unit": "C"} },
		"no source":        func(e *event.Event) { e.Source = "" },
		"source with ' '":  func(e *event.Event) { e.Source = "dev 1" },
		"source from '_'":  func(e *event.Event) { e.Source = "_dev" },
		"no time":          func(e *event.Event) { e.Time = time.Time{} },
		"time before 1978": func(e *event.Event) { e.Time = time.Unix(1<<28-1, 0) },
		"bad utf-8 topic":  func(e *event.Event) { e.Topic = "a\xff" },
	} {
		ev := base
		mut(&ev)
		var fields [senmlMaxFields]senmlField
		if n, _ := senmlEligible(&ev, &fields); n != 0 {
			t.Errorf("%s: eligible", name)
		}
	}
}

// TestSenMLMixedWithEnvelopes: a format senml+cbor message of events that
// cannot all go in a pack is CBOR envelopes.
func TestSenMLMixedWithEnvelopes(t *testing.T) {
	num := event.Event{Stream: "s", Source: "dev-1", Time: time.UnixMilli(1700000000123), Payload: []byte(`1`)}
	text := num
	text.Payload = []byte("on")
	msg, err := EncodeEnvelopes(nil, FormatSenMLCBOR, []Envelope{{Event: num, Seq: 1}, {Event: text, Seq: 2}}, true)
	if err != nil {
		t.Fatal(err)
	}
	if msg[0] != cborArray|2 || msg[1] != cborArray|11 {
		t.Fatalf("% x: want a CBOR batch of envelopes", msg[:2])
	}
	if _, err := EncodeEnvelopes(nil, FormatSenMLCBOR, []Envelope{{Event: num}, {Event: text}}, false); !errors.Is(err, ErrBatchShape) {
		t.Errorf("two envelopes unbatched: %v", err)
	}
}

// TestRoundTripEnvelopes: every event of roundTripEvents with and without
// sequence fields, in every format, single and batched, compressed or
// not, decodes to what was sent.
func TestRoundTripEnvelopes(t *testing.T) {
	c, err := NewCompressor()
	if err != nil {
		t.Fatal(err)
	}
	var envs []Envelope
	for i, ev := range roundTripEvents(t) {
		e := Envelope{Event: ev, Gateway: "gw", Seq: uint64(i + 1), Epoch: goldenEpoch}
		switch i % 3 {
		case 1:
			e.Gap = &Gap{Dropped: uint64(i), Reasons: map[string]uint64{"ttl": uint64(i)}}
		case 2:
			e.Replay = true
		}
		envs = append(envs, e)
	}
	for _, f := range []Format{FormatJSON, FormatCBOR, FormatSenMLCBOR} {
		for _, compress := range []bool{false, true} {
			for i := range envs {
				msg, err := EncodeEnvelopes(nil, f, envs[i:i+1], false)
				if err != nil {
					t.Fatalf("%s #%d: %v", f, i, err)
				}
				if compress {
					msg = c.Append(nil, msg)
				}
				got, err := DecodeEnvelopes(msg)
				if err != nil {
					t.Fatalf("%s #%d: decode: %v", f, i, err)
				}
				checkEnvelopes(t, got, envs[i:i+1], false)
			}
			msg, err := EncodeEnvelopes(nil, f, envs, true)
			if err != nil {
				t.Fatal(err)
			}
			if compress {
				msg = c.Append(nil, msg)
			}
			got, err := DecodeEnvelopes(msg)
			if err != nil {
				t.Fatalf("%s batch: %v", f, err)
			}
			checkEnvelopes(t, got, envs, false)
		}
	}
}

// TestCompressRule: a message is compressed only when long enough and
// smaller for it; compressed messages start with the zstd magic.
func TestCompressRule(t *testing.T) {
	c, err := NewCompressor()
	if err != nil {
		t.Fatal(err)
	}
	small := bytes.Repeat([]byte("a"), MinCompressBytes-1)
	if out, ok := c.Compress(nil, small); ok || len(out) != 0 {
		t.Errorf("a %d-byte message was compressed", len(small))
	}
	random := make([]byte, 300)
	for i := range random {
		random[i] = byte(i*7919 + i*i*31)
	}
	if _, ok := c.Compress(nil, random); ok {
		// Not a failure in itself, but then it must be smaller.
		out, _ := c.Compress(nil, random)
		if len(out) >= len(random) {
			t.Errorf("compressed %d bytes to %d", len(random), len(out))
		}
	}
	ev := goldenEvent()
	batch, _ := EncodeMessage(nil, FormatJSON, "gw", []event.Event{ev, ev, ev, ev}, true)
	out, ok := c.Compress([]byte("prefix"), batch)
	if !ok || !IsCompressed(out[6:]) || len(out)-6 >= len(batch) {
		t.Fatalf("batch of %d bytes: compressed %v to %d", len(batch), ok, len(out)-6)
	}
	if IsCompressed(batch) {
		t.Error("a JSON batch looks compressed")
	}
	back, err := DecodeEnvelopes(out[6:])
	if err != nil || len(back) != 4 {
		t.Fatalf("decode: %d, %v", len(back), err)
	}
}

// TestDecodeEnvelopesRejects: malformed input of each form is an error
// wrapping ErrMalformedMessage, never a panic or a huge allocation.
func TestDecodeEnvelopesRejects(t *testing.T) {
	c, err := NewCompressor()
	if err != nil {
		t.Fatal(err)
	}
	bomb := c.Append(nil, bytes.Repeat([]byte{'['}, MaxDecompressedBytes+1))
	twice := c.Append(nil, c.Append(nil, []byte(`{"id":"01081G81860W40J2GB1G6GW3RG"}`+strings.Repeat(" ", 100))))
	ev := goldenEvent()
	cb, _ := EncodeEnvelopes(nil, FormatCBOR, []Envelope{{Event: ev, Seq: 1}}, false)
	hexs := func(s string) []byte { b, _ := hex.DecodeString(h(s)); return b }
	tests := []struct {
		name string
		in   []byte
	}{
		{"zstd bomb", bomb},
		{"compressed twice", twice},
		{"zstd garbage", append(append([]byte{}, zstdMagic...), 1, 2, 3, 4, 5)},
		{"zstd truncated", c.Append(nil, bytes.Repeat([]byte("[1,2,3]"), 50))[:20]},
		{"json bad seq", []byte(`{"id":"01081G81860W40J2GB1G6GW3RG","seq":-1}`)},
		{"json bad gap", []byte(`{"id":"01081G81860W40J2GB1G6GW3RG","gap":{"dropped":"x"}}`)},
		{"cbor 9 items", append([]byte{cborArray | 9}, append(cb[1:len(cb)-19], 0x01)...)},
		{"cbor 14 items", append([]byte{cborArray | 14}, cb[1:]...)},
		{"cbor seq not uint", append(append([]byte{cborArray | 11}, cb[1:len(cb)-18]...), hexs("20 60")...)},
		{"cbor trailing", append(append([]byte{}, cb...), 0)},
		{"cbor gap not a pair", append(append([]byte{cborArray | 12}, cb[1:]...), hexs("81 01")...)},
		{"cbor replay not bool", append(append([]byte{cborArray | 13}, cb[1:]...), hexs("f6 01")...)},
		{"senml empty record", hexs("81 a0")},
		{"senml no base time", hexs("81 a2 00 61 74 02 01")},
		{"senml no base name", hexs("81 a2 22 1a 6553f120 02 01")},
		{"senml no value", hexs("81 a2 21 62 612f 22 1a 6553f120")},
		{"senml must understand", hexs("81 a4 21 62 612f 22 1a 6553f120 02 01 62 785f 01")},
		{"senml relative time", hexs("81 a3 21 62 612f 22 01 02 01")},
		{"senml bad tag", hexs("81 a3 21 62 612f 22 c1 1a 6553f120 02 01")},
		{"senml huge exponent", hexs("81 a3 21 62 612f 22 1a 6553f120 02 c4 82 19 7fff 01")},
		{"senml nan", hexs("81 a3 21 62 612f 22 1a 6553f120 02 f9 7e00")},
		{"senml bare then named", hexs("82 a3 21 62 612f 22 1a 6553f120 02 01 a2 00 61 61 02 01")},
		{"senml seq on a later record", hexs("82 a4 21 62 612f 22 1a 6553f120 00 61 61 02 01 a3 00 61 62 02 01 63 5f7371 05")},
		{"senml indefinite map", hexs("81 bf ff")},
		{"senml too deep", hexs("81 a4 21 62 612f 22 1a 6553f120 02 01 01 81818181818181818181818101")},
		{"senml truncated", hexs("81 a3 21 62 612f 22 1a 6553")},
		{"senml huge pack", hexs("9b 7fffffffffffffff a0")},
		{"cbor huge batch", hexs("9a 00010001 88")},
	}
	for _, tt := range tests {
		if _, err := DecodeEnvelopes(tt.in); !errors.Is(err, ErrMalformedMessage) {
			t.Errorf("%s: err = %v, want ErrMalformedMessage", tt.name, err)
		}
	}
}

// TestZstdBeatsDeflate records the measurement behind zstd: per batch of
// a realistic sensor stream (10 sensors × 3 quantities, one batch per 10
// s), zstd's frame is smaller than a raw deflate stream of the same
// message at every format; the figures are in README ("Wire size").
func TestZstdBeatsDeflate(t *testing.T) {
	c, err := NewCompressor()
	if err != nil {
		t.Fatal(err)
	}
	envs := sensorBatch(10)
	for _, f := range []Format{FormatJSON, FormatCBOR, FormatSenMLCBOR} {
		msg, err := EncodeEnvelopes(nil, f, envs, true)
		if err != nil {
			t.Fatal(err)
		}
		z := c.Append(nil, msg)
		var d bytes.Buffer
		fw, _ := flate.NewWriter(&d, flate.BestCompression)
		fw.Write(msg)
		fw.Close()
		t.Logf("%-10s raw %5d  zstd %4d  deflate-9 %4d", f, len(msg), len(z), d.Len())
		if len(z) > d.Len()+8 {
			t.Errorf("%s: zstd %d bytes, deflate %d", f, len(z), d.Len())
		}
	}
}

// sensorBatch returns one 10-second batch of 10 sensors' readings of
// temperature, humidity and pressure, as the gateway would send them.
func sensorBatch(sensors int) []Envelope {
	var envs []Envelope
	t0 := time.UnixMilli(1764590400000)
	for i := range sensors {
		ev := event.Event{
			Stream: "env", Source: fmt.Sprintf("bme280-%02d", i+1), Topic: fmt.Sprintf("sensors/bme280-%02d", i+1),
			Time:    t0.Add(time.Duration(i*97+13) * time.Millisecond),
			Payload: fmt.Appendf(nil, `{"temperature":%.2f,"humidity":%.1f,"pressure":%.2f}`, 21.3+float64(i)*0.17, 45.2+float64(i)*0.7, 1013.25-float64(i)*0.03),
		}
		ev.ID, _ = event.NewID(ev.Time, nil)
		envs = append(envs, Envelope{Event: ev, Gateway: "gw-0042", Seq: uint64(1000 + i), Epoch: goldenEpoch})
	}
	return envs
}

// zstdBombs returns small zstd frames that inflate past
// MaxDecompressedBytes: one that declares its size and one that does not.
func zstdBombs(t testing.TB) [][]byte {
	t.Helper()
	big := bytes.Repeat([]byte{'['}, MaxDecompressedBytes+4096)
	c, err := NewCompressor()
	if err != nil {
		t.Fatal(err)
	}
	declared := c.Append(nil, big)
	var streamed bytes.Buffer
	w, err := zstd.NewWriter(&streamed, zstd.WithEncoderCRC(false))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(big); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return [][]byte{declared, streamed.Bytes()}
}

func TestZstdBombsRefused(t *testing.T) {
	for i, b := range zstdBombs(t) {
		if _, err := DecodeEnvelopes(b); !errors.Is(err, ErrMalformedMessage) {
			t.Errorf("bomb %d (%d bytes): err = %v", i, len(b), err)
		}
	}
}

// FuzzDecodeEnvelopes checks that DecodeEnvelopes never panics, that it
// refuses with ErrMalformedMessage only, and that whatever it accepts
// re-encodes, in JSON and in CBOR, to messages that decode to envelopes
// with the same sequence fields.
func FuzzDecodeEnvelopes(f *testing.F) {
	c, err := NewCompressor()
	if err != nil {
		f.Fatal(err)
	}
	for _, g := range goldenEnvelopes {
		msg, err := EncodeEnvelopes(nil, g.format, g.envs, g.batch)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(msg)
		f.Add(c.Append(nil, msg))
	}
	for _, m := range zstdBombs(f) {
		f.Add(m)
	}
	f.Add(encodeOrNil(FormatSenMLCBOR, sensorBatch(3)))
	f.Fuzz(func(t *testing.T, b []byte) {
		envs, err := DecodeEnvelopes(b)
		if err != nil {
			if !errors.Is(err, ErrMalformedMessage) {
				t.Fatalf("error %v does not wrap ErrMalformedMessage", err)
			}
			return
		}
		if len(envs) == 0 || len(envs) > MaxBatchEvents {
			t.Fatalf("%d envelopes", len(envs))
		}
		for _, fm := range []Format{FormatJSON, FormatCBOR} {
			msg, err := EncodeEnvelopes(nil, fm, envs, true)
			if err != nil {
				continue // e.g. a time CBOR cannot carry
			}
			again, err := DecodeEnvelopes(msg)
			if err != nil {
				if y := envs[0].Event.Time.Year(); fm == FormatJSON && (y < 0 || y > 9999) {
					continue
				}
				t.Fatalf("%s re-encoding does not decode: %v", fm, err)
			}
			if len(again) != len(envs) {
				t.Fatalf("%s: %d envelopes became %d", fm, len(envs), len(again))
			}
			for i := range envs {
				a, b := envs[i], again[i]
				if a.Seq != b.Seq || a.Replay != b.Replay || (a.Gap == nil) != (b.Gap == nil) {
					t.Fatalf("%s #%d: sequence fields changed: %+v → %+v", fm, i, a, b)
				}
			}
		}
	})
}

// encodeOrNil is EncodeEnvelopes for seeds: nil on error.
func encodeOrNil(f Format, envs []Envelope) []byte {
	b, err := EncodeEnvelopes(nil, f, envs, true)
	if err != nil {
		return nil
	}
	return b
}
