package drivers

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
)

// BME280 driver: Bosch BME280 combined humidity, pressure and temperature
// sensor on I2C, after the datasheet BST-BME280-DS002 (section numbers
// below refer to it).
//
// YAML options: BME280Options. The IIR filter is off. The default address
// is 0x76 (SDO low); 0x77 when SDO is tied high.
//
// Forced mode triggers one measurement per Read and waits for it, which is
// what section 3.5.1 recommends for weather monitoring. Normal mode starts
// the chip measuring continuously once, with the longest standby time
// (table 27) not longer than the spec's interval, and Read fetches the
// latest result.
//
// Readings: "temperature" (Cel), "humidity" (%RH), "pressure" (Pa).
//
// Halt does nothing: a forced-mode chip sleeps between reads by itself,
// and a normal-mode chip is left measuring because a config reload builds
// the next driver for the same chip (which configures it) before this one
// halts; putting the chip to sleep then would freeze that driver's
// readings.

// BME280Options are the options of kind "bme280".
type BME280Options struct {
	// Mode is forced (the default) or normal.
	Mode string `yaml:"mode"`
	// Oversample is 1 (the default), 2, 4, 8 or 16, applied to
	// temperature, pressure and humidity alike.
	Oversample int `yaml:"oversample"`
}

// SetDefaults implements Options.
func (o *BME280Options) SetDefaults() {
	if o.Mode == "" {
		o.Mode = "forced"
	}
	// Below 1 has always meant 1.
	o.Oversample = max(o.Oversample, 1)
}

// Validate implements Options.
func (o *BME280Options) Validate() error {
	switch o.Mode {
	case "forced", "normal":
	default:
		return optionErr("mode", "option %q: %q is not forced or normal", "mode", o.Mode)
	}
	switch o.Oversample {
	case 1, 2, 4, 8, 16:
	default:
		return optionErr("oversample", "option %q: %d is not 1, 2, 4, 8 or 16", "oversample", o.Oversample)
	}
	return nil
}

// BME280 registers (section 5.3, table 18).
const (
	bme280RegCalib00  = 0x88 // calib00..calib25: 0x88..0xA1
	bme280RegChipID   = 0xD0
	bme280RegReset    = 0xE0
	bme280RegCalib26  = 0xE1 // calib26..calib32 used: 0xE1..0xE7
	bme280RegCtrlHum  = 0xF2
	bme280RegStatus   = 0xF3
	bme280RegCtrlMeas = 0xF4
	bme280RegConfig   = 0xF5
	bme280RegData     = 0xF7 // press_msb..hum_lsb: 0xF7..0xFE

	bme280ChipID     = 0x60 // section 5.4.1
	bme280ResetWord  = 0xB6 // section 5.4.2
	bme280Measuring  = 1 << 3
	bme280ImUpdate   = 1 << 0
	bme280ModeForced = 0b01 // section 5.4.5, table 25
	bme280ModeNormal = 0b11

	// bme280Skipped is the value of the 20-bit temperature and pressure
	// registers for a skipped measurement and after reset (table 18);
	// bme280SkippedH is the 16-bit humidity register's.
	bme280Skipped  = 0x80000
	bme280SkippedH = 0x8000
)

// bme280Standby lists normal mode's t_sb by duration with its config
// register code (section 5.4.6, table 27).
var bme280Standby = []struct {
	code byte
	t    time.Duration
}{
	{0b000, 500 * time.Microsecond},
	{0b110, 10 * time.Millisecond},
	{0b111, 20 * time.Millisecond},
	{0b001, 62500 * time.Microsecond},
	{0b010, 125 * time.Millisecond},
	{0b011, 250 * time.Millisecond},
	{0b100, 500 * time.Millisecond},
	{0b101, 1000 * time.Millisecond},
}

// bme280Calib holds the trimming parameters (section 4.2.2, table 16).
type bme280Calib struct {
	T1                             uint16
	T2, T3                         int16
	P1                             uint16
	P2, P3, P4, P5, P6, P7, P8, P9 int16
	H1                             uint8
	H2                             int16
	H3                             uint8
	H4, H5                         int16 // 12-bit signed
	H6                             int8
}

// bme280ParseCalib decodes the calibration registers: a is 0x88..0xA1, b
// is 0xE1..0xE7 (section 4.2.2, table 16). Words are little-endian; dig_H4
// is 0xE4[7:0] then 0xE5[3:0] and dig_H5 is 0xE6[7:0] then 0xE5[7:4], both
// signed 12-bit (the MSB byte carries the sign).
func bme280ParseCalib(a *[26]byte, b *[7]byte) bme280Calib {
	u := func(p []byte) uint16 { return binary.LittleEndian.Uint16(p) }
	s := func(p []byte) int16 { return int16(binary.LittleEndian.Uint16(p)) }
	return bme280Calib{
		T1: u(a[0:]), T2: s(a[2:]), T3: s(a[4:]),
		P1: u(a[6:]), P2: s(a[8:]), P3: s(a[10:]), P4: s(a[12:]), P5: s(a[14:]),
		P6: s(a[16:]), P7: s(a[18:]), P8: s(a[20:]), P9: s(a[22:]),
		// a[24] is 0xA0, unused.
		H1: a[25],
		H2: s(b[0:]),
		H3: b[2],
		H4: int16(int8(b[3]))<<4 | int16(b[4]&0x0F),
		H5: int16(int8(b[5]))<<4 | int16(b[4]>>4),
		H6: int8(b[6]),
	}
}

// compensateT is BME280_compensate_T_int32 (section 4.2.3 / 8.2): the
// temperature in 0.01 °C and t_fine for the pressure and humidity
// formulas.
func (c *bme280Calib) compensateT(adcT int32) (t, tFine int32) {
	var1 := (((adcT >> 3) - (int32(c.T1) << 1)) * int32(c.T2)) >> 11
	var2 := (((((adcT >> 4) - int32(c.T1)) * ((adcT >> 4) - int32(c.T1))) >> 12) * int32(c.T3)) >> 14
	tFine = var1 + var2
	return (tFine*5 + 128) >> 8, tFine
}

// compensateP is BME280_compensate_P_int64 (section 4.2.3 / 8.2): the
// pressure in Pa as Q24.8. ok is false where the datasheet returns 0 to
// avoid a division by zero (bad calibration).
func (c *bme280Calib) compensateP(adcP, tFine int32) (p uint32, ok bool) {
	var1 := int64(tFine) - 128000
	var2 := var1 * var1 * int64(c.P6)
	var2 += (var1 * int64(c.P5)) << 17
	var2 += int64(c.P4) << 35
	var1 = ((var1 * var1 * int64(c.P3)) >> 8) + ((var1 * int64(c.P2)) << 12)
	var1 = ((int64(1) << 47) + var1) * int64(c.P1) >> 33
	if var1 == 0 {
		return 0, false
	}
	q := 1048576 - int64(adcP)
	q = (((q << 31) - var2) * 3125) / var1
	var1 = (int64(c.P9) * (q >> 13) * (q >> 13)) >> 25
	var2 = (int64(c.P8) * q) >> 19
	q = ((q + var1 + var2) >> 8) + (int64(c.P7) << 4)
	return uint32(q), true
}

// compensateH is bme280_compensate_H_int32 (section 4.2.3 / 8.2): the
// relative humidity in % as Q22.10, clamped to 0..100 %.
func (c *bme280Calib) compensateH(adcH, tFine int32) uint32 {
	v := tFine - 76800
	v = ((((adcH << 14) - (int32(c.H4) << 20) - (int32(c.H5) * v)) + 16384) >> 15) *
		(((((((v*int32(c.H6))>>10)*(((v*int32(c.H3))>>11)+32768))>>10)+2097152)*int32(c.H2) + 8192) >> 14)
	v -= ((((v >> 15) * (v >> 15)) >> 7) * int32(c.H1)) >> 4
	v = min(max(v, 0), 419430400)
	return uint32(v >> 12)
}

// bme280 is a BME280 Poller.
type bme280 struct {
	dev    *i2c.Dev
	cal    bme280Calib // read once at construction
	osrs   byte        // oversampling code (table 20/23/24) for T, P and H
	normal bool
	tsb    byte          // normal mode standby code (table 27)
	tMax   time.Duration // maximum measurement time (section 9.1)

	// readyAt is when the first normal-mode measurement after
	// configuration is complete.
	readyAt time.Time
	now     func() time.Time
	sleep   func(context.Context, time.Duration) error
}

func newBME280(spec Spec, o BME280Options, env Env, sleep func(context.Context, time.Duration) error) (*bme280, error) {
	o.SetDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	d := &bme280{now: env.Now, sleep: sleep, normal: o.Mode == "normal"}
	if d.now == nil {
		d.now = time.Now
	}
	// Oversampling codes 001..101 = x1..x16 (section 5.4.3-5.4.5).
	factor := o.Oversample
	d.osrs = byte(1)
	for n := factor; n > 1; n >>= 1 {
		d.osrs++
	}
	// Section 9.1: t_measure,max = 1.25 + 2.3*osrs_t + (2.3*osrs_p + 0.575)
	// + (2.3*osrs_h + 0.575) ms, with osrs the oversampling factor.
	d.tMax = 1250*time.Microsecond + 3*time.Duration(factor)*2300*time.Microsecond + 2*575*time.Microsecond
	for _, sb := range bme280Standby {
		if sb.t <= spec.Interval {
			d.tsb = sb.code
		}
	}

	dev, err := i2cOpen(spec, env, 0x76)
	if err != nil {
		return nil, err
	}
	d.dev = dev
	var id [1]byte
	if err := dev.Tx([]byte{bme280RegChipID}, id[:]); err != nil {
		return nil, fmt.Errorf("read chip id: %w", err)
	}
	if id[0] != bme280ChipID {
		return nil, fmt.Errorf("chip id %#02x at %s, want %#02x (not a BME280)", id[0], dev, bme280ChipID)
	}
	// Soft reset (section 5.4.2) puts the chip in sleep mode with the
	// filter off; start-up takes 2 ms (table 1) and the NVM copy is done
	// when status.im_update clears (section 5.4.4).
	if err := dev.Tx([]byte{bme280RegReset, bme280ResetWord}, nil); err != nil {
		return nil, fmt.Errorf("reset: %w", err)
	}
	ctx := context.Background()
	if err := d.await(ctx, 2*time.Millisecond, 10*time.Millisecond, time.Millisecond, bme280ImUpdate); err != nil {
		return nil, fmt.Errorf("after reset: %w", err)
	}
	var a [26]byte
	var b [7]byte
	if err := dev.Tx([]byte{bme280RegCalib00}, a[:]); err != nil {
		return nil, fmt.Errorf("read calibration: %w", err)
	}
	if err := dev.Tx([]byte{bme280RegCalib26}, b[:]); err != nil {
		return nil, fmt.Errorf("read calibration: %w", err)
	}
	d.cal = bme280ParseCalib(&a, &b)
	if d.cal.T1 == 0 || d.cal.P1 == 0 {
		return nil, fmt.Errorf("calibration not loaded (dig_T1=%d dig_P1=%d)", d.cal.T1, d.cal.P1)
	}
	if d.normal {
		if err := d.configureNormal(); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// configureNormal starts normal mode: ctrl_hum first, as it takes effect
// only after a write to ctrl_meas (section 5.4.3); config while still in
// sleep mode, as writes to it in normal mode may be ignored (5.4.6).
func (d *bme280) configureNormal() error {
	for _, w := range [][]byte{
		{bme280RegCtrlHum, d.osrs},
		{bme280RegConfig, d.tsb << 5},
		{bme280RegCtrlMeas, d.osrs<<5 | d.osrs<<2 | bme280ModeNormal},
	} {
		if err := d.dev.Tx(w, nil); err != nil {
			return fmt.Errorf("configure normal mode: %w", err)
		}
	}
	d.readyAt = d.now().Add(d.tMax)
	return nil
}

// await sleeps first, then polls the status register until the bits in
// mask are clear, giving up limit after the start.
func (d *bme280) await(ctx context.Context, first, limit, step time.Duration, mask byte) error {
	var st [1]byte
	ok, err := i2cAwait(ctx, d.now, d.sleep, first, limit, step, func() (bool, error) {
		if err := d.dev.Tx([]byte{bme280RegStatus}, st[:]); err != nil {
			return false, fmt.Errorf("read status: %w", err)
		}
		return st[0]&mask == 0, nil
	})
	if err == nil && !ok {
		err = fmt.Errorf("status %#02x still busy after %v", st[0], limit)
	}
	return err
}

// Read takes one measurement: in forced mode it triggers it and waits for
// it, in normal mode it reads the latest.
func (d *bme280) Read(ctx context.Context) ([]Reading, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if d.normal {
		if wait := d.readyAt.Sub(d.now()); wait > 0 {
			if err := d.sleep(ctx, wait); err != nil {
				return nil, err
			}
		}
	} else {
		// Forced mode (section 3.3.3): ctrl_hum, then ctrl_meas with mode
		// 01; wait the maximum measurement time (section 9.1), then poll
		// status.measuring for up to as long again.
		for _, w := range [][]byte{
			{bme280RegCtrlHum, d.osrs},
			{bme280RegCtrlMeas, d.osrs<<5 | d.osrs<<2 | bme280ModeForced},
		} {
			if err := d.dev.Tx(w, nil); err != nil {
				return nil, fmt.Errorf("bme280: start measurement: %w", err)
			}
		}
		if err := d.await(ctx, d.tMax, 2*d.tMax, time.Millisecond, bme280Measuring); err != nil {
			return nil, fmt.Errorf("bme280: %w", err)
		}
	}

	// Burst read of the data registers (section 4 and 5.4.7-5.4.9).
	var r [8]byte
	if err := d.dev.Tx([]byte{bme280RegData}, r[:]); err != nil {
		return nil, fmt.Errorf("bme280: read data: %w", err)
	}
	adcP := int32(r[0])<<12 | int32(r[1])<<4 | int32(r[2])>>4
	adcT := int32(r[3])<<12 | int32(r[4])<<4 | int32(r[5])>>4
	adcH := int32(r[6])<<8 | int32(r[7])
	if adcT == bme280Skipped || adcP == bme280Skipped || adcH == bme280SkippedH {
		err := fmt.Errorf("%w: bme280: measurement skipped (raw T %#x P %#x H %#x)", ErrBadReading, adcT, adcP, adcH)
		if d.normal {
			// The chip may have been reset (power glitch) and be asleep:
			// start normal mode again so a later Read succeeds.
			var m [1]byte
			if rerr := d.dev.Tx([]byte{bme280RegCtrlMeas}, m[:]); rerr != nil {
				return nil, fmt.Errorf("%w (read ctrl_meas: %v)", err, rerr)
			}
			if m[0]&0b11 != bme280ModeNormal {
				if rerr := d.configureNormal(); rerr != nil {
					return nil, fmt.Errorf("%w (%v)", err, rerr)
				}
				return nil, fmt.Errorf("%w; chip was not in normal mode, restarted it", err)
			}
		}
		return nil, err
	}

	t100, tFine := d.cal.compensateT(adcT)
	q248, ok := d.cal.compensateP(adcP, tFine)
	if !ok {
		return nil, fmt.Errorf("%w: bme280: pressure compensation divides by zero (bad calibration)", ErrBadReading)
	}
	q2210 := d.cal.compensateH(adcH, tFine)

	// Section 4.2.3: BME280_compensate_T_int32 returns 0.01 °C units.
	temp := physic.ZeroCelsius + physic.Temperature(t100)*10*physic.MilliKelvin
	// Section 4.2.3: BME280_compensate_P_int64 returns Pa in Q24.8
	// (value/256 Pa).
	press := physic.Pressure(q248) * physic.Pascal / 256
	// Section 4.2.3: bme280_compensate_H_int32 returns %RH in Q22.10
	// (value/1024 %RH); rounded to periph's 0.00001 %RH resolution.
	hum := physic.RelativeHumidity((int64(q2210)*int64(physic.PercentRH) + 512) / 1024)

	return []Reading{
		{Name: "temperature", Value: temp.Celsius(), Unit: "Cel"},
		{Name: "humidity", Value: float64(hum) / float64(physic.PercentRH), Unit: "%RH"},
		{Name: "pressure", Value: float64(press) / float64(physic.Pascal), Unit: "Pa"},
	}, nil
}

// Halt implements Driver; see the type's comment for why it does nothing.
func (d *bme280) Halt() error { return nil }

// Helpers shared by the I2C drivers (bme280.go, sht3x.go, ads1115.go).

// i2cOpen returns the device for spec at spec.Address, or def when it is
// 0, on the bus env gives for spec.Bus. The bus belongs to the caller:
// drivers never close it.
func i2cOpen(spec Spec, env Env, def uint16) (*i2c.Dev, error) {
	addr := spec.Address
	if addr == 0 {
		addr = def
	}
	if err := checkI2CSpec(Spec{Address: addr}); err != nil {
		return nil, err
	}
	if env.I2C == nil {
		return nil, fmt.Errorf("no I2C buses in this environment")
	}
	bus, err := env.I2C(spec.Bus)
	if err != nil {
		return nil, fmt.Errorf("I2C bus %q: %w", spec.Bus, err)
	}
	return &i2c.Dev{Bus: bus, Addr: addr}, nil
}

// i2cAwait sleeps first, then calls done every step until it reports
// true; it reports false if done is still false at limit after the start
// (done is always tried at the limit). Sleeps end early with ctx.
func i2cAwait(ctx context.Context, now func() time.Time, sleep func(context.Context, time.Duration) error,
	first, limit, step time.Duration, done func() (bool, error)) (bool, error) {
	deadline := now().Add(limit)
	if err := sleep(ctx, first); err != nil {
		return false, err
	}
	for {
		ok, err := done()
		if ok || err != nil {
			return ok, err
		}
		left := deadline.Sub(now())
		if left <= 0 {
			return false, nil
		}
		if err := sleep(ctx, min(step, left)); err != nil {
			return false, err
		}
	}
}
