package payload

import (
	"maps"
	"slices"

	"github.com/ferrygw/ferry/gateway/rules/record"
)

// Numbers calls yield with each numeric field of payload p, decoded in the
// format its content type (or its bytes) say: a JSON or CBOR object's
// top-level numbers, a bare number as "value", a SenML pack's numeric
// records by resolved name (a name may come twice). It returns false when
// p is not numeric data. It is the buffer's rollup decoder
// (buffer.Options.Numbers), which the buffer cannot import.
func Numbers(contentType string, p []byte, yield func(name string, v float64) bool) bool {
	f, err := FormatFor(FormatAuto, contentType, p)
	if err != nil {
		return false
	}
	recs, err := Decode(f, contentType, p, record.Record{})
	if err != nil {
		return false
	}
	senml := f == FormatSenMLJSON || f == FormatSenMLCBOR
	any := false
	for _, r := range recs {
		if senml {
			name, _ := r.Fields["name"].(string)
			if v, ok := r.Fields["value"].(float64); ok && name != "" {
				any = true
				if !yield(name, v) {
					return false
				}
			}
			continue
		}
		for _, k := range slices.Sorted(maps.Keys(r.Fields)) {
			if v, ok := r.Fields[k].(float64); ok {
				any = true
				if !yield(k, v) {
					return false
				}
			}
		}
	}
	return any
}
