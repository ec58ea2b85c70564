package drivers

import (
	"context"
	"fmt"
	"time"

	"periph.io/x/conn/v3/gpio"
)

// GPIO driver (kind "gpio"): a debounced digital input (door contact,
// button, float switch, PIR output) on one pin of the board, reported as
// a Watcher. Pulls and edge detection are the SoC's: on the Raspberry Pi
// the GPPUD/GPPUDCLK pull registers and the GPREN/GPFEN edge-detect
// registers of "BCM2835 ARM Peripherals" section 6.1 (the BCM2711 of
// the Pi 4 keeps the edge detection and replaces the pull registers by
// GPIO_PUP_PDN_CNTRL_REGn, "BCM2711 ARM Peripherals" chapter 5), reached
// through periph's gpio.PinIn.
//
// YAML options: GPIOOptions.
//
// Spec.Bus and Spec.Address must be empty; Spec.Interval is not used.
//
// Each Sample holds one Reading {"state", 1 or 0, ""}: 1 for a high line.
// Watch emits the level once at start, then one Sample per debounced
// change in the chosen direction, stamped with Env.Now.
//
// Debouncing: after an edge the driver waits until the line has been
// quiet (no further edge) for debounce, then reads the level; a change is
// a debounced level that differs from the previous debounced level, so a
// burst of bounces that ends where it started produces nothing, and one
// that ends at the other level produces exactly one change. The pin is
// always armed for both edges, whatever edge says: a debouncer has to
// see the line fall as well as rise, or it cannot tell a glitch shorter
// than debounce on a high line from a real low-then-high change. edge
// only filters which debounced changes are reported.
//
// WaitForEdge is called with a bounded timeout (gpioPoll), so a
// cancelled context ends Watch within about gpioPoll (plus one debounce
// step), and Watch returns nil then. On return the pin's edge detection
// is switched off again; the pin itself belongs to the caller. Halt
// switches it off too (a no-op after Watch returned).

// GPIOOptions are the options of kind "gpio".
type GPIOOptions struct {
	// Pin is required: the pin name Env.Pin knows ("GPIO17").
	Pin string `yaml:"pin"`
	// Pull is up (the default), down or none: the internal resistor (50
	// to 65 kOhm on the Pi).
	Pull string `yaml:"pull"`
	// Edge is both (the default), rising or falling: which changes to
	// report.
	Edge string `yaml:"edge"`
	// Debounce is how long the line must stay quiet after an edge before
	// its level counts (default 20ms).
	Debounce time.Duration `yaml:"debounce"`
}

// SetDefaults implements Options.
// PinName returns the pin the driver owns (PinUser).
func (o *GPIOOptions) PinName() string { return o.Pin }

func (o *GPIOOptions) SetDefaults() {
	setPinDefaults(&o.Pull, &o.Edge, &o.Debounce, "both")
}

// Validate implements Options.
func (o *GPIOOptions) Validate() error {
	return validatePin(o.Pin, o.Pull, o.Edge, o.Debounce)
}

const (
	gpioDefaultDebounce = 20 * time.Millisecond
	// gpioPoll bounds each WaitForEdge so that Watch notices a cancelled
	// context; it is also the largest step of a long debounce wait.
	gpioPoll = 100 * time.Millisecond
)

type gpioWatcher struct {
	line   gpioLine
	report gpio.Edge // which debounced changes to emit
	now    func() time.Time
}

func newGPIO(spec Spec, o GPIOOptions, env Env) (*gpioWatcher, error) {
	o.SetDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	line, report, err := gpioOpen(spec, o.Pin, o.Pull, o.Edge, o.Debounce, env)
	if err != nil {
		return nil, err
	}
	return &gpioWatcher{line: line, report: report, now: pinNow(env)}, nil
}

// Halt implements Driver: edge detection off.
func (w *gpioWatcher) Halt() error {
	w.line.stop()
	return nil
}

// Watch implements Watcher.
func (w *gpioWatcher) Watch(ctx context.Context, emit func(Sample)) error {
	level, err := w.line.start()
	if err != nil {
		return err
	}
	defer w.line.stop()
	emit(w.sample(level))
	for ctx.Err() == nil {
		l, ok := w.line.next(ctx)
		if !ok || l == level {
			continue
		}
		level = l
		if gpioReports(w.report, l) {
			emit(w.sample(l))
		}
	}
	return nil
}

func (w *gpioWatcher) sample(l gpio.Level) Sample {
	v := 0.0
	if l == gpio.High {
		v = 1
	}
	return Sample{Time: w.now(), Readings: []Reading{{Name: "state", Value: v}}}
}

// Helpers shared by the pin drivers (gpio.go, counter.go).

// gpioLine follows the debounced level of one input pin.
type gpioLine struct {
	pin      gpio.PinIn
	pull     gpio.Pull
	debounce time.Duration
	poll     time.Duration // bound of one WaitForEdge
}

// setPinDefaults fills the unset pin options of gpio and counter; edge
// defaults to defEdge.
func setPinDefaults(pull, edge *string, debounce *time.Duration, defEdge string) {
	if *pull == "" {
		*pull = "up"
	}
	if *edge == "" {
		*edge = defEdge
	}
	if *debounce == 0 {
		*debounce = gpioDefaultDebounce
	}
}

// gpioPulls and gpioEdges map the pull and edge options to periph's.
var (
	gpioPulls = map[string]gpio.Pull{"up": gpio.PullUp, "down": gpio.PullDown, "none": gpio.Float}
	gpioEdges = map[string]gpio.Edge{"both": gpio.BothEdges, "rising": gpio.RisingEdge, "falling": gpio.FallingEdge}
)

// validatePin checks the (defaulted) pin options of gpio and counter.
func validatePin(pin, pull, edge string, debounce time.Duration) error {
	if pin == "" {
		return optionErr("pin", "option %q is required", "pin")
	}
	if _, ok := gpioPulls[pull]; !ok {
		return optionErr("pull", "option %q is %q, want up, down or none", "pull", pull)
	}
	if _, ok := gpioEdges[edge]; !ok {
		return optionErr("edge", "option %q is %q, want both, rising or falling", "edge", edge)
	}
	if debounce < 0 {
		return optionErr("debounce", "option %q is %v, want > 0", "debounce", debounce)
	}
	return nil
}

// gpioOpen checks that spec names no bus or address and looks the pin up
// in env; the pin options are validated. It returns the line and the edge
// setting, i.e. which debounced changes the driver reports or counts.
func gpioOpen(spec Spec, pin, pull, edge string, debounce time.Duration, env Env) (gpioLine, gpio.Edge, error) {
	var line gpioLine
	if err := checkPinSpec(spec); err != nil {
		return line, 0, err
	}
	line.pull = gpioPulls[pull]
	line.debounce = debounce
	line.poll = gpioPoll
	if env.Pin == nil {
		return line, 0, fmt.Errorf("no GPIO pins in this environment")
	}
	p, err := env.Pin(pin)
	if err != nil {
		return line, 0, fmt.Errorf("pin %q: %w", pin, err)
	}
	if p == nil {
		return line, 0, fmt.Errorf("pin %q: not found", pin)
	}
	line.pin = p
	return line, gpioEdges[edge], nil
}

// start configures the pin as an input with its pull and edge detection
// on both edges, and returns its level.
func (l *gpioLine) start() (gpio.Level, error) {
	if err := l.pin.In(l.pull, gpio.BothEdges); err != nil {
		return gpio.Low, fmt.Errorf("pin %s: %w", l.pin, err)
	}
	return l.pin.Read(), nil
}

// stop switches edge detection off (the kernel stops taking interrupts
// for the pin); the pin stays an input with its pull. A line never opened
// (no pin) has nothing to stop.
func (l *gpioLine) stop() {
	if l.pin != nil {
		_ = l.pin.In(l.pull, gpio.NoEdge)
	}
}

// next waits up to l.poll for an edge. After one, it waits until the line
// has been quiet for l.debounce (each further edge restarts that wait)
// and returns the level then, with true. It returns false when no edge
// came within l.poll, or when ctx ended during the debounce wait.
func (l *gpioLine) next(ctx context.Context) (gpio.Level, bool) {
	if !l.pin.WaitForEdge(l.poll) {
		return gpio.Low, false
	}
	for quiet := time.Duration(0); quiet < l.debounce; {
		if ctx.Err() != nil {
			return gpio.Low, false
		}
		step := min(l.debounce-quiet, l.poll)
		if l.pin.WaitForEdge(step) {
			quiet = 0 // a bounce: start the quiet period again
		} else {
			quiet += step
		}
	}
	if ctx.Err() != nil {
		return gpio.Low, false // no change reported after the end
	}
	return l.pin.Read(), true
}

// gpioReports tells whether a debounced change to level to is one that
// edge selects.
func gpioReports(edge gpio.Edge, to gpio.Level) bool {
	switch edge {
	case gpio.RisingEdge:
		return to == gpio.High
	case gpio.FallingEdge:
		return to == gpio.Low
	}
	return true
}

// pinNow returns env's clock, or time.Now when env has none (New fills
// it in; a factory called directly may not).
func pinNow(env Env) func() time.Time {
	if env.Now != nil {
		return env.Now
	}
	return time.Now
}
