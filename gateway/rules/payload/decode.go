package payload

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ferrygw/ferry/gateway/rules/record"
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

// Errors of decoding; check them with errors.Is.
var (
	// ErrMalformed is returned, wrapped with the reason, for a payload
	// that does not decode in the configured format.
	ErrMalformed = errors.New("rules: malformed payload")
)

// Limits on what Decode accepts. Payloads come from the network, from
// devices that may be buggy or hostile, and the gateway is a small
// machine: each limit bounds the memory or stack one event can cost, and
// a payload beyond one is malformed rather than truncated.
const (
	// maxBytes caps the payload size (1 MiB).
	maxBytes = 1 << 20
	// maxDepth caps nesting of arrays and maps (objects); the
	// top-level container is level 1.
	maxDepth = 32
	// maxElems caps the elements of one array and the members of
	// one map.
	maxElems = 10000
	// maxInt is 2^53: integers up to this magnitude convert to
	// float64 exactly, and Fields hold numbers as float64.
	maxInt = 1 << 53
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
	f, sniffedJSON, err := resolveFormat(f, contentType, payload)
	if err != nil || !sniffedJSON {
		return f, err
	}
	// Telling SenML from other JSON arrays needs the parsed document; a
	// payload that does not parse is JSON, and Decode says why it is bad.
	if v, err := decodeJSON(payload); err == nil && senmlJSONShape(v) {
		return FormatSenMLJSON, nil
	}
	return FormatJSON, nil
}

// resolveFormat is FormatFor without the SenML JSON check, which needs a
// parse that Decode does anyway: sniffedJSON reports that FormatJSON came
// from sniffing, so the parsed value may still turn out to be SenML.
func resolveFormat(f Format, contentType string, payload []byte) (_ Format, sniffedJSON bool, _ error) {
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
	return sniffFormat(payload)
}

// sniffFormat guesses the format of payload from its first bytes.
func sniffFormat(payload []byte) (_ Format, sniffedJSON bool, _ error) {
	if len(payload) == 0 {
		return "", false, errorf("empty payload")
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
	if _, err := decodeNumber(payload); err == nil {
		return FormatNumber, false, nil
	}
	return "", false, errorf("cannot tell the payload format: not JSON, CBOR or a number (first byte 0x%02x)", payload[0])
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
//     8428 section 4.6 (see the SenML comment in senml.go for the
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
func Decode(f Format, contentType string, payload []byte, base record.Record) ([]*record.Record, error) {
	if len(payload) > maxBytes {
		return nil, errorf("payload of %d bytes is over the %d-byte limit", len(payload), maxBytes)
	}
	f, sniffedJSON, err := resolveFormat(f, contentType, payload)
	if err != nil {
		return nil, err
	}
	switch f {
	case FormatJSON, FormatSenMLJSON:
		v, err := decodeJSON(payload)
		if err != nil {
			return nil, err
		}
		if f == FormatSenMLJSON || sniffedJSON && senmlJSONShape(v) {
			return senmlFromJSON(v, base)
		}
		return oneRecord(base, v), nil
	case FormatCBOR:
		v, err := decodeCBOR(payload)
		if err != nil {
			return nil, err
		}
		return oneRecord(base, v), nil
	case FormatSenMLCBOR:
		return senmlFromCBOR(payload, base)
	case FormatNumber:
		n, err := decodeNumber(payload)
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
func oneRecord(base record.Record, v any) []*record.Record {
	fields, ok := v.(map[string]any)
	if !ok {
		fields = map[string]any{"value": v}
	}
	one := &struct {
		rec record.Record
		out [1]*record.Record
	}{rec: base}
	one.rec.Fields = fields
	one.out[0] = &one.rec
	return one.out[:]
}

// errorf returns an error wrapping ErrMalformed with the reason.
func errorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// quote quotes s for an error message, cut short so that a hostile
// payload cannot make the dead-letter reason huge.
func quote(s string) string {
	const max = 40
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}
