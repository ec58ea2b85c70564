package rules

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// Format names a payload encoding.
type Format string

// The payload formats Decode understands.
const (
	// FormatAuto picks the format per event: from the MQTT 5 content type
	// when the event has one, else by looking at the payload (see
	// FormatFor).
	FormatAuto Format = "auto"
	// FormatJSON is a JSON document (RFC 8259).
	FormatJSON Format = "json"
	// FormatCBOR is a CBOR data item (RFC 8949) with text-string map keys.
	FormatCBOR Format = "cbor"
	// FormatSenMLJSON is a SenML pack in JSON (RFC 8428 section 5).
	FormatSenMLJSON Format = "senml+json"
	// FormatSenMLCBOR is a SenML pack in CBOR (RFC 8428 section 6).
	FormatSenMLCBOR Format = "senml+cbor"
	// FormatNumber is a bare decimal number in text, as simple sensors
	// publish it.
	FormatNumber Format = "number"
)

// Limits on what Decode accepts. Payloads come from the network, from
// devices that may be buggy or hostile, and the gateway is a small
// machine: each limit bounds the memory or stack one event can cost, and
// a payload beyond one is malformed rather than truncated.
const (
	// payloadMaxBytes caps the payload size (1 MiB).
	payloadMaxBytes = 1 << 20
	// payloadMaxDepth caps nesting of arrays and maps (objects); the
	// top-level container is level 1.
	payloadMaxDepth = 32
	// payloadMaxElems caps the elements of one array and the members of
	// one map.
	payloadMaxElems = 10000
	// payloadMaxInt is 2^53: integers up to this magnitude convert to
	// float64 exactly, and Fields hold numbers as float64.
	payloadMaxInt = 1 << 53
)

// ParseFormat returns the Format named s ("auto", "json", "cbor",
// "senml+json", "senml+cbor" or "number", in any case); an empty s is
// FormatAuto, the default.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(strings.TrimSpace(s))); f {
	case "":
		return FormatAuto, nil
	case FormatAuto, FormatJSON, FormatCBOR, FormatSenMLJSON, FormatSenMLCBOR, FormatNumber:
		return f, nil
	}
	return "", fmt.Errorf("rules: unknown payload format %q (want auto, json, cbor, senml+json, senml+cbor or number)", s)
}

// FormatFor returns the concrete format Decode uses for payload. A
// configured format other than FormatAuto wins over the event's content
// type. For FormatAuto, the MQTT 5 content type decides when it is one of
// application/json, application/cbor, application/senml+json,
// application/senml+cbor or text/plain (parameters such as charset are
// ignored; other "+json" and "+cbor" types count as JSON and CBOR).
// Without a content type, or with one not listed, the payload is sniffed:
// a first byte that starts a CBOR array or map means CBOR (SenML CBOR if
// it is an array whose first element is a map with an integer first key,
// as no plain-CBOR payload we accept has integer keys); '{' or '[' after
// JSON whitespace means JSON (SenML JSON if it is a non-empty array of
// objects that each carry a SenML name or value label: n, bn, v, vs, vb,
// vd or s); a bare decimal number means FormatNumber. An explicit
// application/json never becomes SenML: sniffing is for devices that say
// nothing. The error, wrapping ErrMalformed, is for an empty payload or
// one that looks like none of these.
func FormatFor(f Format, contentType string, payload []byte) (Format, error) {
	f, sniffedJSON, err := payloadFormat(f, contentType, payload)
	if err != nil || !sniffedJSON {
		return f, err
	}
	// Telling SenML from other JSON arrays needs the parsed document; a
	// payload that does not parse is JSON, and Decode says why it is bad.
	if v, err := decodePayloadJSON(payload); err == nil && senmlJSONShape(v) {
		return FormatSenMLJSON, nil
	}
	return FormatJSON, nil
}

// payloadFormat is FormatFor without the SenML JSON check, which needs a
// parse that Decode does anyway: sniffedJSON reports that FormatJSON came
// from sniffing, so the parsed value may still turn out to be SenML.
func payloadFormat(f Format, contentType string, payload []byte) (_ Format, sniffedJSON bool, _ error) {
	switch f {
	case FormatJSON, FormatCBOR, FormatSenMLJSON, FormatSenMLCBOR, FormatNumber:
		return f, false, nil
	case FormatAuto, "":
	default:
		// A programming or configuration error, not a bad payload, so it
		// does not wrap ErrMalformed.
		return "", false, fmt.Errorf("rules: unknown payload format %q", string(f))
	}
	if contentType != "" {
		mt := contentType
		if i := strings.IndexByte(mt, ';'); i >= 0 {
			mt = mt[:i]
		}
		mt = strings.ToLower(strings.TrimSpace(mt))
		switch {
		case mt == "application/senml+json":
			return FormatSenMLJSON, false, nil
		case mt == "application/senml+cbor":
			return FormatSenMLCBOR, false, nil
		case mt == "application/json" || strings.HasSuffix(mt, "+json"):
			return FormatJSON, false, nil
		case mt == "application/cbor" || strings.HasSuffix(mt, "+cbor"):
			return FormatCBOR, false, nil
		case mt == "text/plain":
			return FormatNumber, false, nil
		}
		// An unknown type (application/octet-stream is common) tells us
		// nothing; sniffing is safe because every format's decoder is
		// strict.
	}
	return sniffPayloadFormat(payload)
}

// sniffPayloadFormat guesses the format of payload from its first bytes.
func sniffPayloadFormat(payload []byte) (_ Format, sniffedJSON bool, _ error) {
	if len(payload) == 0 {
		return "", false, payloadErrorf("empty payload")
	}
	// CBOR first: array and map initial bytes are 0x80-0xbf, never JSON
	// whitespace or ASCII, so the two tests cannot overlap.
	switch b := payload[0]; {
	case b >= 0x80 && b <= 0x9b || b == 0x9f || b >= 0xa0 && b <= 0xbb || b == 0xbf:
		if cborSenMLShape(payload) {
			return FormatSenMLCBOR, false, nil
		}
		return FormatCBOR, false, nil
	}
	i := skipJSONSpace(payload, 0)
	if i < len(payload) && (payload[i] == '{' || payload[i] == '[') {
		return FormatJSON, true, nil
	}
	if _, err := decodePayloadNumber(payload); err == nil {
		return FormatNumber, false, nil
	}
	return "", false, payloadErrorf("cannot tell the payload format: not JSON, CBOR or a number (first byte 0x%02x)", payload[0])
}

// cborSenMLShape reports whether payload starts with a CBOR array whose
// first element is a map whose first key is an integer: SenML's CBOR
// labels are integers, and plain CBOR with integer keys is rejected
// anyway, so this cannot misroute a payload that would otherwise decode.
func cborSenMLShape(p []byte) bool {
	i, ok := cborSkipHead(p, 0, 4)
	if !ok {
		return false
	}
	i, ok = cborSkipHead(p, i, 5)
	if !ok || i >= len(p) {
		return false
	}
	return p[i]>>5 <= 1 // major type 0 (unsigned) or 1 (negative)
}

// cborSkipHead returns the offset after the head of the item at p[i] if
// that item has the given major type (definite or indefinite length).
func cborSkipHead(p []byte, i int, major byte) (int, bool) {
	if i >= len(p) || p[i]>>5 != major {
		return 0, false
	}
	switch ai := p[i] & 0x1f; {
	case ai < 24 || ai == 31:
		return i + 1, true
	case ai <= 27:
		n := i + 1 + 1<<(ai-24) // 1, 2, 4 or 8 length bytes
		return n, n <= len(p)
	}
	return 0, false
}

// Decode turns one event payload into records. base carries the event's
// Key, Time, Source and Topic; every record returned copies them, with
// Fields from the payload:
//
//   - a JSON object or CBOR map becomes Fields as is, numbers as float64;
//   - any other JSON or CBOR value (an array, a string, ...) becomes
//     {"value": v}, as does a bare number;
//   - a SenML pack becomes one record per SenML record, resolved per RFC
//     8428 section 4.6 (see the SenML section of the package for the
//     Fields, Key and Time of those records).
//
// f picks the format; FormatAuto picks per event (see FormatFor).
//
// What is refused, because payloads come from the network: more than
// 1 MiB; nesting deeper than 32 arrays and maps; an array or map with more
// than 10,000 elements; a SenML pack of more than 1,000 records, or a
// resolved SenML name of more than 1,024 bytes; invalid UTF-8 in strings
// (and, in JSON, unpaired \u surrogate escapes); duplicate map keys;
// trailing data after the value; NaN and ±Inf (JSON cannot write them but
// CBOR can, in half, single and double precision; they would poison
// aggregates and cannot be re-encoded as JSON); integer literals beyond
// ±2^53, which float64 cannot hold exactly, so a counter or an ID would
// change silently (a device that needs them must send strings; JSON
// numbers with a fraction or exponent are floats by declaration and are
// rounded like any JSON parser does); CBOR tags
// (including bignums, decimal fractions and the self-described CBOR tag);
// CBOR simple values other than false, true, null and undefined (which
// becomes nil); CBOR map keys other than text strings outside SenML. CBOR
// byte strings become base64url strings without padding (RFC 4648
// section 5), the encoding SenML uses for its data values, so a record
// always re-encodes as JSON. Every such failure is an error wrapping
// ErrMalformed whose text names what is wrong, and which is the same for
// the same payload.
func Decode(f Format, contentType string, payload []byte, base Record) ([]*Record, error) {
	if len(payload) > payloadMaxBytes {
		return nil, payloadErrorf("payload of %d bytes is over the %d-byte limit", len(payload), payloadMaxBytes)
	}
	f, sniffedJSON, err := payloadFormat(f, contentType, payload)
	if err != nil {
		return nil, err
	}
	switch f {
	case FormatJSON, FormatSenMLJSON:
		v, err := decodePayloadJSON(payload)
		if err != nil {
			return nil, err
		}
		if f == FormatSenMLJSON || sniffedJSON && senmlJSONShape(v) {
			return senmlFromJSON(v, base)
		}
		return oneRecord(base, v), nil
	case FormatCBOR:
		v, err := decodePayloadCBOR(payload)
		if err != nil {
			return nil, err
		}
		return oneRecord(base, v), nil
	case FormatSenMLCBOR:
		return senmlFromCBOR(payload, base)
	case FormatNumber:
		n, err := decodePayloadNumber(payload)
		if err != nil {
			return nil, err
		}
		return oneRecord(base, n), nil
	}
	return nil, fmt.Errorf("rules: unknown payload format %q", string(f))
}

// oneRecord wraps a decoded value as the single record of an event. The
// record and the slice holding it share one allocation: this is the path
// every plain JSON event takes.
func oneRecord(base Record, v any) []*Record {
	fields, ok := v.(map[string]any)
	if !ok {
		fields = map[string]any{"value": v}
	}
	one := &struct {
		rec Record
		out [1]*Record
	}{rec: base}
	one.rec.Fields = fields
	one.out[0] = &one.rec
	return one.out[:]
}

// payloadErrorf returns an error wrapping ErrMalformed with the reason.
func payloadErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// payloadQuote quotes s for an error message, cut short so that a hostile
// payload cannot make the dead-letter reason huge.
func payloadQuote(s string) string {
	const max = 40
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

// decodePayloadNumber decodes a bare number: a JSON number, optionally
// with a leading '+', with optional whitespace around it (firmware often
// appends a newline). NaN, Inf, hex and digit separators, which
// strconv.ParseFloat would take, are not numbers a sensor means.
func decodePayloadNumber(payload []byte) (float64, error) {
	start := skipJSONSpace(payload, 0)
	end := len(payload)
	for end > start && isJSONSpace(payload[end-1]) {
		end--
	}
	if start == end {
		return 0, payloadErrorf("number: empty payload")
	}
	p := payload[start:end]
	if p[0] == '+' {
		p = p[1:]
		if len(p) > 0 && p[0] == '-' {
			return 0, payloadErrorf("number: not a decimal number")
		}
	}
	d := jsonDecoder{what: "number", data: p}
	n, err := d.number()
	if err != nil {
		return 0, err
	}
	if d.off != len(p) {
		return 0, payloadErrorf("number: not a decimal number")
	}
	return n, nil
}

// decodePayloadJSON parses a JSON document into the Fields model. It is
// a strict parser rather than encoding/json because encoding/json keeps
// the last of duplicate keys, replaces invalid UTF-8 and unpaired
// surrogates with U+FFFD, has no depth or size limits of ours, and its
// token API allocates for every token; the fuzz tests check that this
// parser accepts nothing encoding/json rejects and yields the same values.
func decodePayloadJSON(payload []byte) (any, error) {
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
	if d.depth++; d.depth > payloadMaxDepth {
		return d.errorf("nesting deeper than %d levels", payloadMaxDepth)
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
			return nil, d.errorf("duplicate object key %s", payloadQuote(k))
		}
		if len(m) == payloadMaxElems {
			d.off = keyOff
			return nil, d.errorf("object has more than %d members", payloadMaxElems)
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
		if len(a) == payloadMaxElems {
			return nil, d.errorf("array has more than %d elements", payloadMaxElems)
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
		if intEnd-digits > 16 || n > payloadMaxInt {
			return 0, d.errorf("integer %s is beyond ±2^53, where float64 loses precision", payloadQuote(string(lit)))
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
		return 0, d.errorf("number %s overflows float64", payloadQuote(string(lit)))
	}
	d.off = i
	return f, nil
}

// cborModes returns the CBOR decoding modes: plain CBOR decodes maps to
// map[string]any (any other key type fails in the decoder), SenML to
// map[any]any for its integer labels. Both enforce the limits in the
// decoder itself, which checks declared lengths against the caps and the
// remaining input before it allocates anything for them.
var cborModes = sync.OnceValues(func() ([2]cbor.DecMode, error) {
	opts := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  payloadMaxDepth,
		MaxArrayElements: payloadMaxElems,
		MaxMapPairs:      payloadMaxElems,
		IndefLength:      cbor.IndefLengthAllowed,
		TagsMd:           cbor.TagsForbidden,
		IntDec:           cbor.IntDecConvertNone,
		DefaultMapType:   reflect.TypeFor[map[string]any](),
		UTF8:             cbor.UTF8RejectInvalid,
		NaN:              cbor.NaNDecodeForbidden,
		Inf:              cbor.InfDecodeForbidden,
		BignumTag:        cbor.BignumTagForbidden,
		MapKeyByteString: cbor.MapKeyByteStringForbidden,
	}
	var modes [2]cbor.DecMode
	var err error
	if modes[0], err = opts.DecMode(); err != nil {
		return modes, err
	}
	// RFC 8428 section 6: a SenML pack that is not a stream uses definite
	// lengths, and its strings always do.
	opts.DefaultMapType = nil
	opts.IndefLength = cbor.IndefLengthForbidden
	modes[1], err = opts.DecMode()
	return modes, err
})

// The indexes of cborModes.
const (
	cborPlain = 0
	cborSenML = 1
)

// decodeCBORWith decodes payload with mode i of cborModes.
func decodeCBORWith(i int, payload []byte) (any, error) {
	modes, err := cborModes()
	if err != nil {
		return nil, fmt.Errorf("rules: cbor decoder setup: %w", err)
	}
	var v any
	if err := modes[i].Unmarshal(payload, &v); err != nil {
		return nil, cborError(err, i == cborSenML)
	}
	return v, nil
}

// cborError turns a decoder error into an ErrMalformed with a short,
// deterministic reason.
func cborError(err error, senml bool) error {
	var (
		nest   *cbor.MaxNestedLevelError
		arr    *cbor.MaxArrayElementsError
		pairs  *cbor.MaxMapPairsError
		dup    *cbor.DupMapKeyError
		tags   *cbor.TagsMdError
		extra  *cbor.ExtraneousDataError
		indef  *cbor.IndefiniteLengthError
		syntax *cbor.SyntaxError
		unacc  *cbor.UnacceptableDataItemError
		typ    *cbor.UnmarshalTypeError
		key    *cbor.InvalidMapKeyTypeError
	)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return payloadErrorf("cbor: truncated data")
	case errors.As(err, &nest):
		return payloadErrorf("cbor: nesting deeper than %d levels", payloadMaxDepth)
	case errors.As(err, &arr):
		return payloadErrorf("cbor: array has more than %d elements", payloadMaxElems)
	case errors.As(err, &pairs):
		return payloadErrorf("cbor: map has more than %d pairs", payloadMaxElems)
	case errors.As(err, &dup):
		return payloadErrorf("cbor: duplicate map key")
	case errors.As(err, &tags):
		return payloadErrorf("cbor: tags are not accepted")
	case errors.As(err, &extra):
		return payloadErrorf("cbor: trailing data after the CBOR item")
	case errors.As(err, &indef):
		return payloadErrorf("cbor: indefinite-length item (SenML must use definite lengths)")
	case errors.As(err, &unacc):
		return payloadErrorf("cbor: %s", unacc.Message) // NaN, Inf
	case errors.As(err, &typ), errors.As(err, &key):
		if senml {
			return payloadErrorf("cbor: map key is not an integer label or a text string")
		}
		return payloadErrorf("cbor: map key is not a text string")
	case errors.As(err, &syntax):
		return payloadErrorf("cbor: %s", strings.TrimPrefix(syntax.Error(), "cbor: "))
	}
	return payloadErrorf("cbor: %s", strings.TrimPrefix(err.Error(), "cbor: "))
}

// decodePayloadCBOR decodes a plain CBOR item into the Fields model.
func decodePayloadCBOR(payload []byte) (any, error) {
	if len(payload) == 0 {
		return nil, payloadErrorf("cbor: empty payload")
	}
	v, err := decodeCBORWith(cborPlain, payload)
	if err != nil {
		return nil, err
	}
	return cborNormalize(v)
}

// cborNormalize converts a decoded CBOR value to the Fields model in
// place: integers to float64, byte strings to base64url.
func cborNormalize(v any) (any, error) {
	switch x := v.(type) {
	case nil, bool, string:
		return x, nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) { // the decoder rejects them; be sure
			return nil, payloadErrorf("cbor: NaN or infinite number")
		}
		return x, nil
	case uint64:
		if x > payloadMaxInt {
			return nil, payloadErrorf("cbor: integer %d is beyond ±2^53, where float64 loses precision", x)
		}
		return float64(x), nil
	case int64:
		if x < -payloadMaxInt || x > payloadMaxInt {
			return nil, payloadErrorf("cbor: integer %d is beyond ±2^53, where float64 loses precision", x)
		}
		return float64(x), nil
	case big.Int, *big.Int:
		return nil, payloadErrorf("cbor: integer is beyond ±2^53, where float64 loses precision")
	case []byte:
		return base64.RawURLEncoding.EncodeToString(x), nil
	case []any:
		for i, e := range x {
			n, err := cborNormalize(e)
			if err != nil {
				return nil, err
			}
			x[i] = n
		}
		return x, nil
	case map[string]any:
		// Map order is random: report the error of the smallest failing
		// key so the reason is the same on every replay. Each value is
		// normalized once, whatever fails: re-running a failing subtree
		// to find that key would double the work at every level of
		// nesting, 2^32 times a leaf for 32 nested maps.
		var errKey string
		var firstErr error
		for k, e := range x {
			n, err := cborNormalize(e)
			if err != nil {
				if firstErr == nil || k < errKey {
					errKey, firstErr = k, err
				}
				continue
			}
			x[k] = n
		}
		if firstErr != nil {
			return nil, firstErr
		}
		return x, nil
	case cbor.SimpleValue:
		return nil, payloadErrorf("cbor: unassigned simple value %d", uint8(x))
	}
	return nil, payloadErrorf("cbor: unsupported item of Go type %T", v)
}
