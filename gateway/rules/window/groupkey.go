package window

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/ferrygw/ferry/gateway/rules/record"
)

// groupKey returns r's group key: as key, or, when it had to be built, in
// keyBytes (w.keyBuf), so that looking up an existing group allocates
// nothing.
func (w *Window) groupKey(r *record.Record) (key string, keyBytes []byte, err error) {
	if len(w.groupBy) == 1 {
		// The common case: one string-valued key that needs no escaping
		// is its own group key.
		var s string
		var ok bool
		switch w.gbKind[0] {
		case gbSource:
			s, ok = r.Source, true
		case gbTopic:
			s, ok = r.Topic, true
		default:
			v, present := r.Fields[w.groupBy[0]]
			if !present {
				return "", nil, w.recordErr(nil, "group_by field %q missing", w.groupBy[0])
			}
			s, ok = v.(string)
		}
		if ok && strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '/') < 0 {
			return s, nil, nil
		}
	}
	b := w.keyBuf[:0]
	for i, f := range w.groupBy {
		if i > 0 {
			b = append(b, '/')
		}
		switch w.gbKind[i] {
		case gbSource:
			b = appendEscaped(b, r.Source)
			continue
		case gbTopic:
			b = appendEscaped(b, r.Topic)
			continue
		}
		v, ok := r.Fields[f]
		if !ok {
			w.keyBuf = b
			return "", nil, w.recordErr(nil, "group_by field %q missing", f)
		}
		b = appendKey(b, v)
	}
	w.keyBuf = b
	return "", b, nil
}

// groupVals returns the GroupBy values of r, as output fields.
func (w *Window) groupVals(r *record.Record) []any {
	if len(w.groupBy) == 0 {
		return nil
	}
	vals := make([]any, len(w.groupBy))
	for i, f := range w.groupBy {
		switch w.gbKind[i] {
		case gbSource:
			vals[i] = r.Source
		case gbTopic:
			vals[i] = r.Topic
		default:
			vals[i] = r.Fields[f]
		}
	}
	return vals
}

// appendKey appends v rendered as by fmt's %v, escaped. The common
// types skip fmt, which allocates.
func appendKey(b []byte, v any) []byte {
	switch x := v.(type) {
	case string:
		return appendEscaped(b, x)
	case float64:
		return strconv.AppendFloat(b, x, 'g', -1, 64)
	case bool:
		return strconv.AppendBool(b, x)
	case nil:
		return append(b, "<nil>"...)
	}
	return appendEscaped(b, fmt.Sprint(v))
}

// appendEscaped appends s with '%' and '/' percent-encoded.
func appendEscaped(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '%':
			b = append(b, "%25"...)
		case '/':
			b = append(b, "%2F"...)
		default:
			b = append(b, c)
		}
	}
	return b
}
