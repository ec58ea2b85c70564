package gateway_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/drivers"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/ferrygw/ferry/uplink"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"
	"periph.io/x/conn/v3/physic"
)

// bme280Chip answers I2C transactions from a register map laid out as a
// BME280's (chip id, calibration with Bosch's worked example, data
// registers). The test records the driver's transactions against it once
// (i2ctest.Record) and the gateway then runs on a Playback of them, the
// way the drivers package tests every chip; the per-register protocol and
// the compensation are checked there against the datasheets.
type bme280Chip struct {
	mu   sync.Mutex
	regs [256]byte
	txs  int
}

func newBME280Chip() *bme280Chip {
	c := &bme280Chip{}
	c.regs[0xD0] = 0x60
	// Bosch's worked example calibration (T1..T3, P1..P9) and typical
	// humidity trimming (H1..H6).
	cal := []int{27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000}
	for i, v := range cal {
		binary.LittleEndian.PutUint16(c.regs[0x88+2*i:], uint16(int16(v)))
		if i == 0 || i == 3 {
			binary.LittleEndian.PutUint16(c.regs[0x88+2*i:], uint16(v))
		}
	}
	c.regs[0xA1] = 75
	binary.LittleEndian.PutUint16(c.regs[0xE1:], 362)
	c.regs[0xE3] = 0
	h4, h5 := 313, 50
	c.regs[0xE4] = byte(h4 >> 4)
	c.regs[0xE5] = byte(h4&0xF) | byte(h5&0xF)<<4
	c.regs[0xE6] = byte(h5 >> 4)
	c.regs[0xE7] = 30
	put20 := func(at int, v uint32) { c.regs[at], c.regs[at+1], c.regs[at+2] = byte(v>>12), byte(v>>4), byte(v<<4) }
	put20(0xF7, 415148) // adc_P
	put20(0xFA, 519888) // adc_T: 25.08 °C
	c.regs[0xFD], c.regs[0xFE] = byte(30000>>8), byte(30000&0xFF)
	return c
}

func (c *bme280Chip) String() string                  { return "bme280-chip" }
func (c *bme280Chip) SetSpeed(physic.Frequency) error { return nil }
func (c *bme280Chip) Tx(addr uint16, w, r []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if addr != 0x76 {
		return errors.New("no device at that address")
	}
	c.txs++
	if len(w) == 0 {
		return errors.New("no register")
	}
	reg := int(w[0])
	for i, b := range w[1:] {
		if reg+i != 0xE0 { // the reset register is write-only
			c.regs[(reg+i)&0xFF] = b
		}
	}
	for i := range r {
		r[i] = c.regs[(reg+i)&0xFF]
	}
	if reg == 0xF4 && len(w) > 1 {
		c.regs[0xF4] &^= 3 // a forced measurement completes at once
	}
	return nil
}

var _ i2c.Bus = (*bme280Chip)(nil)

// TestDriversToCloud configures a sim driver and a BME280 on I2C bus "1"
// in YAML and checks both sensors' readings reach a Mosquitto cloud through
// the real gateway, with units and the driver as the event's source.
func TestDriversToCloud(t *testing.T) {
	cloud := mqtttest.Start(t)
	got := make(chan string, 100)
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(cloud.URL()).SetClientID("drv-cloud"))
	if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(50)
	sub.Subscribe("#", 1, func(_ paho.Client, m paho.Message) {
		evs, err := uplink.DecodeMessage(m.Payload())
		if err != nil {
			got <- "undecodable: " + err.Error()
			return
		}
		for _, e := range evs {
			got <- fmt.Sprintf("%s %s %s %s", m.Topic(), e.Source, e.Payload, e.Attrs["unit.temperature"])
		}
	}).Wait()

	drv := `
drivers:
  - {name: air, kind: bme280, bus: "1", address: 0x76, interval: 50ms}
  - {name: wave, kind: sim, interval: 50ms, options: {signal: sine, min: 10, max: 20, period: 1m, quantity: temperature, unit: Cel}}
`
	yaml, _ := testConfig(t, t.TempDir(), cloud.URL(), drv)
	// Record construction and three reads of a BME280 in forced mode...
	rec := &i2ctest.Record{Bus: newBME280Chip()}
	spec := drivers.Spec{Name: "air", Kind: "bme280", Bus: "1", Address: 0x76, Interval: 50 * time.Millisecond}
	d, err := drivers.New(spec, drivers.Env{I2C: func(string) (i2c.Bus, error) { return rec, nil }})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := d.Poller().Read(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// ...and play them back to the gateway's driver: after three reads the
	// playback runs dry and the driver fails, which must not stop the sim.
	play := &i2ctest.Playback{Ops: rec.Ops, DontPanic: true}
	env := drivers.Env{I2C: func(bus string) (i2c.Bus, error) {
		if bus != "1" {
			return nil, fmt.Errorf("no bus %q", bus)
		}
		return play, nil
	}}
	g, err := gateway.New(loadConfig(t, yaml), nil, gateway.WithHardware(env))
	if err != nil {
		t.Fatal(err)
	}
	runGatewayInstance(t, g)
	driver := func(name string) drivers.DriverStats {
		for _, d := range g.Status().Drivers {
			if d.Name == name {
				return d
			}
		}
		return drivers.DriverStats{}
	}

	seen := map[string]string{}
	deadline := time.After(15 * time.Second)
	for len(seen) < 2 {
		select {
		case m := <-got:
			f := strings.Fields(m)
			if len(f) >= 3 {
				seen[f[1]] = m
			}
		case <-deadline:
			t.Fatalf("readings at the cloud from %d of 2 drivers: %v", len(seen), seen)
		}
	}
	if m := seen["air"]; !strings.HasPrefix(m, "gw1/telemetry/air ") || !strings.Contains(m, `"temperature":25.08`) ||
		!strings.Contains(m, `"pressure":`) || !strings.Contains(m, `"humidity":`) || !strings.HasSuffix(m, " Cel") {
		t.Fatalf("bme280 at the cloud: %q", m)
	}
	if m := seen["wave"]; !strings.HasPrefix(m, "gw1/telemetry/wave ") || !strings.Contains(m, `"temperature":`) {
		t.Fatalf("sim at the cloud: %q", m)
	}
	// The BME280 fails once its playback runs dry; the sim reads on.
	waitUntil(t, 10*time.Second, "the bme280 reported failing", func() bool { return driver("air").State != drivers.StateOK })
	reads := driver("wave").Reads
	waitUntil(t, 10*time.Second, "the sim reading on", func() bool { return driver("wave").Reads >= reads+3 })
	if air := driver("air"); air.Reads < 1 || air.Errors < 1 || air.LastError == "" {
		t.Fatalf("bme280 stats %+v", air)
	}
	// ...and its failure is an event on the status stream.
	var status []string
	_, err = g.Buffer().Read("driver_status", 0, 100, func(_ uint64, e *event.Event) error {
		status = append(status, e.Source+" "+string(e.Payload))
		return nil
	})
	// The first report about air is its failure. (Under load the sim may
	// report a timed-out read of its own first.)
	air := ""
	for _, s := range status {
		if strings.HasPrefix(s, "air ") {
			air = s
			break
		}
	}
	if err != nil || !strings.Contains(air, `"error":`) {
		t.Fatalf("driver_status stream: %q %v", status, err)
	}
}

// TestGPIOOutOverMQTT drives two gpio_out drivers by publishing on their
// command topics over MQTT to the embedded broker: the gpiotest pins
// follow, every state change is an event in the buffer that reaches the
// cloud, a bad payload leaves the pin alone, and a reload puts the pins
// in their safe state and re-subscribes once, ignoring a retained
// command.
func TestGPIOOutOverMQTT(t *testing.T) {
	cloud := mqtttest.Start(t)
	atCloud := make(chan string, 100)
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(cloud.URL()).SetClientID("gpio-out-cloud"))
	if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(50)
	if tok := sub.Subscribe("gw1/#", 1, func(_ paho.Client, m paho.Message) {
		evs, err := uplink.DecodeMessage(m.Payload())
		if err != nil {
			atCloud <- "undecodable: " + err.Error()
			return
		}
		for _, e := range evs {
			atCloud <- fmt.Sprintf("%s %s %s", m.Topic(), e.Source, e.Payload)
		}
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}

	drv := `
buffer:
  streams:
    - {name: telemetry, retain: 1h} # forwarded events stay, for the test to read
drivers:
  - {name: relay, kind: gpio_out, options: {pin: GPIO23, field: state, command_topic: cmd/gw1/relay}}
  - {name: lamp, kind: gpio_out, options: {pin: GPIO24, active_low: true}}
`
	dir := t.TempDir()
	yaml, addr := testConfig(t, dir, cloud.URL(), drv)
	relayPin := &gpiotest.Pin{N: "GPIO23", L: gpio.High} // not safe before the start
	lampPin := &gpiotest.Pin{N: "GPIO24", L: gpio.Low}   // active low: on
	env := drivers.Env{Pin: func(name string) (gpio.PinIn, error) {
		switch name {
		case relayPin.N:
			return relayPin, nil
		case lampPin.N:
			return lampPin, nil
		}
		return nil, fmt.Errorf("no pin %q", name)
	}}
	g, err := gateway.New(loadConfig(t, yaml), nil, gateway.WithHardware(env),
		gateway.WithReload(func() (*config.Config, error) { return config.LoadBytes([]byte(yaml), "test.yaml") }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	// causes returns "<state> <cause>" of a driver's events in the buffer.
	causes := func(source string) []string {
		var out []string
		_, err := g.Buffer().Read("telemetry", 0, 1000, func(_ uint64, e *event.Event) error {
			if e.Source != source {
				return nil
			}
			var p struct {
				State *float64
				Cause string
			}
			if err := json.Unmarshal(e.Payload, &p); err != nil || p.State == nil || e.Topic != "drivers/"+source ||
				e.Attrs["driver"] != "gpio_out" {
				t.Errorf("event %s %s %q %v", e.Source, e.Topic, e.Payload, e.Attrs)
				return nil
			}
			out = append(out, fmt.Sprintf("%v %s", *p.State, p.Cause))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	expect := func(source string, want ...string) {
		t.Helper()
		waitUntil(t, 10*time.Second, fmt.Sprintf("%s's events %q", source, want), func() bool {
			return slices.Equal(causes(source), want)
		})
	}
	stats := func(name string) drivers.CommandStats {
		for _, d := range g.Status().Drivers {
			if d.Name == name && d.Commands != nil {
				return *d.Commands
			}
		}
		return drivers.CommandStats{}
	}
	level := func(p *gpiotest.Pin, want gpio.Level) func() bool {
		return func() bool { return p.Read() == want }
	}

	// Safe state on start: the relay off (low), the active-low lamp off
	// (high), before any command.
	waitUntil(t, 10*time.Second, "the relay pin low", level(relayPin, gpio.Low))
	waitUntil(t, 10*time.Second, "the lamp pin high", level(lampPin, gpio.High))
	expect("relay", "0 start")
	expect("lamp", "0 start")

	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("operator").SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer func() {
		if c.IsConnected() {
			c.Disconnect(50)
		}
	}()
	publish := func(topic, payload string, retained bool) {
		t.Helper()
		if tok := c.Publish(topic, 1, retained, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", topic, tok.Error())
		}
	}

	publish("cmd/gw1/relay", `{"state": "on", "by": "ops"}`, false)
	waitUntil(t, 10*time.Second, "the relay pin high", level(relayPin, gpio.High))
	expect("relay", "0 start", "1 command")

	// A bad payload is refused and counted; the pin stays.
	publish("cmd/gw1/relay", "on", false) // not a JSON object: the relay has field: state
	waitUntil(t, 10*time.Second, "the refusal counted", func() bool { return stats("relay").Refused == 1 })
	if relayPin.Read() != gpio.High || stats("relay").Accepted != 1 {
		t.Fatalf("after a refused command: pin %v, stats %+v", relayPin.Read(), stats("relay"))
	}

	// The lamp, on its default topic, with a retained command.
	publish("actuators/lamp/set", "ON", true)
	waitUntil(t, 10*time.Second, "the lamp pin low (on)", level(lampPin, gpio.Low))
	expect("lamp", "0 start", "1 command")

	// The state changes go up like any reading.
	deadline := time.After(15 * time.Second)
	for want := `gw1/telemetry/relay relay {"cause":"command","state":1}`; ; {
		select {
		case m := <-atCloud:
			if m == want {
				goto reload
			}
		case <-deadline:
			t.Fatalf("the cloud did not get %q", want)
		}
	}
reload:
	// A reload that keeps the drivers' settings hands each output over to
	// the new driver, which records the state it took (cause reload); the
	// retained "ON" is not a command to the new lamp, and each topic has
	// one subscription, the new driver's. (A reload that changes an
	// actuator's settings goes through its safe state:
	// TestActuatorAcrossReload.)
	if err := g.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	expect("relay", "0 start", "1 command", "1 reload")
	expect("lamp", "0 start", "1 command", "1 reload")
	if relayPin.Read() != gpio.High || lampPin.Read() != gpio.Low {
		t.Fatalf("after the reload: relay %v, lamp %v; want both still on", relayPin.Read(), lampPin.Read())
	}
	if st := stats("lamp"); st.Accepted != 0 {
		t.Fatalf("the new lamp took the retained command: %+v", st)
	}
	for _, topic := range []string{"cmd/gw1/relay", "actuators/lamp/set"} {
		if n := gateway.InlineSubscribers(g, topic); n != 1 {
			t.Errorf("%s: %d inline subscriptions after the reload, want 1", topic, n)
		}
	}
	publish("actuators/lamp/set", "0", false)
	waitUntil(t, 10*time.Second, "the new lamp driver taking a command", level(lampPin, gpio.High))
	expect("lamp", "0 start", "1 command", "1 reload", "0 command")

	// Shutdown leaves both pins safe and unsubscribed.
	c.Disconnect(50)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil // for the deferred wait
	if relayPin.Read() != gpio.Low || lampPin.Read() != gpio.High {
		t.Fatalf("after shutdown: relay %v, lamp %v; want both safe", relayPin.Read(), lampPin.Read())
	}
	if n := gateway.InlineSubscribers(g, "actuators/lamp/set"); n != 0 {
		t.Errorf("%d inline subscriptions after shutdown", n)
	}
}
