package topic_test

import (
	"testing"

	"github.com/ferrygw/ferry/gateway/topic"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"#", "a/b/c", true},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"a/#", "b/a", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/+/c", "a/x/c", true},
		{"+/+", "a/b", true},
		{"+", "a/b", false},
		{"a/b", "a/b", true},
		{"a/b", "a/bc", false},
		{"a/b", "a", false},
		{"a", "a/b", false},
		{"+/b", "/b", true},
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"a//b", "a//b", true},
		{"a/+/b", "a//b", true},
	}
	for _, tt := range tests {
		t.Run(tt.filter+" "+tt.topic, func(t *testing.T) {
			if got := topic.Match(tt.filter, tt.topic); got != tt.want {
				t.Fatalf("Match(%q, %q) = %v", tt.filter, tt.topic, got)
			}
		})
	}
}
