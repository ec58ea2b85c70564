package downlink

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxTopicBytes is MQTT's limit on a topic name or filter.
const maxTopicBytes = 65535

// checkTopicName returns why s cannot be published to, or nil: it must be
// 1 to 65,535 bytes of valid UTF-8 without wildcards, U+0000 or other
// control characters (MQTT 5 §1.5.4, §4.7.3).
func checkTopicName(s string) error {
	if err := checkTopicText(s); err != nil {
		return err
	}
	if strings.ContainsAny(s, "+#") {
		return errors.New("a topic name contains no wildcard (+ or #)")
	}
	return nil
}

// checkTopicText checks what topic names and filters share.
func checkTopicText(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > maxTopicBytes {
		return fmt.Errorf("%d bytes, longer than MQTT's %d", len(s), maxTopicBytes)
	}
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range s {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return fmt.Errorf("contains the control character %U", r)
		}
	}
	return nil
}

// checkFilter returns why s is not a valid topic filter, or nil: '#' only
// as the whole last level, '+' only as a whole level. Shared subscriptions
// ($share/...) are refused: a command must reach this gateway, not one of
// a group.
func checkFilter(s string) error {
	if err := checkTopicText(s); err != nil {
		return err
	}
	if strings.HasPrefix(s, "$share/") {
		return errors.New("a shared subscription ($share/...) would hand this gateway's commands to others")
	}
	levels := strings.Split(s, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return errors.New("# must be the last level")
		case l != "#" && l != "+" && strings.ContainsAny(l, "+#"):
			return fmt.Errorf("level %q mixes a wildcard with other characters", l)
		}
	}
	return nil
}

// MatchFilter reports whether topic name matches the topic filter (MQTT 5
// §4.7): '+' matches one level, a last '#' the parent level and every level
// below, and a topic starting with '$' matches no filter that starts with
// a wildcard. Neither argument is validated.
func MatchFilter(filter, topic string) bool {
	if topic != "" && topic[0] == '$' && filter != "" && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	for {
		f, frest, fmore := strings.Cut(filter, "/")
		if f == "#" && !fmore {
			return true
		}
		t, trest, tmore := strings.Cut(topic, "/")
		if f != "+" && f != t {
			return false
		}
		switch {
		case !fmore && !tmore:
			return true
		case !tmore:
			return frest == "#" // "a/#" matches "a"
		case !fmore:
			return false
		}
		filter, topic = frest, trest
	}
}

// FiltersOverlap reports whether some topic name matches both filters a
// and b, so that a broker may deliver a message once per filter. The
// gateway uses it to keep command filters apart from each other and from
// the topics the gateway itself publishes to.
func FiltersOverlap(a, b string) bool {
	first := true
	for {
		x, arest, amore := strings.Cut(a, "/")
		y, brest, bmore := strings.Cut(b, "/")
		if first {
			// A topic starting with '$' matches no filter starting with
			// a wildcard.
			if isWild(x) && strings.HasPrefix(y, "$") || isWild(y) && strings.HasPrefix(x, "$") {
				return false
			}
			first = false
		}
		if x == "#" || y == "#" {
			return true
		}
		if x != "+" && y != "+" && x != y {
			return false
		}
		switch {
		case !amore && !bmore:
			return true
		case !amore:
			return brest == "#"
		case !bmore:
			return arest == "#"
		}
		a, b = arest, brest
	}
}

func isWild(level string) bool { return level == "+" || level == "#" }

// MapTopic returns the local topic a command received on cloudTopic
// through s is delivered to: s.CloudPrefix is replaced by s.LocalPrefix,
// as a Mosquitto bridge does. It fails with ErrTopic when cloudTopic does
// not start with the cloud prefix or the result is not a valid local topic
// name: empty, a wildcard or control character (a cloud topic may hold
// them when the prefixes are empty), or starting with '$'.
func (s Subscription) MapTopic(cloudTopic string) (string, error) {
	rest, ok := strings.CutPrefix(cloudTopic, s.CloudPrefix)
	if !ok {
		return "", fmt.Errorf("%w: %q does not start with the cloud prefix %q", ErrTopic, cloudTopic, s.CloudPrefix)
	}
	local := s.LocalPrefix + rest
	if err := checkTopicName(local); err != nil {
		return "", fmt.Errorf("%w: local topic %q: %v", ErrTopic, local, err)
	}
	if local[0] == '$' {
		return "", fmt.Errorf("%w: local topic %q starts with $, reserved for the broker", ErrTopic, local)
	}
	return local, nil
}
