package payload

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// decodeNumber decodes a bare number: a JSON number, optionally
// with a leading '+', with optional whitespace around it (firmware often
// appends a newline). NaN, Inf, hex and digit separators, which
// strconv.ParseFloat would take, are not numbers a sensor means.
func decodeNumber(payload []byte) (float64, error) {
	start := skipJSONSpace(payload, 0)
	end := len(payload)
	for end > start && isJSONSpace(payload[end-1]) {
		end--
	}
	if start == end {
		return 0, errorf("number: empty payload")
	}
	p := payload[start:end]
	if p[0] == '+' {
		p = p[1:]
		if len(p) > 0 && p[0] == '-' {
			return 0, errorf("number: not a decimal number")
		}
	}
	d := jsonDecoder{what: "number", data: p}
	n, err := d.number()
	if err != nil {
		return 0, err
	}
	if d.off != len(p) {
		return 0, errorf("number: not a decimal number")
	}
	return n, nil
}

// decodeJSON parses a JSON document into the Fields model. It is
// a strict parser rather than encoding/json because encoding/json keeps
// the last of duplicate keys, replaces invalid UTF-8 and unpaired
// surrogates with U+FFFD, has no depth or size limits of ours, and its
// token API allocates for every token; the fuzz tests check that this
// parser accepts nothing encoding/json rejects and yields the same values.
func decodeJSON(payload []byte) (any, error) {
	d := jsonDecoder{data: payload}
	v, err := d.value()
	if err != nil {
		return nil, err
	}
	if d.off = skipJSONSpace(d.data, d.off); d.off != len(d.data) {
		return nil, d.errorf("trailing data after the JSON value")
	}
	return v, nil
}

// jsonDecoder is a recursive-descent JSON parser over one payload.
type jsonDecoder struct {
	what  string // "json", or "number" for FormatNumber, in errors
	data  []byte
	off   int
	depth int
	buf   []byte // scratch for strings with escapes
}

func (d *jsonDecoder) errorf(format string, args ...any) error {
	what := d.what
	if what == "" {
		what = "json"
	}
	return fmt.Errorf("%w: %s: %s at offset %d", ErrMalformed, what, fmt.Sprintf(format, args...), d.off)
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipJSONSpace(p []byte, i int) int {
	for i < len(p) && isJSONSpace(p[i]) {
		i++
	}
	return i
}

func (d *jsonDecoder) value() (any, error) {
	d.off = skipJSONSpace(d.data, d.off)
	if d.off >= len(d.data) {
		return nil, d.errorf("unexpected end of input")
	}
	switch c := d.data[d.off]; {
	case c == '{':
		return d.object()
	case c == '[':
		return d.array()
	case c == '"':
		s, err := d.str()
		if err != nil {
			return nil, err
		}
		return s, nil
	case c == 't':
		return true, d.literal("true")
	case c == 'f':
		return false, d.literal("false")
	case c == 'n':
		return nil, d.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		n, err := d.number()
		if err != nil {
			return nil, err
		}
		return n, nil
	default:
		return nil, d.errorf("unexpected character %q", rune(c))
	}
}

func (d *jsonDecoder) literal(lit string) error {
	if len(d.data)-d.off < len(lit) || string(d.data[d.off:d.off+len(lit)]) != lit {
		return d.errorf("invalid literal, want %s", lit)
	}
	d.off += len(lit)
	return nil
}

func (d *jsonDecoder) enter() error {
	if d.depth++; d.depth > maxDepth {
		return d.errorf("nesting deeper than %d levels", maxDepth)
	}
	return nil
}

func (d *jsonDecoder) object() (any, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	d.off++ // '{'
	m := make(map[string]any)
	if d.off = skipJSONSpace(d.data, d.off); d.off < len(d.data) && d.data[d.off] == '}' {
		d.off++
		d.depth--
		return m, nil
	}
	for {
		if d.off = skipJSONSpace(d.data, d.off); d.off >= len(d.data) || d.data[d.off] != '"' {
			return nil, d.errorf("expected a string object key")
		}
		keyOff := d.off
		k, err := d.str()
		if err != nil {
			return nil, err
		}
		if _, dup := m[k]; dup {
			d.off = keyOff
			return nil, d.errorf("duplicate object key %s", quote(k))
		}
		if len(m) == maxElems {
			d.off = keyOff
			return nil, d.errorf("object has more than %d members", maxElems)
		}
		if d.off = skipJSONSpace(d.data, d.off); d.off >= len(d.data) || d.data[d.off] != ':' {
			return nil, d.errorf("expected ':' after object key")
		}
		d.off++
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		m[k] = v
		if done, err := d.after('}', "object"); err != nil {
			return nil, err
		} else if done {
			return m, nil
		}
	}
}

func (d *jsonDecoder) array() (any, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	d.off++ // '['
	a := []any{}
	if d.off = skipJSONSpace(d.data, d.off); d.off < len(d.data) && d.data[d.off] == ']' {
		d.off++
		d.depth--
		return a, nil
	}
	for {
		if len(a) == maxElems {
			return nil, d.errorf("array has more than %d elements", maxElems)
		}
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		a = append(a, v)
		if done, err := d.after(']', "array"); err != nil {
			return nil, err
		} else if done {
			return a, nil
		}
	}
}

// after consumes what follows an element of an object or array: a ',' (more
// to come) or the closing byte (done, leaving the container).
func (d *jsonDecoder) after(closer byte, what string) (done bool, err error) {
	if d.off = skipJSONSpace(d.data, d.off); d.off >= len(d.data) {
		return false, d.errorf("unterminated %s", what)
	}
	switch d.data[d.off] {
	case ',':
		d.off++
		return false, nil
	case closer:
		d.off++
		d.depth--
		return true, nil
	}
	return false, d.errorf("expected ',' or '%c' in %s", closer, what)
}

// str parses the string at d.off (its opening quote). Strings without
// escapes, the usual case, are sliced straight out of the payload.
func (d *jsonDecoder) str() (string, error) {
	start := d.off + 1
	for i := start; i < len(d.data); {
		switch c := d.data[i]; {
		case c == '"':
			d.off = i + 1
			return string(d.data[start:i]), nil
		case c == '\\':
			return d.strEscaped(start, i)
		case c < 0x20:
			d.off = i
			return "", d.errorf("control character in string")
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(d.data[i:])
			if r == utf8.RuneError && size == 1 {
				d.off = i
				return "", d.errorf("invalid UTF-8 in string")
			}
			i += size
		}
	}
	d.off = len(d.data)
	return "", d.errorf("unterminated string")
}

// strEscaped finishes a string from its first backslash at i.
func (d *jsonDecoder) strEscaped(start, i int) (string, error) {
	b := append(d.buf[:0], d.data[start:i]...)
	for i < len(d.data) {
		c := d.data[i]
		switch {
		case c == '"':
			d.off = i + 1
			d.buf = b
			return string(b), nil
		case c == '\\':
			if i+1 >= len(d.data) {
				d.off = i
				return "", d.errorf("unterminated string")
			}
			switch e := d.data[i+1]; e {
			case '"', '\\', '/':
				b = append(b, e)
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				d.off = i
				r, ok := hex4(d.data, i+2)
				if !ok {
					return "", d.errorf("invalid \\u escape")
				}
				i += 6
				if r >= 0xdc00 && r <= 0xdfff {
					return "", d.errorf("unpaired surrogate in \\u escape")
				}
				if r >= 0xd800 && r <= 0xdbff {
					if i+1 >= len(d.data) || d.data[i] != '\\' || d.data[i+1] != 'u' {
						return "", d.errorf("unpaired surrogate in \\u escape")
					}
					lo, ok := hex4(d.data, i+2)
					if !ok || lo < 0xdc00 || lo > 0xdfff {
						return "", d.errorf("unpaired surrogate in \\u escape")
					}
					r = 0x10000 + (r-0xd800)<<10 + (lo - 0xdc00)
					i += 6
				}
				b = utf8.AppendRune(b, r)
				continue
			default:
				d.off = i
				return "", d.errorf("invalid escape \\%c", rune(e))
			}
			i += 2
		case c < 0x20:
			d.off = i
			return "", d.errorf("control character in string")
		case c < utf8.RuneSelf:
			b = append(b, c)
			i++
		default:
			r, size := utf8.DecodeRune(d.data[i:])
			if r == utf8.RuneError && size == 1 {
				d.off = i
				return "", d.errorf("invalid UTF-8 in string")
			}
			b = append(b, d.data[i:i+size]...)
			i += size
		}
	}
	d.off = len(d.data)
	return "", d.errorf("unterminated string")
}

// hex4 decodes the four hex digits at p[i:].
func hex4(p []byte, i int) (rune, bool) {
	if i+4 > len(p) {
		return 0, false
	}
	var r rune
	for _, c := range p[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// number parses a JSON number at d.off. An integer literal (no fraction
// or exponent) must be within ±2^53, where float64 is exact; a float
// literal must be finite.
func (d *jsonDecoder) number() (float64, error) {
	p, start := d.data, d.off
	i := start
	if i < len(p) && p[i] == '-' {
		i++
	}
	digits := i
	switch {
	case i < len(p) && p[i] == '0':
		i++
	case i < len(p) && p[i] >= '1' && p[i] <= '9':
		for i < len(p) && p[i] >= '0' && p[i] <= '9' {
			i++
		}
	default:
		d.off = i
		return 0, d.errorf("invalid number")
	}
	intEnd := i
	if i < len(p) && p[i] == '.' {
		i++
		if i >= len(p) || p[i] < '0' || p[i] > '9' {
			d.off = i
			return 0, d.errorf("invalid number: digit expected after '.'")
		}
		for i < len(p) && p[i] >= '0' && p[i] <= '9' {
			i++
		}
	}
	if i < len(p) && (p[i] == 'e' || p[i] == 'E') {
		i++
		if i < len(p) && (p[i] == '+' || p[i] == '-') {
			i++
		}
		if i >= len(p) || p[i] < '0' || p[i] > '9' {
			d.off = i
			return 0, d.errorf("invalid number: digit expected in exponent")
		}
		for i < len(p) && p[i] >= '0' && p[i] <= '9' {
			i++
		}
	}
	lit := p[start:i]
	if i == intEnd {
		// 2^53 has 16 digits: up to 16 digits fit int64 without overflow,
		// and 17 or more are beyond 2^53 whatever they are.
		var n int64
		if intEnd-digits <= 16 {
			for _, c := range p[digits:intEnd] {
				n = n*10 + int64(c-'0')
			}
		}
		if intEnd-digits > 16 || n > maxInt {
			return 0, d.errorf("integer %s is beyond ±2^53, where float64 loses precision", quote(string(lit)))
		}
		d.off = i
		if p[start] == '-' {
			return -float64(n), nil
		}
		return float64(n), nil
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil {
		// The syntax was checked above, so this is a range error.
		return 0, d.errorf("number %s overflows float64", quote(string(lit)))
	}
	d.off = i
	return f, nil
}
