package drivers

import (
	"fmt"
	"slices"
	"time"
)

// Kind describes one kind of driver: its name in the config, its options
// type and its constructor. Kinds lists them all; there is no
// registration at init time, so a caller sees exactly the table below.
type Kind struct {
	// Name is the kind as the config's "kind" key spells it.
	Name string
	// NewOptions returns a new, unset options value of the kind's own
	// type (a pointer, such as *BME280Options), for the config loader to
	// decode the driver's options mapping into.
	NewOptions func() Options

	// Exactly one of newPoller and newWatcher is set.
	newPoller  func(Spec, Env) (Poller, error)
	newWatcher func(Spec, Env) (Watcher, error)
	// checkSpec checks the entry's own fields (bus, address, interval)
	// for the kind, without hardware; nil: nothing to check.
	checkSpec func(Spec) error
}

// CheckSpec checks spec's own fields (bus, address, interval) as the
// kind's constructor will, without opening anything, so that the config
// loader reports them with every other error in one pass. A bad field is
// an *OptionError.
func (k Kind) CheckSpec(spec Spec) error {
	if k.checkSpec == nil {
		return nil
	}
	return k.checkSpec(spec)
}

// checks sets the kind's spec check.
func (k Kind) checks(f func(Spec) error) Kind {
	k.checkSpec = f
	return k
}

// Watches reports whether the kind's drivers are Watchers (edge
// triggered) rather than Pollers.
func (k Kind) Watches() bool { return k.newWatcher != nil }

// kinds is the table of every kind, sorted by name.
var kinds = []Kind{
	polled("ads1115", func(spec Spec, o ADS1115Options, env Env) (Poller, error) {
		return newADS1115(spec, o, env, sleepCtx)
	}).checks(checkI2CSpec),
	polled("bme280", func(spec Spec, o BME280Options, env Env) (Poller, error) {
		return newBME280(spec, o, env, sleepCtx)
	}).checks(checkI2CSpec),
	watched("counter", func(spec Spec, o CounterOptions, env Env) (Watcher, error) {
		return newCounter(spec, o, env)
	}).checks(checkPinSpec),
	polled("ds18b20", func(spec Spec, o DS18B20Options, env Env) (Poller, error) {
		return newDS18B20(spec, o, env, sleepCtx)
	}).checks(checkDS18B20Spec),
	watched("gpio", func(spec Spec, o GPIOOptions, env Env) (Watcher, error) {
		return newGPIO(spec, o, env)
	}).checks(checkPinSpec),
	watched("gpio_out", func(spec Spec, o GPIOOutOptions, env Env) (Watcher, error) {
		return newGPIOOut(spec, o, env)
	}).checks(checkGPIOOutSpec),
	polled(simKind, func(spec Spec, o SimOptions, env Env) (Poller, error) {
		return newSim(spec, o, env)
	}).checks(checkSimSpec),
	polled("sht3x", func(spec Spec, o SHT3xOptions, env Env) (Poller, error) {
		return newSHT3x(spec, o, env, sleepCtx)
	}).checks(checkI2CSpec),
}

// The kinds' spec checks; each constructor makes the same check (through
// the same helper) before it opens anything.

func checkI2CSpec(spec Spec) error {
	if spec.Address > 0x7F {
		return fieldErr("address", "%q %#x is not a 7-bit I2C address", "address", spec.Address)
	}
	return nil
}

func checkPinSpec(spec Spec) error {
	if spec.Bus != "" {
		return fieldErr("bus", "%q does not apply to %s (a GPIO pin is named by option \"pin\")", "bus", spec.Kind)
	}
	if spec.Address != 0 {
		return fieldErr("address", "%q does not apply to %s", "address", spec.Kind)
	}
	return nil
}

func checkDS18B20Spec(spec Spec) error {
	if spec.Address != 0 {
		return fieldErr("address", "%q does not apply to ds18b20: name the device in %q as \"bus/28-0316a279c3ff\"", "address", "bus")
	}
	_, _, _, err := ds18b20ParseBus(spec.Bus)
	return err
}

func checkSimSpec(spec Spec) error {
	if spec.Bus != "" {
		return fieldErr("bus", "option %q does not apply to sim", "bus")
	}
	if spec.Address != 0 {
		return fieldErr("address", "option %q does not apply to sim", "address")
	}
	return nil
}

// Kinds returns every kind, sorted by name.
func Kinds() []Kind { return slices.Clone(kinds) }

// KindNames returns the names of every kind, sorted.
func KindNames() []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = k.Name
	}
	return out
}

// Lookup returns the kind named name.
func Lookup(name string) (Kind, bool) {
	for _, k := range kinds {
		if k.Name == name {
			return k, true
		}
	}
	return Kind{}, false
}

// optionsPtr is the pointer to a kind's options struct O.
type optionsPtr[O any] interface {
	*O
	Options
}

// polled and watched make the Kind of a Poller or Watcher constructor
// that takes its options by type: they hand it a copy of spec.Options
// (the zero value when nil), which the constructor defaults and
// validates.
func polled[O any, P optionsPtr[O]](name string, build func(Spec, O, Env) (Poller, error)) Kind {
	return Kind{Name: name, NewOptions: func() Options { return P(new(O)) },
		newPoller: func(spec Spec, env Env) (Poller, error) {
			o, err := optionsOf[O, P](spec)
			if err != nil {
				return nil, err
			}
			return build(spec, o, env)
		}}
}

func watched[O any, P optionsPtr[O]](name string, build func(Spec, O, Env) (Watcher, error)) Kind {
	return Kind{Name: name, NewOptions: func() Options { return P(new(O)) },
		newWatcher: func(spec Spec, env Env) (Watcher, error) {
			o, err := optionsOf[O, P](spec)
			if err != nil {
				return nil, err
			}
			return build(spec, o, env)
		}}
}

// optionsOf returns a copy of spec's options, which must be of the kind's
// own type.
func optionsOf[O any, P optionsPtr[O]](spec Spec) (O, error) {
	var o O
	if spec.Options != nil {
		p, ok := spec.Options.(P)
		if !ok {
			// A programming error: the config loader decodes each
			// driver's options into its kind's type.
			return o, fmt.Errorf("%w: options of type %T given to kind %s", ErrOption, spec.Options, spec.Kind)
		}
		o = *p
	}
	return o, nil
}

// New builds the driver for spec as an Item for the Scheduler. An unknown
// kind is an ErrUnknownKind; a bad setting an *OptionError.
func New(spec Spec, env Env) (Item, error) {
	k, ok := Lookup(spec.Kind)
	if !ok {
		return Item{}, fmt.Errorf("%w %q (known: %v)", ErrUnknownKind, spec.Kind, KindNames())
	}
	return k.New(spec, env)
}

// New builds the driver for spec, whose Kind is k's name.
func (k Kind) New(spec Spec, env Env) (Item, error) {
	if env.Now == nil {
		env.Now = time.Now
	}
	wrap := func(err error) error { return fmt.Errorf("driver %s (%s): %w", spec.Name, spec.Kind, err) }
	if k.Watches() {
		w, err := k.newWatcher(spec, env)
		if err != nil {
			return Item{}, wrap(err)
		}
		return WatchItem(spec, w), nil
	}
	p, err := k.newPoller(spec, env)
	if err != nil {
		return Item{}, wrap(err)
	}
	return PollItem(spec, p), nil
}
