package drivers

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"periph.io/x/conn/v3/gpio"
)

// Pulse counter (kind "counter"): a Watcher counting the pulses of a
// water, gas or energy meter on one GPIO pin: a reed switch or
// open-collector output pulling the line low (S0 interface, IEC 62053-31:
// a pulse closes the output for at least 30 ms), or a Hall-effect flow
// sensor's square wave. Pins, pulls and debouncing are those of kind
// "gpio" (gpio.go); a pulse is one debounced change in the direction
// edge selects.
//
// YAML options: CounterOptions.
//
// Spec.Interval is the reporting interval (default 1m); Spec.Bus and
// Spec.Address must be empty.
//
// Every interval Watch emits one Sample stamped with Env.Now:
//
//	"count"  the total number of pulses, unit "count"
//	"rate"   pulses per second since the previous Sample (or since
//	         Watch started), unit "/s"; the time is measured with Env.Now
//	"total"  count / pulses_per_unit, in unit
//	"flow"   rate / pulses_per_unit, in unit + "/s" ("l/s")
//
// Persistence: the total is kept in Env.Store under "counter/<name>" as a
// decimal number. It is loaded when the driver is built (a stored value
// that does not parse is an error naming the key, never a silent restart
// from zero) and saved before each Sample is emitted, when it changed,
// and when Watch ends. A power loss therefore loses the pulses of at most
// one interval (those since the last save), and an emitted count is never
// seen to go backwards after a restart. A failed save ends Watch with the
// error (the Scheduler restarts it); the count lives on in the driver, so
// a restarted Watch continues from it.
//
// Halt switches the pin's edge detection off (Watch does so when it ends).
//
// Tests replace the driver's tick (the interval ticker) to decide when a
// Sample is due; see counter_test.go.

// CounterOptions are the options of kind "counter".
type CounterOptions struct {
	// Pin is required: the pin name Env.Pin knows ("GPIO27").
	Pin string `yaml:"pin"`
	// Pull is up (the default), down or none.
	Pull string `yaml:"pull"`
	// Edge is falling (the default), rising or both (both counts every
	// change, i.e. two per pulse).
	Edge string `yaml:"edge"`
	// Debounce is the quiet time before a change counts (default 20ms).
	// Pulses faster than about 1/(2*debounce) are lost: a Hall-effect
	// flow sensor (up to a few hundred Hz) needs a short one such as 1ms.
	Debounce time.Duration `yaml:"debounce"`
	// PulsesPerUnit is optional, > 0: e.g. 450 pulses per litre, 1000 per
	// kWh; it adds the readings "total" and "flow".
	PulsesPerUnit float64 `yaml:"pulses_per_unit"`
	// Unit is the unit of PulsesPerUnit ("l", "m3", "kWh"): required with
	// it and only with it.
	Unit string `yaml:"unit"`
}

// SetDefaults implements Options.
// PinName returns the pin the driver owns (PinUser).
func (o *CounterOptions) PinName() string { return o.Pin }

func (o *CounterOptions) SetDefaults() {
	setPinDefaults(&o.Pull, &o.Edge, &o.Debounce, "falling")
}

// Validate implements Options.
func (o *CounterOptions) Validate() error {
	switch {
	case !(o.PulsesPerUnit >= 0) || math.IsInf(o.PulsesPerUnit, 0):
		return optionErr("pulses_per_unit", "option %q is %v, want > 0", "pulses_per_unit", o.PulsesPerUnit)
	case o.PulsesPerUnit > 0 && o.Unit == "":
		return optionErr("unit", "option %q is required with %q", "unit", "pulses_per_unit")
	case o.PulsesPerUnit == 0 && o.Unit != "":
		return optionErr("unit", "option %q needs %q", "unit", "pulses_per_unit")
	}
	return validatePin(o.Pin, o.Pull, o.Edge, o.Debounce)
}

const counterDefaultInterval = time.Minute

type counter struct {
	key      string // Store key
	line     gpioLine
	edge     gpio.Edge // which debounced changes are pulses
	interval time.Duration
	ppu      float64 // pulses per unit, 0 for none
	unit     string
	store    Store
	watched  bool // Watch ran before: the total in memory is the latest
	now      func() time.Time
	// tick returns a channel delivering one value per interval, and the
	// function that stops it. A field so that tests can drive it.
	tick func(d time.Duration) (<-chan time.Time, func())

	total uint64 // pulses counted, including those loaded from store
	saved uint64 // total as last loaded or saved
}

func newCounter(spec Spec, o CounterOptions, env Env) (*counter, error) {
	o.SetDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	interval := spec.Interval
	switch {
	case interval < 0:
		return nil, fieldErr("interval", "%q is %v, want > 0", "interval", interval)
	case interval == 0:
		interval = counterDefaultInterval
	}
	line, edge, err := gpioOpen(spec, o.Pin, o.Pull, o.Edge, o.Debounce, env)
	if err != nil {
		return nil, err
	}
	if env.Store == nil {
		return nil, fmt.Errorf("counter needs a Store to keep its total")
	}
	c := &counter{
		key:      "counter/" + spec.Name,
		line:     line,
		edge:     edge,
		interval: interval,
		ppu:      o.PulsesPerUnit,
		unit:     o.Unit,
		store:    env.Store,
		now:      pinNow(env),
		tick: func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		},
	}
	if err := c.loadTotal(); err != nil {
		return nil, err
	}
	return c, nil
}

// loadTotal reads the stored total. New checks it early; the first Watch
// reads it again because a counter replaced by a config reload saves its
// last total only when it stops, after its successor was built.
func (c *counter) loadTotal() error {
	b, err := c.store.Load(c.key)
	if err != nil {
		return fmt.Errorf("loading the stored total %q: %w", c.key, err)
	}
	if b != nil {
		n, err := strconv.ParseUint(string(b), 10, 64)
		if err != nil {
			return fmt.Errorf("the stored total %q is corrupt (%q is not a count): refusing to restart from zero; fix or delete the key", c.key, b)
		}
		c.total, c.saved = n, n
	}
	return nil
}

// Watch implements Watcher.
func (c *counter) Watch(ctx context.Context, emit func(Sample)) error {
	if !c.watched { // a restarted Watch keeps its unsaved pulses
		if err := c.loadTotal(); err != nil {
			return err
		}
		c.watched = true
	}
	level, err := c.line.start()
	if err != nil {
		return err
	}
	defer c.line.stop()
	ticks, stop := c.tick(c.interval)
	defer stop()
	since, sinceN := c.now(), c.total
	for {
		select {
		case <-ctx.Done():
			return c.save()
		case <-ticks:
			if err := c.save(); err != nil {
				return err
			}
			t := c.now()
			emit(c.sample(t, since, sinceN))
			since, sinceN = t, c.total
		default:
		}
		l, ok := c.line.next(ctx)
		if !ok || l == level {
			continue
		}
		level = l
		if gpioReports(c.edge, l) {
			c.total++
		}
	}
}

// Halt implements Driver: edge detection off.
func (c *counter) Halt() error {
	c.line.stop()
	return nil
}

// save stores the total if it changed since the last save.
func (c *counter) save() error {
	if c.total == c.saved {
		return nil
	}
	if err := c.store.Save(c.key, []byte(strconv.FormatUint(c.total, 10))); err != nil {
		return fmt.Errorf("saving the total %q: %w", c.key, err)
	}
	c.saved = c.total
	return nil
}

// sample reports the total at t and the rate since the previous sample,
// taken at since with total sinceN.
func (c *counter) sample(t, since time.Time, sinceN uint64) Sample {
	secs := t.Sub(since).Seconds()
	if secs <= 0 {
		secs = c.interval.Seconds() // a clock that did not move
	}
	rate := float64(c.total-sinceN) / secs
	r := []Reading{
		{Name: "count", Value: float64(c.total), Unit: "count"},
		{Name: "rate", Value: rate, Unit: "/s"},
	}
	if c.ppu > 0 {
		r = append(r,
			Reading{Name: "total", Value: float64(c.total) / c.ppu, Unit: c.unit},
			Reading{Name: "flow", Value: rate / c.ppu, Unit: c.unit + "/s"})
	}
	return Sample{Time: t, Readings: r}
}
