package config

import (
	"sort"
	"strconv"
	"strings"
)

// Error is one problem with a configuration, located by file, line and key
// path. It prints as "ferry.yaml:12: uplink.endpoints[0].url: message".
type Error struct {
	// File is the name the configuration was loaded under; may be empty.
	File string
	// Line is the 1-based line of the key (or value) at fault; 0 if unknown,
	// e.g. for a Config built in code or a problem with a defaulted value.
	Line int
	// Path is the key path, like "uplink.endpoints[0].url"; empty for
	// problems with the document as a whole.
	Path string
	// Msg says what is wrong and, where it helps, what would be right.
	Msg string
}

// Error formats the problem as "file:line: path: msg", leaving out the
// parts that are unknown.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		if e.File != "" {
			b.WriteByte(':')
		} else {
			b.WriteString("line ")
		}
		b.WriteString(strconv.Itoa(e.Line))
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a configuration. Load, Parse and Validate
// return it (as an error) so that a user can fix all problems in one go.
type Errors []*Error

// Error prints one problem per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the problems, for errors.As.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// err returns es as an error, or a nil error if es is empty (never a typed
// nil).
func (es Errors) err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// sortByLine orders problems by line, keeping the order of problems on the
// same line; problems without a line go last.
func (es Errors) sortByLine() {
	sort.SliceStable(es, func(i, j int) bool {
		li, lj := es[i].Line, es[j].Line
		if li == 0 || lj == 0 {
			return lj == 0 && li != 0
		}
		return li < lj
	})
}
