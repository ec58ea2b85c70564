package uplink

import (
	"fmt"
	"hash/fnv"
	"strings"
	"unicode/utf8"

	"github.com/ferrygw/ferry/event"
)

// DefaultTopic is the topic template used when Config.Topic is empty.
const DefaultTopic = "{gateway_id}/{stream}/{source}"

// DefaultMaxTopicBytes bounds a rendered topic: AWS IoT Core's limit, below
// every other common broker's (MQTT's own is 65,535 bytes, which paho then
// truncates silently).
const DefaultMaxTopicBytes = 256

// minTopicBytes is the smallest Config.MaxTopicBytes: room for a few
// characters and the hash suffix of a shortened topic.
const minTopicBytes = 32

// topicReplacement replaces each refused character (each byte of invalid
// UTF-8) that an event field brings into a topic.
const topicReplacement = '_'

// topicHashLen is the length of the suffix "~" and 16 hex digits that marks
// a topic shortened to Config.MaxTopicBytes.
const topicHashLen = 17

type topicField uint8

const (
	fieldLiteral topicField = iota
	fieldStream
	fieldSource
	fieldTopic
	fieldID
)

type topicPart struct {
	field topicField
	lit   string // for fieldLiteral
}

// topicTemplate is a compiled topic template. {gateway_id} is constant for
// a forwarder, so it is folded into the literals at compile time.
type topicTemplate struct {
	parts []topicPart
	max   int // longest topic in bytes
}

// compileTopic parses a template with the placeholders {gateway_id},
// {stream}, {source}, {topic} and {id}. Literal text must be a valid topic
// name: a publish to a topic with a wildcard or a character the cloud
// refuses is a protocol error. maxBytes bounds each rendered topic.
func compileTopic(tmpl, gatewayID string, maxBytes int) (topicTemplate, error) {
	t := topicTemplate{max: maxBytes}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.parts = append(t.parts, topicPart{lit: lit.String()})
			lit.Reset()
		}
	}
	for rest := tmpl; rest != ""; {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			lit.WriteString(rest)
			break
		}
		lit.WriteString(rest[:i])
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return topicTemplate{}, fmt.Errorf("topic %q: unclosed {", tmpl)
		}
		name := rest[i+1 : i+j]
		rest = rest[i+j+1:]
		var f topicField
		switch name {
		case "gateway_id":
			lit.WriteString(sanitizeTopicValue(gatewayID))
			continue
		case "stream":
			f = fieldStream
		case "source":
			f = fieldSource
		case "topic":
			f = fieldTopic
		case "id":
			f = fieldID
		default:
			return topicTemplate{}, fmt.Errorf("topic %q: unknown placeholder {%s}", tmpl, name)
		}
		flush()
		t.parts = append(t.parts, topicPart{field: f})
	}
	flush()
	for _, p := range t.parts {
		if p.field != fieldLiteral {
			continue
		}
		if strings.ContainsAny(p.lit, "+#}") || sanitizeTopicValue(p.lit) != p.lit {
			return topicTemplate{}, fmt.Errorf("topic %q: literal text must be valid UTF-8 without +, #, }, control characters or non-characters", tmpl)
		}
	}
	if len(t.parts) == 0 {
		return topicTemplate{}, fmt.Errorf("topic template is empty")
	}
	return t, nil
}

// appendTopic appends the topic for ev to dst. The result is always a
// valid topic name for MQTT and for common cloud brokers, whatever the
// event holds:
//
//   - in event fields, each character MQTT or a common broker refuses in a
//     topic name becomes '_': the wildcards '+' and '#', NUL and the other
//     C0 controls (U+0000–U+001F), DEL and the C1 controls
//     (U+007F–U+009F), the Unicode non-characters (U+FDD0–U+FDEF and
//     U+xFFFE, U+xFFFF of every plane), and each byte of invalid UTF-8
//     (which includes encoded surrogates);
//   - a '$' that a field puts at the very start becomes '_' ('$' topics are
//     reserved to the broker); a template whose literal text starts with '$'
//     (AWS IoT Basic Ingest's "$aws/rules/…") is kept as written;
//   - an empty result becomes "_" (MQTT forbids empty topics);
//   - a topic longer than the bound is cut, on a character boundary, and
//     ends in "~" and 16 hex digits of the FNV-1a hash of the whole topic,
//     so topics that differ only after the cut stay apart (barring a hash
//     collision).
//
// The mapping is deterministic but not one-to-one: "a+b" and "a#b" both
// become "a_b". The message itself carries the original stream, source and
// topic, so the cloud can still tell such events apart.
func (t *topicTemplate) appendTopic(dst []byte, ev *event.Event) []byte {
	start := len(dst)
	for _, p := range t.parts {
		var v string
		switch p.field {
		case fieldLiteral:
			dst = append(dst, p.lit...)
			continue
		case fieldStream:
			v = ev.Stream
		case fieldSource:
			v = ev.Source
		case fieldTopic:
			v = ev.Topic
		case fieldID:
			dst = ev.ID.AppendText(dst)
			continue
		}
		at := len(dst)
		dst = appendSanitized(dst, v)
		if at == start && len(dst) > at && dst[at] == '$' {
			dst[at] = topicReplacement
		}
	}
	if len(dst) == start {
		dst = append(dst, topicReplacement)
	}
	if t.max > 0 && len(dst)-start > t.max {
		dst = shortenTopic(dst, start, t.max)
	}
	return dst
}

// shortenTopic cuts the topic dst[start:] to max bytes, ending it in the
// hash suffix (see appendTopic).
func shortenTopic(dst []byte, start, max int) []byte {
	h := fnv.New64a()
	_, _ = h.Write(dst[start:])
	sum := h.Sum64()
	cut := start + max - topicHashLen
	// The topic is valid UTF-8 here: back up to the start of a character.
	for cut > start && !utf8.RuneStart(dst[cut]) {
		cut--
	}
	dst = append(dst[:cut], '~')
	const hexDigits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		dst = append(dst, hexDigits[(sum>>uint(shift))&0xf])
	}
	return dst
}

// topicRuneOK reports whether r may appear in a topic name sent to the cloud.
func topicRuneOK(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r <= 0x9f:
		return false // C0, DEL, C1: MQTT-1.5.3 "SHOULD NOT", refused by AWS IoT and others
	case r == '+', r == '#':
		return false // wildcards are refused in a topic name
	case r >= 0xfdd0 && r <= 0xfdef, r&0xfffe == 0xfffe:
		return false // Unicode non-characters: MQTT-1.5.3 "SHOULD NOT"
	case r >= 0xd800 && r <= 0xdfff:
		return false // surrogates (utf8 never decodes them; for clarity)
	}
	return true
}

// appendSanitized appends s to dst with each character topicRuneOK
// refuses, and each byte of invalid UTF-8, replaced by topicReplacement.
func appendSanitized(dst []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if topicRuneOK(rune(c)) {
				dst = append(dst, c)
			} else {
				dst = append(dst, topicReplacement)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && n == 1) || !topicRuneOK(r) {
			dst = append(dst, topicReplacement)
		} else {
			dst = append(dst, s[i:i+n]...)
		}
		i += n
	}
	return dst
}

func sanitizeTopicValue(s string) string {
	return string(appendSanitized(nil, s))
}
