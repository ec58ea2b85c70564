package payload

import (
	"encoding/json"
	"math"
	"sort"

	"github.com/ferrygw/ferry/gateway/rules/record"
)

// EncodeSenML renders a result record as a SenML pack (RFC 8428, JSON):
// the base name is "<source>:" (or empty), the base time the record's time
// in seconds, and each field a record named after it, with "v" for
// numbers, "vb" for booleans and "vs" for strings; other values (lists,
// objects) are left out. Records are sorted by name, so the bytes are
// deterministic.
//
// A record that came from SenML (it has a string "name" and a "value",
// "string_value" or "bool_value") becomes one SenML record again: n, u, v
// (or vs, vb) and t.
func EncodeSenML(rec *record.Record) []byte {
	if b, ok := encodeSenMLMeasurement(rec); ok {
		return b
	}
	type senml struct {
		BaseName string   `json:"bn,omitempty"`
		BaseTime float64  `json:"bt,omitempty"`
		Name     string   `json:"n"`
		Value    *float64 `json:"v,omitempty"`
		String   *string  `json:"vs,omitempty"`
		Bool     *bool    `json:"vb,omitempty"`
	}
	names := make([]string, 0, len(rec.Fields))
	for k := range rec.Fields {
		names = append(names, k)
	}
	sort.Strings(names)
	pack := make([]senml, 0, len(names))
	for _, n := range names {
		e := senml{Name: n}
		switch v := rec.Fields[n].(type) {
		case float64:
			if math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			e.Value = &v
		case string:
			e.String = &v
		case bool:
			e.Bool = &v
		default:
			continue
		}
		pack = append(pack, e)
	}
	if len(pack) > 0 {
		if rec.Source != "" {
			pack[0].BaseName = rec.Source + ":"
		}
		if !rec.Time.IsZero() {
			pack[0].BaseTime = float64(rec.Time.UnixNano()) / 1e9
		}
	}
	b, _ := json.Marshal(pack) // only numbers, strings and bools: cannot fail
	return b
}

func encodeSenMLMeasurement(rec *record.Record) ([]byte, bool) {
	name, ok := rec.Fields["name"].(string)
	if !ok {
		return nil, false
	}
	type measurement struct {
		Name   string   `json:"n"`
		Unit   string   `json:"u,omitempty"`
		Value  *float64 `json:"v,omitempty"`
		String *string  `json:"vs,omitempty"`
		Bool   *bool    `json:"vb,omitempty"`
		Time   float64  `json:"t,omitempty"`
	}
	m := measurement{Name: name}
	m.Unit, _ = rec.Fields["unit"].(string)
	switch {
	case isFinite(rec.Fields["value"]):
		v := rec.Fields["value"].(float64)
		m.Value = &v
	case rec.Fields["string_value"] != nil:
		s, ok := rec.Fields["string_value"].(string)
		if !ok {
			return nil, false
		}
		m.String = &s
	case rec.Fields["bool_value"] != nil:
		b, ok := rec.Fields["bool_value"].(bool)
		if !ok {
			return nil, false
		}
		m.Bool = &b
	default:
		return nil, false
	}
	if !rec.Time.IsZero() {
		m.Time = float64(rec.Time.UnixNano()) / 1e9
	}
	b, _ := json.Marshal([]measurement{m})
	return b, true
}

func isFinite(v any) bool {
	f, ok := v.(float64)
	return ok && !math.IsNaN(f) && !math.IsInf(f, 0)
}
