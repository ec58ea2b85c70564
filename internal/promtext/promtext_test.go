package promtext

import (
	"math"
	"testing"
)

func TestWriter(t *testing.T) {
	var w Writer
	w.Counter("a_total", "As.", 3, "stream", `x"y\z`+"\n")
	w.Counter("a_total", "As.", 4, "stream", "b")
	w.Gauge("g", "A\\gauge\nhelp.", 1.5)
	w.Gauge("g2", "Integers.", 2)
	w.Gauge("g3", "Inf.", math.Inf(1))
	w.Head("h", "histogram", "Hist.", "h_bucket", []string{"le", "+Inf"})
	w.B = append(w.B, "7\n"...)
	w.Gauge("bad", "Invalid UTF-8.", 0, "k", "\xff")
	want := `# HELP a_total As.
# TYPE a_total counter
a_total{stream="x\"y\\z\n"} 3
a_total{stream="b"} 4
# HELP g A\\gauge\nhelp.
# TYPE g gauge
g 1.5
# HELP g2 Integers.
# TYPE g2 gauge
g2 2
# HELP g3 Inf.
# TYPE g3 gauge
g3 +Inf
# HELP h Hist.
# TYPE h histogram
h_bucket{le="+Inf"} 7
# HELP bad Invalid UTF-8.
# TYPE bad gauge
bad{k="` + "\uFFFD" + `"} 0
`
	if got := string(w.B); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	w.Reset()
	w.Counter("a_total", "As.", 1)
	if got := string(w.B); got != "# HELP a_total As.\n# TYPE a_total counter\na_total 1\n" {
		t.Errorf("after Reset: %q", got)
	}
}
