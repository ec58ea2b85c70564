// Command ferry is the IoT edge event gateway: an embedded MQTT broker, a
// durable store-and-forward log and an uplink to a cloud MQTT broker. See
// README.md. The work lives in the packages; this file parses arguments.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	firmwareconfig "github.com/ferrygw/ferry/firmware-config"
	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/gateway/opsapi"
	"github.com/ferrygw/ferry/internal/bench"
	"github.com/ferrygw/ferry/internal/logging"
)

// Set by the Makefile with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

const usage = `usage: ferry <command> [flags]

commands:
  run    [-c FILE]   run the gateway (no -c: the embedded demo config)
  check  [-root DIR] -c FILE [FILE...]
                     validate configs and the files they name; print every
                     problem with its file, line and key
  status [-addr A]   show link, backlog and rates of a running gateway
  deadletters [-n N] show the newest events pipelines could not process
  buffer stats|peek|export|replay  look into (or re-forward) a running
                     gateway's buffer (ferry buffer -h)
  reload [-addr A]   make a running gateway re-read its config
  bench  [flags]     load-test an MQTT broker (ferry bench -h)
  verify -url URL    check a fleet's streams at the cloud broker: gaps,
                     duplicates, drops, lag (ferry verify -h)
  passwd -f FILE USER  set USER's broker password in a users file (asked
                     twice on a terminal, else one line read from stdin)
  key new|list -f FILE  add (rotate) or list the buffer encryption keys
  config keygen|sign|verify  sign configurations for remote_config and
                     check signed ones (ferry config -h)
  version            print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "status":
		return cmdStatus(args[1:], stdout, stderr)
	case "deadletters":
		return cmdDeadLetters(args[1:], stdout, stderr)
	case "buffer":
		return cmdBuffer(args[1:], stdout, stderr)
	case "reload":
		return cmdReload(args[1:], stdout, stderr)
	case "bench":
		return cmdBench(args[1:], stdout, stderr)
	case "verify":
		return cmdVerify(args[1:], stdout, stderr)
	case "passwd":
		return cmdPasswd(args[1:], stdin, stderr)
	case "key":
		return runKey(args[1:], stdout, stderr)
	case "config":
		return runConfig(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "ferry: unknown command %q\n%s", args[0], usage)
	return 2
}

func versionString() string {
	v, c := version, commit
	if bi, ok := debug.ReadBuildInfo(); ok && c == "" {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				c = s.Value[:12]
			}
		}
	}
	if c == "" {
		return "ferry " + v
	}
	return "ferry " + v + " (" + c + ")"
}

func loadConfig(fs *flag.FlagSet, path string, stderr io.Writer) (*config.Config, bool) {
	var cfg *config.Config
	var err error
	if path == "" {
		fmt.Fprintln(stderr, "ferry: no -c given: using the embedded demo config (firmware-config/default.yaml)")
		cfg, err = config.LoadBytes(firmwareconfig.Default(), "default.yaml")
	} else {
		cfg, err = config.Load(path)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, false
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(stderr, "warning:", w)
	}
	return cfg, true
}

func cmdRun(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "config file")
	if fs.Parse(args) != nil {
		return 2
	}
	cfg, ok := loadConfig(fs, *path, stderr)
	if !ok {
		return 1
	}
	logger, err := newLogger(cfg.Log, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "ferry:", err)
		return 1
	}
	hw := &hardware{}
	defer hw.Close()
	reload := func() (*config.Config, error) {
		if *path == "" {
			return config.LoadBytes(firmwareconfig.Default(), "default.yaml")
		}
		return config.Load(*path)
	}
	g, err := gateway.New(cfg, logger, gateway.WithHardware(hw.env()), gateway.WithReload(reload),
		gateway.WithVersion(strings.TrimPrefix(versionString(), "ferry ")))
	if err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// SIGHUP re-reads the configuration (systemctl reload ferry); the
	// gateway logs what it applied or why it refused.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	hupDone := make(chan struct{})
	go func() {
		defer close(hupDone)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_ = g.Reload(ctx)
			}
		}
	}()
	defer func() { stop(); <-hupDone }()
	if err := g.Run(ctx); err != nil {
		logger.Error("gateway failed", "err", err)
		return 1
	}
	return 0
}

// newLogger makes the one logger: JSON under systemd, text otherwise,
// unless the config says which; repeated lines are rate-limited (see
// internal/logging), except two that have a cadence of their own: the
// health line (one per status.log_interval) and the demo cloud's (one a
// second at most).
func newLogger(c config.Log, w io.Writer) (*slog.Logger, error) {
	return logging.New(w, c.Level, c.Format, os.Getenv, logging.WithUnlimited("health", "cloud received"))
}

// cmdCheck checks each file given (-c FILE, repeatable, and any files
// after the flags) and exits 1 if any has a problem. Every line of output
// starts with the file it is about.
func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files []string
	fs.Func("c", "config file (repeatable; more files may follow the flags)", func(f string) error {
		files = append(files, f)
		return nil
	})
	root := fs.String("root", "", "check the files a config names as on a machine whose root file system is mounted here (absolute paths are looked up under it)")
	// Flags and files may alternate: -c a.yaml b.yaml -c c.yaml.
	for rest := args; ; {
		if fs.Parse(rest) != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(files) == 0 {
		fmt.Fprintln(stderr, "ferry check: -c FILE is required")
		return 2
	}
	bad := 0
	for _, f := range files {
		if !checkFile(f, *root, stdout, stderr) {
			bad++
		}
	}
	if bad > 0 {
		if len(files) > 1 {
			fmt.Fprintf(stderr, "ferry check: %d of %d files have problems\n", bad, len(files))
		}
		return 1
	}
	return 0
}

// checkFile checks one config: the file itself, what only building the
// gateway finds (pipeline expressions, driver options), and the machine
// (the files it names, the disk). It prints every problem and warning
// prefixed with path and reports whether there was no problem.
func checkFile(path, root string, stdout, stderr io.Writer) bool {
	cfg, err := config.Load(path)
	if err != nil {
		var es config.Errors
		if errors.As(err, &es) {
			printProblems(stderr, path, es)
		} else {
			fmt.Fprintf(stderr, "%s: %v\n", path, err)
		}
		return false
	}
	warnings, err := gateway.CheckConfig(cfg, gateway.HostCheck{Root: root})
	var problems config.Errors
	if errors.As(err, &problems) {
		printProblems(stderr, path, problems)
		return false
	} else if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		return false
	}
	for _, w := range append(cfg.Warnings(), warnings...) {
		fmt.Fprintln(stderr, "warning:", prefixed(path, w))
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	return true
}

// printProblems prints es, one a line, and their count.
func printProblems(w io.Writer, path string, es config.Errors) {
	for _, e := range es {
		fmt.Fprintln(w, prefixed(path, e))
	}
	fmt.Fprintf(w, "%s: %d problem(s)\n", path, len(es))
}

// prefixed formats e so that it starts with the file's name.
func prefixed(path string, e *config.Error) string {
	if e.File == "" {
		c := *e
		c.File = path
		e = &c
	}
	return e.Error()
}

// getStatus fetches path from a running gateway's status endpoint.
func getStatus(cmd, addr, path string, stderr io.Writer) ([]byte, bool) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		fmt.Fprintf(stderr, "ferry %s: is the gateway running with status.listen %s? %v\n", cmd, addr, err)
		return nil, false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "ferry %s: %s %v\n", cmd, resp.Status, err)
		return nil, false
	}
	return body, true
}

func cmdDeadLetters(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("deadletters", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "the gateway's status.listen address")
	n := fs.Int("n", 20, "how many of the newest to show")
	if fs.Parse(args) != nil {
		return 2
	}
	body, ok := getStatus("deadletters", *addr, fmt.Sprintf("/deadletters?n=%d", *n), stderr)
	if !ok {
		return 1
	}
	var dls []opsapi.DeadLetter
	if err := json.Unmarshal(body, &dls); err != nil {
		fmt.Fprintf(stderr, "ferry deadletters: %v\n", err)
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "OFFSET\tTIME\tPIPELINE\tSOURCE\tREASON\tPAYLOAD")
	for _, d := range dls {
		p := d.Payload
		if len(p) > 60 {
			p = p[:60] + "…"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%q\n", d.Offset, d.Time.Format(time.RFC3339), d.Pipeline, d.Source, d.Reason, p)
	}
	_ = tw.Flush()
	return 0
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addrOf := addrFlags(fs)
	asJSON := fs.Bool("json", false, "print the raw JSON")
	sample := fs.Duration("sample", time.Second, "measure the ingest rate over this long (0: do not)")
	if fs.Parse(args) != nil {
		return 2
	}
	addr, err := addrOf()
	if err != nil {
		fmt.Fprintf(stderr, "ferry status: %v\n", err)
		return 1
	}
	body, ok := getStatus("status", addr, "/status", stderr)
	if !ok {
		return 1
	}
	if *asJSON {
		_, _ = stdout.Write(body)
		return 0
	}
	var st opsapi.Status
	if err := json.Unmarshal(body, &st); err != nil {
		fmt.Fprintf(stderr, "ferry status: %v\n", err)
		return 1
	}
	// The gateway keeps a forward rate but only totals for ingest: two
	// snapshots a moment apart give the rate now.
	rates := statusRates{ingest: -1}
	if *sample > 0 {
		t0 := time.Now()
		time.Sleep(*sample)
		if body, ok = getStatus("status", addr, "/status", stderr); !ok {
			return 1
		}
		var st2 opsapi.Status
		if err := json.Unmarshal(body, &st2); err != nil {
			fmt.Fprintf(stderr, "ferry status: %v\n", err)
			return 1
		}
		rates.over = time.Since(t0)
		if st2.Ingest.Ingested >= st.Ingest.Ingested { // else the gateway restarted
			rates.ingest = float64(st2.Ingest.Ingested-st.Ingest.Ingested) / rates.over.Seconds()
		}
		st = st2
	}
	printStatus(stdout, &st, rates, time.Now())
	return 0
}

// statusRates are the rates ferry status measured itself.
type statusRates struct {
	ingest float64       // events/s; < 0: not measured
	over   time.Duration // how long it measured
}

// printStatus prints st on one screen: the link, rates and totals, drops by
// reason, then one table each for streams, pipelines and drivers.
func printStatus(w io.Writer, st *opsapi.Status, rates statusRates, now time.Time) {
	fmt.Fprintf(w, "gateway  %s   up %s\n", st.GatewayID, time.Duration(st.Uptime))
	if l := st.Link; l != nil {
		state, since := "DOWN", l.LastDisconnected
		if l.Connected {
			state, since = "up", l.LastConnected
		}
		line := fmt.Sprintf("link     %s %s", state, l.Endpoint)
		switch {
		case l.Endpoint == "":
			line += "(not connected since the start)"
		case !since.IsZero():
			line += fmt.Sprintf(" for %s", now.Sub(since).Round(time.Second))
		}
		if l.Connected {
			line += fmt.Sprintf("   inflight %d", l.Inflight)
		}
		fmt.Fprintf(w, "%s   reconnects %d\n", line, l.Reconnects)
		if l.LastError != "" {
			fmt.Fprintf(w, "         last error: %s\n", l.LastError)
		}
		if l.RefusingAll {
			fmt.Fprintf(w, "         the cloud refuses every publish (%d times): nothing is dead-lettered; check its policy\n", l.RefusedAll)
		}
		if l.LastPoison != "" {
			fmt.Fprintf(w, "         last poison: %q\n", l.LastPoison)
		}
	} else {
		fmt.Fprintln(w, "link     disabled (uplink off: events are kept, not forwarded)")
	}
	if d := st.Downlink; d != nil {
		state := "DOWN"
		if d.Connected {
			state = "up"
		}
		fmt.Fprintf(w, "downlink %s %s   commands %d (delivered %d, expired %d, failed %d)   replies %d   configs %d   config version %d\n",
			state, d.Endpoint, d.Commands, d.Delivered, d.Expired, d.Failed, d.Replies, d.ConfigsReceived, d.ConfigVersion)
		if d.ResendRequests > 0 {
			fmt.Fprintf(w, "         resend requests %d (refused %d)\n", d.ResendRequests, d.ResendRefused)
		}
		if d.LastError != "" {
			fmt.Fprintf(w, "         last error: %s\n", d.LastError)
		}
	}
	ingest := "ingest -"
	if rates.ingest >= 0 {
		ingest = fmt.Sprintf("ingest %.1f/s (over %s)", rates.ingest, rates.over.Round(100*time.Millisecond))
	}
	forward := ""
	if l := st.Link; l != nil {
		forward = fmt.Sprintf("   forward %.1f/s (10 s average)", l.EventsPerSecond)
	}
	fmt.Fprintf(w, "rates    %s%s\n", ingest, forward)
	fmt.Fprintf(w, "ingest   %d events   clients %d   refused %d   matching no route %d   commit avg %s\n",
		st.Ingest.Ingested, st.Ingest.Clients, st.Ingest.Refused, st.Ingest.Ignored, time.Duration(st.CommitAvg).Round(10*time.Microsecond))
	{ // the broker's memory budget
		bu := st.Ingest.Budget
		fmt.Fprintf(w, "budget   retained %d (%s)   subscriptions %d   offline sessions %d   queued %s   connecting %d\n",
			bu.Retained, humanBytes(bu.RetainedBytes), bu.Subscriptions, bu.OfflineSessions, humanBytes(bu.QueuedBytes), bu.Connecting)
		refused := map[string]uint64{"connect_refused": bu.ConnectRefused, "connect_too_large": bu.ConnectTooLarge,
			"connect_timeouts": bu.ConnectTimeouts, "retained": bu.RetainedRefused, "subscriptions": bu.SubscriptionsRefused,
			"sessions": bu.SessionsRefused, "store_dropped": bu.StoreDropped,
			// Queue drops by the limit reached: max_queued, max_session_queue_bytes, max_queue_bytes.
			"queue_full_count": bu.QueueFullCount, "queue_full_bytes": bu.QueueFullBytes, "queue_full_total": bu.QueueFullTotal,
			"write_buffer_full": bu.WriteBufferFull}
		for k, v := range refused {
			if v == 0 {
				delete(refused, k)
			}
		}
		if len(refused) > 0 {
			fmt.Fprintf(w, "         refused %s\n", joinCounts(refused, "="))
		}
	}
	if l := st.Link; l != nil {
		fmt.Fprintf(w, "forward  %d events in %d messages (%s)   resent %d\n",
			l.ForwardedEvents, l.ForwardedMessages, humanBytes(int64(l.ForwardedBytes)), l.Resent)
	}
	if l := st.Link; l != nil && l.Budget != nil {
		b := l.Budget
		line := fmt.Sprintf("data     %s of %s used, %s left until %s", humanBytes(int64(b.Used)), humanBytes(int64(b.Bytes)),
			humanBytes(int64(b.Remaining)), b.PeriodEnd.Format("2006-01-02 15:04 MST"))
		if len(b.Held) > 0 {
			ps := make([]string, len(b.Held))
			for i, p := range b.Held {
				ps[i] = strconv.Itoa(p)
			}
			line += "   held: priority " + strings.Join(ps, ",")
			if len(b.HeldStreams) > 0 {
				line += " (" + strings.Join(b.HeldStreams, ", ") + " waiting)"
			}
		}
		fmt.Fprintln(w, line)
	}
	drops := map[string]uint64{}
	for _, s := range st.Streams {
		for k, v := range s.Drops {
			drops[k] += v
		}
	}
	if st.Link != nil {
		for k, v := range st.Link.Dropped {
			drops["uplink_"+k] += v
		}
	}
	if d := st.Downlink; d != nil {
		for k, v := range d.Dropped {
			drops["downlink_"+k] += v
		}
		if d.RepliesDropped > 0 {
			drops["downlink_replies"] += d.RepliesDropped
		}
	}
	if len(drops) == 0 {
		fmt.Fprintln(w, "drops    none")
	} else {
		fmt.Fprintf(w, "drops    %s\n", joinCounts(drops, "="))
	}
	if sl := st.Listener; sl.Refused+sl.StreamsRefused > 0 { // the status listener's limits (gateway/opsapi/limits.go)
		fmt.Fprintf(w, "status   connections %d/%d   refused %d   page streams refused %d\n",
			sl.Conns, sl.MaxConns, sl.Refused, sl.StreamsRefused)
	}
	if st.DiskFull {
		fmt.Fprintln(w, "DISK FULL: new events are refused")
	}
	if st.Quarantined != "" {
		fmt.Fprintf(w, "CORRUPT BUFFER quarantined to %s\n", st.Quarantined)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tBACKLOG\tBYTES\tOLDEST\tDROPS")
	for _, s := range st.Streams {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", s.Name, s.Events, humanBytes(s.Bytes), age(s.OldestAge, s.Events), joinCounts(s.Drops, "="))
	}
	_ = tw.Flush()
	for _, s := range st.Streams {
		if len(s.SourceDrops) > 0 { // quoted: a source is a client ID, anything a client chose
			quoted := make(map[string]uint64, len(s.SourceDrops))
			for k, v := range s.SourceDrops {
				quoted[fmt.Sprintf("%q", k)] = v
			}
			fmt.Fprintf(w, "overflow in %s by source: %s\n", s.Name, joinCounts(quoted, "="))
		}
	}
	if len(st.Pipelines) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PIPELINE\tIN\tOUT\tDEAD LETTERS\tPOSITION")
		for _, p := range st.Pipelines {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", p.Name, p.In, p.Out, p.DeadLetters, p.Position)
		}
		_ = tw.Flush()
	}
	if len(st.Drivers) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DRIVER\tKIND\tSTATE\tREADS\tERRORS\tLAST ERROR")
		for _, d := range st.Drivers {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", d.Name, d.Kind, d.State, d.Reads, d.Errors, orDash(d.LastError))
		}
		_ = tw.Flush()
	}
}

func cmdBench(args []string, stdout, stderr io.Writer) int {
	cfg, err := bench.ParseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "ferry bench: %v\n", err)
		return 1
	}
	if cfg.JSON {
		if err := rep.WriteJSON(stdout); err != nil {
			return 1
		}
		return 0
	}
	rep.WriteText(stdout)
	return 0
}
