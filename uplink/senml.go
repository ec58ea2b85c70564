package uplink

import (
	"bytes"
	"encoding/hex"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/internal/jsonstr"
)

// SenML packs (RFC 8428) in CBOR, for numeric streams. See "SenML" in the
// package doc for the layout.

// SenML labels of RFC 8428 Table 4 that ferry writes or reads.
const (
	senmlBaseName  = -2 // bn
	senmlBaseTime  = -3 // bt
	senmlName      = 0  // n
	senmlValue     = 2  // v
	senmlStringVal = 3  // vs
	senmlBoolValue = 4  // vb
)

// ferry's extension labels. RFC 8428 §6 says Table 4's integer labels are
// conclusive and extensions use text labels; these start with '_' (no
// registered label does) and none ends with '_', so a SenML reader that
// does not know them ignores them (they are not must-understand).
const (
	senmlGateway = "_gw" // pack: the gateway ID
	senmlStream  = "_st" // pack: the stream
	senmlEpoch   = "_ep" // pack: the epoch
	senmlSeq     = "_sq" // event: its seq, when not the previous event's + 1
	senmlGap     = "_gp" // event: the gap before it, [dropped, {reason: count}]
	senmlReplay  = "_rp" // event: true when replayed
	senmlTopic   = "_tp" // event: its MQTT topic, when it follows from neither the previous topic nor _tt
	senmlTopicT  = "_tt" // event: [prefix, suffix]: its topic, and the next ones', is prefix + source + suffix
	senmlCT      = "_ct" // event: its content type, when not the previous event's
)

// Bounds of what goes in a SenML pack.
const (
	// senmlMaxFields is the most members an event's payload object may
	// have to go in a SenML pack (one record each).
	senmlMaxFields = 64
	// senmlMaxPayload is the largest payload that goes in a SenML pack.
	senmlMaxPayload = 4 << 10
	// senmlMaxDigits bounds a number's digits so its mantissa fits an int64.
	senmlMaxDigits = 18
	// senmlMinTime is RFC 8428's 2^28 s: smaller base times are relative
	// to now, so an event older than 1978 cannot go in a pack.
	senmlMinTime = 1 << 28
	// senmlMaxRecordPairs bounds the labels of a record a decoder reads.
	senmlMaxRecordPairs = 32
	// senmlMaxLabel bounds a text label's length.
	senmlMaxLabel = 64
)

// senmlField is one member of a payload object (or the bare value), its
// name a window of the payload.
type senmlField struct {
	name     []byte
	mantissa int64
	exp      int
	isBool   bool
	b        bool
}

// senmlParse parses a payload that can go in a SenML pack: a JSON object
// whose members are numbers without exponent (at most senmlMaxDigits
// digits) or booleans, with names made of SenML name characters, or a bare
// number or boolean. White space is allowed where JSON allows it (it is
// not kept: the cloud gets the values, and DecodeEnvelopes renders compact
// JSON). It fills out and returns the number of fields (0: not eligible)
// and whether the payload is a bare value.
func senmlParse(p []byte, out *[senmlMaxFields]senmlField) (n int, bare bool) {
	if len(p) == 0 || len(p) > senmlMaxPayload {
		return 0, false
	}
	i := skipSpace(p, 0)
	if i < len(p) && p[i] != '{' {
		f, j, ok := senmlScalar(p, i)
		if !ok || skipSpace(p, j) != len(p) {
			return 0, false
		}
		out[0] = f
		return 1, true
	}
	i++ // '{'
	for {
		i = skipSpace(p, i)
		if i >= len(p) || p[i] != '"' || n == senmlMaxFields {
			return 0, false
		}
		start := i + 1
		i = start
		for i < len(p) && senmlNameChar(p[i]) {
			i++
		}
		if i >= len(p) || p[i] != '"' || i == start {
			return 0, false // an escape, a character SenML names do not allow, or ""
		}
		name := p[start:i]
		i = skipSpace(p, i+1)
		if i >= len(p) || p[i] != ':' {
			return 0, false
		}
		f, j, ok := senmlScalar(p, skipSpace(p, i+1))
		if !ok {
			return 0, false
		}
		f.name = name
		out[n] = f
		n++
		i = skipSpace(p, j)
		if i < len(p) && p[i] == ',' {
			i++
			continue
		}
		if i < len(p) && p[i] == '}' && skipSpace(p, i+1) == len(p) {
			return n, false
		}
		return 0, false
	}
}

func skipSpace(p []byte, i int) int {
	for i < len(p) && isJSONSpace(p[i]) {
		i++
	}
	return i
}

// senmlScalar parses a number or boolean at p[i:], returning it and the
// index after it.
func senmlScalar(p []byte, i int) (senmlField, int, bool) {
	switch {
	case bytes.HasPrefix(p[i:], []byte("true")):
		return senmlField{isBool: true, b: true}, i + 4, true
	case bytes.HasPrefix(p[i:], []byte("false")):
		return senmlField{isBool: true}, i + 5, true
	}
	neg := false
	if i < len(p) && p[i] == '-' {
		neg = true
		i++
	}
	var m int64
	digits, frac := 0, 0
	start := i
	for i < len(p) && p[i] >= '0' && p[i] <= '9' {
		m = m*10 + int64(p[i]-'0')
		digits++
		i++
	}
	if digits == 0 || (p[start] == '0' && digits > 1) {
		return senmlField{}, i, false // no digits, or a leading zero
	}
	if i < len(p) && p[i] == '.' {
		i++
		for i < len(p) && p[i] >= '0' && p[i] <= '9' {
			m = m*10 + int64(p[i]-'0')
			digits++
			frac++
			i++
		}
		if frac == 0 {
			return senmlField{}, i, false
		}
	}
	if digits > senmlMaxDigits || (i < len(p) && (p[i] == 'e' || p[i] == 'E')) {
		return senmlField{}, i, false // an exponent or too many digits: not carried
	}
	if neg {
		if m == 0 {
			return senmlField{}, i, false // -0 would come back as 0
		}
		m = -m
	}
	return senmlField{mantissa: m, exp: -frac}, i, true
}

// senmlNameChar reports whether c may appear in a SenML name (RFC 8428 §4.5.1).
func senmlNameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == ':' || c == '.' || c == '/' || c == '_'
}

// senmlSourceOK reports whether source + "/" is a valid SenML base name.
func senmlSourceOK(source string) bool {
	if source == "" {
		return false
	}
	if c := source[0]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
		return false
	}
	for i := 1; i < len(source); i++ {
		if !senmlNameChar(source[i]) {
			return false
		}
	}
	return true
}

// senmlEligible reports whether ev can go in a SenML pack, and how many
// records it takes. The attributes, if any, and ID are what a pack does not
// carry: an event with attributes goes as a CBOR envelope.
func senmlEligible(ev *event.Event, fields *[senmlMaxFields]senmlField) (n int, bare bool) {
	if len(ev.Attrs) > 0 || !senmlSourceOK(ev.Source) || ev.Time.IsZero() ||
		ev.Time.Unix() < senmlMinTime || !utf8.ValidString(ev.Topic) || !utf8.ValidString(ev.ContentType) {
		return 0, false
	}
	return senmlParse(ev.Payload, fields)
}

// senmlAll reports whether every envelope can go in a SenML pack.
func senmlAll(envs []Envelope) bool {
	var fields [senmlMaxFields]senmlField
	for i := range envs {
		if n, _ := senmlEligible(&envs[i].Event, &fields); n == 0 ||
			!utf8.ValidString(envs[i].Gateway) || !utf8.ValidString(envs[i].Epoch) {
			return false
		}
	}
	return true
}

// senmlRecords counts the records of envs, which must all be eligible.
func senmlRecords(envs []Envelope) int {
	var fields [senmlMaxFields]senmlField
	total := 0
	for i := range envs {
		n, _ := senmlEligible(&envs[i].Event, &fields)
		total += n
	}
	return total
}

// senmlPack is the state of a SenML pack being written: what the records
// written so far set, so the next event repeats none of it. Its zero
// value starts a pack. It keeps copies, not the events' strings.
type senmlPack struct {
	started bool
	source  []byte
	// The topic an event without _tp or _tt has: topic, or with template
	// set prefix + its source + suffix.
	template       bool
	topic          []byte
	prefix, suffix []byte
	ct             []byte
	nextSeq        uint64
}

// reset starts a new pack, keeping the buffers.
func (p *senmlPack) reset() {
	p.started, p.template = false, false
	p.source, p.topic, p.prefix, p.suffix, p.ct = p.source[:0], p.topic[:0], p.prefix[:0], p.suffix[:0], p.ct[:0]
	p.nextSeq = 0
}

// Ways an event's topic is written.
const (
	tmplImplied  = iota // as the pack's state says
	tmplAround          // _tt: prefix and suffix around the source
	tmplExplicit        // _tp: the topic
)

// topicMode returns how ev's topic is written and, for topicTemplate, the
// split of the topic around its source.
func (p *senmlPack) topicMode(ev *event.Event) (mode, at int) {
	t, src := ev.Topic, ev.Source
	if p.template {
		if len(t) == len(p.prefix)+len(src)+len(p.suffix) && strings.HasPrefix(t, string(p.prefix)) &&
			strings.HasSuffix(t, string(p.suffix)) && t[len(p.prefix):len(t)-len(p.suffix)] == src {
			return tmplImplied, 0
		}
	} else if string(p.topic) == t {
		return tmplImplied, 0
	}
	if i := strings.Index(t, src); i >= 0 {
		return tmplAround, i
	}
	return tmplExplicit, 0
}

// appendEvent appends the records of ev, which must be eligible, to dst,
// and records what they set.
func (p *senmlPack) appendEvent(dst []byte, gatewayID string, ev *event.Event, m *seqMeta) []byte {
	var fields [senmlMaxFields]senmlField
	dst, _ = p.encode(dst, gatewayID, ev, m, &fields)
	p.commit(ev, m)
	return dst
}

// news reports what ev's first record must set: base name, content type,
// seq.
func (p *senmlPack) news(ev *event.Event, m *seqMeta) (source, ct, seq bool) {
	first := !p.started
	source = first || string(p.source) != ev.Source
	ct = string(p.ct) != ev.ContentType
	seq = m.seq != 0 && (first || m.seq != p.nextSeq)
	return
}

// encode appends the records of ev after those of the pack so far to dst
// and returns how many there are (0, dst unchanged: ev is not eligible).
// It does not change p: commit does, once the records are kept.
func (p *senmlPack) encode(dst []byte, gatewayID string, ev *event.Event, m *seqMeta, fields *[senmlMaxFields]senmlField) ([]byte, int) {
	n, bare := senmlEligible(ev, fields)
	if n == 0 {
		return dst, 0
	}
	first := !p.started
	newSource, newCT, withSeq := p.news(ev, m)
	topicMode, at := p.topicMode(ev)
	pairs := 2 // bt, v or vb
	if !bare {
		pairs++ // n
	}
	if first {
		pairs += 2 // _gw, _st
		if m.epoch != "" {
			pairs++
		}
	}
	for _, b := range []bool{newSource, withSeq, m.gap != nil, m.replay, topicMode != tmplImplied, newCT} {
		if b {
			pairs++
		}
	}
	dst = appendCBORHead(dst, cborMap, uint64(pairs))
	if newSource {
		dst = appendCBORInt(dst, senmlBaseName)
		dst = appendCBORHead(dst, cborText, uint64(len(ev.Source)+1))
		dst = append(dst, ev.Source...)
		dst = append(dst, '/')
	}
	dst = appendCBORInt(dst, senmlBaseTime)
	ms := ev.Time.UnixMilli()
	if ms%1000 == 0 {
		dst = appendCBORInt(dst, ms/1000)
	} else {
		dst = appendCBORDecimal(dst, ms, -3)
	}
	dst = appendSenMLField(dst, &fields[0], bare)
	if first {
		dst = appendCBORText(dst, senmlGateway)
		dst = appendCBORText(dst, gatewayID)
		dst = appendCBORText(dst, senmlStream)
		dst = appendCBORText(dst, ev.Stream)
		if m.epoch != "" {
			dst = appendCBORText(dst, senmlEpoch)
			dst = appendEpoch(dst, m.epoch)
		}
	}
	if withSeq {
		dst = appendCBORText(dst, senmlSeq)
		dst = appendCBORHead(dst, cborUint, m.seq)
	}
	if m.gap != nil {
		dst = appendCBORText(dst, senmlGap)
		dst = appendCBORGap(dst, m.gap)
	}
	if m.replay {
		dst = appendCBORText(dst, senmlReplay)
		dst = append(dst, cborTrue)
	}
	switch topicMode {
	case tmplAround:
		dst = appendCBORText(dst, senmlTopicT)
		dst = append(dst, cborArray|2)
		dst = appendCBORText(dst, ev.Topic[:at])
		dst = appendCBORText(dst, ev.Topic[at+len(ev.Source):])
	case tmplExplicit:
		dst = appendCBORText(dst, senmlTopic)
		dst = appendCBORText(dst, ev.Topic)
	}
	if newCT {
		dst = appendCBORText(dst, senmlCT)
		dst = appendCBORText(dst, ev.ContentType)
	}
	for i := 1; i < n; i++ {
		dst = append(dst, cborMap|2)
		dst = appendSenMLField(dst, &fields[i], false)
	}
	return dst, n
}

// commit records that ev's records (as encode wrote them) are in the pack.
func (p *senmlPack) commit(ev *event.Event, m *seqMeta) {
	newSource, newCT, _ := p.news(ev, m)
	switch mode, at := p.topicMode(ev); mode {
	case tmplAround:
		p.template = true
		p.prefix = append(p.prefix[:0], ev.Topic[:at]...)
		p.suffix = append(p.suffix[:0], ev.Topic[at+len(ev.Source):]...)
	case tmplExplicit:
		p.template = false
		p.topic = append(p.topic[:0], ev.Topic...)
	}
	p.started = true
	if newSource {
		p.source = append(p.source[:0], ev.Source...)
	}
	if newCT {
		p.ct = append(p.ct[:0], ev.ContentType...)
	}
	if m.seq != 0 {
		p.nextSeq = m.seq + 1
	}
}

// appendSenMLField appends the name (unless bare) and value labels of f.
func appendSenMLField(dst []byte, f *senmlField, bare bool) []byte {
	if !bare {
		dst = appendCBORInt(dst, senmlName)
		dst = appendCBORTextBytes(dst, f.name)
	}
	if f.isBool {
		dst = appendCBORInt(dst, senmlBoolValue)
		return appendCBORBool(dst, f.b)
	}
	dst = appendCBORInt(dst, senmlValue)
	return appendCBORDecimal(dst, f.mantissa, f.exp)
}

// senmlEvent is an event being decoded from a pack.
type senmlEvent struct {
	env    Envelope
	fields int
	bare   bool
}

// decodeSenML decodes a SenML pack written by ferry (see "SenML" in the
// package doc) into envelopes. Unknown integer labels are ignored; a text
// label ending in '_' (must-understand, RFC 8428 §4.4) is refused.
func decodeSenML(b []byte) ([]Envelope, error) {
	r := &cborReader{b: b}
	n := r.arrayLen(MaxBatchEvents * senmlMaxFields)
	if r.err != nil {
		return nil, r.err
	}
	if n == 0 {
		return nil, malformed("empty SenML pack")
	}
	var (
		envs              []Envelope
		cur               *senmlEvent
		gw, stream, epoch string
		bn, topic, ct     string
		template          bool // topic is tprefix + source + tsuffix
		tprefix, tsuffix  string
		payload           []byte
		nextSeq           uint64
		haveBN            bool
		evCount           int
	)
	finish := func() error {
		if cur == nil {
			return nil
		}
		if cur.bare {
			if cur.fields != 1 {
				return malformed("SenML event mixes a record without a name with others")
			}
		} else {
			payload = append(payload, '}')
		}
		cur.env.Event.Payload = payload
		envs = append(envs, cur.env)
		cur, payload = nil, nil
		return nil
	}
	for i := 0; i < n; i++ {
		pairs := r.mapLen(senmlMaxRecordPairs)
		if r.err != nil {
			return nil, r.err
		}
		var (
			name           string
			hasName, hasBT bool
			bt             number
			val            []byte // the value rendered as JSON
			seq            uint64
			hasSeq         bool
			gap            *Gap
			replay         bool
		)
		for j := 0; j < pairs; j++ {
			major, _, ok := r.peek()
			if !ok {
				return nil, r.err
			}
			if major == cborText {
				label := r.text(senmlMaxLabel)
				if r.err != nil {
					return nil, r.err
				}
				switch label {
				case senmlGateway:
					gw = r.text(maxTextField)
				case senmlStream:
					stream = r.text(maxTextField)
				case senmlEpoch:
					epoch = r.epoch()
				case senmlSeq:
					seq, hasSeq = r.uint(), true
				case senmlGap:
					gap = r.gap()
				case senmlReplay:
					replay = r.bool()
				case senmlTopic:
					topic, template = r.text(maxTextField), false
				case senmlTopicT:
					if r.arrayLen(2) != 2 {
						r.fail("_tt is not a pair")
					}
					tprefix, tsuffix, template = r.text(maxTextField), r.text(maxTextField), true
				case senmlCT:
					ct = r.text(maxTextField)
				default:
					if label == "" || label[len(label)-1] == '_' {
						return nil, malformed("SenML label %q must be understood", label)
					}
					r.skip()
				}
				continue
			}
			switch label := r.int(); label {
			case senmlBaseName:
				bn, haveBN = r.text(maxTextField), true
			case senmlBaseTime:
				bt, hasBT = r.number(), true
			case senmlName:
				name, hasName = r.text(maxTextField), true
			case senmlValue:
				val = appendNumber(val[:0], r.number())
			case senmlBoolValue:
				if r.bool() {
					val = append(val[:0], "true"...)
				} else {
					val = append(val[:0], "false"...)
				}
			case senmlStringVal:
				val = jsonstr.AppendQuoted(val[:0], r.text(event.MaxPayload))
			default:
				r.skip()
			}
			if r.err != nil {
				return nil, r.err
			}
		}
		if r.err != nil {
			return nil, r.err
		}
		if val == nil {
			return nil, malformed("SenML record %d has no value", i)
		}
		if hasBT {
			if err := finish(); err != nil {
				return nil, err
			}
			if evCount++; evCount > MaxBatchEvents {
				return nil, malformed("SenML pack of more than %d events", MaxBatchEvents)
			}
			ts, err := senmlTime(bt)
			if err != nil {
				return nil, err
			}
			if !haveBN || len(bn) == 0 || bn[len(bn)-1] != '/' {
				return nil, malformed("SenML base name %q is not a ferry source", bn)
			}
			source := bn[:len(bn)-1]
			evTopic := topic
			if template {
				evTopic = tprefix + source + tsuffix
			}
			cur = &senmlEvent{env: Envelope{
				Event: event.Event{
					Stream: stream, Source: source, Topic: evTopic, Time: ts, ContentType: ct,
				},
				Gateway: gw, Epoch: epoch, Gap: gap, Replay: replay,
			}, bare: !hasName}
			switch {
			case hasSeq:
				cur.env.Seq = seq
			case nextSeq != 0:
				cur.env.Seq = nextSeq
			}
			if cur.env.Seq != 0 {
				nextSeq = cur.env.Seq + 1
			}
			if !cur.bare {
				payload = append(payload, '{')
			}
		} else if cur == nil {
			return nil, malformed("SenML pack does not start with a base time")
		} else if hasSeq || gap != nil || replay {
			return nil, malformed("SenML record %d: sequence fields on a record that starts no event", i)
		}
		if cur.fields++; cur.fields > senmlMaxFields {
			return nil, malformed("SenML event of more than %d records", senmlMaxFields)
		}
		if cur.bare {
			payload = append(payload, val...)
			continue
		}
		if !hasName {
			return nil, malformed("SenML record %d has no name", i)
		}
		if cur.fields > 1 {
			payload = append(payload, ',')
		}
		payload = jsonstr.AppendQuoted(payload, name)
		payload = append(payload, ':')
		payload = append(payload, val...)
		if len(payload) > event.MaxPayload {
			return nil, malformed("SenML event payload exceeds %d bytes", event.MaxPayload)
		}
	}
	if err := finish(); err != nil {
		return nil, err
	}
	if !r.done() {
		if r.err != nil {
			return nil, r.err
		}
		return nil, malformed("%d bytes after the SenML pack", len(b)-r.off)
	}
	return envs, nil
}

// maxTextField bounds a text field of a message other than a payload.
const maxTextField = 64 << 10

// appendNumber renders a number as JSON: a decimal fraction with the digits
// it carries (21.370 stays 21.370), a float in the shortest form that
// reads back the same.
func appendNumber(dst []byte, v number) []byte {
	if v.isFloat {
		return strconv.AppendFloat(dst, v.float, 'g', -1, 64)
	}
	m := v.mantissa
	if m < 0 {
		dst = append(dst, '-')
	}
	var buf [24]byte
	digits := strconv.AppendUint(buf[:0], absInt64(m), 10)
	if v.exp >= 0 {
		dst = append(dst, digits...)
		if m != 0 {
			for range v.exp {
				dst = append(dst, '0')
			}
		}
		return dst
	}
	frac := -v.exp
	if len(digits) <= frac {
		dst = append(dst, '0', '.')
		for range frac - len(digits) {
			dst = append(dst, '0')
		}
		return append(dst, digits...)
	}
	dst = append(dst, digits[:len(digits)-frac]...)
	dst = append(dst, '.')
	return append(dst, digits[len(digits)-frac:]...)
}

func absInt64(v int64) uint64 {
	if v < 0 {
		return uint64(-(v + 1)) + 1
	}
	return uint64(v)
}

// senmlTime converts a base time in seconds to a time.
func senmlTime(v number) (time.Time, error) {
	if v.isFloat {
		if v.float < senmlMinTime || v.float > 1<<40 {
			return time.Time{}, malformed("SenML time %v out of range", v.float)
		}
		sec, frac := math.Modf(v.float)
		return time.Unix(int64(sec), int64(math.Round(frac*1e9))), nil
	}
	// mantissa·10^exp seconds as nanoseconds.
	ns, ok := scaleInt(v.mantissa, v.exp+9)
	if !ok || ns < senmlMinTime*1e9 {
		return time.Time{}, malformed("SenML time %de%d out of range", v.mantissa, v.exp)
	}
	return time.Unix(0, ns), nil
}

// scaleInt returns m·10^e truncated, and false on overflow.
func scaleInt(m int64, e int) (int64, bool) {
	for ; e > 0; e-- {
		if m > math.MaxInt64/10 || m < math.MinInt64/10 {
			return 0, false
		}
		m *= 10
	}
	for ; e < 0; e++ {
		m /= 10
	}
	return m, true
}

// gap reads a gap: [dropped, {reason: count}].
func (r *cborReader) gap() *Gap {
	if r.arrayLen(2) != 2 {
		r.fail("gap is not a pair")
		return nil
	}
	g := &Gap{Dropped: r.uint()}
	n := r.mapLen(maxGapReasons)
	if r.err != nil {
		return nil
	}
	g.Reasons = make(map[string]uint64, n)
	for range n {
		k := r.text(senmlMaxLabel)
		g.Reasons[k] = r.uint()
	}
	if r.err != nil {
		return nil
	}
	return g
}

// maxGapReasons bounds the reasons of a gap a decoder reads.
const maxGapReasons = 32

// appendEpoch appends an epoch as its 8 bytes when it is 16 lowercase hex
// digits (as the buffer makes them), else as text.
func appendEpoch(dst []byte, epoch string) []byte {
	if len(epoch) != 16 {
		return appendCBORText(dst, epoch)
	}
	var b [8]byte
	for i := range b {
		hi, lo := lowerHex(epoch[2*i]), lowerHex(epoch[2*i+1])
		if hi < 0 || lo < 0 {
			return appendCBORText(dst, epoch)
		}
		b[i] = byte(hi<<4 | lo)
	}
	dst = append(dst, cborBytes|8)
	return append(dst, b[:]...)
}

// lowerHex returns the value of a lowercase hex digit, or -1.
func lowerHex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	default:
		return -1
	}
}

// epoch reads an epoch: 8 bytes (rendered as 16 lowercase hex digits) or text.
func (r *cborReader) epoch() string {
	if major, _, ok := r.peek(); ok && major == cborBytes {
		return hex.EncodeToString(r.bytesOf(r.length(cborBytes, 8)))
	}
	return r.text(maxTextField)
}
