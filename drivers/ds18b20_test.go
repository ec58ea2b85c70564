package drivers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"periph.io/x/conn/v3/onewire"
	"periph.io/x/conn/v3/onewire/onewiretest"
)

// A real DS18B20's ROM code: family 28, serial 0000070e41ac, CRC 74 (the
// one in periph's onewiretest tests). Linux names it 28-0000070e41ac.
const ds18b20TestROM onewire.Address = 0x740000070e41ac28

// ds18b20Scratchpad builds a scratchpad holding temperature register raw
// and configuration register cfg, with the power-on TH, TL and reserved
// bytes and a correct CRC.
func ds18b20Scratchpad(raw uint16, cfg byte) []byte {
	sp := []byte{byte(raw), byte(raw >> 8), 0x4B, 0x46, cfg, 0xFF, 0x0C, 0x10, 0}
	sp[8] = onewire.CalcCRC(sp[:8])
	return sp
}

// ds18b20Read is the bus traffic of one Read, after sel (the ROM command
// and code): each Tx is a reset, the bytes written, then the bytes read.
func ds18b20Read(sel []byte, sp []byte) []onewiretest.IO {
	return []onewiretest.IO{
		{W: append(append([]byte{}, sel...), 0x44), Pull: onewire.StrongPullup},      // Convert T
		{W: append(append([]byte{}, sel...), 0xBE), R: sp, Pull: onewire.WeakPullup}, // Read Scratchpad
	}
}

// ds18b20Open builds the driver on playback bus "w1" and replaces its
// conversion wait by one recording the durations.
func ds18b20Open(t *testing.T, spec Spec, p *onewiretest.Playback) (*ds18b20, *[]time.Duration) {
	t.Helper()
	env := Env{OneWire: func(name string) (onewire.Bus, error) {
		if name != "w1" {
			return nil, fmt.Errorf("no 1-Wire bus %q", name)
		}
		return p, nil
	}}
	spec.Name, spec.Kind = "attic", "ds18b20"
	d, err := New(spec, env)
	if err != nil {
		t.Fatal(err)
	}
	dd := d.Poller().(*ds18b20)
	var waits []time.Duration
	dd.sleep = func(ctx context.Context, d time.Duration) error {
		waits = append(waits, d)
		return ctx.Err()
	}
	return dd, &waits
}

func TestDS18B20Read(t *testing.T) {
	tests := []struct {
		name    string
		sp      []byte
		want    float64
		wantErr string // substring of an ErrBadReading error; "" for none
	}{
		// Datasheet Table 1, at 12 bits (configuration 0x7F).
		{"+125 °C, 0x07D0", ds18b20Scratchpad(0x07D0, 0x7F), 125, ""},
		{"+25.0625 °C, 0x0191", ds18b20Scratchpad(0x0191, 0x7F), 25.0625, ""},
		{"+10.125 °C, 0x00A2", ds18b20Scratchpad(0x00A2, 0x7F), 10.125, ""},
		{"+0.5 °C, 0x0008", ds18b20Scratchpad(0x0008, 0x7F), 0.5, ""},
		{"0 °C, 0x0000", ds18b20Scratchpad(0x0000, 0x7F), 0, ""},
		{"-0.5 °C, 0xFFF8", ds18b20Scratchpad(0xFFF8, 0x7F), -0.5, ""},
		{"-10.125 °C, 0xFF5E", ds18b20Scratchpad(0xFF5E, 0x7F), -10.125, ""},
		{"-25.0625 °C, 0xFE6F", ds18b20Scratchpad(0xFE6F, 0x7F), -25.0625, ""},
		{"-55 °C, 0xFC90", ds18b20Scratchpad(0xFC90, 0x7F), -55, ""},
		// A scratchpad as Linux's w1_slave prints it, CRC and all.
		{"real scratchpad, +23.125 °C", []byte{0x72, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10, 0x57}, 23.125, ""},
		// Table 2: at lower resolutions the low bits are undefined.
		{"11 bits clear bit 0", ds18b20Scratchpad(0x0191, 0x5F), 25, ""},
		{"10 bits clear bits 0-1", ds18b20Scratchpad(0x0193, 0x3F), 25, ""},
		{"9 bits clear bits 0-2", ds18b20Scratchpad(0x0197, 0x1F), 25, ""},
		{"9 bits, negative", ds18b20Scratchpad(0xFF5E, 0x1F), -10.5, ""},
		// Errors.
		{"power-on +85 °C, real scratchpad", []byte{0x50, 0x05, 0x4b, 0x46, 0x7f, 0xff, 0x0c, 0x10, 0x1c}, 0, "power-on"},
		{"power-on +85 °C at 9 bits", ds18b20Scratchpad(0x0550, 0x1F), 0, "power-on"},
		{"bad CRC byte", func() []byte { sp := ds18b20Scratchpad(0x0191, 0x7F); sp[8] ^= 0x01; return sp }(), 0, "CRC"},
		{"bit flipped in the temperature", func() []byte { sp := ds18b20Scratchpad(0x0191, 0x7F); sp[0] ^= 0x10; return sp }(), 0, "CRC"},
		{"no device answered", []byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}, 0, "no device"},
		{"all zero, CRC passes", make([]byte, 9), 0, "configuration register"},
		{"above +125 °C", ds18b20Scratchpad(0x07E0, 0x7F), 0, "outside"},
		{"below -55 °C", ds18b20Scratchpad(0xFC80, 0x7F), 0, "outside"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// One device on the bus: found by a search at construction
			// (one search pass: reset, F0h, then the triplets Playback
			// simulates from Devices), then addressed with Skip ROM.
			p := &onewiretest.Playback{
				Devices:   []onewire.Address{ds18b20TestROM},
				Ops:       append([]onewiretest.IO{{W: []byte{0xF0}}}, ds18b20Read([]byte{0xCC}, tt.sp)...),
				DontPanic: true,
			}
			d, waits := ds18b20Open(t, Spec{Bus: "w1"}, p)
			got, err := d.Read(context.Background())
			if err := p.Close(); err != nil {
				t.Errorf("bus traffic: %v", err)
			}
			if fmt.Sprint(*waits) != "[750ms]" {
				t.Errorf("conversion waits %v, want [750ms]", *waits)
			}
			if tt.wantErr != "" {
				if !errors.Is(err, ErrBadReading) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Read = %v, %v; want ErrBadReading mentioning %q", got, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), "28-0000070e41ac") {
					t.Errorf("error %q does not name the device", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := []Reading{{Name: "temperature", Value: tt.want, Unit: "Cel"}}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("Read = %v, want %v", got, want)
			}
		})
	}
}

func TestDS18B20MatchROM(t *testing.T) {
	// The ROM code from the bus name; Match ROM sends it family code
	// first and the CRC (74, computed) last. No search.
	sel := []byte{0x55, 0x28, 0xac, 0x41, 0x0e, 0x07, 0x00, 0x00, 0x74}
	p := &onewiretest.Playback{
		Ops: append(ds18b20Read(sel, ds18b20Scratchpad(0x0191, 0x7F)),
			ds18b20Read(sel, ds18b20Scratchpad(0xFF5E, 0x7F))...),
		DontPanic: true,
	}
	d, _ := ds18b20Open(t, Spec{Bus: "w1/28-0000070e41ac"}, p)
	for _, want := range []float64{25.0625, -10.125} {
		got, err := d.Read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Value != want {
			t.Errorf("Read = %v, want %v °C", got, want)
		}
	}
	if err := p.Close(); err != nil {
		t.Error(err)
	}
}

func TestDS18B20ParseBus(t *testing.T) {
	tests := []struct {
		in      string
		bus     string
		rom     onewire.Address
		wantErr bool
	}{
		{"w1", "w1", 0, false},
		{"", "", 0, false},
		{"/dev/i2c-1", "/dev/i2c-1", 0, false},
		{"w1/28-0000070e41ac", "w1", ds18b20TestROM, false},
		{"a/b/28-0000070E41AC", "a/b", ds18b20TestROM, false},
		{"/28-0000070e41ac", "", ds18b20TestROM, false},
		{"w1/28-0316a279c3ff", "w1", 0x020316a279c3ff28, false},
		{"w1/28-00070e41ac", "", 0, true},
		{"w1/28-0000070e41ac00", "", 0, true},
		{"w1/28-zz00070e41ac", "", 0, true},
		{"w1/10-000802b4f4a1", "", 0, true}, // a DS18S20
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			bus, rom, ok, err := ds18b20ParseBus(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrOption) || !strings.Contains(err.Error(), `"bus"`) {
					t.Errorf("err %v, want ErrOption naming \"bus\"", err)
				}
				return
			}
			if err != nil || bus != tt.bus || rom != tt.rom || ok != (tt.rom != 0) {
				t.Errorf("= %q, %#x, %v, %v; want %q, %#x", bus, uint64(rom), ok, err, tt.bus, uint64(tt.rom))
			}
			if ok && ds18b20Name(rom) != strings.ToLower(tt.in[strings.LastIndexByte(tt.in, '/')+1:]) {
				t.Errorf("name %s", ds18b20Name(rom))
			}
		})
	}
}

func TestDS18B20New(t *testing.T) {
	withCRC := func(a onewire.Address) onewire.Address {
		var b [8]byte
		for i := range 7 {
			b[i] = byte(a >> (8 * i))
		}
		return a&(1<<56-1) | onewire.Address(onewire.CalcCRC(b[:7]))<<56
	}
	other := withCRC(0x0316a279c3ff28)
	tests := []struct {
		name    string
		spec    Spec
		devices []onewire.Address
		ops     int // search passes
		wantOpt bool
		wantIn  string
	}{
		{"two devices, no ROM code", Spec{Bus: "w1"}, []onewire.Address{ds18b20TestROM, other}, 2, false, `"w1/28-`},
		{"no device", Spec{Bus: "w1"}, nil, 1, false, "w1"},
		{"the only device is a DS18S20", Spec{Bus: "w1"}, []onewire.Address{withCRC(0x000802b4f4a110)}, 1, false, "10-000802b4f4a1, is not a DS18B20"},
		// Another kind's option ("pin") cannot be set in DS18B20Options:
		// the config rejects it as an unknown key (gateway/config
		// TestDriverOptionKeys); another kind's options type is an
		// ErrOption.
		{"options", Spec{Bus: "w1", Options: &GPIOOptions{Pin: "GPIO4"}}, nil, 0, true, `*drivers.GPIOOptions`},
		{"address", Spec{Bus: "w1", Address: 0x28}, nil, 0, true, `"address"`},
		{"bad ROM code", Spec{Bus: "w1/28-123"}, nil, 0, true, `"bus"`},
		{"unknown bus", Spec{Bus: "w2"}, nil, 0, false, `no 1-Wire bus "w2"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &onewiretest.Playback{Devices: tt.devices, DontPanic: true}
			for range tt.ops {
				p.Ops = append(p.Ops, onewiretest.IO{W: []byte{0xF0}})
			}
			env := Env{OneWire: func(name string) (onewire.Bus, error) {
				if name != "w1" {
					return nil, fmt.Errorf("no 1-Wire bus %q", name)
				}
				return p, nil
			}}
			tt.spec.Name, tt.spec.Kind = "attic", "ds18b20"
			_, err := New(tt.spec, env)
			if err == nil {
				t.Fatal("New succeeded")
			}
			if errors.Is(err, ErrOption) != tt.wantOpt || !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("New = %v; want ErrOption %v, mentioning %s", err, tt.wantOpt, tt.wantIn)
			}
			if tt.name == "two devices, no ROM code" && !strings.Contains(err.Error(), "28-0316a279c3ff") {
				t.Errorf("New = %v; want both ROM codes listed", err)
			}
			if err := p.Close(); err != nil {
				t.Errorf("bus traffic: %v", err)
			}
		})
	}
}

func TestDS18B20Cancel(t *testing.T) {
	t.Run("during the conversion", func(t *testing.T) {
		p := &onewiretest.Playback{
			Devices:   []onewire.Address{ds18b20TestROM},
			Ops:       append([]onewiretest.IO{{W: []byte{0xF0}}}, ds18b20Read([]byte{0xCC}, ds18b20Scratchpad(0, 0x7F))...),
			DontPanic: true,
		}
		d, _ := ds18b20Open(t, Spec{Bus: "w1"}, p)
		ctx, cancel := context.WithCancel(context.Background())
		d.sleep = func(ctx context.Context, d time.Duration) error {
			cancel() // the Scheduler's read timeout, say
			return sleepCtx(ctx, d)
		}
		start := time.Now()
		_, err := d.Read(ctx)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Read = %v, want context.Canceled", err)
		}
		if el := time.Since(start); el > ds18b20ConvTime/2 {
			t.Errorf("Read took %v", el)
		}
		if p.Count != 2 {
			t.Errorf("%d bus transactions, want 2 (search, Convert T; no Read Scratchpad)", p.Count)
		}
	})
	t.Run("waiting for the bus", func(t *testing.T) {
		unlock, err := ds18b20Lock(context.Background(), "busy")
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		if _, err := ds18b20Lock(ctx, "busy"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("second lock = %v, want the deadline", err)
		}
		other, err := ds18b20Lock(context.Background(), "other bus")
		if err != nil {
			t.Fatal(err)
		}
		other()
	})
}

func TestDS18B20BusError(t *testing.T) {
	p := &onewiretest.Playback{
		Devices:   []onewire.Address{ds18b20TestROM},
		Ops:       []onewiretest.IO{{W: []byte{0xF0}}}, // nothing more: Convert T fails
		DontPanic: true,
	}
	d, _ := ds18b20Open(t, Spec{Bus: "w1"}, p)
	_, err := d.Read(context.Background())
	if err == nil || errors.Is(err, ErrBadReading) || !strings.Contains(err.Error(), "Convert T") {
		t.Errorf("Read = %v, want the bus error", err)
	}
}
