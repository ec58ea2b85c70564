package bench

import (
	"bytes"
	"testing"
	"time"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/uplink"
)

func benchPayload(t testing.TB, h header, size int) []byte {
	t.Helper()
	b := newPayload(size)
	putHeader(b, h)
	return b
}

func TestHeaderRoundTrip(t *testing.T) {
	h := header{run: RunID{9, 8, 7, 6, 5, 4, 3, 2}, pub: 4242, seq: 1<<32 - 1, sent: time.Now().UnixNano()}
	b := benchPayload(t, h, HeaderSize)
	got, ok := parseHeader(b)
	if !ok || got != h {
		t.Fatalf("parseHeader = %+v, %v; want %+v", got, ok, h)
	}
	for i := range HeaderSize {
		c := bytes.Clone(b)
		c[i] ^= 0x40
		if _, ok := parseHeader(c); ok {
			t.Errorf("flipping byte %d went undetected", i)
		}
	}
	if _, ok := parseHeader(b[:HeaderSize-1]); ok {
		t.Error("truncated header accepted")
	}
}

func TestFindHeaders(t *testing.T) {
	run := RunID{1, 1, 2, 3, 5, 8, 13, 21}
	h1 := header{run: run, pub: 1, seq: 10, sent: 111}
	h2 := header{run: run, pub: 2, seq: 20, sent: 222}
	p1, p2 := benchPayload(t, h1, 100), benchPayload(t, h2, 64)
	evs := []event.Event{
		{ID: event.ID{1}, Stream: "s", Topic: "bench/1", Payload: p1},
		{ID: event.ID{2}, Stream: "s", Topic: "bench/2", Payload: p2},
	}
	enc := func(f uplink.Format, batch bool) []byte {
		n := 1
		if batch {
			n = 2
		}
		b, err := uplink.EncodeMessage(nil, f, "gw", evs[:n], batch)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name   string
		msg    []byte
		unwrap func([]byte) [][]byte
		want   []header
	}{
		{"raw", p1, defaultUnwrap, []header{h1}},
		{"raw header only", p1[:HeaderSize], defaultUnwrap, []header{h1}},
		{"json envelope", enc(uplink.FormatJSON, false), defaultUnwrap, []header{h1}},
		{"json batch", enc(uplink.FormatJSON, true), defaultUnwrap, []header{h1, h2}},
		{"cbor event", enc(uplink.FormatCBOR, false), defaultUnwrap, []header{h1}},
		{"cbor batch", enc(uplink.FormatCBOR, true), defaultUnwrap, []header{h1, h2}},
		{"cbor batch, scanned without unwrap", enc(uplink.FormatCBOR, true), nil, []header{h1, h2}},
		{"json with base64 payload needs unwrap", enc(uplink.FormatJSON, false), nil, nil},
		{"embedded in unknown wrapper", append(append([]byte("prefix\xff"), p2...), "suffix"...), nil, []header{h2}},
		{"not a bench message", []byte(`{"t":21.5}`), defaultUnwrap, nil},
		{"magic without valid header", append([]byte{0xFF, 'F', 'B', 'H', 1}, make([]byte, 40)...), defaultUnwrap, nil},
		{"empty", nil, defaultUnwrap, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := findHeaders(nil, tt.msg, tt.unwrap)
			if len(got) != len(tt.want) {
				t.Fatalf("found %d headers %+v, want %+v", len(got), got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("header %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestHistogram(t *testing.T) {
	// Buckets are contiguous and monotone, and their representative value
	// is within 1/64 of any value in them.
	prev := -1
	for v := int64(0); v < 1<<22; v += 1 + v/97 {
		b := bucketOf(v)
		if b < prev {
			t.Fatalf("bucketOf(%d) = %d < %d", v, b, prev)
		}
		prev = b
		if rep := bucketValue(b); rep-v > v/64+1 || v-rep > v/64+1 {
			t.Fatalf("bucketValue(bucketOf(%d)) = %d: too far", v, rep)
		}
	}
	if b := bucketOf(maxHistValue); b != nBuckets-1 {
		t.Fatalf("bucketOf(max) = %d, want %d", b, nBuckets-1)
	}

	var h histogram
	if l := h.latency(); l != (Latency{}) {
		t.Fatalf("empty histogram: %+v", l)
	}
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Microsecond)
	}
	h.add(-time.Second) // clamped to zero
	l := h.latency()
	near := func(name string, got, want time.Duration) {
		if d := got - want; d < -want/50 || d > want/50 {
			t.Errorf("%s = %v, want about %v", name, got, want)
		}
	}
	near("p50", l.P50, 500*time.Microsecond)
	near("p90", l.P90, 900*time.Microsecond)
	near("p99", l.P99, 990*time.Microsecond)
	if l.Max != time.Millisecond || l.Count != 1001 {
		t.Errorf("max %v count %d", l.Max, l.Count)
	}

	var m histogram
	m.merge(&h)
	m.merge(&histogram{})
	if m.latency() != l {
		t.Errorf("merged %+v != %+v", m.latency(), l)
	}
}
