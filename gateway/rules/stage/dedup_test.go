package stage

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/rules/detect"
	"github.com/ferrygw/ferry/gateway/rules/expr"
	"github.com/ferrygw/ferry/gateway/rules/internal/statecbor"
	"github.com/ferrygw/ferry/gateway/rules/record"
)

// dedupStep is one input of a dedup test: a record with a key (the record
// Key, or the "id" field for a key expression) at a time, or an Advance.
type dedupStep struct {
	key string
	at  time.Duration
	adv bool
}

func dedupRec(key string, at time.Duration) dedupStep { return dedupStep{key: key, at: at} }

func dedupAdv(at time.Duration) dedupStep { return dedupStep{at: at, adv: true} }

// dedupRun feeds steps to d and returns the keys passed, with their step
// index ("a@3").
func dedupRun(t *testing.T, d *Dedup, steps []dedupStep, from int) []string {
	t.Helper()
	var out []string
	for i, s := range steps {
		if s.adv {
			d.Advance(exprTestTime.Add(s.at), func(*record.Record) { t.Error("dedup emitted on Advance") })
			continue
		}
		r := &record.Record{Key: s.key, Time: exprTestTime.Add(s.at), Source: "dev1", Fields: map[string]any{"id": s.key}}
		if err := d.Process(r, func(o *record.Record) {
			if o != r {
				t.Error("dedup emitted a different record")
			}
			out = append(out, fmt.Sprintf("%s@%d", s.key, from+i))
		}); err != nil {
			t.Fatalf("step %d: %v", from+i, err)
		}
	}
	return out
}

func TestDedup(t *testing.T) {
	s := time.Second
	tests := []struct {
		name  string
		cfg   DedupConfig
		steps []dedupStep
		want  []string
		len   int
	}{
		{
			name:  "within and after the horizon",
			cfg:   DedupConfig{Horizon: 10 * s},
			steps: []dedupStep{dedupRec("a", 0), dedupRec("a", 5*s), dedupRec("b", 6*s), dedupRec("a", 10*s), dedupRec("a", 15*s), dedupRec("a", 19*s), dedupRec("a", 20*s)},
			want:  []string{"a@0", "b@2", "a@3", "a@6"},
			len:   2,
		},
		{
			name:  "repeats do not extend the window",
			cfg:   DedupConfig{Horizon: 10 * s},
			steps: []dedupStep{dedupRec("a", 0), dedupRec("a", 4*s), dedupRec("a", 8*s), dedupRec("a", 12*s)},
			want:  []string{"a@0", "a@3"},
			len:   1,
		},
		{
			name:  "redelivery at the same time",
			cfg:   DedupConfig{Horizon: time.Millisecond},
			steps: []dedupStep{dedupRec("e1", 0), dedupRec("e1", 0), dedupRec("e2", 0)},
			want:  []string{"e1@0", "e2@2"},
			len:   2,
		},
		{
			name: "out of order: older within the horizon is a duplicate; much older passes and keeps the window",
			cfg:  DedupConfig{Horizon: 10 * s},
			steps: []dedupStep{
				dedupRec("a", 20*s), dedupRec("a", 15*s), dedupRec("a", 0), dedupRec("a", 25*s), dedupRec("a", 30*s),
			},
			want: []string{"a@0", "a@2", "a@4"},
			len:  1,
		},
		{
			name: "advance forgets expired keys",
			cfg:  DedupConfig{Horizon: 10 * s},
			steps: []dedupStep{
				dedupRec("a", 0), dedupRec("b", 5*s), dedupAdv(9 * s), dedupRec("a", 9*s), dedupAdv(10 * s), dedupAdv(15 * s),
			},
			want: []string{"a@0", "b@1"},
			len:  0,
		},
		{
			name: "bounded: the oldest key is evicted first, ties by key",
			cfg:  DedupConfig{Horizon: time.Hour, MaxKeys: 3},
			steps: []dedupStep{
				dedupRec("c", 0), dedupRec("b", 0), dedupRec("a", s), // full
				dedupRec("d", 2*s), // evicts b (time 0, before c)
				dedupRec("c", 3*s), // still held: dropped
				dedupRec("b", 3*s), // forgotten: passes, evicts c
				dedupRec("c", 4*s), // forgotten: passes, evicts a
				dedupRec("d", 5*s), // held: dropped
			},
			want: []string{"c@0", "b@1", "a@2", "d@3", "b@5", "c@6"},
			len:  3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := NewDedup(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := dedupRun(t, d, tt.steps, 0); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("passed %v, want %v", got, tt.want)
			}
			if d.Len() != tt.len {
				t.Errorf("Len = %d, want %d", d.Len(), tt.len)
			}
		})
	}
}

func TestDedupKeyExpression(t *testing.T) {
	tests := []struct {
		name    string
		key     string
		fields  []map[string]any
		pass    []bool
		wantErr error
	}{
		{"field", "device", []map[string]any{{"device": "x"}, {"device": "x"}, {"device": "y"}}, []bool{true, false, true}, nil},
		{"number", "seq", []map[string]any{{"seq": 1.0}, {"seq": 1.0}, {"seq": 2.0}}, []bool{true, false, true}, nil},
		{"composite", "[source, seq]", []map[string]any{{"seq": 1.0}, {"seq": 1.0}, {"seq": 2.0}}, []bool{true, false, true}, nil},
		{"object", "{s: source, n: seq}", []map[string]any{{"seq": 1.0}, {"seq": 1.0}}, []bool{true, false}, nil},
		{"missing field", "device", []map[string]any{{}}, []bool{false}, record.ErrField},
		{"failing expression", "seq / 0", []map[string]any{{"seq": 1.0}}, []bool{false}, expr.ErrEval},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := NewDedup(DedupConfig{Key: tt.key, Horizon: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			for i, f := range tt.fields {
				passed := false
				r := exprTestRecord(f)
				err := d.Process(r, func(*record.Record) { passed = true })
				if !errors.Is(err, tt.wantErr) || (err != nil) != (tt.wantErr != nil) {
					t.Fatalf("record %d: Process = %v, want %v", i, err, tt.wantErr)
				}
				if passed != tt.pass[i] {
					t.Errorf("record %d: passed = %v, want %v", i, passed, tt.pass[i])
				}
			}
		})
	}
	if _, err := NewDedup(DedupConfig{Key: "lenn(x)", Horizon: time.Minute}); err == nil || !strings.HasPrefix(err.Error(), "key: column 1: unknown func lenn") {
		t.Errorf("NewDedup with a bad key = %v", err)
	}
	d, _ := NewDedup(DedupConfig{Horizon: time.Minute})
	if err := d.Process(&record.Record{}, func(*record.Record) {}); !errors.Is(err, record.ErrField) {
		t.Errorf("record without Key: %v, want ErrField", err)
	}
	for _, cfg := range []DedupConfig{{}, {Horizon: -time.Second}, {Horizon: time.Second, MaxKeys: -1}} {
		if _, err := NewDedup(cfg); err == nil {
			t.Errorf("NewDedup(%+v) succeeded", cfg)
		}
	}
}

// TestDedupStateRoundTrip checks that saving and restoring state at any
// point mid-stream gives exactly the outputs of an uninterrupted run,
// eviction order included.
func TestDedupStateRoundTrip(t *testing.T) {
	var steps []dedupStep
	for i := 0; i < 60; i++ {
		key := fmt.Sprintf("k%d", (i*7)%11)
		steps = append(steps, dedupRec(key, time.Duration(i%13)*time.Second+time.Duration(i)*300*time.Millisecond))
		if i%9 == 8 {
			steps = append(steps, dedupAdv(time.Duration(i)*time.Second/2))
		}
	}
	cfg := DedupConfig{Horizon: 4 * time.Second, MaxKeys: 5}
	whole, _ := NewDedup(cfg)
	want := dedupRun(t, whole, steps, 0)
	final, _ := whole.MarshalState()
	if len(want) < 10 || len(want) > len(steps)-10 {
		t.Fatalf("%d of %d passed: the input does not exercise dedup", len(want), len(steps))
	}
	for cut := 0; cut <= len(steps); cut++ {
		first, _ := NewDedup(cfg)
		got := dedupRun(t, first, steps[:cut], 0)
		b, err := first.MarshalState()
		if err != nil {
			t.Fatal(err)
		}
		second, _ := NewDedup(cfg)
		if err := second.UnmarshalState(b); err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		if b2, _ := second.MarshalState(); !bytes.Equal(b, b2) {
			t.Fatalf("cut %d: state changed across a round trip", cut)
		}
		got = append(got, dedupRun(t, second, steps[cut:], cut)...)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("cut %d: passed\n%v\nwant\n%v", cut, got, want)
		}
		if b3, _ := second.MarshalState(); !bytes.Equal(b3, final) {
			t.Fatalf("cut %d: final state differs", cut)
		}
	}
}

func TestDedupStateGarbage(t *testing.T) {
	cfg := DedupConfig{Horizon: time.Minute, MaxKeys: 3}
	d, _ := NewDedup(cfg)
	dedupRun(t, d, []dedupStep{dedupRec("a", 0), dedupRec("b", time.Second)}, 0)
	good, err := d.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	enc := func(v any) []byte {
		b, err := statecbor.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	e := func(k string) dedupEntryWire { return dedupEntryWire{Key: k} }
	tests := []struct {
		name string
		b    []byte
	}{
		{"not cbor", []byte{0xff, 0x00, 0x13}},
		{"truncated", good[:len(good)-1]},
		{"wrong version", enc(dedupWire{Version: 2})},
		{"too many keys", enc(dedupWire{Version: 1, Entries: []dedupEntryWire{e("a"), e("b"), e("c"), e("d")}})},
		{"duplicate key", enc(dedupWire{Version: 1, Entries: []dedupEntryWire{e("a"), e("a")}})},
		{"bad time", enc(dedupWire{Version: 1, Entries: []dedupEntryWire{{Key: "a", T: statecbor.Time{Nsec: -1}}}})},
		{"detect state", func() []byte {
			dt, _ := detect.New(detect.Config{Name: "x", Kind: detect.Absence, Timeout: time.Second})
			b, _ := dt.MarshalState()
			return b
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d2, _ := NewDedup(cfg)
			_ = d2.UnmarshalState(good)
			if err := d2.UnmarshalState(tt.b); !errors.Is(err, record.ErrState) {
				t.Fatalf("UnmarshalState = %v, want ErrState", err)
			}
			if b, _ := d2.MarshalState(); !bytes.Equal(b, good) {
				t.Error("a failed UnmarshalState changed the state")
			}
		})
	}
	t.Run("every truncation and byte flip", func(t *testing.T) {
		for i := 0; i < len(good); i++ {
			d2, _ := NewDedup(cfg)
			_ = d2.UnmarshalState(good[:i])
			for _, x := range []byte{0x01, 0x20, 0x80, 0xff} {
				b := append([]byte{}, good...)
				b[i] ^= x
				if err := d2.UnmarshalState(b); err != nil && !errors.Is(err, record.ErrState) {
					t.Fatalf("flip %d^%x: %v", i, x, err)
				}
				dedupRun(t, d2, []dedupStep{dedupRec("a", 0), dedupRec("z", time.Second), dedupAdv(time.Hour)}, 0)
			}
		}
	})
}
