package wire

import (
	"fmt"
	"io"
)

// WriteTable writes the results as the Markdown tables of README's "Wire
// size": bytes on the wire per reading for each case and transport, then
// the payload alone per reading, raw and compressed by zstd and deflate.
func WriteTable(w io.Writer, rs []Result) {
	byCase := map[string]map[string]Result{}
	var order []Case
	for _, r := range rs {
		if byCase[r.Case.Name] == nil {
			byCase[r.Case.Name] = map[string]Result{}
			order = append(order, r.Case)
		}
		byCase[r.Case.Name][r.Transport] = r
	}
	fmt.Fprintln(w, "| form | messages per 10 s | payload B/msg | TCP: B/reading (up + down) | TLS: B/reading (up + down) |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|")
	for _, c := range order {
		row := byCase[c.Name]
		var any Result
		for _, r := range row {
			any = r
		}
		periods := float64(any.Readings) / float64(Quantities) / 10
		fmt.Fprintf(w, "| %s | %.1f | %.0f | %s | %s |\n", c.Name, float64(any.Messages)/periods,
			float64(any.Payload)/float64(max(any.Messages, 1)), cell(row, "tcp"), cell(row, "tls"))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| form | payload B/reading: raw | zstd | deflate-9 |")
	fmt.Fprintln(w, "|---|--:|--:|--:|")
	for _, c := range order {
		if c.Compression != "none" {
			continue
		}
		var r Result
		for _, x := range byCase[c.Name] {
			r = x
		}
		n := float64(r.Readings)
		fmt.Fprintf(w, "| %s | %.1f | %.1f | %.1f |\n", c.Name, float64(r.Raw)/n, float64(r.Zstd)/n, float64(r.Deflate)/n)
	}
}

func cell(row map[string]Result, transport string) string {
	r, ok := row[transport]
	if !ok {
		return "–"
	}
	n := float64(r.Readings)
	return fmt.Sprintf("**%.1f** (%.1f + %.1f)", r.PerReading(), float64(r.Up)/n, float64(r.Down)/n)
}

// WriteWindowTable writes bytes per reading over TLS by batch window, for
// the compressed batched forms: rs are runs of the same case at
// different windows (Result.Window).
func WriteWindowTable(w io.Writer, rs []Result, windows []int, period string) {
	fmt.Fprintf(w, "| form (TLS) |")
	for _, k := range windows {
		fmt.Fprintf(w, " batch per %d × %s |", k, period)
	}
	fmt.Fprintln(w)
	fmt.Fprint(w, "|---|")
	for range windows {
		fmt.Fprint(w, "--:|")
	}
	fmt.Fprintln(w)
	var order []string
	seen := map[string]bool{}
	for _, r := range rs {
		if !seen[r.Case.Name] {
			seen[r.Case.Name] = true
			order = append(order, r.Case.Name)
		}
	}
	for _, name := range order {
		fmt.Fprintf(w, "| %s |", name)
		for _, k := range windows {
			cellText := " – |"
			for _, r := range rs {
				if r.Case.Name == name && r.Window == k {
					cellText = fmt.Sprintf(" %.1f |", r.PerReading())
				}
			}
			fmt.Fprint(w, cellText)
		}
		fmt.Fprintln(w)
	}
}
