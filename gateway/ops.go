package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/gateway/rules"
	"github.com/ferrygw/ferry/uplink"
)

// Operator endpoints on the status listener, used by `ferry buffer` and
// `ferry reload`. The listener is loopback-only (config validation insists)
// and has no authentication, so two browser attacks are what is left to
// stop: a page on another origin POSTing to it (CSRF: the mutating
// endpoints refuse an Origin that is not the listener's own), and a page
// whose DNS name is re-pointed at 127.0.0.1 reading it as same-origin (DNS
// rebinding: every operator endpoint refuses a Host header that is a name
// other than localhost, which a rebound page cannot avoid sending).

const (
	// PeekMax caps n of GET /buffer/peek.
	PeekMax = 1000
	// PeekPayloadMax is how much of each payload a peek shows.
	PeekPayloadMax = 1024
	// PeekPageBytes ends a peek early once its events hold about this
	// many bytes (a thousand hex payloads with their attributes would
	// be several MB); Peek.NextFrom then says where to go on.
	PeekPageBytes = 256 << 10

	// An export reads the log in pages that end after exportPage events or
	// once they hold exportFlush encoded bytes, so its memory is bounded by
	// exportFlush plus one event whatever the stream's size. A page is
	// encoded inside a read transaction but written after it: a slow
	// client must not hold a bbolt read transaction open, which would block
	// the commit loop when the file has to grow.
	exportPage  = 512
	exportFlush = 256 << 10
)

// BufferStream is one stream as GET /buffer/stats reports it.
type BufferStream struct {
	StreamStatus
	// Forwarded says whether the uplink forwards the stream.
	Forwarded bool `json:"forwarded"`
	// Consumers maps each consumer the log records a position for (the
	// uplink and outbox deliverers ack as "uplink"; pipelines as
	// "pipeline:<name>") to the offset it has processed through.
	Consumers map[string]uint64 `json:"consumers,omitempty"`
}

// Peek is the answer of GET /buffer/peek.
type Peek struct {
	Stream string        `json:"stream"`
	First  uint64        `json:"first"` // oldest retained offset
	Next   uint64        `json:"next"`  // offset of the next append
	Events []PeekedEvent `json:"events"`
	// NextFrom, when set, is the from of the next page: the peek stopped
	// at PeekPageBytes before n events.
	NextFrom uint64 `json:"next_from,omitempty"`
}

// PeekedEvent is one event of a peek. Its payload is shown as text when
// its first PeekPayloadMax bytes are printable UTF-8, else as hex.
type PeekedEvent struct {
	Offset      uint64            `json:"offset"`
	ID          string            `json:"id"`
	Time        time.Time         `json:"time"`
	Source      string            `json:"source"`
	Topic       string            `json:"topic"`
	ContentType string            `json:"content_type,omitempty"`
	Attrs       map[string]string `json:"attrs,omitempty"`
	Size        int               `json:"size"` // payload bytes
	Text        string            `json:"text,omitempty"`
	Hex         string            `json:"hex,omitempty"`
	Truncated   bool              `json:"truncated,omitempty"` // Size > PeekPayloadMax
}

// ExportedEvent is one line of an export in jsonl format. It is the cloud
// message's JSON envelope (see uplink.AppendJSON) with the offset added:
// the payload is embedded as JSON ("payload") when it is valid JSON on one
// line without surrounding white space, and is otherwise base64 in
// "payload_b64", so every payload is restored byte for byte and every
// export line is also a valid cloud message (uplink.DecodeMessage).
type ExportedEvent struct {
	Offset      uint64            `json:"offset"`
	ID          string            `json:"id"`
	Stream      string            `json:"stream"`
	Source      string            `json:"source"`
	Topic       string            `json:"topic"`
	TS          time.Time         `json:"ts"`
	ContentType string            `json:"content_type,omitempty"`
	Attrs       map[string]string `json:"attrs,omitempty"`
	Payload     json.RawMessage   `json:"payload,omitempty"`
	PayloadB64  []byte            `json:"payload_b64,omitempty"` // base64 in JSON
}

// Export trailers: the number of events written, and the error that cut
// the export short, if any. A client that sees no ExportEventsTrailer got
// a truncated export.
const (
	ExportEventsTrailer = "Ferry-Export-Events"
	ExportErrorTrailer  = "Ferry-Export-Error"
)

// OpResult is the answer of POST /buffer/replay and POST /reload.
type OpResult struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Reasons lists each problem of a refused reload, one per line of the
	// configuration, when there are several.
	Reasons []string `json:"reasons,omitempty"`
}

// registerOps adds the operator endpoints to the status listener's mux.
func (g *Gateway) registerOps(mux *http.ServeMux) {
	mux.Handle("GET /buffer/stats", hostGuard(http.HandlerFunc(g.handleBufferStats)))
	mux.Handle("GET /buffer/peek", hostGuard(http.HandlerFunc(g.handlePeek)))
	mux.Handle("GET /buffer/export", hostGuard(http.HandlerFunc(g.handleExport)))
	mux.Handle("/buffer/replay", hostGuard(postOnly(originGuard(http.HandlerFunc(g.handleReplay)))))
	mux.Handle("/reload", hostGuard(postOnly(originGuard(http.HandlerFunc(g.handleReload)))))
}

// postOnly answers 405 to anything but POST. (A "POST /path" pattern would
// leave other methods to whatever catch-all the mux has, such as the
// status page, rather than refuse them plainly.)
func postOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, r.URL.Path+" changes the gateway: use POST", http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// hostGuard refuses a request whose Host is a DNS name other than
// localhost: see the top of this file.
func hostGuard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			host = hh
		}
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		// No Host at all (HTTP/1.0) is no browser either.
		if host != "" && net.ParseIP(host) == nil && !strings.EqualFold(host, "localhost") {
			http.Error(w, fmt.Sprintf("Host %q refused: the operator endpoints answer only to an IP address or localhost (DNS rebinding guard)", r.Host), http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// originGuard refuses a request carrying an Origin other than the
// listener's own (CSRF from a browser). The ferry CLI and curl send none.
func originGuard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o := r.Header.Get("Origin"); o != "" {
			own := o == "http://"+r.Host // r.Host passed hostGuard: an address, not a name
			if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && o == "http://"+la.String() {
				own = true
			}
			if !own {
				http.Error(w, fmt.Sprintf("Origin %q refused: only the ferry CLI (or a request without Origin) may change the gateway", o), http.StatusForbidden)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// paramError is a bad request parameter: its status and message.
type paramError struct {
	status int
	msg    string
}

func badRequest(format string, args ...any) *paramError {
	return &paramError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func (e *paramError) write(w http.ResponseWriter) { http.Error(w, e.msg, e.status) }

// streamParam returns the stats of the stream the query names.
func (g *Gateway) streamParam(q url.Values) (buffer.StreamStats, *paramError) {
	name := q.Get("stream")
	stats := g.buf.Stats()
	names := make([]string, len(stats))
	for i, s := range stats {
		if s.Name == name {
			return s, nil
		}
		names[i] = s.Name
	}
	if name == "" {
		return buffer.StreamStats{}, badRequest("stream is required; known streams: %s", strings.Join(names, ", "))
	}
	return buffer.StreamStats{}, badRequest("unknown stream %q; known streams: %s", name, strings.Join(names, ", "))
}

// fromParam returns the offset the query starts at: its "from", or the
// stream's first retained offset when there is none (and required is
// false). An offset before the first retained event is 404: those events
// are gone (forwarded, expired or dropped) and cannot be shown or replayed.
// streamFromParams reads the stream and from parameters; from is required
// when fromRequired.
func (g *Gateway) streamFromParams(q url.Values, fromRequired bool) (buffer.StreamStats, uint64, *paramError) {
	st, perr := g.streamParam(q)
	if perr != nil {
		return st, 0, perr
	}
	from, perr := fromParam(q, st, fromRequired)
	return st, from, perr
}

func fromParam(q url.Values, st buffer.StreamStats, required bool) (uint64, *paramError) {
	s := q.Get("from")
	if s == "" {
		if required {
			return 0, badRequest("from is required (the stream's first retained offset is %d)", st.First)
		}
		return st.First, nil
	}
	from, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, badRequest("from %q: not an offset (a non-negative integer)", s)
	}
	if from < st.First {
		return 0, &paramError{http.StatusNotFound, fmt.Sprintf(
			"offset %d of stream %s is no longer retained: the first retained offset is %d", from, st.Name, st.First)}
	}
	return from, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// BufferStats reports every stream of the log with its consumers'
// positions.
func (g *Gateway) BufferStats() []BufferStream {
	cfg, _ := g.current()
	now := g.now()
	stats := g.buf.Stats()
	out := make([]BufferStream, 0, len(stats))
	for _, s := range stats {
		bs := BufferStream{StreamStatus: StreamStatus{StreamStats: s}, Forwarded: cfg.Forwarded(s.Name)}
		if !s.Oldest.IsZero() && s.Events > 0 {
			bs.OldestAge = Duration(now.Sub(s.Oldest).Round(time.Millisecond))
		}
		consumers := map[string]uint64{}
		if p := g.buf.Position(s.Name, uplink.Consumer); p > 0 || bs.Forwarded {
			consumers[uplink.Consumer] = p
		}
		for _, name := range cfg.PipelinesReading(s.Name) {
			c := (&rules.Pipeline{Name: name}).Consumer()
			consumers[c] = g.buf.Position(s.Name, c)
		}
		if len(consumers) > 0 {
			bs.Consumers = consumers
		}
		out = append(out, bs)
	}
	return out
}

func (g *Gateway) handleBufferStats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, g.BufferStats())
}

func (g *Gateway) handlePeek(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	st, from, perr := g.streamFromParams(q, false)
	if perr != nil {
		perr.write(w)
		return
	}
	n := 10
	if s := q.Get("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			badRequest("n %q: must be a positive integer (at most %d are returned)", s, PeekMax).write(w)
			return
		}
		n = min(v, PeekMax)
	}
	p := Peek{Stream: st.Name, First: st.First, Next: st.Next, Events: []PeekedEvent{}}
	size := 0
	_, err := g.buf.Read(st.Name, from, n, func(off uint64, ev *event.Event) error {
		if len(p.Events) > 0 && size >= PeekPageBytes {
			p.NextFrom = off
			return errPageFull
		}
		pe := peeked(off, ev)
		size += peekedSize(&pe)
		p.Events = append(p.Events, pe)
		return nil
	})
	if errors.Is(err, errPageFull) {
		err = nil
	}
	if err != nil {
		http.Error(w, "reading the buffer: "+err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// peeked copies what a peek shows of ev (Read's ev is reused after fn).
func peeked(off uint64, ev *event.Event) PeekedEvent {
	pe := PeekedEvent{Offset: off, ID: ev.ID.String(), Time: ev.Time, Source: ev.Source, Topic: ev.Topic,
		ContentType: ev.ContentType, Size: len(ev.Payload), Truncated: len(ev.Payload) > PeekPayloadMax}
	if len(ev.Attrs) > 0 {
		pe.Attrs = make(map[string]string, len(ev.Attrs))
		for k, v := range ev.Attrs {
			pe.Attrs[k] = v
		}
	}
	p := ev.Payload[:min(len(ev.Payload), PeekPayloadMax)]
	text := p
	if pe.Truncated {
		// The cut may split a character: drop its first bytes, so a text
		// payload stays text.
		for i := 0; i < utf8.UTFMax-1 && len(text) > 0 && !utf8.Valid(text); i++ {
			text = text[:len(text)-1]
		}
	}
	if printable(text) {
		pe.Text = string(text)
	} else {
		pe.Hex = fmt.Sprintf("%x", p)
	}
	return pe
}

// peekedSize estimates the JSON size of pe: its variable parts and a
// generous allowance for the rest.
func peekedSize(pe *PeekedEvent) int {
	n := 256 + len(pe.Source) + len(pe.Topic) + len(pe.ContentType) + 2*len(pe.Text) + len(pe.Hex)
	for k, v := range pe.Attrs {
		n += 8 + len(k) + len(v)
	}
	return n
}

// printable reports whether p is UTF-8 text: printable characters and
// common white space only.
func printable(p []byte) bool {
	if !utf8.Valid(p) {
		return false
	}
	for _, r := range string(p) {
		if !unicode.IsPrint(r) && r != '\n' && r != '\r' && r != '\t' {
			return false
		}
	}
	return true
}

var (
	errPageFull  = errors.New("export page full")
	errExportEnd = errors.New("export end reached")
)

// handleExport streams every event of a stream from an offset up to the
// last one present when the export started (events appended meanwhile are
// not included, so the export of a live stream ends). Events deleted while
// it runs (forwarded, expired) are skipped.
func (g *Gateway) handleExport(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	st, from, perr := g.streamFromParams(q, false)
	if perr != nil {
		perr.write(w)
		return
	}
	var encode func(*bytes.Buffer, uint64, *event.Event) error
	switch f := q.Get("format"); f {
	case "", "jsonl":
		w.Header().Set("Content-Type", "application/x-ndjson")
		encode = encodeJSONL
	case "cbor":
		w.Header().Set("Content-Type", "application/cbor-seq")
		encode = encodeCBOR
	default:
		badRequest("format %q: must be jsonl or cbor", f).write(w)
		return
	}
	w.Header().Set("Trailer", ExportEventsTrailer+", "+ExportErrorTrailer)
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	end := st.Next
	var page bytes.Buffer
	var count uint64
	var failure error
	for next := from; next < end; {
		if err := r.Context().Err(); err != nil {
			return // the client went away
		}
		page.Reset()
		n, err := g.buf.Read(st.Name, next, exportPage, func(off uint64, ev *event.Event) error {
			if off >= end {
				return errExportEnd
			}
			if err := encode(&page, off, ev); err != nil {
				return err
			}
			count++
			if page.Len() >= exportFlush {
				return errPageFull
			}
			return nil
		})
		if page.Len() > 0 {
			if _, werr := w.Write(page.Bytes()); werr != nil {
				return // the client went away; nobody to tell
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if err != nil && !errors.Is(err, errPageFull) {
			if !errors.Is(err, errExportEnd) {
				failure = err
			}
			break
		}
		if n == next {
			break // nothing at or after next: the rest was deleted meanwhile
		}
		next = n
	}
	if failure != nil {
		g.log.Warn("buffer export failed", "stream", st.Name, "err", failure)
		w.Header().Set(ExportErrorTrailer, failure.Error())
	}
	w.Header().Set(ExportEventsTrailer, strconv.FormatUint(count, 10))
}

// encodeJSONL appends ev as one ExportedEvent line. The payload is spliced
// in verbatim rather than through encoding/json, which would re-format it
// and so change its bytes.
func encodeJSONL(b *bytes.Buffer, off uint64, ev *event.Event) error {
	x := ExportedEvent{Offset: off, ID: ev.ID.String(), Stream: ev.Stream, Source: ev.Source, Topic: ev.Topic,
		TS: ev.Time.UTC(), ContentType: ev.ContentType, Attrs: ev.Attrs}
	embed := embeddableLine(ev.Payload)
	if !embed {
		x.PayloadB64 = ev.Payload
	}
	head, err := json.Marshal(&x)
	if err != nil {
		return fmt.Errorf("offset %d: %w", off, err)
	}
	if embed {
		b.Write(head[:len(head)-1]) // without the closing brace
		b.WriteString(`,"payload":`)
		b.Write(ev.Payload)
		b.WriteByte('}')
	} else {
		b.Write(head)
	}
	b.WriteByte('\n')
	return nil
}

// embeddableLine reports whether p can be embedded in a JSON line and
// decoded back to the same bytes: valid JSON, UTF-8, without surrounding
// white space (the envelope's rule) and without line breaks (a JSON
// string cannot hold a raw one, so they could only be white space between
// tokens, which would split the line).
func embeddableLine(p []byte) bool {
	if len(p) == 0 || bytes.ContainsAny(p, "\r\n") {
		return false
	}
	if c := p[0]; c == ' ' || c == '\t' {
		return false
	}
	if c := p[len(p)-1]; c == ' ' || c == '\t' {
		return false
	}
	return utf8.Valid(p) && json.Valid(p)
}

// encodeCBOR appends ev as one item of an RFC 8742 CBOR sequence: the
// array [offset, event], the event in the event package's encoding (the
// cloud's CBOR form).
func encodeCBOR(b *bytes.Buffer, off uint64, ev *event.Event) error {
	enc, err := event.Marshal(ev)
	if err != nil {
		return fmt.Errorf("offset %d: %w", off, err)
	}
	b.WriteByte(0x82) // array of two
	var head [9]byte
	b.Write(appendCBORUint(head[:0], off))
	b.Write(enc)
	return nil
}

// appendCBORUint appends v as a CBOR unsigned integer (major type 0) in
// its shortest form.
func appendCBORUint(dst []byte, v uint64) []byte {
	switch {
	case v < 24:
		return append(dst, byte(v))
	case v <= 0xff:
		return append(dst, 24, byte(v))
	case v <= 0xffff:
		return append(dst, 25, byte(v>>8), byte(v))
	case v <= 0xffffffff:
		return append(dst, 26, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return append(dst, 27, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func (g *Gateway) handleReplay(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	st, from, perr := g.streamFromParams(q, true)
	if perr != nil {
		perr.write(w)
		return
	}
	if err := g.Replay(st.Name, from); err != nil {
		writeJSON(w, http.StatusConflict, OpResult{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, OpResult{OK: true})
}

func (g *Gateway) handleReload(w http.ResponseWriter, r *http.Request) {
	err := g.Reload(r.Context())
	if err == nil {
		writeJSON(w, http.StatusOK, OpResult{OK: true})
		return
	}
	status := http.StatusConflict // refused: the running configuration stays
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		status = http.StatusServiceUnavailable
	}
	res := OpResult{Error: err.Error()}
	var es config.Errors
	if errors.As(err, &es) {
		for _, e := range es {
			res.Reasons = append(res.Reasons, e.Error())
		}
	}
	writeJSON(w, status, res)
}
