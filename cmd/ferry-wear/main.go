//go:build linux

// Command ferry-wear runs `make bench-wear`: bytes written to storage per
// acknowledged sensor reading, ferry (each durability mode) beside a
// Mosquitto edge bridging to the cloud. See internal/bench/wear.
//
// Every flag defaults to an environment variable, so that
// `make bench-wear DURATION=10` works: DURATION, WARMUP, NOSYNC_WINDOW
// (seconds or a Go duration), RATES (e.g. 1,10,100), TARGETS
// (sync,batch,none,mosquitto,mosquitto-persist), SENSORS, ENDURANCE_TB,
// FERRY, MOSQUITTO, KEEP=1, PERF=0, QUICK=1 (10 s windows after 3 s of
// warm-up, ferry none's window not stretched: about 3.5 minutes).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferrygw/ferry/internal/bench/wear"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := flag.NewFlagSet("ferry-wear", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: ferry-wear [flags]\n\nBytes written to storage per acknowledged reading, ferry beside a Mosquitto edge.\nEach flag defaults to the environment variable named in brackets.\n\nflags:\n")
		fs.PrintDefaults()
	}
	var (
		cfg                                      wear.Config
		duration, warmup, nosync, rates, targets string
		sensors                                  int
		endurance                                float64
		keep, noPerf, quick                      bool
		envErr                                   error
	)
	env := func(k, def string) string {
		if v := os.Getenv(k); v != "" {
			return v
		}
		return def
	}
	envInt := func(k string, def int) int {
		v, err := strconv.Atoi(env(k, strconv.Itoa(def)))
		if err != nil {
			envErr = fmt.Errorf("%s: %w", k, err)
		}
		return v
	}
	envFloat := func(k string, def float64) float64 {
		v, err := strconv.ParseFloat(env(k, strconv.FormatFloat(def, 'f', -1, 64)), 64)
		if err != nil {
			envErr = fmt.Errorf("%s: %w", k, err)
		}
		return v
	}
	fs.StringVar(&cfg.Ferry, "ferry", env("FERRY", "bin/ferry"), "ferry `binary` [FERRY]")
	fs.StringVar(&cfg.Mosquitto, "mosquitto", env("MOSQUITTO", findMosquitto()), "mosquitto `binary` [MOSQUITTO]")
	fs.StringVar(&duration, "duration", env("DURATION", "30s"), "measured window, seconds or a Go duration [DURATION]")
	fs.StringVar(&warmup, "warmup", env("WARMUP", "5s"), "load before the window [WARMUP]")
	fs.StringVar(&nosync, "nosync-window", env("NOSYNC_WINDOW", "auto"), "least window for ferry durability none; auto: 2 x (vm.dirty_expire + vm.dirty_writeback), 0: none [NOSYNC_WINDOW]")
	fs.StringVar(&rates, "rates", env("RATES", "1,10,100"), "aggregate readings/s, comma-separated [RATES]")
	fs.StringVar(&targets, "targets", env("TARGETS", targetKeys()), "edges to measure, comma-separated [TARGETS]")
	fs.IntVar(&sensors, "sensors", envInt("SENSORS", wear.DefaultSensors), "sensors (MQTT clients) sharing each rate [SENSORS]")
	fs.Float64Var(&endurance, "endurance-tb", envFloat("ENDURANCE_TB", wear.DefaultEnduranceTB), "host writes the card takes, TB, for the years column [ENDURANCE_TB]")
	fs.DurationVar(&cfg.Settle, "settle", wear.DefaultSettle, "longest wait for readings to reach the cloud after the load")
	fs.BoolVar(&keep, "keep", env("KEEP", "0") == "1", "keep the work directory (configs, logs, perf output) [KEEP=1]")
	fs.BoolVar(&noPerf, "no-perf", env("PERF", "1") == "0", "do not count fsyncs with perf [PERF=0]")
	fs.BoolVar(&quick, "quick", env("QUICK", "0") == "1", "quick look: -duration 10 -warmup 3 -nosync-window 0 unless given [QUICK=1]")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if quick {
		given := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
		for _, q := range []struct {
			flag, env string
			v         *string
			quick     string
		}{{"duration", "DURATION", &duration, "10"}, {"warmup", "WARMUP", &warmup, "3"}, {"nosync-window", "NOSYNC_WINDOW", &nosync, "0"}} {
			if !given[q.flag] && os.Getenv(q.env) == "" {
				*q.v = q.quick
			}
		}
	}
	if envErr != nil {
		return usage(envErr)
	}
	var err error
	if cfg.Duration, err = seconds(duration); err != nil {
		return usage(fmt.Errorf("duration: %w", err))
	}
	if cfg.Warmup, err = seconds(warmup); err != nil {
		return usage(fmt.Errorf("warmup: %w", err))
	}
	cfg.NoSyncWindow = -1
	if nosync != "auto" {
		if cfg.NoSyncWindow, err = seconds(nosync); err != nil {
			return usage(fmt.Errorf("nosync-window: %w", err))
		}
	}
	for f := range strings.SplitSeq(rates, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			return usage(fmt.Errorf("rates: %w", err))
		}
		cfg.Rates = append(cfg.Rates, r)
	}
	for f := range strings.SplitSeq(targets, ",") {
		t, ok := target(strings.TrimSpace(f))
		if !ok {
			return usage(fmt.Errorf("targets: unknown %q; known: %s", f, targetKeys()))
		}
		cfg.Targets = append(cfg.Targets, t)
	}
	if cfg.Mosquitto == "" {
		fmt.Fprintln(os.Stderr, "ferry-wear: mosquitto not found in PATH or /usr/sbin: apt-get install mosquitto (or set MOSQUITTO)")
		return 2
	}
	cfg.Sensors, cfg.EnduranceTB, cfg.Keep, cfg.NoPerf = sensors, endurance, keep, noPerf

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if err := wear.Run(ctx, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "ferry-wear: %v\n", err)
		if errors.Is(err, wear.ErrLost) || errors.Is(err, context.Canceled) {
			return 1
		}
		return 2
	}
	return 0
}

func usage(err error) int {
	fmt.Fprintf(os.Stderr, "ferry-wear: %v\n", err)
	return 2
}

// seconds parses "30" as seconds, or a Go duration ("30s", "1m").
func seconds(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Duration(f * float64(time.Second)), nil
	}
	return time.ParseDuration(s)
}

func findMosquitto() string {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	if st, err := os.Stat("/usr/sbin/mosquitto"); err == nil && !st.IsDir() {
		return "/usr/sbin/mosquitto"
	}
	return ""
}

func targetKeys() string {
	var k []string
	for _, t := range wear.Targets {
		k = append(k, t.Key)
	}
	return strings.Join(k, ",")
}

func target(key string) (wear.Target, bool) {
	for _, t := range wear.Targets {
		if t.Key == key {
			return t, true
		}
	}
	return wear.Target{}, false
}
