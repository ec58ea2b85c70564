package opsapi

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/downlink"
	"github.com/ferrygw/ferry/drivers"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/ferrygw/ferry/gateway/rules"
	"github.com/ferrygw/ferry/uplink"
)

// Status is the gateway's health at one moment: what `ferry status` prints
// and GET /status returns.
type Status struct {
	GatewayID string         `json:"gateway_id"`
	Uptime    Duration       `json:"uptime"`
	Link      *uplink.Status `json:"link,omitempty"` // nil when the uplink is disabled
	// Downlink is the downlink session and its commands; nil without one.
	Downlink  *DownlinkStatus       `json:"downlink,omitempty"`
	Ingest    broker.Stats          `json:"ingest"`
	Streams   []StreamStatus        `json:"streams"`
	Pipelines []rules.RunnerStats   `json:"pipelines,omitempty"`
	Alerts    []Alert               `json:"alerts,omitempty"` // newest pipeline outputs first
	Drivers   []drivers.DriverStats `json:"drivers,omitempty"`
	Commits   uint64                `json:"commits"`
	CommitAvg Duration              `json:"commit_avg"`
	DiskFull  bool                  `json:"disk_full"`
	// Quarantined is where a corrupt buffer file was moved at start-up.
	Quarantined string `json:"quarantined,omitempty"`
	// Listener is the status listener's connections and refusals.
	Listener ListenerStats `json:"status_listener"`
}

// DownlinkStatus is the downlink session (commands, replies, remote
// configurations, presence) and the local delivery of its commands.
type DownlinkStatus struct {
	downlink.Status
	// Delivered, Expired and Failed count commands published locally,
	// dropped because their expiry passed before their turn, and dropped
	// because the broker refused them.
	Delivered uint64 `json:"delivered"`
	Expired   uint64 `json:"expired"`
	Failed    uint64 `json:"failed"`
	// ConfigVersion is the version of the configuration in force (0: the
	// local file).
	ConfigVersion uint64 `json:"config_version"`
}

// StreamStatus is one stream's backlog.
type StreamStatus struct {
	buffer.StreamStats
	OldestAge Duration `json:"oldest_age"` // age of the oldest unforwarded event
}

// Duration marshals as a Go duration string ("1m30s").
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// DeadLetter is one event a pipeline could not process, and why.
type DeadLetter struct {
	Offset   uint64    `json:"offset"`
	ID       string    `json:"id"`
	Pipeline string    `json:"pipeline,omitempty"`
	Reason   string    `json:"reason"`
	Source   string    `json:"source"`
	Topic    string    `json:"topic"`
	Time     time.Time `json:"time"`
	Payload  string    `json:"payload"` // as text, invalid UTF-8 replaced
	// Size is the original payload's size in bytes; Payload holds at most
	// DeadLetterShowMax bytes of it, and only as much as the pipeline kept
	// (dead_letters.max_payload).
	Size      int  `json:"size"`
	Truncated bool `json:"truncated,omitempty"` // Payload is not the whole original
}

// Paging of GET /deadletters: a page holds at most DeadLettersMax dead
// letters and stops once its encoded size passes DeadLettersPageBytes, so
// a response, and what the gateway holds to write it, stays small however
// large the dead letters are (an older gateway kept whole payloads).
const (
	// DeadLettersMax caps n of GET /deadletters.
	DeadLettersMax = 100
	// DeadLettersPageBytes caps the encoded dead letters of one page.
	DeadLettersPageBytes = 256 << 10
	// DeadLetterShowMax is how much of each payload a page shows.
	DeadLetterShowMax = 4 << 10
	// DeadLettersNextHeader names the offset the next page starts at
	// ("from"), when the page stopped before the stream's end.
	DeadLettersNextHeader = "Ferry-Next-From"
)

// ReadDeadLetters returns up to n (default 20, at most DeadLettersMax)
// dead letters of stream, oldest first, from offset from on, or the newest
// n when from is negative. A page also ends once it holds
// DeadLettersPageBytes of encoded dead letters; next is then the offset to
// ask for next, and 0 when the page reached the stream's end.
func ReadDeadLetters(log Log, stream string, from int64, n int) (page []DeadLetter, next uint64) {
	if n <= 0 {
		n = 20
	}
	n = min(n, DeadLettersMax)
	var start, end uint64
	for _, s := range log.Stats() {
		if s.Name == stream {
			end = s.Next
			if from < 0 && s.Next > uint64(n) {
				start = s.Next - uint64(n)
			}
		}
	}
	if from >= 0 {
		start = uint64(from)
	}
	page = []DeadLetter{}
	size := 0
	_, _ = log.Read(stream, start, n, func(off uint64, ev *event.Event) error {
		if off >= end {
			return errExportEnd
		}
		d := deadLetter(off, ev)
		b, _ := json.Marshal(&d)
		if len(page) > 0 && size+len(b) > DeadLettersPageBytes {
			next = off
			return errPageFull
		}
		size += len(b)
		page = append(page, d)
		if len(page) == n && off+1 < end {
			next = off + 1
		}
		return nil
	})
	return page, next
}

// deadLetter copies what a page shows of ev (Read's ev is reused after fn).
func deadLetter(off uint64, ev *event.Event) DeadLetter {
	d := DeadLetter{Offset: off, ID: ev.Attrs["original_id"], Pipeline: ev.Attrs["pipeline"],
		Reason: ev.Attrs["reason"], Source: ev.Source, Topic: ev.Topic, Time: ev.Time,
		Size: len(ev.Payload), Truncated: ev.Attrs["truncated"] == "true"}
	if s, err := strconv.Atoi(ev.Attrs["original_size"]); err == nil && s > d.Size {
		d.Size = s
	}
	p := ev.Payload
	if len(p) > DeadLetterShowMax {
		p, d.Truncated = p[:DeadLetterShowMax], true
	}
	d.Payload = strings.ToValidUTF8(string(p), "\uFFFD")
	return d
}

// handleDeadLetters answers GET /deadletters: a page of dead letters
// (n, and from as in /buffer/export; without from, the newest n), with
// DeadLettersNextHeader naming where the next page starts when there is
// more.
func (s *Server) handleDeadLetters(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n := 20
	if s := q.Get("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			badRequest("n %q: must be a positive integer (at most %d are returned)", s, DeadLettersMax).write(w)
			return
		}
		n = v
	}
	from := int64(-1)
	if s := q.Get("from"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			badRequest("from %q: not an offset (a non-negative integer)", s).write(w)
			return
		}
		from = v
	}
	page, next := s.cfg.Reporter.DeadLetterPage(from, n)
	if next > 0 {
		w.Header().Set(DeadLettersNextHeader, strconv.FormatUint(next, 10))
	}
	writeJSON(w, http.StatusOK, page)
}

// registerPprof serves Go's profiler under /debug/pprof/ (status.pprof):
// CPU and heap profiles, goroutines, so figures come from ferry running on
// the board itself. Loopback only like the rest of the listener, and behind
// hostGuard: a profile names no payloads, but a web page has no business
// reading it through DNS rebinding.
func registerPprof(mux *http.ServeMux) {
	mux.Handle("/debug/pprof/", hostGuard(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/cmdline", hostGuard(http.HandlerFunc(pprof.Cmdline)))
	mux.Handle("/debug/pprof/profile", hostGuard(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/symbol", hostGuard(http.HandlerFunc(pprof.Symbol)))
	mux.Handle("/debug/pprof/trace", hostGuard(http.HandlerFunc(pprof.Trace)))
}

// Alert is a recent pipeline output, as the status page lists it.
type Alert struct {
	Time     time.Time `json:"time"`
	Pipeline string    `json:"pipeline"`
	Stream   string    `json:"stream"`
	Source   string    `json:"source"`
	Topic    string    `json:"topic"`
	Payload  string    `json:"payload"` // text, cut to a few hundred bytes
}
