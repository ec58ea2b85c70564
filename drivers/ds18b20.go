package drivers

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"periph.io/x/conn/v3/onewire"
)

// DS18B20 driver (kind "ds18b20"): Maxim DS18B20 1-Wire digital
// thermometer, after the datasheet "DS18B20 Programmable Resolution
// 1-Wire Digital Thermometer" (section names below refer to it). A Poller
// with one Reading, "temperature" in Cel.
//
// Selecting the device. The 1-Wire bus comes from Env.OneWire; the
// driver never closes it. Spec.Address (16 bits) cannot hold the 64-bit
// ROM code ("64-Bit Lasered ROM Code") and must be 0; there are no YAML
// options (DS18B20Options is empty). Instead:
//
//   - bus: "w1" (no ROM code): the bus must hold exactly one device, found
//     by a search when the driver is built; it must be a DS18B20 (family
//     code 0x28) and is addressed with Skip ROM [CCh] ("ROM Commands").
//     If the bus holds several devices, building fails with an error
//     listing their ROM codes (not ErrOption: the hardware, not the file,
//     may have changed, so the gateway keeps retrying).
//   - bus: "w1/28-0316a279c3ff": the bus name, a slash, then the device's
//     ROM code as Linux's w1 driver names it under
//     /sys/bus/w1/devices: the family code, a dash, and the 48-bit serial
//     number in hex, most significant byte first (the CRC byte is
//     computed). The device is addressed with Match ROM [55h] followed by
//     the 8 ROM bytes, least significant (the family code) first. Use this
//     form for each of several sensors sharing a bus.
//
// A Read ("Operation—Measuring Temperature", "DS18B20 Function
// Commands"): Convert T [44h], ending the transaction with the strong
// pull-up that parasite-powered devices need during the conversion
// ("Powering the DS18B20"); a wait of 750 ms, the conversion time at
// 12-bit resolution, the power-on default and the longest (Table 2;
// periph's onewire.Bus has no read time slots to poll for completion
// between transactions); then Read Scratchpad [BEh], all 9 bytes. The
// wait ends early with ctx. Drivers on the same bus (same name) take
// turns for the whole read, so one's conversion is not disturbed by
// another's traffic.
//
// Checks (errors wrapping ErrBadReading, never a value): the scratchpad's
// CRC, byte 8 ("CRC Generation": the Dallas/Maxim CRC-8, x^8+x^5+x^4+1,
// periph's onewire.CheckCRC); a scratchpad of all ones (no device
// answered); the configuration register's fixed bits ("Configuration
// Register": bit 7 reads 0, bits 0-4 read 1); the temperature register's
// power-on reset value +85 °C, 0x0550 (Table 1, footnote), which means
// the conversion did not happen (typically parasite power without the
// strong pull-up) — a genuine +85 °C is rejected with it; and a
// temperature outside -55 to +125 °C.
//
// Conversion (Table 1): the temperature register is a 16-bit two's
// complement number of 1/16 °C, LSB in byte 0: +125 °C is 0x07D0, +25.0625
// °C 0x0191, -10.125 °C 0xFF5E, -55 °C 0xFC90. At 9, 10 or 11-bit
// resolution (configuration register bits R1 R0, Table 2) the low 3, 2 or
// 1 bits are undefined and are cleared.
//
// Halt does nothing: a DS18B20 idles after each conversion by itself.

// DS18B20Options are the options of kind "ds18b20": none; the device is
// selected by the bus key (see above).
type DS18B20Options struct{}

// SetDefaults implements Options.
func (*DS18B20Options) SetDefaults() {}

// Validate implements Options.
func (*DS18B20Options) Validate() error { return nil }

const (
	ds18b20Family      = 0x28 // family code, byte 0 of the ROM code
	ds18b20SkipROM     = 0xCC
	ds18b20MatchROM    = 0x55
	ds18b20ConvertT    = 0x44
	ds18b20ReadScratch = 0xBE
	// ds18b20ConvTime is tCONV at 12-bit resolution (Table 2).
	ds18b20ConvTime = 750 * time.Millisecond
	// ds18b20PowerOn is the temperature register's power-on value, +85 °C.
	ds18b20PowerOn = 0x0550
)

type ds18b20 struct {
	bus     onewire.Bus
	busName string
	sel     []byte // the ROM command selecting the device, with its ROM code
	dev     string // the device's name for messages
	sleep   func(context.Context, time.Duration) error
}

func newDS18B20(spec Spec, _ DS18B20Options, env Env, sleep func(context.Context, time.Duration) error) (*ds18b20, error) {
	if err := checkDS18B20Spec(spec); err != nil {
		return nil, err
	}
	busName, rom, hasROM, err := ds18b20ParseBus(spec.Bus)
	if err != nil {
		return nil, err
	}
	if env.OneWire == nil {
		return nil, fmt.Errorf("no 1-Wire buses in this environment")
	}
	bus, err := env.OneWire(busName)
	if err != nil {
		return nil, fmt.Errorf("1-Wire bus %q: %w", busName, err)
	}
	d := &ds18b20{bus: bus, busName: busName, sleep: sleep}
	if hasROM {
		d.sel = make([]byte, 9)
		d.sel[0] = ds18b20MatchROM
		binary.LittleEndian.PutUint64(d.sel[1:], uint64(rom))
		d.dev = ds18b20Name(rom)
		return d, nil
	}
	found, err := bus.Search(false)
	if err != nil {
		return nil, fmt.Errorf("1-Wire bus %q: searching for the DS18B20: %w", busName, err)
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("1-Wire bus %q: no device found", busName)
	case 1:
		if byte(found[0]) != ds18b20Family {
			return nil, fmt.Errorf("1-Wire bus %q: the only device, %s, is not a DS18B20 (family %02x)", busName, ds18b20Name(found[0]), ds18b20Family)
		}
		d.sel = []byte{ds18b20SkipROM}
		d.dev = ds18b20Name(found[0])
		return d, nil
	}
	names := make([]string, len(found))
	for i, a := range found {
		names[i] = ds18b20Name(a)
	}
	// Not ErrOption: the configuration may be right and the hardware
	// changed (a sensor added); the gateway retries and reports it.
	return nil, fmt.Errorf("1-Wire bus %q holds %d devices (%s): name one in \"bus\" as \"%s/%s\"",
		busName, len(found), strings.Join(names, ", "), busName, names[0])
}

// ds18b20ParseBus splits spec.Bus "name/28-0316a279c3ff" into the bus
// name and the ROM code; a bus without a ROM code suffix (the last
// slash-separated part does not start with two hex digits and a dash) is
// returned whole.
func ds18b20ParseBus(s string) (bus string, rom onewire.Address, ok bool, err error) {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return s, 0, false, nil
	}
	id := s[i+1:]
	if len(id) < 3 || !ds18b20IsHex(id[:2]) || id[2] != '-' {
		return s, 0, false, nil
	}
	bad := func(why string) error {
		return fieldErr("bus", "%q: ROM code %q %s (want family-serial as in /sys/bus/w1/devices, e.g. \"28-0316a279c3ff\")", "bus", id, why)
	}
	if len(id) != 15 || !ds18b20IsHex(id[3:]) {
		return "", 0, false, bad("is malformed")
	}
	family, _ := strconv.ParseUint(id[:2], 16, 8)
	serial, _ := strconv.ParseUint(id[3:], 16, 48)
	if family != ds18b20Family {
		return "", 0, false, bad(fmt.Sprintf("has family %02x, not a DS18B20's %02x", family, ds18b20Family))
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], family|serial<<8)
	b[7] = onewire.CalcCRC(b[:7])
	return s[:i], onewire.Address(binary.LittleEndian.Uint64(b[:])), true, nil
}

func ds18b20IsHex(s string) bool {
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// ds18b20Name formats a ROM code the way Linux's w1 driver names devices:
// "28-0316a279c3ff".
func ds18b20Name(a onewire.Address) string {
	return fmt.Sprintf("%02x-%012x", byte(a), uint64(a)>>8&(1<<48-1))
}

// Halt implements Driver: there is nothing to stop.
func (d *ds18b20) Halt() error { return nil }

// Read implements Poller.
func (d *ds18b20) Read(ctx context.Context) ([]Reading, error) {
	unlock, err := ds18b20Lock(ctx, d.busName)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := d.bus.Tx(d.cmd(ds18b20ConvertT), nil, onewire.StrongPullup); err != nil {
		return nil, fmt.Errorf("%s: Convert T: %w", d.dev, err)
	}
	if err := d.sleep(ctx, ds18b20ConvTime); err != nil {
		return nil, err
	}
	var sp [9]byte
	if err := d.bus.Tx(d.cmd(ds18b20ReadScratch), sp[:], onewire.WeakPullup); err != nil {
		return nil, fmt.Errorf("%s: Read Scratchpad: %w", d.dev, err)
	}
	c, err := ds18b20Decode(sp)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.dev, err)
	}
	return []Reading{{Name: "temperature", Value: c, Unit: "Cel"}}, nil
}

// cmd returns the bytes of one transaction: the ROM command selecting the
// device, then the function command.
func (d *ds18b20) cmd(fn byte) []byte {
	return append(append(make([]byte, 0, len(d.sel)+1), d.sel...), fn)
}

// ds18b20Decode checks a scratchpad and returns its temperature in °C.
func ds18b20Decode(sp [9]byte) (float64, error) {
	if sp == [9]byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF} {
		return 0, fmt.Errorf("%w: scratchpad all ones: no device answered", ErrBadReading)
	}
	if !onewire.CheckCRC(sp[:]) {
		return 0, fmt.Errorf("%w: scratchpad % x: CRC %02x, computed %02x", ErrBadReading, sp, sp[8], onewire.CalcCRC(sp[:8]))
	}
	cfg := sp[4]
	if cfg&0x9F != 0x1F {
		return 0, fmt.Errorf("%w: scratchpad % x: configuration register %02x is not 0RR11111", ErrBadReading, sp, cfg)
	}
	raw := int16(uint16(sp[0]) | uint16(sp[1])<<8)
	if raw == ds18b20PowerOn {
		return 0, fmt.Errorf("%w: power-on value +85 °C (0x0550): the conversion did not happen", ErrBadReading)
	}
	bits := 9 + int(cfg>>5&3) // Table 2: R1 R0 = 00 for 9 bits .. 11 for 12
	raw &^= 1<<(12-bits) - 1
	if raw < -55*16 || raw > 125*16 {
		return 0, fmt.Errorf("%w: %v °C (%#04x) is outside -55 to +125 °C", ErrBadReading, float64(raw)/16, uint16(raw))
	}
	return float64(raw) / 16, nil
}

// ds18b20Buses holds a one-slot lock per bus name, so that reads of
// devices sharing a bus do not interleave.
var ds18b20Buses sync.Map // string → chan struct{}

func ds18b20Lock(ctx context.Context, bus string) (unlock func(), err error) {
	v, _ := ds18b20Buses.LoadOrStore(bus, make(chan struct{}, 1))
	slot := v.(chan struct{})
	select {
	case slot <- struct{}{}:
		return func() { <-slot }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
