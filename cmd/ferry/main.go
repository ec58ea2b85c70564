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
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	firmwareconfig "github.com/ferrygw/ferry/firmware-config"
	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/internal/bench"
)

// Set by the Makefile with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

const usage = `usage: ferry <command> [flags]

commands:
  run    [-c FILE]   run the gateway (no -c: the embedded demo config)
  check  -c FILE     validate a config; print every problem with its line
  status [-addr A]   show link, backlog and rates of a running gateway
  deadletters [-n N] show the newest events pipelines could not process
  bench  [flags]     load-test an MQTT broker (ferry bench -h)
  passwd -f FILE USER  set USER's broker password in a users file (asked
                     twice on a terminal, else one line read from stdin)
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
	case "bench":
		return cmdBench(args[1:], stdout, stderr)
	case "passwd":
		return cmdPasswd(args[1:], stdin, stderr)
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
	logger := newLogger(cfg.Log, stderr)
	hw := &hardware{}
	defer hw.Close()
	g, err := gateway.New(cfg, logger, gateway.WithHardware(hw.env()))
	if err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := g.Run(ctx); err != nil {
		logger.Error("gateway failed", "err", err)
		return 1
	}
	return 0
}

// newLogger makes the one logger: text on a terminal, JSON under systemd
// (which sets JOURNAL_STREAM) unless the config says otherwise.
func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	format := c.Format
	if format == "auto" || format == "" {
		format = "text"
		if os.Getenv("JOURNAL_STREAM") != "" {
			format = "json"
		}
	}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "config file (required)")
	if fs.Parse(args) != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "ferry check: -c FILE is required")
		return 2
	}
	cfg, err := config.Load(*path)
	if err == nil {
		err = gateway.Check(cfg) // compiles the pipelines' expressions
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		var es config.Errors
		if errors.As(err, &es) {
			fmt.Fprintf(stderr, "%s: %d problem(s)\n", *path, len(es))
		}
		return 1
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(stderr, "warning:", w)
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return 0
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
	var dls []gateway.DeadLetter
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
	addr := fs.String("addr", "127.0.0.1:8080", "the gateway's status.listen address")
	asJSON := fs.Bool("json", false, "print the raw JSON")
	if fs.Parse(args) != nil {
		return 2
	}
	body, ok := getStatus("status", *addr, "/status", stderr)
	if !ok {
		return 1
	}
	if *asJSON {
		_, _ = stdout.Write(body)
		return 0
	}
	var st gateway.Status
	if err := json.Unmarshal(body, &st); err != nil {
		fmt.Fprintf(stderr, "ferry status: %v\n", err)
		return 1
	}
	printStatus(stdout, &st)
	return 0
}

func printStatus(w io.Writer, st *gateway.Status) {
	fmt.Fprintf(w, "gateway %s   up %s\n", st.GatewayID, time.Duration(st.Uptime))
	if l := st.Link; l != nil {
		state := "DOWN"
		if l.Connected {
			state = "up"
		}
		fmt.Fprintf(w, "link     %s %s   reconnects %d   forwarded %d events in %d messages\n",
			state, l.Endpoint, l.Reconnects, l.ForwardedEvents, l.ForwardedMessages)
		if !l.Connected && l.LastError != "" {
			fmt.Fprintf(w, "         last error: %s\n", l.LastError)
		}
	} else {
		fmt.Fprintln(w, "link     disabled")
	}
	fmt.Fprintf(w, "ingest   %d events   refused %d   ignored %d   clients %d   commit avg %s\n",
		st.Ingest.Ingested, st.Ingest.Refused, st.Ingest.Ignored, st.Ingest.Clients, time.Duration(st.CommitAvg))
	if st.DiskFull {
		fmt.Fprintln(w, "DISK FULL: new events are refused")
	}
	if st.Quarantined != "" {
		fmt.Fprintf(w, "CORRUPT BUFFER quarantined to %s\n", st.Quarantined)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tBACKLOG\tBYTES\tOLDEST\tDROPS")
	for _, s := range st.Streams {
		var drops []string
		for k, v := range s.Drops {
			drops = append(drops, fmt.Sprintf("%s=%d", k, v))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", s.Name, s.Events, s.Bytes, time.Duration(s.OldestAge), strings.Join(drops, " "))
	}
	_ = tw.Flush()
	if len(st.Drivers) > 0 {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DRIVER\tKIND\tSTATE\tREADS\tERRORS\tLAST ERROR")
		for _, d := range st.Drivers {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", d.Name, d.Kind, d.State, d.Reads, d.Errors, d.LastError)
		}
		_ = tw.Flush()
	}
	if len(st.Pipelines) > 0 {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PIPELINE\tIN\tOUT\tDEAD LETTERS\tPOSITION")
		for _, p := range st.Pipelines {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", p.Name, p.In, p.Out, p.DeadLetters, p.Position)
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
