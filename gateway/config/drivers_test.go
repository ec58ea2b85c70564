package config

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/drivers"
)

// optionKeys returns the YAML keys of a kind's options type.
func optionKeys(k drivers.Kind) []string {
	t := reflect.TypeOf(k.NewOptions()).Elem()
	var keys []string
	for i := range t.NumField() {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		keys = append(keys, key)
	}
	return keys
}

// TestDriverOptionKeys: a driver's options decode into its kind's own
// type, so an option of another kind is an unknown key with its path and
// line, while the kind's own keys decode. (The drivers package's tests
// did this per kind with one flat options struct.)
func TestDriverOptionKeys(t *testing.T) {
	for _, k := range drivers.Kinds() {
		own := optionKeys(k)
		for _, other := range drivers.Kinds() {
			for _, key := range optionKeys(other) {
				yml := fmt.Sprintf("drivers:\n  - name: x\n    kind: %s\n    options:\n      %s: 1\n", k.Name, key)
				_, err := Parse([]byte(yml), "ferry.yaml")
				unknown := fmt.Sprintf("ferry.yaml:5: drivers[0].options.%s: unknown key", key)
				if slices.Contains(own, key) {
					if err != nil && strings.Contains(err.Error(), "unknown key") {
						t.Errorf("%s takes %s, but Parse = %v", k.Name, key, err)
					}
				} else if err == nil || !strings.Contains(err.Error(), unknown) {
					t.Errorf("%s does not take %s: Parse = %v, want %q", k.Name, key, err, unknown)
				}
			}
		}
	}
}

func TestDriverOptions(t *testing.T) {
	t.Run("typed and defaulted", func(t *testing.T) {
		c := load(t, `
drivers:
  - {name: air, kind: bme280, bus: "1", options: {mode: normal}}
  - {name: door, kind: gpio, options: {pin: GPIO17, debounce: 5ms}}
  - {name: wave, kind: sim}
`)
		want := []drivers.Options{
			&drivers.BME280Options{Mode: "normal", Oversample: 1},
			&drivers.GPIOOptions{Pin: "GPIO17", Pull: "up", Edge: "both", Debounce: 5 * time.Millisecond},
			&drivers.SimOptions{Signal: "sine", Max: 100, Period: time.Minute, Quantity: "value"},
		}
		for i, w := range want {
			if got := c.Drivers[i].Options; !reflect.DeepEqual(got, w) {
				t.Errorf("drivers[%d].options = %#v, want %#v", i, got, w)
			}
		}
	})
	t.Run("validated with path and line", func(t *testing.T) {
		for _, tc := range []struct{ yml, want string }{
			{"drivers:\n  - name: air\n    kind: bme280\n    options:\n      oversample: 3\n",
				`ferry.yaml:5: drivers[0].options.oversample: driver air (bme280): drivers: bad option: option "oversample": 3 is not 1, 2, 4, 8 or 16`},
			{"drivers:\n  - name: m\n    kind: counter\n    options:\n      pin: GPIO5\n      unit: l\n",
				`ferry.yaml:6: drivers[0].options.unit: driver m (counter): drivers: bad option: option "unit" needs "pulses_per_unit"`},
			{"drivers:\n  - name: d\n    kind: gpio\n    options: {}\n",
				`ferry.yaml:4: drivers[0].options.pin: driver d (gpio): drivers: bad option: option "pin" is required`},
			{"drivers:\n  - name: s\n    kind: sim\n    options:\n      min: abc\n",
				`ferry.yaml:5: drivers[0].options.min: must be a number, not the string "abc"`},
			{"drivers:\n  - {name: door, kind: gpio, options: {pin: GPIO17}}\n  - name: relay\n    kind: gpio_out\n    options:\n      pin: \"17\"\n",
				`ferry.yaml:6: drivers[1].options.pin: pin 17 is already used by driver "door"`},
			{"drivers:\n  - {name: flow, kind: counter, options: {pin: gpio5}}\n  - {name: valve, kind: gpio_out, options: {pin: GPIO5}}\n",
				`ferry.yaml:3: drivers[1].options.pin: pin GPIO5 is already used by driver "flow"`},
			{"drivers:\n  - name: s\n    kind: nope\n    options: {mode: x}\n",
				`ferry.yaml:3: drivers[0].kind: unknown driver kind "nope"`},
		} {
			_, err := LoadBytes([]byte(tc.yml), "ferry.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadBytes(%q) = %v, want %q", tc.yml, err, tc.want)
			}
		}
	})
	t.Run("fields and options in one pass", func(t *testing.T) {
		// ferry check lists every error at once: a driver's own fields
		// (bus, address), checked as its kind will, next to its options.
		yml := "drivers:\n" +
			"  - name: air\n    kind: bme280\n    bus: \"1\"\n    address: 0x80\n    options: {oversample: 3}\n" +
			"  - name: door\n    kind: gpio\n    bus: \"1\"\n    options: {pin: GPIO17}\n" +
			"  - name: probe\n    kind: ds18b20\n    bus: w1/28-xyz\n"
		_, err := LoadBytes([]byte(yml), "ferry.yaml")
		for _, want := range []string{
			`ferry.yaml:5: drivers[0].address: driver air (bme280): drivers: bad option: "address" 0x80 is not a 7-bit I2C address`,
			`ferry.yaml:6: drivers[0].options.oversample: driver air (bme280)`,
			`ferry.yaml:9: drivers[1].bus: driver door (gpio): drivers: bad option: "bus" does not apply to gpio`,
			`ferry.yaml:13: drivers[2].bus: driver probe (ds18b20): drivers: bad option: "bus": ROM code "28-xyz" is malformed`,
		} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("LoadBytes: %v\nwant it to contain %q", err, want)
			}
		}
	})
	t.Run("gpio_out", func(t *testing.T) {
		// The actuator's options as ferry check reports them: each at its
		// key and line, every one in one pass; no interval is defaulted.
		c := load(t, "drivers:\n  - {name: relay, kind: gpio_out, options: {pin: GPIO23}}\n"+
			"  - {name: valve, kind: gpio_out, options: {pin: GPIO5, safe_state: on, field: state, dead_man: 1m}}\n")
		for i, want := range []*drivers.GPIOOutOptions{
			{Pin: "GPIO23", SafeState: "off"},
			{Pin: "GPIO5", SafeState: "on", Field: "state", DeadMan: time.Minute}, // on, unquoted, is a string
		} {
			if d := c.Drivers[i]; !reflect.DeepEqual(d.Options, want) || d.Interval != 0 {
				t.Errorf("drivers[%d] = %+v, options %#v; want %#v and no interval", i, d, d.Options, want)
			}
		}
		yml := "drivers:\n" +
			"  - name: a\n    kind: gpio_out\n    options:\n      pin: GPIO 23\n" +
			"  - name: b\n    kind: gpio_out\n    options:\n      pin: GPIO24\n      safe_state: open\n" +
			"  - name: c\n    kind: gpio_out\n    options:\n      pin: GPIO25\n      dead_man: -5s\n" +
			"  - name: d\n    kind: gpio_out\n    interval: 1s\n    options:\n      pin: GPIO26\n      command_topic: cmd/#\n"
		_, err := LoadBytes([]byte(yml), "ferry.yaml")
		for _, want := range []string{
			`ferry.yaml:5: drivers[0].options.pin: driver a (gpio_out): drivers: bad option: option "pin" is "GPIO 23": a pin name has 1 to 64 letters, digits`,
			`ferry.yaml:10: drivers[1].options.safe_state: driver b (gpio_out): drivers: bad option: option "safe_state" is "open", want off or on`,
			`ferry.yaml:15: drivers[2].options.dead_man: driver c (gpio_out): drivers: bad option: option "dead_man" is -5s, want 0 (off) or a positive duration`,
			`ferry.yaml:21: drivers[3].options.command_topic: driver d (gpio_out): drivers: bad option: option "command_topic" is "cmd/#": a topic name, without the wildcards + and #`,
			`ferry.yaml:18: drivers[3].interval: driver d (gpio_out): drivers: bad option: "interval" does not apply to gpio_out`,
		} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("LoadBytes: %v\nwant it to contain %q", err, want)
			}
		}
	})
	t.Run("merge keys", func(t *testing.T) {
		// The mapping's own options replace a merged one's, and they are
		// decoded for the kind the driver ends up with.
		c := load(t, `
drivers:
  - &base {name: a, kind: sim, options: {min: 1, max: 2}}
  - {<<: *base, name: b, options: {min: 5, max: 6}}
  - {<<: *base, name: c}
`)
		for i, want := range []float64{1, 5, 1} {
			if o := c.Drivers[i].Options.(*drivers.SimOptions); o.Min != want {
				t.Errorf("drivers[%d] min %v, want %v", i, o.Min, want)
			}
		}
		// The line is the merged mapping's, where pin is written.
		_, err := LoadBytes([]byte("drivers:\n  - &base {name: a, kind: gpio, options: {pin: GPIO4}}\n  - {<<: *base, name: b, kind: sim}\n"), "ferry.yaml")
		if want := "ferry.yaml:2: drivers[1].options.pin: unknown key"; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("LoadBytes = %v, want %q", err, want)
		}
	})
}
