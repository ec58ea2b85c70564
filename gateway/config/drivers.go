package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ferrygw/ferry/drivers"
)

// Driver configures one sensor wired to the board.
type Driver struct {
	Name     string        `yaml:"name"`     // the events' source; unique
	Kind     string        `yaml:"kind"`     // bme280, sht3x, ads1115, ds18b20, gpio, gpio_out, counter, sim
	Bus      string        `yaml:"bus"`      // I2C bus ("1" for /dev/i2c-1) or 1-Wire bus; see README wiring
	Address  uint16        `yaml:"address"`  // I2C address (0x76); 0: the kind's default
	Interval time.Duration `yaml:"interval"` // polling interval (not for gpio, gpio_out)
	Stream   string        `yaml:"stream"`   // default: the stream routes give topic drivers/<name>
	// Options are of the kind's own type (drivers.Kind.NewOptions, such
	// as *drivers.BME280Options): the loader decodes the options mapping
	// into it once the kind is known, so a key the kind does not take is
	// an unknown key. SetDefaults sets them for every known kind; nil for
	// an unknown one.
	Options drivers.Options `yaml:"options"`
}

// newField implements fieldChooser: the options of a known kind.
func (d *Driver) newField(key string) any {
	k, ok := drivers.Lookup(d.Kind)
	if key != "options" || !ok {
		return nil
	}
	return k.NewOptions()
}

// DriverSettings configures the driver scheduler.
type DriverSettings struct {
	Timeout      time.Duration `yaml:"timeout"`       // per read; 0: min(interval, 5s)
	BackoffMax   time.Duration `yaml:"backoff_max"`   // cap on retry delay after failures
	StatusStream string        `yaml:"status_stream"` // failures and recoveries go here
}

// Defaults for drivers.
const (
	DefaultDriverInterval   = 10 * time.Second
	DefaultDriverBackoffMax = 5 * time.Minute
	DefaultDriverStatus     = "driver_status"
)

// DriverTopic is the topic of a driver's events, for routes and pipeline
// input filters.
func DriverTopic(name string) string { return "drivers/" + name }

func (c *Config) setDriverDefaults() {
	setDuration(&c.DriverSettings.BackoffMax, DefaultDriverBackoffMax)
	setString(&c.DriverSettings.StatusStream, DefaultDriverStatus)
	for i := range c.Drivers {
		d := &c.Drivers[i]
		if d.Interval == 0 && !untimed(d.Kind) {
			d.Interval = DefaultDriverInterval
		}
		if k, ok := drivers.Lookup(d.Kind); ok {
			if d.Options == nil {
				d.Options = k.NewOptions()
			}
			d.Options.SetDefaults()
		}
		if d.Stream == "" {
			d.Stream = c.routeStream(DriverTopic(d.Name))
		}
		if validStreamName(d.Stream) {
			c.addStream(d.Stream)
		}
	}
	if len(c.Drivers) > 0 {
		c.addStream(c.DriverSettings.StatusStream)
	}
}

// pinKey names a pin as periph does whatever the spelling: "gpio17",
// "GPIO17" and "17" are one pin.
func pinKey(name string) string {
	if n, err := strconv.Atoi(name); err == nil {
		return "GPIO" + strconv.Itoa(n)
	}
	return strings.ToUpper(name)
}

// untimed reports whether drivers of kind take no interval: gpio reports
// edges, gpio_out follows commands.
func untimed(kind string) bool { return kind == "gpio" || kind == "gpio_out" }

// routeStream is the stream of the first route matching topic, else the
// first route's stream.
func (c *Config) routeStream(topic string) string {
	for _, r := range c.Ingest.Routes {
		for _, f := range r.Topics {
			if matchFilter(f, topic) {
				return r.Stream
			}
		}
	}
	if len(c.Ingest.Routes) > 0 {
		return c.Ingest.Routes[0].Stream
	}
	return DefaultStream
}

// addStream gives a stream the default bounds unless buffer.streams has it.
func (c *Config) addStream(name string) {
	for _, s := range c.Buffer.Streams {
		if s.Name == name {
			return
		}
	}
	c.Buffer.Streams = append(c.Buffer.Streams, Stream{Name: name, MaxEvents: DefaultStreamEvents,
		MaxBytes: DefaultStreamBytes, Overflow: DefaultOverflow})
}

func (c *Config) validateDrivers(k *checker) {
	names := map[string]bool{}
	pins := map[string]string{} // pin -> the driver that owns it
	for i, d := range c.Drivers {
		p := fmt.Sprintf("drivers[%d]", i)
		switch {
		case d.Name == "" || checkTopicLevel(d.Name) != nil:
			k.add(p+".name", "must be a non-empty name without / + # (it becomes the topic drivers/<name>)")
		case names[d.Name]:
			k.add(p+".name", "driver %q is defined twice", d.Name)
		}
		names[d.Name] = true
		kind, ok := drivers.Lookup(d.Kind)
		if !ok {
			k.add(p+".kind", "unknown driver kind %q (known: %v)", d.Kind, drivers.KindNames())
		} else {
			if d.Options != nil {
				k.driverErr(p, d, d.Options.Validate())
			}
			// The entry's own fields, as the driver will check them, so
			// that ferry check reports them with everything else.
			k.driverErr(p, d, kind.CheckSpec(drivers.Spec{Name: d.Name, Kind: d.Kind, Bus: d.Bus,
				Address: d.Address, Interval: d.Interval, Options: d.Options}))
		}
		if pu, ok := d.Options.(drivers.PinUser); ok && pu.PinName() != "" {
			pin := pinKey(pu.PinName())
			if owner, taken := pins[pin]; taken {
				k.add(p+".options.pin", "pin %s is already used by driver %q", pu.PinName(), owner)
			} else {
				pins[pin] = d.Name
			}
		}
		k.nonNegative(p+".interval", d.Interval)
		if !untimed(d.Kind) && d.Interval <= 0 {
			k.add(p+".interval", "must be a positive duration")
		}
		if !validStreamName(d.Stream) {
			k.add(p+".stream", "stream name %q must be 1 to 64 letters, digits, '_', '.' or '-'", d.Stream)
		}
	}
	k.nonNegative("driver_settings.timeout", c.DriverSettings.Timeout)
	k.positive("driver_settings.backoff_max", c.DriverSettings.BackoffMax)
}

// driverErr adds err, a driver's options or fields error, at the key it
// names (an *drivers.OptionError), else at the driver's entry p.
func (k *checker) driverErr(p string, d Driver, err error) {
	if err == nil {
		return
	}
	if oe := (*drivers.OptionError)(nil); errors.As(err, &oe) {
		p += "." + oe.Key
	}
	k.add(p, "driver %s (%s): %v", d.Name, d.Kind, err)
}
