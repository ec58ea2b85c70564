// Package topic matches MQTT topic names against topic filters, the way
// brokers route PUBLISHes: shared by ingest routes and pipeline inputs.
package topic

import "strings"

// Match reports whether topic matches the MQTT topic filter: "+" matches
// one level, a trailing "#" the rest (including the parent level), and
// wildcards at the first level do not match topics starting with "$".
func Match(filter, topic string) bool {
	if topic != "" && topic[0] == '$' && filter != "" && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	for {
		if filter == "#" {
			return true
		}
		fl, frest, fmore := strings.Cut(filter, "/")
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore {
			return !tmore
		}
		if !tmore {
			return frest == "#"
		}
		filter, topic = frest, trest
	}
}
