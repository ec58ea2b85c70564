package drivers

import (
	"context"
	"slices"
	"testing"
	"time"

	"periph.io/x/conn/v3/i2c/i2ctest"
)

func TestSHT3xCRC(t *testing.T) {
	for _, tc := range []struct {
		word uint16
		crc  byte
	}{
		{0xBEEF, 0x92}, // the datasheet's example (section 4.12)
		{0x0000, 0x81},
		{0x6666, 0x93},
		{0x8000, 0xA2},
		{0xFFFF, 0xAC},
	} {
		if got := sht3xCRC([]byte{byte(tc.word >> 8), byte(tc.word)}); got != tc.crc {
			t.Errorf("CRC(%#04x) = %#02x, want %#02x", tc.word, got, tc.crc)
		}
	}
}

// shtResult is the six bytes a measurement reads back, with the CRCs of
// TestSHT3xCRC's table (independent of sht3xCRC).
func shtResult(st, srh uint16) []byte {
	crc := map[uint16]byte{0x0000: 0x81, 0x6666: 0x93, 0x8000: 0xA2, 0xFFFF: 0xAC}
	return []byte{byte(st >> 8), byte(st), crc[st], byte(srh >> 8), byte(srh), crc[srh]}
}

func TestSHT3xRead(t *testing.T) {
	const a44, a45 = 0x44, 0x45
	for _, tc := range []struct {
		name    string
		addr    uint16
		opts    SHT3xOptions
		cmd     []byte
		wait    time.Duration
		st, srh uint16
		want    []i2cWant
	}{
		{
			// Section 4.13: 0x6666/0xFFFF = 0.4 exactly, so T = -45 + 175*0.4
			// = 25 °C; RH = 100*32768/65535 = 50.000763 %.
			name: "high (default): 25 °C, 50.0008 %RH",
			cmd:  []byte{0x24, 0x00}, wait: 15500 * time.Microsecond,
			st: 0x6666, srh: 0x8000,
			want: []i2cWant{{"temperature", "Cel", 25, 1e-9}, {"humidity", "%RH", 50.000762951, 1e-5}},
		},
		{
			name: "medium at 0x45: bottom of range",
			addr: a45, opts: SHT3xOptions{Repeatability: "medium"},
			cmd: []byte{0x24, 0x0B}, wait: 6500 * time.Microsecond,
			st: 0x0000, srh: 0x0000,
			want: []i2cWant{{"temperature", "Cel", -45, 1e-9}, {"humidity", "%RH", 0, 1e-9}},
		},
		{
			name: "low: top of range",
			opts: SHT3xOptions{Repeatability: "low"},
			cmd:  []byte{0x24, 0x16}, wait: 4500 * time.Microsecond,
			st: 0xFFFF, srh: 0xFFFF,
			want: []i2cWant{{"temperature", "Cel", 130, 1e-9}, {"humidity", "%RH", 100, 1e-9}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.addr
			if addr == 0 {
				addr = a44
			}
			p := i2cPlayback([]i2ctest.IO{
				{Addr: addr, W: tc.cmd},
				{Addr: addr, R: shtResult(tc.st, tc.srh)},
			})
			clk := newI2CFakeClock()
			spec := Spec{Kind: "sht3x", Bus: "1", Address: tc.addr}
			d, err := newSHT3x(spec, tc.opts, i2cTestEnv(t, p, clk), clk.sleep)
			if err != nil {
				t.Fatal(err)
			}
			got, err := d.Read(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			i2cCheckReadings(t, got, tc.want)
			if want := []time.Duration{tc.wait}; !slices.Equal(clk.slept, want) {
				t.Errorf("slept %v, want %v", clk.slept, want)
			}
			i2cPlaybackDone(t, p)
		})
	}
}

func TestSHT3xErrors(t *testing.T) {
	const a = 0x44
	good := shtResult(0x6666, 0x8000)
	corrupt := func(i int) []byte {
		b := slices.Clone(good)
		b[i] ^= 0x01
		return b
	}
	start := i2ctest.IO{Addr: a, W: []byte{0x24, 0x00}}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name      string
		opts      SHT3xOptions
		ops       []i2ctest.IO
		ctx       context.Context // nil: Background
		construct bool
		target    error
		text      string
	}{
		{name: "temperature CRC", ops: []i2ctest.IO{start, {Addr: a, R: corrupt(2)}},
			target: ErrBadReading, text: "temperature word 0x6666 has CRC 0x92, computed 0x93"},
		{name: "temperature data bit", ops: []i2ctest.IO{start, {Addr: a, R: corrupt(1)}},
			target: ErrBadReading, text: "temperature word"},
		{name: "humidity CRC", ops: []i2ctest.IO{start, {Addr: a, R: corrupt(5)}},
			target: ErrBadReading, text: "humidity word 0x8000 has CRC 0xa3, computed 0xa2"},
		{name: "humidity data bit", ops: []i2ctest.IO{start, {Addr: a, R: corrupt(3)}},
			target: ErrBadReading, text: "humidity word"},
		{name: "context cancelled", ctx: cancelled, target: context.Canceled, text: "canceled"},
		// Options of other kinds ("gain") cannot be given: the config
		// rejects them as unknown keys (gateway/config TestDriverOptionKeys).
		{name: "repeatability ultra", opts: SHT3xOptions{Repeatability: "ultra"}, construct: true,
			target: ErrOption, text: `option "repeatability": "ultra"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i2cErrorCase(t, tc.ops, tc.construct, tc.ctx, tc.target, tc.text,
				func(env Env, sleep func(context.Context, time.Duration) error) (Poller, error) {
					return newSHT3x(Spec{Kind: "sht3x", Bus: "1"}, tc.opts, env, sleep)
				})
		})
	}
}
