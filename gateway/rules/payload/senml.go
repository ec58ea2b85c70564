package payload

import (
	"encoding/base64"
	"math"
	"math/big"
	"math/bits"
	"strconv"
	"strings"
	"time"

	"github.com/ferrygw/ferry/gateway/rules/record"
)

// SenML packs (RFC 8428) decode to one record per SenML record that
// carries a value, resolved per section 4.6: base name, time, unit, value
// and sum applied, relative times made absolute. Each record's Fields
// are:
//
//	"name"          resolved name (bn + n), always present
//	"unit"          u, else bu; absent if neither is given
//	"value"         bv + v, for a numeric value
//	"string_value"  vs
//	"bool_value"    vb
//	"data_value"    vd, base64url without padding (RFC 8428's JSON form)
//	"sum"           bs + s, present if either is
//	"time"          resolved time, Unix seconds as float64
//
// Exactly one of the value fields is present, unless the record has a sum
// ("s") and no value. Update time ("ut") is checked but not kept.
//
// The record's Time is the resolved time: bt + t when that is at least
// 2^28 (absolute Unix seconds), else base.Time plus bt + t seconds (RFC
// 8428 section 4.5.3: smaller values, negative ones included, are
// relative to "now", and "now" is when the gateway accepted the event,
// which replays identically). Times are rounded to the microsecond: a
// float64 near today's Unix time resolves about 0.24 µs, so finer digits
// are noise, and rounding makes 1276020076.001 resolve to exactly .001 s.
// The first record's Key is base.Key and the n-th (from 0) base.Key+"#n",
// counting the records Decode returns.
//
// Validation, each failure an ErrMalformed naming the record (0-based):
// the pack is a non-empty array of at most 1,000 maps; every label has
// its type (section 4.3; in CBOR, version is an unsigned integer and data
// value a byte string, and labels are the integers of section 6, text
// keys being extensions); a label ending in '_' is refused as a
// must-understand extension we do not know (section 4.4), other unknown
// labels are ignored; the version is 1 to 10 and the same in all records
// (section 4.4); a record has exactly one of v, vs, vb, vd, or none and an
// s (section 4.2; a base sum alone is not a Sum field); the resolved name
// is non-empty, at most 1,024 bytes long, starts with a letter or digit
// and has only letters, digits and "-:./_" (section 4.5.1); values, sums
// and times are finite and times fall within 2^28 (1978) to the end of
// year 9999 when absolute, and within 285 years in the past (what a
// time.Duration holds) when relative. A record with only base fields, as
// in RFC 8428's actuator example (section 5.1.7), sets bases for the
// records after it and yields no record.

// Limits and constants of SenML decoding.
const (
	senmlMaxRecords = 1000
	senmlMaxName    = 1024          // bytes of a resolved name (bn + n)
	senmlVersion    = 10            // the version RFC 8428 defines; newer ones are refused
	senmlRelative   = 1 << 28       // times below are relative to now
	senmlMaxUnix    = 253402300799  // 9999-12-31T23:59:59Z
	senmlMaxRelSec  = 9_000_000_000 // |relative time| that fits a Duration
)

// SenML label indexes, in the order records are checked.
const (
	senmlBN = iota
	senmlBT
	senmlBU
	senmlBV
	senmlBS
	senmlBVer
	senmlN
	senmlU
	senmlV
	senmlVS
	senmlVB
	senmlVD
	senmlS
	senmlT
	senmlUT
	senmlLabels
)

// Kinds of SenML label values.
const (
	senmlString = iota
	senmlNumber
	senmlBool
	senmlData
	senmlVer
)

// senmlLabel describes one label: its JSON name, CBOR integer label
// (RFC 8428 table 4) and value kind.
var senmlLabel = [senmlLabels]struct {
	json string
	cbor int64
	kind int
}{
	senmlBN:   {"bn", -2, senmlString},
	senmlBT:   {"bt", -3, senmlNumber},
	senmlBU:   {"bu", -4, senmlString},
	senmlBV:   {"bv", -5, senmlNumber},
	senmlBS:   {"bs", -6, senmlNumber},
	senmlBVer: {"bver", -1, senmlVer},
	senmlN:    {"n", 0, senmlString},
	senmlU:    {"u", 1, senmlString},
	senmlV:    {"v", 2, senmlNumber},
	senmlVS:   {"vs", 3, senmlString},
	senmlVB:   {"vb", 4, senmlBool},
	senmlVD:   {"vd", 8, senmlData},
	senmlS:    {"s", 5, senmlNumber},
	senmlT:    {"t", 6, senmlNumber},
	senmlUT:   {"ut", 7, senmlNumber},
}

// senmlByCBOR maps CBOR labels -6..8 to label indexes (offset by 6).
var senmlByCBOR = func() (m [15]int) {
	for l, info := range senmlLabel {
		m[info.cbor+6] = l
	}
	return m
}()

// Label sets.
const (
	senmlBaseMask    = 1<<senmlBN | 1<<senmlBT | 1<<senmlBU | 1<<senmlBV | 1<<senmlBS | 1<<senmlBVer
	senmlRegularMask = (1<<senmlLabels - 1) &^ senmlBaseMask
	senmlValueMask   = 1<<senmlV | 1<<senmlVS | 1<<senmlVB | 1<<senmlVD
	// senmlShapeMask is what sniffing wants in every record of a JSON
	// array to call it SenML: a name or a value.
	senmlShapeMask = 1<<senmlN | 1<<senmlBN | senmlValueMask | 1<<senmlS
)

// senmlRecord is one SenML record's labels, type-checked.
type senmlRecord struct {
	has  uint32
	str  [senmlLabels]string  // string and data labels
	num  [senmlLabels]float64 // number labels
	vb   bool
	bver uint64
}

func (r *senmlRecord) is(l int) bool { return r.has&(1<<l) != 0 }

// senmlJSONShape reports whether a parsed JSON value looks like a SenML
// pack (for sniffing): a non-empty array of objects that each have a name
// or value label.
func senmlJSONShape(v any) bool {
	pack, ok := v.([]any)
	if !ok || len(pack) == 0 {
		return false
	}
	for _, e := range pack {
		m, ok := e.(map[string]any)
		if !ok {
			return false
		}
		found := false
		for l, info := range senmlLabel {
			if senmlShapeMask&(1<<l) != 0 {
				if _, ok := m[info.json]; ok {
					found = true
					break
				}
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// senmlFromJSON resolves a parsed SenML JSON pack.
func senmlFromJSON(v any, base record.Record) ([]*record.Record, error) {
	return resolvePack(v, base, "an object", (*senmlRecord).fromJSON)
}

// senmlFromCBOR decodes and resolves a SenML CBOR pack.
func senmlFromCBOR(payload []byte, base record.Record) ([]*record.Record, error) {
	if len(payload) == 0 {
		return nil, errorf("senml: empty payload")
	}
	v, err := decodeCBORWith(cborSenML, payload)
	if err != nil {
		return nil, err
	}
	return resolvePack(v, base, "a map", (*senmlRecord).fromCBOR)
}

// resolvePack type-checks each record of a decoded pack (JSON objects or
// CBOR maps, M) with parse and resolves the pack.
func resolvePack[M any](v any, base record.Record, what string, parse func(*senmlRecord, M, int) error) ([]*record.Record, error) {
	pack, ok := v.([]any)
	if !ok {
		return nil, errorf("senml: pack is not an array")
	}
	r, err := newSenMLResolver(base, len(pack))
	if err != nil {
		return nil, err
	}
	for i, e := range pack {
		m, ok := e.(M)
		if !ok {
			return nil, errorf("senml: record %d is not %s", i, what)
		}
		var rec senmlRecord
		if err := parse(&rec, m, i); err != nil {
			return nil, err
		}
		if err := r.add(&rec, i); err != nil {
			return nil, err
		}
	}
	return r.result()
}

// fromJSON type-checks the labels of record i of a JSON pack.
func (r *senmlRecord) fromJSON(m map[string]any, i int) error {
	if err := senmlMustUnderstand(i, func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}); err != nil {
		return err
	}
	var vals [senmlLabels]any
	for l, info := range senmlLabel {
		if v, ok := m[info.json]; ok {
			vals[l] = v
			r.has |= 1 << l
		}
	}
	return r.setLabels(&vals, i, &senmlJSON)
}

// fromCBOR type-checks the labels of record i of a CBOR pack.
func (r *senmlRecord) fromCBOR(m map[any]any, i int) error {
	var vals [senmlLabels]any
	badKey := false
	for k, v := range m {
		switch k := k.(type) {
		case uint64: // labels 0..8
			if k <= 8 {
				l := senmlByCBOR[k+6]
				vals[l] = v
				r.has |= 1 << l
			}
		case int64: // labels -1..-6
			if k >= -6 && k <= -1 {
				l := senmlByCBOR[k+6]
				vals[l] = v
				r.has |= 1 << l
			}
		case string: // extensions (section 6: the integer table is final)
		default:
			badKey = true
		}
	}
	if badKey {
		return errorf("senml: record %d: map key is not an integer label or a text string", i)
	}
	if err := senmlMustUnderstand(i, func(yield func(string) bool) {
		for k := range m {
			if s, ok := k.(string); ok && !yield(s) {
				return
			}
		}
	}); err != nil {
		return err
	}
	return r.setLabels(&vals, i, &senmlCBOR)
}

// senmlSyntax is how one of SenML's encodings writes the label values
// whose types differ between JSON (RFC 8428 section 5) and CBOR (section
// 6): numbers, data values and the version. Strings and booleans are the
// same in both.
type senmlSyntax struct {
	text        string // what a string label must be, for errors
	number      func(v any, i, l int) (float64, error)
	data        func(v any, i, l int) (string, error)
	version     func(v any) (uint64, bool)
	versionWant string // what bver must be, for errors
}

// senmlJSON is SenML JSON: numbers are float64 (the JSON decoder refused
// integers beyond ±2^53), data values base64url strings, the version a
// number that is a positive integer.
var senmlJSON = senmlSyntax{
	text: "a string",
	number: func(v any, i, l int) (float64, error) {
		f, ok := v.(float64)
		if !ok {
			return 0, senmlTypeError(i, l, "a number")
		}
		return f, nil
	},
	data: func(v any, i, l int) (string, error) {
		s, ok := v.(string)
		if !ok {
			return "", senmlTypeError(i, l, "a base64url string")
		}
		s, ok = senmlBase64(s)
		if !ok {
			return "", errorf("senml: record %d: vd is not base64url (RFC 4648 section 5)", i)
		}
		return s, nil
	},
	version: func(v any) (uint64, bool) {
		f, ok := v.(float64)
		if !ok || f != math.Trunc(f) || f < 1 || f > math.MaxInt32 {
			return 0, false
		}
		return uint64(f), true
	},
	versionWant: "a positive integer",
}

// senmlCBOR is SenML CBOR: numbers are floats or integers (checked
// against ±2^53 here, as the SenML decoding mode keeps them as they
// are), data values byte strings, the version an unsigned integer.
var senmlCBOR = senmlSyntax{
	text: "a text string",
	number: func(v any, i, l int) (float64, error) {
		switch x := v.(type) {
		case float64:
			return x, nil // the decoder refused NaN and ±Inf
		case uint64:
			if x > maxInt {
				return 0, errorf("senml: record %d: %s is an integer beyond ±2^53", i, senmlLabel[l].json)
			}
			return float64(x), nil
		case int64:
			if x < -maxInt {
				return 0, errorf("senml: record %d: %s is an integer beyond ±2^53", i, senmlLabel[l].json)
			}
			return float64(x), nil
		case big.Int, *big.Int: // a negative integer beyond int64
			return 0, errorf("senml: record %d: %s is an integer beyond ±2^53", i, senmlLabel[l].json)
		}
		return 0, senmlTypeError(i, l, "a number")
	},
	data: func(v any, i, l int) (string, error) {
		b, ok := v.([]byte)
		if !ok {
			return "", senmlTypeError(i, l, "a byte string")
		}
		return base64.RawURLEncoding.EncodeToString(b), nil
	},
	version: func(v any) (uint64, bool) {
		n, ok := v.(uint64)
		return n, ok && n >= 1
	},
	versionWant: "a positive unsigned integer",
}

// setLabels type-checks the values of the labels r.has names (vals, by
// label index) as syn writes them, and keeps them. Labels are checked in
// index order, so the error for a record with several bad labels does not
// depend on the map order of the decoded pack.
func (r *senmlRecord) setLabels(vals *[senmlLabels]any, i int, syn *senmlSyntax) error {
	for l, info := range senmlLabel {
		if !r.is(l) {
			continue
		}
		switch v := vals[l]; info.kind {
		case senmlString:
			s, ok := v.(string)
			if !ok {
				return senmlTypeError(i, l, syn.text)
			}
			r.str[l] = s
		case senmlNumber:
			f, err := syn.number(v, i, l)
			if err != nil {
				return err
			}
			r.num[l] = f
		case senmlBool:
			b, ok := v.(bool)
			if !ok {
				return senmlTypeError(i, l, "a boolean")
			}
			r.vb = b
		case senmlData:
			s, err := syn.data(v, i, l)
			if err != nil {
				return err
			}
			r.str[l] = s
		case senmlVer:
			n, ok := syn.version(v)
			if !ok {
				return senmlTypeError(i, l, syn.versionWant)
			}
			r.bver = n
		}
	}
	return nil
}

// senmlMustUnderstand fails for record i if a key ends in '_': such
// labels are extensions a reader must understand (RFC 8428 section 4.4),
// and we know none. The smallest such key is named, so the error does not
// depend on map order.
func senmlMustUnderstand(i int, keys func(yield func(string) bool)) error {
	bad, found := "", false
	for k := range keys {
		if strings.HasSuffix(k, "_") && (!found || k < bad) {
			bad, found = k, true
		}
	}
	if found {
		return errorf("senml: record %d: unsupported must-understand label %s", i, quote(bad))
	}
	return nil
}

func senmlTypeError(i, l int, want string) error {
	return errorf("senml: record %d: %s must be %s", i, senmlLabel[l].json, want)
}

// senmlBase64 checks a JSON data value: base64url (RFC 4648 section 5)
// without padding per RFC 8428, though padding is forgiven, as common
// encoders add it. The encoding must be canonical (zero trailing bits),
// so it equals what the CBOR form's bytes encode to; it is returned
// without padding.
func senmlBase64(s string) (string, bool) {
	s = strings.TrimSuffix(strings.TrimSuffix(s, "="), "=")
	for i := 0; i < len(s); i++ {
		// The decoder skips CR and LF; a data value has no place for them.
		if c := s[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "", false
		}
	}
	if _, err := base64.RawURLEncoding.Strict().DecodeString(s); err != nil {
		return "", false
	}
	return s, true
}

// senmlResolver applies base values to the records of a pack in order.
type senmlResolver struct {
	base         record.Record
	bn, bu       string
	bt, bv, bs   float64
	hasBU, hasBS bool
	version      uint64
	recs         []record.Record
	out          []*record.Record
}

func newSenMLResolver(base record.Record, n int) (*senmlResolver, error) {
	if n == 0 {
		return nil, errorf("senml: empty pack")
	}
	if n > senmlMaxRecords {
		return nil, errorf("senml: pack has %d records, over the limit of %d", n, senmlMaxRecords)
	}
	// Records and the pointers to them are allocated once; appends stay
	// within capacity, so the pointers remain valid.
	return &senmlResolver{
		base:    base,
		version: senmlVersion,
		recs:    make([]record.Record, 0, n),
		out:     make([]*record.Record, 0, n),
	}, nil
}

// add resolves record i and appends its output record, if it has one.
func (r *senmlResolver) add(rec *senmlRecord, i int) error {
	if rec.is(senmlBVer) {
		switch {
		case rec.bver > senmlVersion:
			return errorf("senml: record %d: version %d is newer than the supported %d", i, rec.bver, senmlVersion)
		case i == 0:
			r.version = rec.bver
		case rec.bver != r.version:
			return errorf("senml: record %d: version %d differs from the pack's %d", i, rec.bver, r.version)
		}
	}
	if rec.is(senmlBN) {
		r.bn = rec.str[senmlBN]
	}
	if rec.is(senmlBT) {
		r.bt = rec.num[senmlBT]
	}
	if rec.is(senmlBU) {
		r.bu, r.hasBU = rec.str[senmlBU], true
	}
	if rec.is(senmlBV) {
		r.bv = rec.num[senmlBV]
	}
	if rec.is(senmlBS) {
		r.bs, r.hasBS = rec.num[senmlBS], true
	}

	if rec.has&senmlRegularMask == 0 {
		if rec.has&senmlBaseMask != 0 {
			return nil // only base fields: they apply to the records after
		}
		return errorf("senml: record %d has no SenML labels", i)
	}
	switch n := bits.OnesCount32(rec.has & senmlValueMask); {
	case n > 1:
		return errorf("senml: record %d has %d value fields; at most one of v, vs, vb, vd is allowed", i, n)
	case n == 0 && !rec.is(senmlS):
		return errorf("senml: record %d has no value (v, vs, vb or vd) and no sum (s)", i)
	}

	// The length is checked before concatenating: a long base name shared
	// by 1,000 records would otherwise cost 1,000 copies of itself.
	if n := len(r.bn) + len(rec.str[senmlN]); n > senmlMaxName {
		return errorf("senml: record %d: name of %d bytes is over the %d-byte limit", i, n, senmlMaxName)
	}
	name := r.bn + rec.str[senmlN]
	if err := senmlCheckName(name); err != nil {
		return errorf("senml: record %d: %v", i, err)
	}
	fields := make(map[string]any, 5)
	fields["name"] = name
	switch {
	case rec.is(senmlU):
		fields["unit"] = rec.str[senmlU]
	case r.hasBU:
		fields["unit"] = r.bu
	}
	switch {
	case rec.is(senmlV):
		v := r.bv + rec.num[senmlV]
		if math.IsInf(v, 0) {
			return errorf("senml: record %d: bv + v overflows float64", i)
		}
		fields["value"] = v
	case rec.is(senmlVS):
		fields["string_value"] = rec.str[senmlVS]
	case rec.is(senmlVB):
		fields["bool_value"] = rec.vb
	case rec.is(senmlVD):
		fields["data_value"] = rec.str[senmlVD]
	}
	if rec.is(senmlS) || r.hasBS {
		s := r.bs + rec.num[senmlS]
		if math.IsInf(s, 0) {
			return errorf("senml: record %d: bs + s overflows float64", i)
		}
		fields["sum"] = s
	}
	t, err := senmlTime(r.bt+rec.num[senmlT], r.base.Time)
	if err != nil {
		return errorf("senml: record %d: %v", i, err)
	}
	fields["time"] = float64(t.Unix()) + float64(t.Nanosecond())/1e9

	key := r.base.Key
	if n := len(r.out); n > 0 {
		key += "#" + strconv.Itoa(n)
	}
	r.recs = append(r.recs, record.Record{Key: key, Time: t, Source: r.base.Source, Topic: r.base.Topic, Fields: fields})
	r.out = append(r.out, &r.recs[len(r.recs)-1])
	return nil
}

// result returns the records resolved; a pack of base fields only has
// nothing to report and is refused rather than silently dropped.
func (r *senmlResolver) result() ([]*record.Record, error) {
	if len(r.out) == 0 {
		return nil, errorf("senml: pack has no records with a value or sum")
	}
	return r.out, nil
}

// senmlTime resolves a SenML time (bt + t) against now (RFC 8428 section
// 4.5.3), to the microsecond.
func senmlTime(rt float64, now time.Time) (time.Time, error) {
	switch {
	case math.IsInf(rt, 0) || math.IsNaN(rt):
		return time.Time{}, senmlReason("bt + t overflows float64")
	case rt >= senmlRelative:
		if rt > senmlMaxUnix {
			return time.Time{}, senmlReason("time " + strconv.FormatFloat(rt, 'g', -1, 64) + " is after year 9999")
		}
		us := int64(math.Round(rt * 1e6))
		return time.Unix(us/1e6, us%1e6*1e3).UTC(), nil
	case rt < -senmlMaxRelSec:
		return time.Time{}, senmlReason("relative time " + strconv.FormatFloat(rt, 'g', -1, 64) + " s is too far in the past")
	}
	return now.Add(time.Duration(math.Round(rt*1e6)) * time.Microsecond), nil
}

// senmlCheckName checks a resolved name against RFC 8428 section 4.5.1.
func senmlCheckName(name string) error {
	if name == "" {
		return senmlReason("empty name (no n and no bn)")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if i == 0 && !alnum {
			return senmlReason("name " + quote(name) + " must start with a letter or digit")
		}
		if !alnum && c != '-' && c != ':' && c != '.' && c != '/' && c != '_' {
			return senmlReason("name " + quote(name) + " has a character other than letters, digits and -:./_")
		}
	}
	return nil
}

// senmlReason is a plain error for reasons that callers wrap in
// ErrMalformed with the record index.
type senmlReason string

func (e senmlReason) Error() string { return string(e) }
