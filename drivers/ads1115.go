package drivers

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
)

// ADS1115 driver: Texas Instruments ADS1115 16-bit ADC on I2C, after the
// datasheet SBAS444 (section numbers below refer to it).
//
// YAML options: ADS1115Options. The default address is 0x48 (ADDR to
// GND); 0x49..0x4B with ADDR to VDD, SDA or SCL.
//
// Each Read is a single-shot conversion: write the config register with
// OS=1, poll OS until the conversion is done (for at most twice the
// conversion time), read the conversion register. A result clipped at
// full scale (0x7FFF or 0x8000, section 9.5.4) is an ErrBadReading.
//
// Reading: "voltage" (V), or "value" in the configured unit when
// calibrated. Halt does nothing: single-shot mode powers the ADC down
// after each conversion by itself.

// ADS1115Options are the options of kind "ads1115".
type ADS1115Options struct {
	// Channel is 0..3: single-ended AINn against GND (default 0).
	Channel int `yaml:"channel"`
	// Gain is the PGA's full-scale range in volts: 6.144, 4.096, 2.048
	// (the default), 1.024, 0.512 or 0.256.
	Gain float64 `yaml:"gain"`
	// DataRate is in samples/s: 8, 16, 32, 64, 128 (the default), 250,
	// 475 or 860.
	DataRate int `yaml:"data_rate"`
	// Scale, Offset and Unit are an optional linear calibration, value =
	// volts*Scale + Offset in Unit; Scale and Unit go together, Offset
	// needs them.
	Scale  float64 `yaml:"scale"`
	Offset float64 `yaml:"offset"`
	Unit   string  `yaml:"unit"`
}

// SetDefaults implements Options.
func (o *ADS1115Options) SetDefaults() {
	if o.Gain == 0 {
		o.Gain = 2.048
	}
	if o.DataRate == 0 {
		o.DataRate = 128
	}
}

// Validate implements Options.
func (o *ADS1115Options) Validate() error {
	if o.Channel < 0 || o.Channel > 3 {
		return optionErr("channel", "option %q: %d is not 0..3", "channel", o.Channel)
	}
	if ads1115Gain(o.Gain) < 0 {
		return optionErr("gain", "option %q: %g is not 6.144, 4.096, 2.048, 1.024, 0.512 or 0.256", "gain", o.Gain)
	}
	if !slices.Contains(ads1115Rates, o.DataRate) {
		return optionErr("data_rate", "option %q: %d is not 8, 16, 32, 64, 128, 250, 475 or 860", "data_rate", o.DataRate)
	}
	switch {
	case o.Scale != 0 && o.Unit == "":
		return optionErr("unit", "option %q is required with %q", "unit", "scale")
	case o.Scale == 0 && o.Unit != "":
		return optionErr("unit", "option %q is only used with %q", "unit", "scale")
	case o.Scale == 0 && o.Offset != 0:
		return optionErr("offset", "option %q is only used with %q", "offset", "scale")
	case math.IsInf(o.Scale, 0) || math.IsNaN(o.Scale):
		return optionErr("scale", "option %q: %g is not finite", "scale", o.Scale)
	case math.IsInf(o.Offset, 0) || math.IsNaN(o.Offset):
		return optionErr("offset", "option %q: %g is not finite", "offset", o.Offset)
	}
	return nil
}

// ads1115Gain returns the PGA code of a full-scale range in volts, -1 for
// none.
func ads1115Gain(volts float64) int {
	pga := -1
	for code, g := range ads1115Gains {
		if math.Abs(volts-g.volts) < 1e-9 {
			pga = code
		}
	}
	return pga
}

// ADS1115 registers and config fields (section 9.6: address pointer
// register 9.6.1, config register 9.6.3).
const (
	ads1115RegConversion = 0x00
	ads1115RegConfig     = 0x01

	ads1115OS         = 1 << 15 // write 1: start a single conversion; read 0: busy
	ads1115MuxSingle0 = 0b100   // MUX[14:12] = 100 + n: AINn against GND
	ads1115ModeSingle = 1 << 8  // MODE: single-shot, power-down after
	ads1115CompQueOff = 0b11    // COMP_QUE[1:0]: comparator off, ALERT/RDY high-Z
)

// ads1115Gains are the PGA settings (section 9.6.3, config PGA[11:9]);
// index = code. Codes 110 and 111 repeat 0.256 V.
var ads1115Gains = []struct {
	volts float64
	fs    physic.ElectricPotential
}{
	{6.144, 6144 * physic.MilliVolt},
	{4.096, 4096 * physic.MilliVolt},
	{2.048, 2048 * physic.MilliVolt},
	{1.024, 1024 * physic.MilliVolt},
	{0.512, 512 * physic.MilliVolt},
	{0.256, 256 * physic.MilliVolt},
}

// ads1115Rates are the data rates in samples/s (section 9.6.3, config
// DR[7:5]); index = code.
var ads1115Rates = []int{8, 16, 32, 64, 128, 250, 475, 860}

// ads1115 is an ADS1115 Poller.
type ads1115 struct {
	dev    *i2c.Dev
	config uint16                   // config register with OS=1
	fs     physic.ElectricPotential // full-scale range
	conv   time.Duration            // conversion time, 1/DR

	calibrated    bool
	scale, offset float64
	unit          string

	now   func() time.Time
	sleep func(context.Context, time.Duration) error
}

func newADS1115(spec Spec, o ADS1115Options, env Env, sleep func(context.Context, time.Duration) error) (*ads1115, error) {
	o.SetDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	d := &ads1115{now: env.Now, sleep: sleep}
	if d.now == nil {
		d.now = time.Now
	}
	pga := ads1115Gain(o.Gain)
	d.fs = ads1115Gains[pga].fs
	dr := slices.Index(ads1115Rates, o.DataRate)
	// Section 9.3.6: a conversion takes one data period, 1/DR.
	d.conv = time.Second / time.Duration(o.DataRate)
	d.calibrated, d.scale, d.offset, d.unit = o.Scale != 0, o.Scale, o.Offset, o.Unit

	// Config register (section 9.6.3): OS | MUX | PGA | MODE | DR
	// | COMP_MODE=0 | COMP_POL=0 | COMP_LAT=0 | COMP_QUE=11.
	d.config = ads1115OS | uint16(ads1115MuxSingle0+o.Channel)<<12 | uint16(pga)<<9 |
		ads1115ModeSingle | uint16(dr)<<5 | ads1115CompQueOff

	dev, err := i2cOpen(spec, env, 0x48)
	if err != nil {
		return nil, err
	}
	d.dev = dev
	return d, nil
}

// Halt implements Driver: there is nothing to stop.
func (d *ads1115) Halt() error { return nil }

// Read takes one single-shot conversion.
func (d *ads1115) Read(ctx context.Context) ([]Reading, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := d.dev.Tx([]byte{ads1115RegConfig, byte(d.config >> 8), byte(d.config)}, nil); err != nil {
		return nil, fmt.Errorf("ads1115: start conversion: %w", err)
	}
	// OS reads 0 while converting, 1 when done (section 9.6.3). Wait one
	// data period, then poll a quarter period apart until twice the
	// conversion time (the data rate varies by ±10%, section 7.5).
	var b [2]byte
	done, err := i2cAwait(ctx, d.now, d.sleep, d.conv, 2*d.conv, d.conv/4, func() (bool, error) {
		if err := d.dev.Tx([]byte{ads1115RegConfig}, b[:]); err != nil {
			return false, fmt.Errorf("ads1115: read config: %w", err)
		}
		return b[0]&(ads1115OS>>8) != 0, nil
	})
	if err != nil {
		return nil, err
	}
	if !done {
		return nil, fmt.Errorf("ads1115: conversion not done after %v (config %#02x%02x)", 2*d.conv, b[0], b[1])
	}
	if err := d.dev.Tx([]byte{ads1115RegConversion}, b[:]); err != nil {
		return nil, fmt.Errorf("ads1115: read conversion: %w", err)
	}
	// Section 9.5.4 (data format): two's complement, 0x7FFF for inputs at or above +FS
	// and 0x8000 at or below -FS: clipped, so not the input's value.
	raw := int16(uint16(b[0])<<8 | uint16(b[1]))
	if raw == math.MaxInt16 || raw == math.MinInt16 {
		return nil, fmt.Errorf("%w: ads1115: raw %#04x clipped at full scale ±%v", ErrBadReading, uint16(raw), d.fs)
	}
	// Section 9.3.3, table 3: 1 LSB = FS / 2^15.
	v := physic.ElectricPotential(int64(raw) * int64(d.fs) / 32768)
	volts := float64(v) / float64(physic.Volt)
	if d.calibrated {
		return []Reading{{Name: "value", Value: volts*d.scale + d.offset, Unit: d.unit}}, nil
	}
	return []Reading{{Name: "voltage", Value: volts, Unit: "V"}}, nil
}
