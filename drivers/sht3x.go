package drivers

import (
	"context"
	"fmt"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
)

// SHT3x driver: Sensirion SHT30/31/35 humidity and temperature sensor on
// I2C, after the SHT3x-DIS datasheet (section numbers below refer to it).
//
// YAML options: SHT3xOptions. Each Read is a single-shot measurement with clock stretching disabled (section
// 4.3): send the command, wait the maximum measurement duration, read the
// six result bytes. Every word's CRC is checked; a mismatch is an
// ErrBadReading, never a value. The default address is 0x44 (ADDR low);
// 0x45 when ADDR is tied high.
//
// Readings: "temperature" (Cel), "humidity" (%RH). Halt does nothing: the
// chip idles after each single-shot measurement by itself.

// SHT3xOptions are the options of kind "sht3x".
type SHT3xOptions struct {
	// Repeatability is high (the default), medium or low.
	Repeatability string `yaml:"repeatability"`
}

// SetDefaults implements Options.
func (o *SHT3xOptions) SetDefaults() {
	if o.Repeatability == "" {
		o.Repeatability = "high"
	}
}

// Validate implements Options.
func (o *SHT3xOptions) Validate() error {
	if _, ok := sht3xRepeatability[o.Repeatability]; !ok {
		return optionErr("repeatability", "option %q: %q is not high, medium or low", "repeatability", o.Repeatability)
	}
	return nil
}

// sht3xRepeatability maps the option to the single-shot command with
// clock stretching disabled (section 4.3, table 9) and the maximum
// measurement duration (section 2.2, table 4: the maxima for VDD < 2.4 V,
// which are 0.5 ms longer, so any supply is covered).
var sht3xRepeatability = map[string]struct {
	cmd  [2]byte
	wait time.Duration
}{
	"high":   {[2]byte{0x24, 0x00}, 15500 * time.Microsecond},
	"medium": {[2]byte{0x24, 0x0B}, 6500 * time.Microsecond},
	"low":    {[2]byte{0x24, 0x16}, 4500 * time.Microsecond},
}

// sht3x is an SHT3x Poller.
type sht3x struct {
	dev   *i2c.Dev
	cmd   [2]byte
	wait  time.Duration
	sleep func(context.Context, time.Duration) error
}

func newSHT3x(spec Spec, o SHT3xOptions, env Env, sleep func(context.Context, time.Duration) error) (*sht3x, error) {
	o.SetDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	r := sht3xRepeatability[o.Repeatability]
	dev, err := i2cOpen(spec, env, 0x44)
	if err != nil {
		return nil, err
	}
	return &sht3x{dev: dev, cmd: r.cmd, wait: r.wait, sleep: sleep}, nil
}

// Halt implements Driver: there is nothing to stop.
func (d *sht3x) Halt() error { return nil }

// Read takes one single-shot measurement.
func (d *sht3x) Read(ctx context.Context) ([]Reading, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := d.dev.Tx(d.cmd[:], nil); err != nil {
		return nil, fmt.Errorf("sht3x: start measurement: %w", err)
	}
	// With clock stretching disabled the sensor NACKs a read before the
	// measurement is done (section 4.4), so wait its maximum duration.
	if err := d.sleep(ctx, d.wait); err != nil {
		return nil, err
	}
	// Temperature MSB, LSB, CRC; humidity MSB, LSB, CRC (section 4.4).
	var b [6]byte
	if err := d.dev.Tx(nil, b[:]); err != nil {
		return nil, fmt.Errorf("sht3x: read measurement: %w", err)
	}
	for i, name := range []string{"temperature", "humidity"} {
		w := b[3*i : 3*i+2]
		if crc := sht3xCRC(w); crc != b[3*i+2] {
			return nil, fmt.Errorf("%w: sht3x: %s word %#02x%02x has CRC %#02x, computed %#02x",
				ErrBadReading, name, w[0], w[1], b[3*i+2], crc)
		}
	}
	st := int64(b[0])<<8 | int64(b[1])
	srh := int64(b[3])<<8 | int64(b[4])

	// Section 4.13, equation 2: T = -45 + 175 * S_T / (2^16 - 1) °C;
	// rounded to periph's nano-kelvin.
	temp := physic.ZeroCelsius - 45*physic.Celsius +
		physic.Temperature((st*175*int64(physic.Celsius)+65535/2)/65535)
	// Section 4.13, equation 1: RH = 100 * S_RH / (2^16 - 1) %; rounded
	// to periph's 0.00001 %RH.
	hum := physic.RelativeHumidity((srh*100*int64(physic.PercentRH) + 65535/2) / 65535)

	return []Reading{
		{Name: "temperature", Value: temp.Celsius(), Unit: "Cel"},
		{Name: "humidity", Value: float64(hum) / float64(physic.PercentRH), Unit: "%RH"},
	}, nil
}

// sht3xCRC is the SHT3x's CRC-8 over a data word (section 4.12):
// polynomial 0x31 (x^8 + x^5 + x^4 + 1), initialisation 0xFF, no
// reflection, no final XOR. CRC(0xBEEF) = 0x92.
func sht3xCRC(data []byte) byte {
	crc := byte(0xFF)
	for _, b := range data {
		crc ^= b
		for range 8 {
			if crc&0x80 != 0 {
				crc = crc<<1 ^ 0x31
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
