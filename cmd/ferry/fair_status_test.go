package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/gateway/opsapi"
)

// TestPrintStatusSourceDrops: `ferry status` shows a stream's overflow
// drops by source, each source quoted (a client ID may hold control
// characters that must not reach the operator's terminal).
func TestPrintStatusSourceDrops(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	st := &opsapi.Status{GatewayID: "gw", Streams: []opsapi.StreamStatus{
		{StreamStats: buffer.StreamStats{Name: "telemetry", Events: 400, Drops: map[string]uint64{"overflow": 2705},
			SourceDrops: map[string]uint64{"mallory": 2700, "evil\x1b[2J": 4, buffer.OtherSources: 1}}},
		{StreamStats: buffer.StreamStats{Name: "quiet"}},
	}}
	var b bytes.Buffer
	printStatus(&b, st, statusRates{}, now)
	out := b.String()
	want := `overflow in telemetry by source: "(other)"=1 "evil\x1b[2J"=4 "mallory"=2700` + "\n"
	if !strings.Contains(out, want) {
		t.Errorf("lacks %q:\n%s", want, out)
	}
	if strings.Contains(out, "\x1b") || strings.Contains(out, "overflow in quiet") {
		t.Errorf("raw escape, or a line for a stream without drops:\n%s", out)
	}
}
