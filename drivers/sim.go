package drivers

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"
	"time"
)

// The sim kind: a synthetic sensor for demos and tests, needing no
// hardware. Options: SimOptions.
//
// sine runs from the middle of the range up to max, down to min and back
// over one period, starting when the driver is built. walk starts in the
// middle and moves by up to 5% of the range per read, reflecting off the
// bounds. steps holds min for a period, then max, and so on. dropouts is
// sine, except that about one read in five (Env.Rand below 0.2) fails
// with an error wrapping ErrBadReading, to exercise error handling.
//
// Time comes from Env.Now and randomness from Env.Rand, so a test that
// injects both gets exact values. Without Env.Rand the driver uses its own
// generator seeded from the driver's name: runs repeat, drivers differ.
// Halt does nothing.
const simKind = "sim"

// SimOptions are the options of kind "sim".
type SimOptions struct {
	// Signal is sine (the default), walk, steps or dropouts; case and
	// surrounding space do not matter.
	Signal string `yaml:"signal"`
	// Min and Max are the range (both zero: 0 to 100).
	Min float64 `yaml:"min"`
	Max float64 `yaml:"max"`
	// Period is that of sine, steps and dropouts (default 1m); walk has
	// none.
	Period time.Duration `yaml:"period"`
	// Quantity is the reading's name (default "value"), Unit its unit.
	Quantity string `yaml:"quantity"`
	Unit     string `yaml:"unit"`
}

// SetDefaults implements Options.
func (o *SimOptions) SetDefaults() {
	sig := simSignal(o.Signal)
	if sig == "" {
		o.Signal = simSine
	}
	if o.Min == 0 && o.Max == 0 {
		o.Max = simDefaultMax
	}
	// walk takes no period: Validate rejects one that is set.
	if o.Period == 0 && sig != simWalk {
		o.Period = simDefaultPeriod
	}
	if o.Quantity == "" {
		o.Quantity = "value"
	}
}

// Validate implements Options.
func (o *SimOptions) Validate() error {
	switch simSignal(o.Signal) {
	case simSine, simSteps, simDropouts:
	case simWalk:
		if o.Period != 0 {
			return optionErr("period", "option %q does not apply to sim signal %q", "period", simWalk)
		}
	default:
		return optionErr("signal", "option %q: unknown sim signal %q (sine, walk, steps, dropouts)", "signal", o.Signal)
	}
	for _, v := range []struct {
		key string
		val float64
	}{{"min", o.Min}, {"max", o.Max}} {
		if math.IsNaN(v.val) || math.IsInf(v.val, 0) {
			return optionErr(v.key, "option %q must be a finite number", v.key)
		}
	}
	if o.Min > o.Max {
		return optionErr("min", "option %q (%g) is above %q (%g)", "min", o.Min, "max", o.Max)
	}
	if o.Period < 0 {
		return optionErr("period", "option %q must not be negative", "period")
	}
	return nil
}

// simSignal normalises the signal option.
func simSignal(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// Sim signals.
const (
	simSine     = "sine"
	simWalk     = "walk"
	simSteps    = "steps"
	simDropouts = "dropouts"
)

const (
	simDefaultMax    = 100
	simDefaultPeriod = time.Minute
	simWalkStep      = 0.05 // of the range, per read
	simDropoutRate   = 0.2  // "about every 5th read"
)

type simDriver struct {
	signal   string
	quantity string
	unit     string
	min, max float64
	period   time.Duration
	now      func() time.Time
	rand     func() float64
	start    time.Time
	walk     float64 // the walk's current value
}

func newSim(spec Spec, o SimOptions, env Env) (*simDriver, error) {
	if err := checkSimSpec(spec); err != nil {
		return nil, err
	}
	o.SetDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	d := &simDriver{
		signal:   simSignal(o.Signal),
		quantity: o.Quantity,
		unit:     o.Unit,
		min:      o.Min,
		max:      o.Max,
		period:   o.Period,
		now:      env.Now,
		rand:     env.Rand,
	}
	if d.period == 0 { // walk: unused, but sine() must not divide by zero
		d.period = simDefaultPeriod
	}
	if d.now == nil {
		d.now = time.Now
	}
	if d.rand == nil {
		h := fnv.New64a()
		h.Write([]byte(spec.Name))
		d.rand = rand.New(rand.NewPCG(h.Sum64(), 0)).Float64
	}
	d.start = d.now()
	d.walk = (d.min + d.max) / 2
	return d, nil
}

// Halt implements Driver: there is nothing to stop.
func (d *simDriver) Halt() error { return nil }

// Read returns the signal's value now.
func (d *simDriver) Read(ctx context.Context) ([]Reading, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var v float64
	switch d.signal {
	case simWalk:
		d.walk += (2*d.rand() - 1) * simWalkStep * (d.max - d.min)
		// Reflect off the bounds so the walk does not stick to them.
		if d.walk > d.max {
			d.walk = 2*d.max - d.walk
		}
		if d.walk < d.min {
			d.walk = 2*d.min - d.walk
		}
		d.walk = math.Min(math.Max(d.walk, d.min), d.max)
		v = d.walk
	case simSteps:
		if (d.elapsed()/d.period)%2 == 0 {
			v = d.min
		} else {
			v = d.max
		}
	case simDropouts:
		if r := d.rand(); r < simDropoutRate {
			return nil, fmt.Errorf("%w: sim dropout", ErrBadReading)
		}
		v = d.sine()
	default:
		v = d.sine()
	}
	return []Reading{{Name: d.quantity, Value: v, Unit: d.unit}}, nil
}

func (d *simDriver) sine() float64 {
	// The phase from elapsed modulo period keeps full precision however
	// long the gateway has run.
	phase := float64(d.elapsed()%d.period) / float64(d.period)
	mid, amp := (d.min+d.max)/2, (d.max-d.min)/2
	return mid + amp*math.Sin(2*math.Pi*phase)
}

// elapsed is the time since the driver was built; never negative, so a
// clock stepped back does not produce values outside the pattern.
func (d *simDriver) elapsed() time.Duration {
	return max(0, d.now().Sub(d.start))
}
