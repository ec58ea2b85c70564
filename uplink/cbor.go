package uplink

import (
	"math"
	"unicode/utf8"
)

// Hand-written CBOR (RFC 8949) for the parts of cloud messages ferry lays
// out itself: the sequence fields after an event's array and SenML packs.
// Appending is allocation-free; reading is bounded (see cborReader) and
// never panics, whatever the input.

// CBOR major types, shifted into the initial byte.
const (
	cborUint   = 0 << 5
	cborNeg    = 1 << 5
	cborBytes  = 2 << 5
	cborText   = 3 << 5
	cborArray  = 4 << 5
	cborMap    = 5 << 5
	cborTag    = 6 << 5
	cborSimple = 7 << 5

	cborFalse = cborSimple | 20
	cborTrue  = cborSimple | 21
	cborNull  = cborSimple | 22

	// cborTagDecimal is the tag of a decimal fraction [exponent, mantissa].
	cborTagDecimal = 4
)

// appendCBORHead appends the head of an item of major type major and
// argument u in its shortest (deterministic) form.
func appendCBORHead(dst []byte, major byte, u uint64) []byte {
	switch {
	case u < 24:
		return append(dst, major|byte(u))
	case u <= 0xff:
		return append(dst, major|24, byte(u))
	case u <= 0xffff:
		return append(dst, major|25, byte(u>>8), byte(u))
	case u <= 0xffffffff:
		return append(dst, major|26, byte(u>>24), byte(u>>16), byte(u>>8), byte(u))
	default:
		return append(dst, major|27, byte(u>>56), byte(u>>48), byte(u>>40), byte(u>>32),
			byte(u>>24), byte(u>>16), byte(u>>8), byte(u))
	}
}

// appendCBORInt appends a signed integer.
func appendCBORInt(dst []byte, v int64) []byte {
	if v < 0 {
		return appendCBORHead(dst, cborNeg, uint64(-(v + 1)))
	}
	return appendCBORHead(dst, cborUint, uint64(v))
}

// appendCBORText appends a text string. s must be valid UTF-8 (the
// caller's strings are checked where they come from the network).
func appendCBORText(dst []byte, s string) []byte {
	dst = appendCBORHead(dst, cborText, uint64(len(s)))
	return append(dst, s...)
}

// appendCBORTextBytes is appendCBORText for a byte slice.
func appendCBORTextBytes(dst []byte, s []byte) []byte {
	dst = appendCBORHead(dst, cborText, uint64(len(s)))
	return append(dst, s...)
}

// appendCBORBool appends true or false.
func appendCBORBool(dst []byte, b bool) []byte {
	if b {
		return append(dst, cborTrue)
	}
	return append(dst, cborFalse)
}

// appendCBORDecimal appends mantissa·10^exp: an integer when exp is 0,
// else a decimal fraction (tag 4).
func appendCBORDecimal(dst []byte, mantissa int64, exp int) []byte {
	if exp == 0 {
		return appendCBORInt(dst, mantissa)
	}
	dst = append(dst, cborTag|cborTagDecimal, cborArray|2)
	dst = appendCBORInt(dst, int64(exp))
	return appendCBORInt(dst, mantissa)
}

// Limits of cborReader. Messages nest shallowly; anything deeper or longer
// is malformed rather than allocated.
const (
	cborMaxDepth = 8
	// cborMaxItems bounds the declared length of any array or map.
	cborMaxItems = MaxBatchEvents * 4
)

// cborReader reads CBOR items from b. Every method checks its bounds and
// sets err on the first problem; after that every method returns zero
// values, so callers check err once at the end of a step.
type cborReader struct {
	b   []byte
	off int
	err error
}

func (r *cborReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = malformed("cbor at byte %d: "+format, append([]any{r.off}, args...)...)
	}
}

// done reports whether every byte was read.
func (r *cborReader) done() bool { return r.err == nil && r.off == len(r.b) }

// peek returns the major type and additional info of the next item.
func (r *cborReader) peek() (major, info byte, ok bool) {
	if r.err != nil || r.off >= len(r.b) {
		r.fail("unexpected end")
		return 0, 0, false
	}
	c := r.b[r.off]
	return c & 0xe0, c & 0x1f, true
}

// head reads an item head: major type and argument. Indefinite lengths
// and reserved additional information are malformed.
func (r *cborReader) head() (major byte, arg uint64) {
	major, info, ok := r.peek()
	if !ok {
		return 0, 0
	}
	r.off++
	switch {
	case info < 24:
		return major, uint64(info)
	case info <= 27:
		n := 1 << (info - 24)
		if len(r.b)-r.off < n {
			r.fail("truncated head")
			return 0, 0
		}
		var v uint64
		for _, c := range r.b[r.off : r.off+n] {
			v = v<<8 | uint64(c)
		}
		r.off += n
		return major, v
	default:
		r.fail("indefinite length or reserved value")
		return 0, 0
	}
}

// length reads the head of an item of major type want and returns its
// length, bounded by limit.
func (r *cborReader) length(want byte, limit uint64) int {
	major, n := r.head()
	if r.err != nil {
		return 0
	}
	if major != want {
		r.fail("major type %d, want %d", major>>5, want>>5)
		return 0
	}
	if n > limit {
		r.fail("length %d exceeds %d", n, limit)
		return 0
	}
	return int(n)
}

// arrayLen reads an array head.
func (r *cborReader) arrayLen(limit uint64) int { return r.length(cborArray, limit) }

// mapLen reads a map head.
func (r *cborReader) mapLen(limit uint64) int { return r.length(cborMap, limit) }

// bytesOf reads n raw bytes.
func (r *cborReader) bytesOf(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b)-r.off < n {
		r.fail("truncated string")
		return nil
	}
	s := r.b[r.off : r.off+n]
	r.off += n
	return s
}

// text reads a text string of at most limit bytes, which must be valid UTF-8.
func (r *cborReader) text(limit uint64) string {
	s := r.bytesOf(r.length(cborText, limit))
	if r.err != nil {
		return ""
	}
	if !utf8.Valid(s) {
		r.fail("invalid UTF-8 in a text string")
		return ""
	}
	return string(s)
}

// uint reads an unsigned integer.
func (r *cborReader) uint() uint64 {
	major, v := r.head()
	if r.err == nil && major != cborUint {
		r.fail("major type %d, want an unsigned integer", major>>5)
		return 0
	}
	return v
}

// int reads an integer that fits an int64.
func (r *cborReader) int() int64 {
	major, v := r.head()
	switch {
	case r.err != nil:
		return 0
	case major == cborUint && v <= math.MaxInt64:
		return int64(v)
	case major == cborNeg && v <= math.MaxInt64:
		return -int64(v) - 1
	default:
		r.fail("not an int64")
		return 0
	}
}

// bool reads true or false.
func (r *cborReader) bool() bool {
	if _, _, ok := r.peek(); !ok {
		return false
	}
	switch r.b[r.off] {
	case cborTrue:
		r.off++
		return true
	case cborFalse:
		r.off++
		return false
	default:
		r.fail("not a boolean")
		return false
	}
}

// null reads a null if one is next and reports whether it did.
func (r *cborReader) null() bool {
	if r.err == nil && r.off < len(r.b) && r.b[r.off] == cborNull {
		r.off++
		return true
	}
	return false
}

// number is a decoded SenML number: mantissa·10^exp, or a float.
type number struct {
	mantissa int64
	exp      int
	float    float64
	isFloat  bool
}

// maxDecimalExp bounds the exponent of a decimal fraction ferry reads: a
// value is rendered as digits, and 10^1000 would be a thousand of them.
const maxDecimalExp = 24

// number reads an integer, a float (half, single or double precision) or
// a decimal fraction (tag 4) with an int64 mantissa.
func (r *cborReader) number() number {
	major, info, ok := r.peek()
	if !ok {
		return number{}
	}
	switch {
	case major == cborUint || major == cborNeg:
		return number{mantissa: r.int()}
	case major == cborTag:
		if _, tag := r.head(); r.err == nil && tag != cborTagDecimal {
			r.fail("tag %d where a number was expected", tag)
			return number{}
		}
		if r.arrayLen(2) != 2 {
			r.fail("decimal fraction is not a pair")
			return number{}
		}
		exp := r.int()
		m := r.int()
		if exp < -maxDecimalExp || exp > maxDecimalExp {
			r.fail("decimal exponent %d out of range", exp)
			return number{}
		}
		return number{mantissa: m, exp: int(exp)}
	case major == cborSimple && info >= 25 && info <= 27:
		_, bits := r.head()
		var f float64
		switch info {
		case 25:
			f = float16(uint16(bits))
		case 26:
			f = float64(math.Float32frombits(uint32(bits)))
		default:
			f = math.Float64frombits(bits)
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			r.fail("non-finite number")
			return number{}
		}
		return number{float: f, isFloat: true}
	default:
		r.fail("not a number")
		return number{}
	}
}

// float16 converts IEEE 754 half precision bits.
func float16(h uint16) float64 {
	exp := int(h>>10) & 0x1f
	mant := float64(h & 0x3ff)
	var v float64
	switch exp {
	case 0:
		v = math.Ldexp(mant, -24)
	case 31:
		if mant == 0 {
			v = math.Inf(1)
		} else {
			v = math.NaN()
		}
	default:
		v = math.Ldexp(mant+1024, exp-25)
	}
	if h&0x8000 != 0 {
		return -v
	}
	return v
}

// skip skips one whole item, nested items included, to depth cborMaxDepth.
func (r *cborReader) skip() { r.skipDepth(0) }

func (r *cborReader) skipDepth(depth int) {
	if depth > cborMaxDepth {
		r.fail("nested deeper than %d", cborMaxDepth)
		return
	}
	major, arg := r.head()
	if r.err != nil {
		return
	}
	switch major {
	case cborBytes, cborText:
		if arg > uint64(len(r.b)-r.off) {
			r.fail("truncated string")
			return
		}
		r.off += int(arg)
	case cborArray, cborMap:
		if arg > cborMaxItems {
			r.fail("%d items exceed %d", arg, cborMaxItems)
			return
		}
		n := int(arg)
		if major == cborMap {
			n *= 2
		}
		for i := 0; i < n && r.err == nil; i++ {
			r.skipDepth(depth + 1)
		}
	case cborTag:
		r.skipDepth(depth + 1)
	}
}
