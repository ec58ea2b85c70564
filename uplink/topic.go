package uplink

import (
	"fmt"
	"strings"

	"github.com/ferrygw/ferry/event"
)

// DefaultTopic is the topic template used when Config.Topic is empty.
const DefaultTopic = "{gateway_id}/{stream}/{source}"

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
}

// compileTopic parses a template with the placeholders {gateway_id},
// {stream}, {source}, {topic} and {id}. Literal text must not contain MQTT
// wildcards: a publish to such a topic is a protocol error.
func compileTopic(tmpl, gatewayID string) (topicTemplate, error) {
	var t topicTemplate
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
		if p.field == fieldLiteral && strings.ContainsAny(p.lit, "+#\x00}") {
			return topicTemplate{}, fmt.Errorf("topic %q: literal text must not contain +, #, } or NUL", tmpl)
		}
	}
	if len(t.parts) == 0 {
		return topicTemplate{}, fmt.Errorf("topic template is empty")
	}
	return t, nil
}

// appendTopic appends the topic for ev to dst. Wildcards and NUL in event
// fields become '_'; an empty result becomes "_" (MQTT forbids empty topics).
func (t *topicTemplate) appendTopic(dst []byte, ev *event.Event) []byte {
	start := len(dst)
	for _, p := range t.parts {
		switch p.field {
		case fieldLiteral:
			dst = append(dst, p.lit...)
		case fieldStream:
			dst = appendSanitized(dst, ev.Stream)
		case fieldSource:
			dst = appendSanitized(dst, ev.Source)
		case fieldTopic:
			dst = appendSanitized(dst, ev.Topic)
		case fieldID:
			dst = ev.ID.AppendText(dst)
		}
	}
	if len(dst) == start {
		dst = append(dst, '_')
	}
	return dst
}

func appendSanitized(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '+', '#', 0:
			dst = append(dst, '_')
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

func sanitizeTopicValue(s string) string {
	return string(appendSanitized(nil, s))
}
