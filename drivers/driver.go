package drivers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/onewire"
)

// Reading is one measured quantity with its unit. Units are SenML unit
// names (RFC 8428 section 12.1): "Cel", "%RH", "Pa", "V", "count", "/s".
// Drivers compute with periph's physic types inside and hand out plain
// numbers here.
type Reading struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// Sample is what a driver reports at one moment.
type Sample struct {
	Time     time.Time
	Readings []Reading
	// Labels are string values reported with the readings, such as an
	// actuator's "cause"; the gateway puts them into the event's JSON
	// object next to the readings. Nil for the sensors.
	Labels map[string]string
}

// Driver is what every driver is, whether polled or edge triggered: a
// resource that can be halted, with the meaning of periph's
// conn.Resource.Halt: stop what it is doing and leave the hardware in a
// safe state. The Scheduler calls Halt once, after the driver's last Read
// or Watch has returned, never concurrently with them; a driver stays
// usable after Halt. Halt never closes a bus or pin: they belong to the
// caller.
type Driver interface {
	Halt() error
}

// Poller is a driver read on a schedule.
type Poller interface {
	Driver
	// Read takes one measurement. It should return promptly when ctx ends;
	// the Scheduler bounds it with the read timeout either way.
	Read(ctx context.Context) ([]Reading, error)
}

// Watcher is an edge-triggered driver (GPIO inputs, pulse counters): it
// runs until ctx ends, calling emit for each change, and returns nil then.
type Watcher interface {
	Driver
	Watch(ctx context.Context, emit func(Sample)) error
}

// Actuator is a Watcher that drives an output (kind gpio_out) from
// commands: the gateway subscribes to CommandTopic on its embedded broker
// for as long as the driver runs and hands each message's payload to
// Command.
//
// Its Watch reports, as its last Sample, the safe state it sets when its
// context ends; unlike other Watchers' late samples, the Scheduler stores
// that one (see SchedulerConfig.Emit).
type Actuator interface {
	Watcher
	// CommandTopic is the local MQTT topic the driver takes commands
	// from.
	CommandTopic() string
	// Command hands over one command's payload. It returns at once,
	// without waiting for the hardware: nil when the command is accepted
	// (Watch applies the latest accepted command), an error wrapping
	// ErrCommandRefused otherwise, whose message never quotes the payload.
	// Safe for concurrent use, also with Watch and Halt.
	Command(payload []byte) error
}

// CommandStats counts an Actuator's commands.
type CommandStats struct {
	Accepted uint64 `json:"accepted"`
	Refused  uint64 `json:"refused"`
	// Coalesced counts accepted commands replaced by a later one before
	// Watch applied them.
	Coalesced   uint64 `json:"coalesced"`
	LastRefusal string `json:"last_refusal,omitempty"`
}

// commandCounter is implemented by the Actuators, for Scheduler.Stats.
type commandCounter interface{ commandStats() CommandStats }

// Options are one kind's settings, decoded from the options mapping of a
// driver's config entry into the type its Kind.NewOptions returns (such
// as *BME280Options); each type documents its keys and defaults next to
// its driver.
type Options interface {
	// SetDefaults fills the settings left unset (zero) with their
	// defaults.
	SetDefaults()
	// Validate reports the first setting out of range or at odds with
	// another, as an *OptionError naming its key. Call it after
	// SetDefaults.
	Validate() error
}

// PinUser is implemented by the options of the kinds that own a GPIO pin
// (gpio, counter, gpio_out): a pin has one owner, so ferry check refuses
// two drivers on the same pin (one would read or drive what the other
// configured).
type PinUser interface {
	// PinName is the pin's name as configured ("GPIO17").
	PinName() string
}

// Spec configures one driver instance.
type Spec struct {
	Name     string        // unique; the events' source
	Kind     string        // a Kind's name
	Bus      string        // I2C or 1-Wire bus name ("1", "/dev/i2c-1"); "" for GPIO and sim
	Address  uint16        // I2C address or 0 for the kind's default
	Interval time.Duration // polling interval (Pollers), reporting interval (counter)
	// Options are the kind's own (the type its Kind.NewOptions returns);
	// nil means all defaults. The driver works on a copy.
	Options Options
}

// Store keeps a driver's small persistent state (the pulse counter's
// total) across restarts. The gateway backs it with the buffer file.
type Store interface {
	Load(key string) ([]byte, error) // nil, nil when absent
	Save(key string, val []byte) error
}

// Env gives drivers their buses, pins, clock and store. Implementations
// look buses up by name; the caller owns what they return.
type Env struct {
	I2C     func(bus string) (i2c.Bus, error)
	OneWire func(bus string) (onewire.Bus, error)
	Pin     func(name string) (gpio.PinIn, error)
	Store   Store
	Now     func() time.Time
	Rand    func() float64 // uniform [0,1): sim noise, scheduler jitter
}

// Errors; check them with errors.Is.
var (
	// ErrUnknownKind is returned by New for a kind that is not in Kinds.
	ErrUnknownKind = errors.New("drivers: unknown kind")
	// ErrOption is wrapped by every *OptionError: an option (or driver
	// field) a kind does not take, or a value out of range.
	ErrOption = errors.New("drivers: bad option")
	// ErrBadReading is returned by Read for data that fails its check
	// (a CRC, a power-on value, an out-of-range raw value): an error
	// reading, never a value.
	ErrBadReading = errors.New("drivers: bad reading")
	// ErrCommandRefused is returned by Actuator.Command for a payload
	// that asks for no state the driver knows; the pin is left as it is.
	ErrCommandRefused = errors.New("drivers: command refused")
)

// OptionError is a bad setting in a driver's config entry. It wraps
// ErrOption.
type OptionError struct {
	// Key is the setting's path inside the driver's entry, as the config
	// file spells it: "options.mode", "options.pulses_per_unit", or a
	// field of the entry itself such as "bus", "address" or "interval".
	Key string
	err error
}

func (e *OptionError) Error() string { return e.err.Error() }

// Unwrap returns the message's error, which wraps ErrOption.
func (e *OptionError) Unwrap() error { return e.err }

// optionErr is the *OptionError for the option key (under "options") with
// the message format; fieldErr is that of a field of the entry itself.
func optionErr(key, format string, args ...any) error {
	return &OptionError{Key: "options." + key, err: fmt.Errorf("%w: "+format, append([]any{ErrOption}, args...)...)}
}

func fieldErr(key, format string, args ...any) error {
	return &OptionError{Key: key, err: fmt.Errorf("%w: "+format, append([]any{ErrOption}, args...)...)}
}

// Compile-time checks: every kind's driver is a Poller or a Watcher, and
// every options type is an Options.
var (
	_ Poller  = (*bme280)(nil)
	_ Poller  = (*sht3x)(nil)
	_ Poller  = (*ads1115)(nil)
	_ Poller  = (*ds18b20)(nil)
	_ Poller  = (*simDriver)(nil)
	_ Watcher = (*gpioWatcher)(nil)
	_ Watcher = (*counter)(nil)
	_ Poller  = (*retryPoller)(nil)
	_ Watcher = (*retryWatcher)(nil)

	_ Actuator       = (*gpioOut)(nil)
	_ commandCounter = (*gpioOut)(nil)

	_ Options = (*BME280Options)(nil)
	_ Options = (*SHT3xOptions)(nil)
	_ Options = (*ADS1115Options)(nil)
	_ Options = (*DS18B20Options)(nil)
	_ Options = (*GPIOOptions)(nil)
	_ Options = (*CounterOptions)(nil)
	_ Options = (*SimOptions)(nil)
	_ Options = (*GPIOOutOptions)(nil)
)
