// Package promtext writes the Prometheus text exposition format (0.0.4)
// into a byte slice: a family's HELP and TYPE once, before its first
// sample; a family without samples is left out. The gateway's /metrics
// (gateway/opsapi) and ferry verify's (verify) both write with it. A
// Writer is not safe for concurrent use; the caller writes a family's
// samples one after another, as the format wants.
package promtext

import (
	"math"
	"strconv"
	"unicode/utf8"
)

// Writer appends samples to B.
type Writer struct {
	B      []byte
	family string // the family of the last sample written
}

// Reset empties the Writer, keeping B's storage.
func (w *Writer) Reset() { w.B, w.family = w.B[:0], "" }

// Write appends p as it is (for writers of the whole format, such as
// VictoriaMetrics/metrics'); it never fails.
func (w *Writer) Write(p []byte) (int, error) {
	w.B = append(w.B, p...)
	return len(p), nil
}

// Counter appends a counter sample; labels are pairs of name and value.
func (w *Writer) Counter(name, help string, v uint64, labels ...string) {
	w.Head(name, "counter", help, name, labels)
	w.B = strconv.AppendUint(w.B, v, 10)
	w.B = append(w.B, '\n')
}

// Gauge appends a gauge sample; labels are pairs of name and value.
func (w *Writer) Gauge(name, help string, v float64, labels ...string) {
	w.Head(name, "gauge", help, name, labels)
	w.B = AppendFloat(w.B, v)
	w.B = append(w.B, '\n')
}

// Head writes family's header when family starts, then the sample's name
// (family, or a histogram's family_bucket, _sum, _count) and labels
// (pairs of name and value) and a space: the value and newline are the
// caller's.
func (w *Writer) Head(family, typ, help, sample string, labels []string) {
	if family != w.family {
		w.family = family
		w.B = append(w.B, "# HELP "...)
		w.B = append(w.B, family...)
		w.B = append(w.B, ' ')
		w.B = appendEscaped(w.B, help, false)
		w.B = append(w.B, "\n# TYPE "...)
		w.B = append(w.B, family...)
		w.B = append(w.B, ' ')
		w.B = append(w.B, typ...)
		w.B = append(w.B, '\n')
	}
	w.B = append(w.B, sample...)
	for i := 0; i+1 < len(labels); i += 2 {
		if i == 0 {
			w.B = append(w.B, '{')
		} else {
			w.B = append(w.B, ',')
		}
		w.B = append(w.B, labels[i]...)
		w.B = append(w.B, `="`...)
		w.B = appendEscaped(w.B, labels[i+1], true)
		w.B = append(w.B, '"')
	}
	if len(labels) > 1 {
		w.B = append(w.B, '}')
	}
	w.B = append(w.B, ' ')
}

// AppendFloat appends v as the format writes numbers: integers without
// an exponent below 1e15, +Inf, else the shortest float.
func AppendFloat(b []byte, v float64) []byte {
	switch {
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return strconv.AppendInt(b, int64(v), 10)
	default:
		return strconv.AppendFloat(b, v, 'g', -1, 64)
	}
}

// appendEscaped escapes s as the format wants: backslash and newline
// everywhere, the double quote inside label values. Names from the
// network or a configuration may hold any of them; invalid UTF-8 is
// replaced (the format is UTF-8).
func appendEscaped(b []byte, s string, quote bool) []byte {
	for _, r := range s {
		switch {
		case r == '\\':
			b = append(b, `\\`...)
		case r == '\n':
			b = append(b, `\n`...)
		case r == '"' && quote:
			b = append(b, `\"`...)
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return b
}
