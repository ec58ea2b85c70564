package buffer

import (
	"bytes"
	"encoding/binary"
	"maps"
	"testing"
	"time"
)

// FuzzDecodeGap: a drop record read from the disk never panics the
// decoder, and one it accepts is consistent and encodes back to the same
// bytes (the encoding is canonical).
func FuzzDecodeGap(f *testing.F) {
	key := func(from uint64) []byte { return gapKey(from) }
	f.Add(key(5), encodeGap(gapRec{from: 5, to: 9, dropped: 5, reasons: map[string]uint64{DropOverflow: 5}}))
	f.Add(key(1), encodeGap(gapRec{from: 1, to: 100, dropped: 7, reasons: map[string]uint64{DropExpired: 3, DropRollup: 4}}))
	f.Add(key(0), []byte{})
	f.Add([]byte{1, 2, 3}, bytes.Repeat([]byte{0xff}, 20))
	f.Fuzz(func(t *testing.T, k, v []byte) {
		r, err := decodeGap(k, v)
		if err != nil {
			return
		}
		var sum uint64
		for _, c := range r.reasons {
			sum += c
		}
		if r.from == 0 || r.to < r.from || r.dropped == 0 || r.dropped-1 > r.to-r.from || sum != r.dropped {
			t.Fatalf("accepted an inconsistent record %+v", r)
		}
		if binary.BigEndian.Uint64(k) != r.from || !bytes.Equal(encodeGap(r), v) {
			t.Fatalf("record %+v re-encodes as %x, was %x", r, encodeGap(r), v)
		}
		// Apportioning any part of it never panics and adds up.
		for _, m := range []uint64{1, r.dropped / 2, r.dropped} {
			if m == 0 {
				continue
			}
			got := map[string]uint64{}
			apportion(got, r, m)
			var n uint64
			for _, c := range got {
				n += c
			}
			if n != m {
				t.Fatalf("apportion(%+v, %d) = %v", r, m, got)
			}
		}
	})
}

// FuzzRollupPayload: the payloads a rollup round reads come from the
// network (raw events) or the disk (aggregates): decoding them never
// panics, and an aggregate written from any fields reads back as them.
func FuzzRollupPayload(f *testing.F) {
	for _, p := range []string{
		`{"t":21.5,"h":40}`, `7.25`, `[{"bn":"d/","n":"t","v":1},{"n":"h","v":2}]`,
		`{"t":{"count":3,"min":1,"max":3,"avg":2,"last":3}}`, `{"t":{"count":0.5}}`, `{}`, `"text"`,
	} {
		f.Add("", []byte(p))
	}
	f.Add("application/senml+json", []byte(`[{"n":"x","v":1e300},{"n":"x","v":-1e300}]`))
	f.Add("application/cbor", []byte{0xa1, 0x61, 't', 0xf9, 0x3c, 0x00})
	t0 := time.Unix(1_700_000_000, 0)
	f.Fuzz(func(t *testing.T, contentType string, p []byte) {
		for _, fields := range []map[string]fieldAgg{
			func() map[string]fieldAgg { m, _ := numericFields(nil, contentType, p, t0); return m }(),
			func() map[string]fieldAgg { m, _ := aggregateFields(p, t0); return m }(),
		} {
			if len(fields) == 0 {
				continue
			}
			ptrs := map[string]*fieldAgg{}
			for k, v := range fields {
				ptrs[k] = &v
			}
			back, ok := aggregateFields(encodeAggregate(ptrs), t0)
			if !ok {
				t.Fatalf("aggregate of %v does not read back: %s", fields, encodeAggregate(ptrs))
			}
			if !maps.EqualFunc(back, fields, func(a, b fieldAgg) bool {
				return a.count == b.count && a.min == b.min && a.max == b.max && a.avg == b.avg && a.last == b.last
			}) {
				t.Fatalf("aggregate %s reads back as %v, was %v", encodeAggregate(ptrs), back, fields)
			}
		}
	})
}
