package gateway

import (
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/gateway/config"
)

// TestBufferOptionsRollup: a stream configured with overflow: rollup
// reaches the buffer with its policy and interval (the default one when
// not given).
func TestBufferOptionsRollup(t *testing.T) {
	cfg, err := config.LoadBytes([]byte(`
buffer:
  streams:
    - {name: telemetry, overflow: rollup, rollup: {interval: 1m}}
    - {name: slow, overflow: rollup}
    - {name: other}
`), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	opts, err := bufferOptions(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		ov buffer.Overflow
		iv time.Duration
	}{"telemetry": {buffer.Rollup, time.Minute}, "slow": {buffer.Rollup, config.DefaultRollupInterval}, "other": {buffer.DropLargest, 0}}
	for _, sc := range opts.Streams {
		w, ok := want[sc.Name]
		if !ok {
			continue
		}
		if sc.Overflow != w.ov || sc.RollupInterval != w.iv {
			t.Errorf("stream %s: overflow %v, rollup interval %s; want %v, %s", sc.Name, sc.Overflow, sc.RollupInterval, w.ov, w.iv)
		}
		delete(want, sc.Name)
	}
	if len(want) > 0 {
		t.Errorf("streams missing from the buffer options: %v", want)
	}
}
