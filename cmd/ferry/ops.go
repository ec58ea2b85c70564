package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/gateway/opsapi"
)

// The operator commands talk to a running gateway over its loopback status
// listener (status.listen), as `ferry status` does: see gateway/opsapi/ops.go.

const bufferUsage = `usage: ferry buffer <command> [flags]

commands:
  stats                              every stream: offsets, backlog, consumers
  peek   -stream S [-from N] [-n 10] the events of S from offset N (default: the oldest)
  export -stream S [-from N] [-format jsonl|cbor]
                                     every event of S from N to stdout
  replay -stream S -from N           forward S again from offset N

flags of every command: -addr HOST:PORT (default 127.0.0.1:8080), or -c FILE
to take it from the config's status.listen
`

// defaultStatusAddr is status.listen's default.
const defaultStatusAddr = "127.0.0.1:8080"

// addrFlags adds -addr and -c to fs; the function it returns gives the
// gateway's status address once fs is parsed: -addr when given, else the
// status.listen of the config -c names, else the default.
func addrFlags(fs *flag.FlagSet) func() (string, error) {
	addr := fs.String("addr", defaultStatusAddr, "the gateway's status.listen address")
	cfgPath := fs.String("c", "", "take the address from this config file's status.listen")
	return func() (string, error) {
		explicit := false
		fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "addr" })
		if explicit || *cfgPath == "" {
			return *addr, nil
		}
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			return "", err
		}
		if cfg.Status.Listen == "" {
			return "", fmt.Errorf("%s: status.listen is empty: the gateway has no status endpoint", *cfgPath)
		}
		return cfg.Status.Listen, nil
	}
}

// opsClient sends one command's requests to a gateway.
type opsClient struct {
	cmd    string // for messages: "buffer peek"
	addr   string
	stderr io.Writer
	client *http.Client
}

func newOpsClient(cmd string, addrOf func() (string, error), timeout time.Duration, stderr io.Writer) (*opsClient, bool) {
	addr, err := addrOf()
	if err != nil {
		fmt.Fprintf(stderr, "ferry %s: %v\n", cmd, err)
		return nil, false
	}
	// A reload answers only once it is done: wait as long for the headers.
	headers := max(timeout, 30*time.Second)
	return &opsClient{cmd: cmd, addr: addr, stderr: stderr, client: &http.Client{
		Timeout: timeout,
		// No request reuses a connection: one command, a few requests.
		Transport: &http.Transport{DisableKeepAlives: true, ResponseHeaderTimeout: headers},
	}}, true
}

// errorReply is a gateway's answer other than 200 OK.
type errorReply struct {
	status string
	code   int
	path   string
	body   []byte
}

// do sends a request. It returns the response of a 200 OK (the caller
// closes its body) or the gateway's error reply; neither when the gateway
// does not answer, which it reports.
func (c *opsClient) do(method, path string, q url.Values) (*http.Response, *errorReply) {
	u := "http://" + c.addr + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		fmt.Fprintf(c.stderr, "ferry %s: %v\n", c.cmd, err)
		return nil, nil
	}
	resp, err := c.client.Do(req)
	if err != nil {
		fmt.Fprintf(c.stderr, "ferry %s: is the gateway running with status.listen %s? %v\n", c.cmd, c.addr, err)
		return nil, nil
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return nil, &errorReply{status: resp.Status, code: resp.StatusCode, path: path, body: body}
}

// report prints an error reply: the gateway's message says what was wrong.
func (c *opsClient) report(r *errorReply) {
	if r == nil {
		return // already reported
	}
	msg := strings.TrimSpace(string(r.body))
	if r.code == http.StatusNotFound && !strings.Contains(msg, "retained") {
		msg = "the gateway has no " + r.path + " endpoint (is it an older ferry?)"
	}
	fmt.Fprintf(c.stderr, "ferry %s: %s (%s)\n", c.cmd, msg, r.status)
}

// getJSON fetches path into v.
func (c *opsClient) getJSON(path string, q url.Values, v any) bool {
	resp, rep := c.do(http.MethodGet, path, q)
	if resp == nil {
		c.report(rep)
		return false
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(v); err != nil {
		fmt.Fprintf(c.stderr, "ferry %s: reading the answer: %v\n", c.cmd, err)
		return false
	}
	return true
}

func cmdBuffer(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, bufferUsage)
		return 2
	}
	switch args[0] {
	case "stats":
		return cmdBufferStats(args[1:], stdout, stderr)
	case "peek":
		return cmdBufferPeek(args[1:], stdout, stderr)
	case "export":
		return cmdBufferExport(args[1:], stdout, stderr)
	case "replay":
		return cmdBufferReplay(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, bufferUsage)
		return 0
	}
	fmt.Fprintf(stderr, "ferry buffer: unknown command %q\n%s", args[0], bufferUsage)
	return 2
}

func cmdBufferStats(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("buffer stats", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addrOf := addrFlags(fs)
	asJSON := fs.Bool("json", false, "print the raw JSON")
	if fs.Parse(args) != nil {
		return 2
	}
	c, ok := newOpsClient("buffer stats", addrOf, 10*time.Second, stderr)
	if !ok {
		return 1
	}
	var streams []opsapi.BufferStream
	if !c.getJSON("/buffer/stats", nil, &streams) {
		return 1
	}
	if *asJSON {
		return printJSON(stdout, streams)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tFIRST\tNEXT\tEVENTS\tBYTES\tOLDEST\tLIMITS\tFORWARDED\tCONSUMERS (processed through)")
	for _, s := range streams {
		limits := "-"
		if s.MaxEvents > 0 || s.MaxBytes > 0 {
			limits = fmt.Sprintf("%d / %s", s.MaxEvents, humanBytes(s.MaxBytes))
		}
		fwd := "no"
		if s.Forwarded {
			fwd = "yes"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.First, s.Next, s.Events, humanBytes(s.Bytes),
			age(s.OldestAge, s.Events), limits, fwd, joinCounts(s.Consumers, "="))
	}
	_ = tw.Flush()
	return 0
}

func cmdBufferPeek(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("buffer peek", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addrOf := addrFlags(fs)
	stream := fs.String("stream", "", "the stream (required)")
	from := fs.String("from", "", "first offset (default: the oldest retained)")
	n := fs.Int("n", 10, fmt.Sprintf("how many events (at most %d)", opsapi.PeekMax))
	asJSON := fs.Bool("json", false, "print the raw JSON (payloads up to 1 KiB)")
	if fs.Parse(args) != nil {
		return 2
	}
	if *stream == "" {
		fmt.Fprintln(stderr, "ferry buffer peek: -stream is required (ferry buffer stats lists them)")
		return 2
	}
	c, ok := newOpsClient("buffer peek", addrOf, 30*time.Second, stderr)
	if !ok {
		return 1
	}
	q := url.Values{"stream": {*stream}, "n": {strconv.Itoa(*n)}}
	if *from != "" {
		q.Set("from", *from)
	}
	var p opsapi.Peek
	if !c.getJSON("/buffer/peek", q, &p) {
		return 1
	}
	if *asJSON {
		return printJSON(stdout, p)
	}
	if len(p.Events) == 0 {
		fmt.Fprintf(stdout, "stream %s: no events from there (retained offsets %d..%d)\n", p.Stream, p.First, p.Next-1)
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "OFFSET\tTIME\tSOURCE\tTOPIC\tCONTENT TYPE\tSIZE\tPAYLOAD")
	for _, e := range p.Events {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\n", e.Offset, e.Time.Format("2006-01-02 15:04:05.000"),
			orDash(e.Source), orDash(e.Topic), orDash(e.ContentType), e.Size, payloadCell(e))
	}
	_ = tw.Flush()
	last := p.Events[len(p.Events)-1].Offset
	if last+1 < p.Next {
		fmt.Fprintf(stdout, "more: ferry buffer peek -stream %s -from %d\n", p.Stream, last+1)
	}
	return 0
}

// payloadWidth is how many characters of a payload a peek line shows.
const payloadWidth = 64

// payloadCell shows a payload on one line: text with its line breaks and
// tabs escaped, or hex prefixed "hex:", cut to payloadWidth.
func payloadCell(e opsapi.PeekedEvent) string {
	var s string
	cut := e.Truncated
	switch {
	case e.Hex != "":
		s = "hex:" + e.Hex
	case e.Size == 0:
		return "(empty)"
	default:
		s = strings.NewReplacer("\n", `\n`, "\r", `\r`, "\t", `\t`).Replace(e.Text)
	}
	if utf8.RuneCountInString(s) > payloadWidth {
		s = string([]rune(s)[:payloadWidth])
		cut = true
	}
	if cut {
		s += "…"
	}
	return s
}

func cmdBufferExport(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("buffer export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addrOf := addrFlags(fs)
	stream := fs.String("stream", "", "the stream (required)")
	from := fs.String("from", "", "first offset (default: the oldest retained)")
	format := fs.String("format", "jsonl", "jsonl (one JSON object per event) or cbor (a CBOR sequence of [offset, event])")
	if fs.Parse(args) != nil {
		return 2
	}
	if *stream == "" {
		fmt.Fprintln(stderr, "ferry buffer export: -stream is required (ferry buffer stats lists them)")
		return 2
	}
	// No overall timeout: a large backlog takes as long as it takes.
	c, ok := newOpsClient("buffer export", addrOf, 0, stderr)
	if !ok {
		return 1
	}
	q := url.Values{"stream": {*stream}, "format": {*format}}
	if *from != "" {
		q.Set("from", *from)
	}
	resp, rep := c.do(http.MethodGet, "/buffer/export", q)
	if resp == nil {
		c.report(rep)
		return 1
	}
	defer resp.Body.Close()
	if _, err := io.Copy(stdout, resp.Body); err != nil {
		fmt.Fprintf(stderr, "ferry buffer export: cut short: %v\n", err)
		return 1
	}
	// The trailers arrive after the body: they say whether it is complete.
	if msg := resp.Trailer.Get(opsapi.ExportErrorTrailer); msg != "" {
		fmt.Fprintf(stderr, "ferry buffer export: the gateway stopped the export: %s\n", msg)
		return 1
	}
	n := resp.Trailer.Get(opsapi.ExportEventsTrailer)
	if n == "" {
		fmt.Fprintln(stderr, "ferry buffer export: cut short: the gateway did not finish the export")
		return 1
	}
	fmt.Fprintf(stderr, "ferry buffer export: %s events of stream %s\n", n, *stream)
	return 0
}

func cmdBufferReplay(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("buffer replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addrOf := addrFlags(fs)
	stream := fs.String("stream", "", "the stream (required)")
	from := fs.String("from", "", "offset to forward again from (required)")
	if fs.Parse(args) != nil {
		return 2
	}
	if *stream == "" || *from == "" {
		fmt.Fprintln(stderr, "ferry buffer replay: -stream and -from are required")
		return 2
	}
	c, ok := newOpsClient("buffer replay", addrOf, time.Minute, stderr)
	if !ok {
		return 1
	}
	return c.post("/buffer/replay", url.Values{"stream": {*stream}, "from": {*from}}, stdout,
		fmt.Sprintf("replay of stream %s from offset %s: ok", *stream, *from))
}

func cmdReload(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addrOf := addrFlags(fs)
	if fs.Parse(args) != nil {
		return 2
	}
	// A reload stops the old pipelines and uplink before starting the new
	// ones, which may take a while on a slow board.
	c, ok := newOpsClient("reload", addrOf, 2*time.Minute, stderr)
	if !ok {
		return 1
	}
	return c.post("/reload", nil, stdout, "reload: ok")
}

// post sends a mutating request and prints its OpResult: okMsg, or why it
// was refused.
func (c *opsClient) post(path string, q url.Values, stdout io.Writer, okMsg string) int {
	resp, rep := c.do(http.MethodPost, path, q)
	var res opsapi.OpResult
	switch {
	case resp != nil:
		defer resp.Body.Close()
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&res); err != nil {
			fmt.Fprintf(c.stderr, "ferry %s: reading the answer: %v\n", c.cmd, err)
			return 1
		}
	case rep != nil && json.Unmarshal(rep.body, &res) == nil && res.Error != "":
		// refused, with the reasons: printed below
	default:
		c.report(rep)
		return 1
	}
	if res.OK {
		fmt.Fprintln(stdout, okMsg)
		return 0
	}
	fmt.Fprintf(c.stderr, "ferry %s: refused: %s\n", c.cmd, res.Error)
	if len(res.Reasons) > 1 {
		for _, r := range res.Reasons {
			fmt.Fprintf(c.stderr, "  %s\n", r)
		}
	}
	return 1
}

func printJSON(w io.Writer, v any) int {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return 1
	}
	return 0
}

// humanBytes formats n bytes with a binary unit.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// age shows the oldest event's age, or "-" for an empty stream.
func age(d opsapi.Duration, events int64) string {
	if events == 0 {
		return "-"
	}
	if td := time.Duration(d); td < time.Minute {
		return td.Round(100 * time.Millisecond).String()
	}
	return time.Duration(d).Round(time.Second).String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// joinCounts formats a map sorted by key ("a=1 b=2"), or "-" when empty.
func joinCounts[V any](m map[string]V, sep string) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s%s%v", k, sep, m[k])
	}
	return strings.Join(parts, " ")
}
