package drivers

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"time"
)

// The sim kind: a synthetic sensor for demos and tests, needing no
// hardware. Options:
//
//   - signal: sine (default), walk, steps or dropouts
//   - min, max: the range (both zero: 0 to 100)
//   - period: of sine, steps and dropouts (default 1m)
//   - quantity: the reading's name (default "value"); unit: its unit
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
const simKind = "sim"

func init() { Register(simKind, newSim) }

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

// simKeys are the options sim reads, by yaml key; any other set option is
// rejected so a misconfigured file fails loudly instead of being ignored.
var simKeys = map[string]bool{
	"signal": true, "min": true, "max": true, "period": true, "quantity": true, "unit": true,
}

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

func newSim(spec Spec, env Env) (Driver, error) {
	o := spec.Options
	if err := simCheckKeys(spec); err != nil {
		return nil, err
	}
	d := &simDriver{
		signal:   strings.ToLower(strings.TrimSpace(o.Signal)),
		quantity: o.Quantity,
		unit:     o.Unit,
		min:      o.Min,
		max:      o.Max,
		period:   o.Period,
		now:      env.Now,
		rand:     env.Rand,
	}
	if d.signal == "" {
		d.signal = simSine
	}
	switch d.signal {
	case simSine, simSteps, simDropouts:
	case simWalk:
		if o.Period != 0 {
			return nil, fmt.Errorf("%w: option %q does not apply to sim signal %q", ErrOption, "period", simWalk)
		}
	default:
		return nil, fmt.Errorf("%w: option %q: unknown sim signal %q (sine, walk, steps, dropouts)", ErrOption, "signal", o.Signal)
	}
	if d.quantity == "" {
		d.quantity = "value"
	}
	for _, v := range []struct {
		key string
		val float64
	}{{"min", d.min}, {"max", d.max}} {
		if math.IsNaN(v.val) || math.IsInf(v.val, 0) {
			return nil, fmt.Errorf("%w: option %q must be a finite number", ErrOption, v.key)
		}
	}
	if d.min == 0 && d.max == 0 {
		d.max = simDefaultMax
	}
	if d.min > d.max {
		return nil, fmt.Errorf("%w: option %q (%g) is above %q (%g)", ErrOption, "min", d.min, "max", d.max)
	}
	switch {
	case d.period < 0:
		return nil, fmt.Errorf("%w: option %q must not be negative", ErrOption, "period")
	case d.period == 0:
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

// simCheckKeys rejects options sim does not read. It walks Options by
// reflection so a field added there later is rejected here too until sim
// learns it.
func simCheckKeys(spec Spec) error {
	if spec.Bus != "" {
		return fmt.Errorf("%w: option %q does not apply to sim", ErrOption, "bus")
	}
	if spec.Address != 0 {
		return fmt.Errorf("%w: option %q does not apply to sim", ErrOption, "address")
	}
	v := reflect.ValueOf(spec.Options)
	t := v.Type()
	for i := range t.NumField() {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if key == "" {
			key = strings.ToLower(t.Field(i).Name)
		}
		if !simKeys[key] && !v.Field(i).IsZero() {
			return fmt.Errorf("%w: option %q does not apply to sim", ErrOption, key)
		}
	}
	return nil
}

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
