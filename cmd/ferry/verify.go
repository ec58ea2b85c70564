package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ferrygw/ferry/internal/logging"
	"github.com/ferrygw/ferry/uplink"
	"github.com/ferrygw/ferry/verify"
)

const verifyUsage = `usage: ferry verify -url URL [flags]

Subscribes to the cloud broker a fleet uplinks to and checks every
(gateway, stream, epoch) by the sequence numbers on its events: received,
duplicates, replays, reordering, announced drops, unexplained gaps, lag.
Prints a progress report on stderr, the final report on stdout.

Exit status: 0 no unexplained gap, 1 events missing in unexplained gaps,
2 usage or connection error.

The password is read from $FERRY_VERIFY_PASSWORD (never a flag).

flags:
`

// cmdVerify runs ferry verify until -duration or SIGINT/SIGTERM.
func cmdVerify(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return runVerify(ctx, args, stdout, stderr)
}

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, verifyUsage)
		fs.PrintDefaults()
	}
	var urls []string
	fs.Func("url", "cloud broker `URL` (tcp://, ssl://, ws://, wss://); repeat or separate with commas for a cluster's nodes, tried in order", func(s string) error {
		for _, u := range strings.Split(s, ",") {
			if u = strings.TrimSpace(u); u != "" {
				urls = append(urls, u)
			}
		}
		return nil
	})
	topic := fs.String("topic", verify.DefaultTopic, "topic `filter` the gateways publish under (default: the uplink's default topic {gateway_id}/{stream}/{source})")
	share := fs.String("share", "", "subscribe as $share/`GROUP`/FILTER: only with a broker that pins a topic to one member (see README)")
	partition := fs.String("partition", "", "`i/N`: check only the gateways whose ID hashes to i of N (FNV-1a)")
	clientID := fs.String("client-id", "", "MQTT client `ID` (default ferry-verify-<host>[-p<i>of<N>])")
	clean := fs.Bool("clean", false, "start a clean session (default: persistent, so nothing published while reconnecting is missed)")
	username := fs.String("username", "", "MQTT `user` name")
	caFile := fs.String("ca", "", "CA certificates `file` (PEM) for TLS endpoints (default: the system's)")
	duration := fs.Duration("duration", 0, "stop after `D` (0: at SIGINT or SIGTERM)")
	settle := fs.Duration("settle", verify.DefaultSettle, "how long a hole may stay open before it is unexplained")
	reportEvery := fs.Duration("report-every", verify.DefaultReportEvery, "progress report period on stderr (0: none)")
	listen := fs.String("listen", "", "serve Prometheus metrics on `ADDR` (GET /metrics)")
	labels := fs.String("metrics-labels", verify.LabelsStream, "metric labels: stream (gateway and stream), gateway, or none")
	repair := fs.Bool("repair", false, "ask gateways to resend the events of unexplained gaps ({gateway_id}/cmd/ferry/resend)")
	attempts := fs.Int("repair-attempts", verify.DefaultRepairAttempts, "resend requests per gap, one settle window apart")
	problems := fs.Bool("problems", false, "list only the streams with missing events in the final table")
	jsonOut := fs.Bool("json", false, "print the final report as JSON")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || len(urls) == 0 {
		fmt.Fprintln(stderr, "ferry verify: -url is required and no arguments are taken")
		fs.Usage()
		return 2
	}
	logger, err := logging.New(stderr, *logLevel, "text", os.Getenv)
	if err != nil {
		fmt.Fprintln(stderr, "ferry verify:", err)
		return 2
	}
	cfg := verify.Config{
		URLs: urls, Topic: *topic, Share: *share, ClientID: *clientID, CleanSession: *clean,
		Username: *username, Password: os.Getenv("FERRY_VERIFY_PASSWORD"),
		Listen: *listen, MetricsLabels: *labels,
		ReportEvery: *reportEvery, Progress: stderr,
		Repair: *repair, RepairAttempts: *attempts,
		Settle: *settle, Decode: decodeEnvelopes, Logger: logger,
	}
	if *reportEvery <= 0 {
		cfg.ReportEvery = -1
	}
	if *settle <= 0 || *attempts < 1 || *duration < 0 {
		fmt.Fprintln(stderr, "ferry verify: -settle and -repair-attempts must be positive, -duration not negative")
		return 2
	}
	if *partition != "" {
		if cfg.Partition, err = verify.ParsePartition(*partition); err != nil {
			fmt.Fprintln(stderr, "ferry verify:", err)
			return 2
		}
	}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Fprintln(stderr, "ferry verify:", err)
			return 2
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintf(stderr, "ferry verify: %s: no PEM certificate\n", *caFile)
			return 2
		}
		cfg.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	v, err := verify.New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "ferry verify:", err)
		return 2
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	if err := v.Run(ctx); err != nil {
		fmt.Fprintln(stderr, "ferry verify:", err)
		return 2
	}
	rep := v.Report()
	if *jsonOut {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteText(stdout, verify.TextOptions{ProblemsOnly: *problems})
	}
	if err != nil {
		fmt.Fprintln(stderr, "ferry verify:", err)
		return 2
	}
	if !rep.OK() {
		return 1
	}
	return 0
}

// decodeEnvelopes decodes a cloud message for the checker: every form a
// gateway sends (JSON, CBOR, SenML-CBOR, batched, compressed).
func decodeEnvelopes(b []byte) ([]verify.Envelope, error) { return uplink.DecodeEnvelopes(b) }
