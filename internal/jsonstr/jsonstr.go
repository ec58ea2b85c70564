// Package jsonstr writes JSON strings without encoding/json's allocations,
// for the hot paths that build JSON by hand (uplink messages, audit lines).
// Its functions are pure and safe for concurrent use.
package jsonstr

import "unicode/utf8"

const hexDigits = "0123456789abcdef"

// AppendEscaped appends s escaped by encoding/json's rules without HTML
// escaping (json.Encoder with SetEscapeHTML(false)): '"' and '\\'
// backslashed, control characters as \b \f \n \r \t or \u00XX, U+2028 and
// U+2029 as \u2028 and \u2029 (JavaScript line terminators), each byte of
// invalid UTF-8 as \ufffd. FuzzAppendQuoted checks it against
// encoding/json. It is written out here because encoding/json would
// allocate for every line.
func AppendEscaped(b []byte, s string) []byte {
	start := 0 // s[start:i] is pending, needing no escape
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(b, s[start:]...)
}

// AppendQuoted appends s as a quoted JSON string.
func AppendQuoted(b []byte, s string) []byte {
	b = append(b, '"')
	b = AppendEscaped(b, s)
	return append(b, '"')
}
