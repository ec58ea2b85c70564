//go:build linux

package wear

import (
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// header is the run's context, printed above the table.
type header struct {
	ferry, checkout, mosquitto, fs, work string
	perf                                 bool
	took                                 time.Duration
	payload                              float64
}

const secondsPerYear = 86400 * 365

// Years is how long a card that takes enduranceBytes of host writes lasts
// at bytesPerReading for readingsPerSec around the clock: endurance /
// (bytes per reading × readings per day × 365). +Inf when nothing is
// written.
func Years(enduranceBytes, bytesPerReading, readingsPerSec float64) float64 {
	perYear := bytesPerReading * readingsPerSec * secondsPerYear
	if perYear <= 0 {
		return math.Inf(1)
	}
	return enduranceBytes / perYear
}

// bytesPerReading is write_bytes per acknowledged reading in the window,
// plus, for a Mosquitto edge with persistence, one save's bytes spread
// over the readings of an autosave interval.
func (r *Row) bytesPerReading() float64 {
	if r.Readings == 0 {
		return math.NaN()
	}
	return float64(r.WriteBytes) / float64(r.Readings)
}

func (r *Row) autosavePerReading() float64 {
	if r.SaveBytes < 0 {
		return 0
	}
	return float64(r.SaveBytes) / (r.Rate * MosquittoAutosave.Seconds())
}

func (r *Row) per(n int64) float64 {
	if r.Readings == 0 {
		return math.NaN()
	}
	return float64(n) / float64(r.Readings)
}

func writeTable(w io.Writer, cfg *Config, h header, rows []Row) {
	host, _ := os.Hostname()
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("")
	p("ferry wear benchmark, %s UTC on %s: %s; took %s", time.Now().UTC().Format("2006-01-02 15:04"), host, nproc(), h.took.Round(time.Second))
	p("ferry: %s (checkout %s); %s", h.ferry, h.checkout, h.mosquitto)
	p("storage: work directory %s on %s; load average at the end %s", h.work, h.fs, loadavg())
	p("load: %d sensors (MQTT 3.1.1 clients), each publishing one %.0f-byte JSON reading at a time at QoS 1 and",
		cfg.Sensors, h.payload)
	p("  waiting for its PUBACK, phases spread evenly (the edge sees one reading every 1/rate s); rate is the")
	p("  aggregate, so 1/s is %d sensors at %g/s each. Uplink on, cloud (Mosquitto) up. Counters of the edge", cfg.Sensors, 1/float64(cfg.Sensors))
	p("  process over a %s window after %s of warm-up; 'readings' = PUBACKs received in the window.", cfg.Duration, cfg.Warmup)
	if cfg.NoSyncWindow > cfg.Duration {
		p("  ferry none (no fsync) is measured over %s instead: 2 x (vm.dirty_expire + vm.dirty_writeback), so", cfg.NoSyncWindow)
		p("  that the window sees its pages written back (see below).")
	}
	p("")
	cols := "%-9s %-17s %6s %8s %11s %9s %8s %9s %11s  %-26s %8s"
	p(cols, "edge", "setting", "rate/s", "readings", "B written", "write", "fsyncs", "CPU s per", "PUBACK ms", "at the cloud: PUBACKed", "years @")
	p(cols, "", "", "", "", "per reading", "syscalls", "per", "1,000", "p50 / p99", "readings that arrived", fmt.Sprintf("%g TB", cfg.EnduranceTB))
	p(cols, "", "", "", "", "", "per rdg", "reading", "readings", "", "(whole run, warm-up too)", "")
	var foot []string
	short := false
	for i := range rows {
		r := &rows[i]
		if r.Err != nil {
			p("%-9s %-17s %6s  FAILED: %v", r.Target.Edge, r.Target.Setting, fmtRate(r.Rate), r.Err)
			continue
		}
		bpr := r.bytesPerReading()
		mark := ""
		if r.SaveBytes >= 0 {
			mark = "*"
		}
		if noSync(r.Target) && r.Window < 2*WritebackCycle()-time.Second {
			mark = "~"
			short = true
		}
		syncs := "n/a"
		if r.Syncs >= 0 {
			syncs = fmtF(r.per(r.Syncs), 2)
		}
		d := r.Delivery
		cloud := fmt.Sprintf("%d of %d", d.Arrived, d.Acked)
		switch {
		case d.Lost > 0:
			cloud += fmt.Sprintf(" LOST %d", d.Lost)
		case d.Duplicates > 0:
			cloud += fmt.Sprintf(", %d dup", d.Duplicates)
		default:
			cloud += ", 0 lost"
		}
		years := Years(cfg.EnduranceTB*1e12, bpr+r.autosavePerReading(), r.Rate)
		p(cols, r.Target.Edge, r.Target.Setting, fmtRate(r.Rate), strconv.FormatInt(r.Readings, 10),
			fmtNum(bpr)+mark, fmtF(r.per(r.Syscw), 1), syncs, fmtF(r.CPU/float64(r.Readings)*1000, 2), fmtMs(r.AckP50)+" / "+fmtMs(r.AckP99), cloud, fmtYears(years)+mark)
		if d.Lost > 0 {
			foot = append(foot, fmt.Sprintf("%s %s at %s/s LOST %d PUBACKed readings: its figures are worthless.", r.Target.Edge, r.Target.Setting, fmtRate(r.Rate), d.Lost))
		}
		if d.Unacked > 0 {
			foot = append(foot, fmt.Sprintf("%s %s at %s/s: %d readings published but never acknowledged.", r.Target.Edge, r.Target.Setting, fmtRate(r.Rate), d.Unacked))
		}
		if r.Late > 0 {
			why := "."
			if r.Target.Edge == "ferry" {
				why = ":\n  late readings bunch up, and bunched readings share commits, so write less each."
			}
			foot = append(foot, fmt.Sprintf("%s %s at %s/s: %d readings published over 10%% of a period late, the sensor still waiting for the previous PUBACK%s",
				r.Target.Edge, r.Target.Setting, fmtRate(r.Rate), r.Late, why))
		}
	}
	p("")
	for _, f := range foot {
		p("! %s", f)
	}
	if short {
		p("~ undercounts: a page written without fsync is charged to write_bytes once, when it turns dirty, and again")
		p("  only after the kernel has written it back (after %s dirty, checked every %s here), so a window", fmtDur(WritebackCycle()-writebackInterval()), fmtDur(writebackInterval()))
		p("  shorter than 2 x %s misses most rewrites of the same pages. NOSYNC_WINDOW=%g (the default unless QUICK=1)", fmtDur(WritebackCycle()), (2 * WritebackCycle()).Seconds())
		p("  fixes it.")
	}
	if !h.perf {
		p("fsyncs: n/a: not counted (PERF=0, or perf cannot count syscall tracepoints here: see the log above).")
	} else {
		p("fsyncs: fsync + fdatasync syscalls of the edge process, counted by `perf stat -I 100` (in-kernel counters, no")
		p("  ptrace) running the broker as its child; window edges are up to 100 ms out.")
	}
	p("write syscalls: /proc/PID/io syscw, every write-type syscall, so also the socket writes of PUBACKs and uplink")
	p("  publishes (and, for ferry, the pwrites of its buffer); not a count of storage writes.")
	for i := range rows {
		r := &rows[i]
		if r.Err == nil && r.SaveBytes >= 0 {
			p("* %s %s at %s/s: no writes between saves; one save (SIGUSR1, what the autosave does every %s", r.Target.Edge, r.Target.Setting, fmtRate(r.Rate), fmtDur(MosquittoAutosave))
			p("  by default) wrote %s B, i.e. %s B per reading at this rate; the years include it. A crash loses", fmtInt(float64(r.SaveBytes)), fmtF(r.autosavePerReading(), 2))
			p("  every message queued since the last save, and messages are not on disk before their PUBACK at all.")
		}
	}
	p("")
	p("Years at %g TB of host writes: endurance / (bytes per reading x readings/s x 86,400 s x 365):", cfg.EnduranceTB)
	for i := range rows {
		r := &rows[i]
		if r.Err != nil {
			continue
		}
		b := r.bytesPerReading() + r.autosavePerReading()
		perYear := b * r.Rate * secondsPerYear
		p("  %-9s %-17s %5s/s: %g e12 B / (%s B x %s/s x 86,400 x 365 = %s/year) = %s years",
			r.Target.Edge, r.Target.Setting, fmtRate(r.Rate), cfg.EnduranceTB, fmtNum(b), fmtRate(r.Rate), fmtBytes(perYear),
			fmtYears(Years(cfg.EnduranceTB*1e12, b, r.Rate)))
	}
	p("")
	for _, line := range strings.Split(strings.TrimSpace(HowToRead), "\n") {
		p("%s", line)
	}
}

// HowToRead is the note printed under the table.
const HowToRead = `
How to read it. "B written per reading" is the growth of write_bytes in /proc/PID/io of the edge
process over the window divided by the readings PUBACKed in it. write_bytes counts the bytes the
process caused to be sent to the block layer: the kernel charges a buffered write when it dirties a
page-cache page, a whole 4 KiB page each time a clean page turns dirty (so a 50-byte change costs
4 KiB, and rewriting a page that is still dirty costs nothing more until writeback cleans it, which
is why fewer fsyncs mean fewer bytes), and an O_DIRECT write at once. It does not count what the
filesystem writes on the process's behalf afterwards (the ext4 journal, inode and bitmap updates
written by jbd2 and the flusher threads) nor the card's own write amplification, so it is a floor
for what reaches the card. Turning it into a card's life: years = endurance_bytes / (bytes_per_reading
x readings_per_day x 365), readings_per_day = readings/s x 86,400. Example: a 32 GB card whose TLC
flash is rated for ~3,000 program/erase cycles takes 32 GB x 3,000 = ~96 TB of flash writes before
wear-out, assuming ideal wear levelling; but a cheap card's controller turns small synchronous 4 KiB
writes into much larger flash writes (erase blocks of several MiB, read-modify-write; write
amplification of 10 or more is common) and cheap TLC is often rated well under 3,000 cycles, so the
table uses ENDURANCE_TB of host writes (default 10 TB, ~96 TB / 10) as a conservative figure for such
a card: at 100 readings/s around the clock, 1 KiB per reading is ~3.2 TB a year, ~3 years.`

// fmtMs is d in milliseconds, with one decimal below 10 ms.
func fmtMs(d time.Duration) string {
	ms := d.Seconds() * 1000
	if ms < 10 {
		return fmtF(ms, 1)
	}
	return fmtF(ms, 0)
}

func fmtRate(r float64) string { return strconv.FormatFloat(r, 'f', -1, 64) }

func fmtF(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

// fmtInt rounds v and groups thousands with commas.
func fmtInt(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// fmtNum is fmtInt, with decimals for small values.
func fmtNum(v float64) string {
	switch a := math.Abs(v); {
	case a < 10:
		return fmtF(v, 2)
	case a < 100:
		return fmtF(v, 1)
	}
	return fmtInt(v)
}

func fmtYears(y float64) string {
	switch {
	case math.IsNaN(y):
		return "n/a"
	case math.IsInf(y, 1):
		return "inf"
	case y >= 1000:
		return ">1000"
	case y >= 100:
		return fmtF(y, 0)
	default:
		return fmtF(y, 1)
	}
}

func fmtBytes(b float64) string {
	units := []string{"B", "kB", "MB", "GB", "TB", "PB"}
	i := 0
	for b >= 1000 && i < len(units)-1 {
		b /= 1000
		i++
	}
	return fmtF(b, 2) + " " + units[i]
}

func fmtDur(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + " s"
}
