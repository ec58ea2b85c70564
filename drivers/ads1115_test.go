package drivers

import (
	"context"
	"slices"
	"testing"
	"time"

	"periph.io/x/conn/v3/i2c/i2ctest"
)

// adsOps is one single-shot conversion at addr: write config, polls (the
// config read back, OS clear while converting, the last one done), read
// the conversion register.
func adsOps(addr, config uint16, busy int, raw uint16) []i2ctest.IO {
	hi, lo := byte(config>>8), byte(config)
	ops := []i2ctest.IO{{Addr: addr, W: []byte{0x01, hi, lo}}}
	for range busy {
		ops = append(ops, i2ctest.IO{Addr: addr, W: []byte{0x01}, R: []byte{hi &^ 0x80, lo}})
	}
	return append(ops,
		i2ctest.IO{Addr: addr, W: []byte{0x01}, R: []byte{hi, lo}},
		i2ctest.IO{Addr: addr, W: []byte{0x00}, R: []byte{byte(raw >> 8), byte(raw)}})
}

func TestADS1115Read(t *testing.T) {
	for _, tc := range []struct {
		name   string
		addr   uint16
		opts   ADS1115Options
		config uint16 // the config register as datasheet section 9.6.3 composes it
		busy   int    // polls answering "converting"
		raw    uint16
		slept  []time.Duration
		want   i2cWant
	}{
		{
			// OS=1 MUX=100 PGA=001 MODE=1 DR=100 COMP=00011.
			name: "AIN0 ±4.096V 128SPS: 0x4000 is 2.048 V",
			opts: ADS1115Options{Gain: 4.096, DataRate: 128}, config: 0xC383, raw: 0x4000,
			slept: []time.Duration{time.Second / 128},
			want:  i2cWant{"voltage", "V", 2.048, 1e-12},
		},
		{
			// The defaults: AIN0, ±2.048 V (PGA 010), 128 SPS.
			name:   "defaults, negative raw: 0xFFF0 is -16 LSB = -1 mV",
			config: 0xC583, raw: 0xFFF0,
			slept: []time.Duration{time.Second / 128},
			want:  i2cWant{"voltage", "V", -0.001, 1e-12},
		},
		{
			// MUX=111 PGA=000 DR=111; 1 LSB = 187.5 µV.
			name: "AIN3 ±6.144V 860SPS at 0x49, busy twice",
			addr: 0x49, opts: ADS1115Options{Channel: 3, Gain: 6.144, DataRate: 860}, config: 0xF1E3, busy: 2, raw: 0x7FFE,
			slept: []time.Duration{time.Second / 860, time.Second / 860 / 4, time.Second / 860 / 4},
			want:  i2cWant{"voltage", "V", 32766 * 187.5e-6, 1e-12},
		},
		{
			// MUX=101 PGA=101 DR=000; 1 LSB = 7.8125 µV.
			name: "AIN1 ±0.256V 8SPS: most negative unclipped",
			opts: ADS1115Options{Channel: 1, Gain: 0.256, DataRate: 8}, config: 0xDB03, raw: 0x8001,
			slept: []time.Duration{time.Second / 8},
			want:  i2cWant{"voltage", "V", -32767 * 7.8125e-6, 1e-9},
		},
		{
			// MUX=110 PGA=011 DR=101.
			name: "AIN2 ±1.024V 250SPS: one LSB",
			opts: ADS1115Options{Channel: 2, Gain: 1.024, DataRate: 250}, config: 0xE7A3, raw: 0x0001,
			slept: []time.Duration{time.Second / 250},
			want:  i2cWant{"voltage", "V", 31.25e-6, 1e-12},
		},
		{
			// 0.5..4.5 V transducer for 0..1 MPa: 250000 Pa/V - 125000 Pa.
			name: "calibrated: 2.048 V is 387000 Pa",
			opts: ADS1115Options{Gain: 4.096, Scale: 250000, Offset: -125000, Unit: "Pa"}, config: 0xC383, raw: 0x4000,
			slept: []time.Duration{time.Second / 128},
			want:  i2cWant{"value", "Pa", 387000, 1e-6},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.addr
			if addr == 0 {
				addr = 0x48
			}
			p := i2cPlayback(adsOps(addr, tc.config, tc.busy, tc.raw))
			clk := newI2CFakeClock()
			spec := Spec{Kind: "ads1115", Bus: "1", Address: tc.addr}
			d, err := newADS1115(spec, tc.opts, i2cTestEnv(t, p, clk), clk.sleep)
			if err != nil {
				t.Fatal(err)
			}
			got, err := d.Read(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			i2cCheckReadings(t, got, []i2cWant{tc.want})
			if !slices.Equal(clk.slept, tc.slept) {
				t.Errorf("slept %v, want %v", clk.slept, tc.slept)
			}
			i2cPlaybackDone(t, p)
		})
	}
}

func TestADS1115Errors(t *testing.T) {
	const a = 0x48
	// At 128 SPS the conversion takes 7.8125 ms: polls at 1x, then every
	// quarter to 2x: 5 polls, all busy, and no conversion read.
	timeout := adsOps(a, 0xC583, 5, 0)
	timeout = timeout[:len(timeout)-2]
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name      string
		opts      ADS1115Options
		ops       []i2ctest.IO
		ctx       context.Context // nil: Background
		construct bool
		target    error
		text      string
	}{
		{name: "clipped at +FS", ops: adsOps(a, 0xC583, 0, 0x7FFF), target: ErrBadReading, text: "clipped"},
		{name: "clipped at -FS", ops: adsOps(a, 0xC583, 0, 0x8000), target: ErrBadReading, text: "clipped"},
		{name: "conversion never done", ops: timeout, text: "not done after 15.625ms"},
		{name: "context cancelled", ctx: cancelled, target: context.Canceled, text: "canceled"},
		// Options of other kinds ("mode") cannot be given: the config
		// rejects them as unknown keys (gateway/config TestDriverOptionKeys).
		{name: "channel 4", opts: ADS1115Options{Channel: 4}, construct: true, target: ErrOption, text: `option "channel": 4`},
		{name: "channel -1", opts: ADS1115Options{Channel: -1}, construct: true, target: ErrOption, text: `option "channel": -1`},
		{name: "gain 3.3", opts: ADS1115Options{Gain: 3.3}, construct: true, target: ErrOption, text: `option "gain": 3.3`},
		{name: "data rate 100", opts: ADS1115Options{DataRate: 100}, construct: true, target: ErrOption, text: `option "data_rate": 100`},
		{name: "scale without unit", opts: ADS1115Options{Scale: 2}, construct: true, target: ErrOption, text: `option "unit" is required`},
		{name: "unit without scale", opts: ADS1115Options{Unit: "Pa"}, construct: true, target: ErrOption, text: `option "unit" is only used`},
		{name: "offset without scale", opts: ADS1115Options{Offset: 1}, construct: true, target: ErrOption, text: `option "offset" is only used`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i2cErrorCase(t, tc.ops, tc.construct, tc.ctx, tc.target, tc.text,
				func(env Env, sleep func(context.Context, time.Duration) error) (Poller, error) {
					return newADS1115(Spec{Kind: "ads1115", Bus: "1"}, tc.opts, env, sleep)
				})
		})
	}
}
