package drivers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
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
}

// Poller is a driver read on a schedule.
type Poller interface {
	// Read takes one measurement. It should return promptly when ctx ends;
	// the Scheduler bounds it with the read timeout either way.
	Read(ctx context.Context) ([]Reading, error)
}

// Watcher is an edge-triggered driver (GPIO inputs): it runs until ctx
// ends, calling emit for each change, and returns nil then.
type Watcher interface {
	Watch(ctx context.Context, emit func(Sample)) error
}

// Options are the kind-specific settings of a driver. One flat set keeps
// the YAML simple; each driver reads the fields it documents and its
// constructor rejects ones that do not apply (the error names the key).
type Options struct {
	Mode          string        `yaml:"mode"`            // bme280: forced (default) or normal
	Oversample    int           `yaml:"oversample"`      // bme280: 1, 2, 4, 8 or 16 (default 1)
	Channel       int           `yaml:"channel"`         // ads1115: 0..3 (single-ended AINn)
	Gain          float64       `yaml:"gain"`            // ads1115: full-scale volts: 6.144 4.096 2.048 1.024 0.512 0.256
	DataRate      int           `yaml:"data_rate"`       // ads1115: samples/s: 8 16 32 64 128 250 475 860
	Scale         float64       `yaml:"scale"`           // ads1115: physical = volts*scale + offset (with unit)
	Offset        float64       `yaml:"offset"`          // ads1115
	Unit          string        `yaml:"unit"`            // ads1115: unit after scaling; sim: unit
	Repeatable    string        `yaml:"repeatability"`   // sht3x: high (default), medium, low
	Pin           string        `yaml:"pin"`             // gpio: pin name (GPIO17)
	Pull          string        `yaml:"pull"`            // gpio: up, down, none (default up)
	Edge          string        `yaml:"edge"`            // gpio: both (default), rising, falling
	Debounce      time.Duration `yaml:"debounce"`        // gpio: stable time before a change counts (default 20ms)
	Signal        string        `yaml:"signal"`          // sim: sine, walk, steps, dropouts
	Min           float64       `yaml:"min"`             // sim: range
	Max           float64       `yaml:"max"`             // sim
	Period        time.Duration `yaml:"period"`          // sim: sine and steps period
	Quantity      string        `yaml:"quantity"`        // sim: reading name (default "value")
	PulsesPerUnit float64       `yaml:"pulses_per_unit"` // counter: e.g. 450 pulses per litre
}

// Spec configures one driver instance.
type Spec struct {
	Name     string        // unique; the events' source
	Kind     string        // registered kind
	Bus      string        // I2C or 1-Wire bus name ("1", "/dev/i2c-1"); "" for GPIO and sim
	Address  uint16        // I2C address or 0 for the kind's default
	Interval time.Duration // polling interval (Pollers)
	Options  Options
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

// Driver is a constructed driver: a Poller or a Watcher.
type Driver interface{}

// Factory builds a driver from its spec.
type Factory func(spec Spec, env Env) (Driver, error)

// Errors; check them with errors.Is.
var (
	// ErrUnknownKind is returned by New for a kind nobody registered.
	ErrUnknownKind = errors.New("drivers: unknown kind")
	// ErrOption is returned by a constructor for an option it does not
	// take or a value out of range; the message names the option key.
	ErrOption = errors.New("drivers: bad option")
	// ErrBadReading is returned by Read for data that fails its check
	// (a CRC, a power-on value, an out-of-range raw value): an error
	// reading, never a value.
	ErrBadReading = errors.New("drivers: bad reading")
)

var (
	regMu    sync.Mutex
	registry = map[string]Factory{}
)

// Register makes a kind available to New. It is called from the init of
// the driver's file; registering a kind twice is a programming error.
func Register(kind string, f Factory) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := registry[kind]; dup {
		panic("drivers: kind registered twice: " + kind)
	}
	registry[kind] = f
}

// Kinds lists the registered kinds.
func Kinds() []string {
	regMu.Lock()
	defer regMu.Unlock()
	out := make([]string, 0, len(registry))
	for k := range registry {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// New builds the driver for spec. The result is a Poller or a Watcher.
func New(spec Spec, env Env) (Driver, error) {
	regMu.Lock()
	f, ok := registry[spec.Kind]
	regMu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %v)", ErrUnknownKind, spec.Kind, Kinds())
	}
	if env.Now == nil {
		env.Now = time.Now
	}
	d, err := f(spec, env)
	if err != nil {
		return nil, fmt.Errorf("driver %s (%s): %w", spec.Name, spec.Kind, err)
	}
	switch d.(type) {
	case Poller, Watcher:
		return d, nil
	}
	return nil, fmt.Errorf("driver %s (%s): neither a Poller nor a Watcher", spec.Name, spec.Kind)
}
