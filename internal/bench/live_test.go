package bench

import (
	"context"
	"os"
	"strings"
	"testing"
)

// TestLive runs `ferry bench` against a broker of your choosing and prints
// the report, e.g.
//
//	FERRY_BENCH_ARGS="-broker tcp://127.0.0.1:18830 -n 50 -m 1000" go test -run TestLive -v ./internal/bench/
//
// It is skipped unless FERRY_BENCH_ARGS is set.
func TestLive(t *testing.T) {
	args := os.Getenv("FERRY_BENCH_ARGS")
	if args == "" {
		t.Skip("set FERRY_BENCH_ARGS to run against a live broker")
	}
	cfg, err := ParseFlags(strings.Fields(args), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Run(context.Background(), cfg, os.Stderr)
	if r != nil {
		if cfg.JSON {
			_ = r.WriteJSON(os.Stdout)
		} else {
			r.WriteText(os.Stdout)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}
