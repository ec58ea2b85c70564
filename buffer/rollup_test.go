package buffer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/rules/payload"
)

// tally is what a reader learns of one source's field from a rollup
// stream: raw readings and aggregates together.
type tally struct {
	count    uint64
	min, max float64
	sum      float64 // of the values (avg × count for aggregates)
	last     float64
	lastT    time.Time
}

func (a *tally) add(count uint64, lo, hi, avg, last float64, t time.Time) {
	if a.count == 0 {
		a.min, a.max = lo, hi
	}
	a.count += count
	a.min, a.max = math.Min(a.min, lo), math.Max(a.max, hi)
	a.sum += avg * float64(count)
	if !t.Before(a.lastT) {
		a.last, a.lastT = last, t
	}
}

type aggStats struct {
	Count         uint64
	Min, Max, Avg float64
	Last          float64
}

// readRollup reads stream s of l whole (as a reader that was away) and
// returns the tallies per source and field, the number of aggregates, and
// checks what each aggregate says of itself.
func readRollup(t *testing.T, l *buffertest.Log, from uint64) (map[string]map[string]*tally, int) {
	t.Helper()
	out := map[string]map[string]*tally{}
	get := func(src, field string) *tally {
		if out[src] == nil {
			out[src] = map[string]*tally{}
		}
		if out[src][field] == nil {
			out[src][field] = &tally{}
		}
		return out[src][field]
	}
	aggs := 0
	_, err := l.Read("s", from, 1<<30, func(off uint64, e *event.Event) error {
		if iv, ok := e.Attrs[buffer.AttrRollupInterval]; ok {
			aggs++
			if _, err := time.ParseDuration(iv); err != nil || e.ContentType != "application/json" {
				return fmt.Errorf("aggregate %d: interval %q, content type %q", off, iv, e.ContentType)
			}
			lo, err1 := strconv.ParseUint(e.Attrs[buffer.AttrRollupFrom], 10, 64)
			hi, err2 := strconv.ParseUint(e.Attrs[buffer.AttrRollupTo], 10, 64)
			if err1 != nil || err2 != nil || lo > hi || hi >= off {
				return fmt.Errorf("aggregate %d summarises %q to %q", off, e.Attrs[buffer.AttrRollupFrom], e.Attrs[buffer.AttrRollupTo])
			}
			var fields map[string]aggStats
			if err := json.Unmarshal(e.Payload, &fields); err != nil {
				return fmt.Errorf("aggregate %d: %v: %s", off, err, e.Payload)
			}
			for f, a := range fields {
				get(e.Source, f).add(a.Count, a.Min, a.Max, a.Avg, a.Last, e.Time)
			}
			return nil
		}
		var fields map[string]float64
		if err := json.Unmarshal(e.Payload, &fields); err != nil {
			return fmt.Errorf("event %d: %v: %s", off, err, e.Payload)
		}
		for f, v := range fields {
			get(e.Source, f).add(1, v, v, v, v, e.Time)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, aggs
}

// TestRollupLongOutage: a day without the cloud, ten sensors reporting
// temperature and humidity every 30 s into a stream bounded to 300
// events with overflow rollup. The stream stays within its bound, and a
// reader finds every reading accounted for: per sensor and quantity the
// counts of the raw readings and aggregates add up to what was published,
// with the exact min, max, sum and last value. Resolution is lost, no
// data: nothing is dropped as overflow, and the offsets the aggregates
// replaced are announced as rollup drops.
func TestRollupLongOutage(t *testing.T) {
	clock := &testClock{now: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	const bound = 300
	l := buffertest.MustOpen(t, buffer.Options{Now: clock.Now, Durability: buffer.DurabilityNone,
		Streams: []buffer.StreamConfig{{Name: "s", MaxEvents: bound, Overflow: buffer.Rollup, RollupInterval: time.Minute}}})
	want := map[string]map[string]*tally{}
	ctx := context.Background()
	const sensors, every, outage = 10, 30 * time.Second, 24 * time.Hour
	steps := int(outage / every)
	for step := 0; step < steps; step += 20 {
		err := l.Update(ctx, func(tx *buffer.Tx) error {
			for s := step; s < min(step+20, steps); s++ {
				at := clock.Now().Add(time.Duration(s) * every)
				for i := 0; i < sensors; i++ {
					src := fmt.Sprintf("th%02d", i)
					// Quarter-degree steps: sums are exact in float64.
					temp := 20 + float64((s*7+i*3)%40)/4
					hum := float64(40 + (s+i)%25)
					if want[src] == nil {
						want[src] = map[string]*tally{"temperature": {}, "humidity": {}}
					}
					want[src]["temperature"].add(1, temp, temp, temp, temp, at)
					want[src]["humidity"].add(1, hum, hum, hum, hum, at)
					err := tx.Append(&event.Event{Stream: "s", Source: src, Topic: "sensors/" + src, Time: at,
						ContentType: "application/json", Payload: fmt.Appendf(nil, `{"temperature":%g,"humidity":%g}`, temp, hum)})
					if err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if st := statsOf(l, "s"); st.Events > bound {
			t.Fatalf("stream holds %d events, over its bound %d", st.Events, bound)
		}
	}
	st := statsOf(l, "s")
	if st.Drops["overflow"] != 0 || st.Drops["rollup"] == 0 {
		t.Fatalf("drops %v: want rollup drops and no overflow", st.Drops)
	}
	got, aggs := readRollup(t, l, 1)
	for src, fields := range want {
		for f, w := range fields {
			g := got[src][f]
			if g == nil || g.count != w.count || g.min != w.min || g.max != w.max || g.last != w.last || math.Abs(g.sum-w.sum) > 1e-6*w.sum {
				t.Errorf("%s %s: read %+v, published %+v", src, f, g, w)
			}
		}
	}
	// Every offset before the first stored one was rolled up, and is
	// announced so.
	if n, reasons := l.Dropped("s", 0, st.First); n != st.First-1 || !maps.Equal(reasons, map[string]uint64{"rollup": n}) {
		t.Errorf("Dropped(0, %d) = %d %v, want %d rollup", st.First, n, reasons, st.First-1)
	}
	t.Logf("%d readings of %d sensors kept as %d events (%d aggregates), %d replaced", steps*sensors*2, sensors, st.Events, aggs, st.Drops["rollup"])
}

// TestRollupBytes: bounded by bytes alone, rounds must make the stream
// smaller in bytes: it stays within the bound and keeps every reading's
// count.
func TestRollupBytes(t *testing.T) {
	clock := &testClock{now: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	const maxBytes = 16 << 10
	l := buffertest.MustOpen(t, buffer.Options{Now: clock.Now, Durability: buffer.DurabilityNone,
		Streams: []buffer.StreamConfig{{Name: "s", MaxBytes: maxBytes, Overflow: buffer.Rollup, RollupInterval: time.Minute}}})
	const n = 3000
	for i := 0; i < n; i++ {
		clock.Add(10 * time.Second)
		mustAppend(t, l, &event.Event{Stream: "s", Source: "station", Payload: fmt.Appendf(nil, `{"t":%d,"h":%d,"p":%d}`, i%30, i%50, 1000+i%20)})
		if st := statsOf(l, "s"); st.Bytes > maxBytes {
			t.Fatalf("after %d readings the stream holds %d bytes, over %d", i+1, st.Bytes, maxBytes)
		}
	}
	st := statsOf(l, "s")
	if st.Drops["overflow"] != 0 || st.Drops["rollup"] == 0 {
		t.Fatalf("drops %v: want rollup drops and no overflow", st.Drops)
	}
	got, _ := readRollup(t, l, 1)
	for _, f := range []string{"t", "h", "p"} {
		if c := got["station"][f].count; c != n {
			t.Errorf("field %s: %d readings accounted for, want %d", f, c, n)
		}
	}
}

// TestRollupFormats: JSON objects, a bare number, SenML packs (JSON) and
// CBOR maps are rolled up by their numeric fields; an aggregate says what
// it summarises.
func TestRollupFormats(t *testing.T) {
	clock := &testClock{now: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	keys := buffertest.MustKeys(t) // sealed at rest: rounds open and seal
	// The gateway's payload decoders (a test-only import: the buffer
	// itself takes them as Options.Numbers).
	l := buffertest.MustOpen(t, buffer.Options{Now: clock.Now, Keys: keys, Numbers: payload.Numbers,
		Streams: []buffer.StreamConfig{{Name: "s", MaxEvents: 4, Overflow: buffer.Rollup, RollupInterval: time.Minute}}})
	events := []*event.Event{
		{Source: "a", ContentType: "application/senml+json", Payload: []byte(`[{"bn":"dev/","n":"temp","u":"Cel","v":21.5},{"n":"hum","v":40}]`)},
		{Source: "a", Payload: []byte(`[{"bn":"dev/","n":"temp","v":22.5},{"n":"hum","v":44},{"n":"door","vs":"open"}]`)}, // sniffed
		{Source: "b", ContentType: "text/plain", Payload: []byte(`7.5`)},
		{Source: "b", Payload: []byte{0xa1, 0x65, 'v', 'a', 'l', 'u', 'e', 0xf9, 0x48, 0x80}}, // CBOR {"value": 9.0}
	}
	for _, e := range events {
		e.Stream = "s"
		mustAppend(t, l, e)
		clock.Add(time.Second)
	}
	// The bound: the oldest two (a's pack) become one aggregate.
	mustAppend(t, l, &event.Event{Stream: "s", Source: "c", Payload: []byte(`{"x":1}`)})
	var agg *event.Event
	_, err := l.Read("s", 1, 100, func(off uint64, e *event.Event) error {
		if e.Attrs[buffer.AttrRollupInterval] != "" {
			c := *e
			agg = &c
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if agg == nil {
		t.Fatal("no aggregate")
	}
	var fields map[string]aggStats
	if err := json.Unmarshal(agg.Payload, &fields); err != nil {
		t.Fatal(err)
	}
	wantFields := map[string]aggStats{
		"dev/temp": {Count: 2, Min: 21.5, Max: 22.5, Avg: 22, Last: 22.5},
		"dev/hum":  {Count: 2, Min: 40, Max: 44, Avg: 42, Last: 44},
	}
	if !maps.Equal(fields, wantFields) || agg.Source != "a" || agg.Attrs[buffer.AttrRollupFrom] != "1" ||
		agg.Attrs[buffer.AttrRollupTo] != "2" || agg.Attrs[buffer.AttrRollupInterval] != "1m0s" {
		t.Fatalf("aggregate %+v: payload %s", agg, agg.Payload)
	}
	if n, reasons := l.Dropped("s", 0, 3); n != 2 || reasons["rollup"] != 2 {
		t.Fatalf("Dropped(0, 3) = %d %v, want 2 rollup", n, reasons)
	}

	// b's bare number and CBOR map are next: field "value".
	clock.Add(time.Second)
	mustAppend(t, l, &event.Event{Stream: "s", Source: "c", Payload: []byte(`{"x":2}`)})
	mustAppend(t, l, &event.Event{Stream: "s", Source: "c", Payload: []byte(`{"x":3}`)})
	got, _ := readRollupAny(t, l)
	if v := got["b"]["value"]; v == nil || v.count != 2 || v.min != 7.5 || v.max != 9 {
		t.Fatalf("b's value: %+v", v)
	}
}

// readRollupAny tallies aggregates only (raw payloads here are of many
// formats).
func readRollupAny(t *testing.T, l *buffertest.Log) (map[string]map[string]*tally, int) {
	t.Helper()
	out := map[string]map[string]*tally{}
	n := 0
	_, err := l.Read("s", 1, 100, func(off uint64, e *event.Event) error {
		if e.Attrs[buffer.AttrRollupInterval] == "" {
			return nil
		}
		n++
		var fields map[string]aggStats
		if err := json.Unmarshal(e.Payload, &fields); err != nil {
			return err
		}
		for f, a := range fields {
			if out[e.Source] == nil {
				out[e.Source] = map[string]*tally{}
			}
			if out[e.Source][f] == nil {
				out[e.Source][f] = &tally{}
			}
			out[e.Source][f].add(a.Count, a.Min, a.Max, a.Avg, a.Last, e.Time)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, n
}

// TestRollupFallback: what cannot be rolled up is dropped as overflow, as
// with drop_oldest: an oldest event without numeric fields, and oldest
// events no window can merge (each of another source).
func TestRollupFallback(t *testing.T) {
	tests := []struct {
		name   string
		first  []*event.Event
		drops  map[string]uint64
		first2 uint64 // first offset kept
	}{{
		name: "not numeric",
		first: []*event.Event{
			{Source: "a", Payload: []byte(`"door open"`)},
			{Source: "a", Payload: []byte(`{"t":1}`)},
			{Source: "a", Payload: []byte(`{"t":2}`)},
			{Source: "a", Payload: []byte(`{"t":3}`)},
		},
		drops:  map[string]uint64{"overflow": 1},
		first2: 2,
	}, {
		name: "one event per source",
		first: []*event.Event{
			{Source: "a", Payload: []byte(`{"t":1}`)},
			{Source: "b", Payload: []byte(`{"t":2}`)},
			{Source: "c", Payload: []byte(`{"t":3}`)},
			{Source: "d", Payload: []byte(`{"t":4}`)},
		},
		drops:  map[string]uint64{"overflow": 1},
		first2: 2,
	}, {
		name: "too many fields",
		first: []*event.Event{
			{Source: "a", Payload: manyFields(65)},
			{Source: "a", Payload: manyFields(65)},
			{Source: "a", Payload: []byte(`{"t":3}`)},
			{Source: "a", Payload: []byte(`{"t":4}`)},
		},
		drops:  map[string]uint64{"overflow": 1},
		first2: 2,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := buffertest.MustOpen(t, buffer.Options{
				Streams: []buffer.StreamConfig{{Name: "s", MaxEvents: 4, Overflow: buffer.Rollup}}})
			for _, e := range tt.first {
				e.Stream = "s"
				mustAppend(t, l, e)
			}
			mustAppend(t, l, &event.Event{Stream: "s", Source: "e", Payload: []byte(`{"t":5}`)})
			st := statsOf(l, "s")
			if !maps.Equal(st.Drops, tt.drops) || st.First != tt.first2 || st.Events != 4 {
				t.Fatalf("stats %+v; want drops %v, first %d, 4 events", st, tt.drops, tt.first2)
			}
			if n, reasons := l.Dropped("s", 0, st.First); n != st.First-1 || reasons["overflow"] != n {
				t.Fatalf("Dropped(0, %d) = %d %v", st.First, n, reasons)
			}
		})
	}
}

func manyFields(n int) []byte {
	b := []byte{'{'}
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `"f%d":%d`, i, i)
	}
	return append(b, '}')
}
