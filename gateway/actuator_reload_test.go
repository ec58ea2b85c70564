package gateway_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/ferrygw/ferry/drivers"
	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// lowWatch is a gpiotest.Pin that counts the times it is driven low.
type lowWatch struct {
	*gpiotest.Pin
	mu   sync.Mutex
	lows int
}

func (p *lowWatch) Out(l gpio.Level) error {
	p.mu.Lock()
	if l == gpio.Low {
		p.lows++
	}
	p.mu.Unlock()
	return p.Pin.Out(l)
}

func (p *lowWatch) state() (gpio.Level, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.Pin.Lock()
	defer p.Pin.Unlock()
	return p.Pin.L, p.lows
}

// TestActuatorAcrossReload: a relay switched on stays on through a
// reload that changes something else (the output is handed over: never
// driven to its safe state), and goes to its safe state through a reload
// that changes its own settings.
func TestActuatorAcrossReload(t *testing.T) {
	cloud := mqtttest.Start(t)
	dir := t.TempDir()
	relayYAML := "drivers:\n  - {name: relay, kind: gpio_out, options: {pin: GPIO23, command_topic: cmd/relay%s}}\n"
	base, addr := testConfig(t, filepath.Join(dir, "data"), cloud.URL(), "")
	path := filepath.Join(dir, "ferry.yaml")
	write := func(extra, relayExtra string) {
		t.Helper()
		y := base + fmt.Sprintf(relayYAML, relayExtra) + extra
		if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("", "")
	relay := &lowWatch{Pin: &gpiotest.Pin{N: "GPIO23"}}
	env := drivers.Env{Pin: func(name string) (gpio.PinIn, error) {
		if name == relay.N {
			return relay, nil
		}
		return nil, fmt.Errorf("no pin %q", name)
	}}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(cfg, nil, gateway.WithHardware(env),
		gateway.WithReload(func() (*config.Config, error) { return config.Load(path) }))
	if err != nil {
		t.Fatal(err)
	}
	runGatewayInstance(t, g)
	waitUntil(t, 30*time.Second, "the relay in its safe state", func() bool { _, lows := relay.state(); return lows > 0 })
	publishRaw(t, addr, "cmd/relay", "on")
	waitUntil(t, 30*time.Second, "the relay on", func() bool { l, _ := relay.state(); return l == gpio.High })
	_, lowsBefore := relay.state()

	// Another driver comes in: the relay is handed over.
	write("  - {name: wave, kind: sim, interval: 1s}\n", "")
	if err := g.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	publishRaw(t, addr, "cmd/relay", "on") // the new driver takes commands: a heartbeat
	if l, lows := relay.state(); l != gpio.High || lows != lowsBefore {
		t.Fatalf("after a reload that kept the relay's settings: level %v, driven low %d times (before: %d)", l, lows, lowsBefore)
	}
	publishRaw(t, addr, "cmd/relay", "off")
	waitUntil(t, 30*time.Second, "the reloaded relay taking commands", func() bool { l, _ := relay.state(); return l == gpio.Low })
	publishRaw(t, addr, "cmd/relay", "on")
	waitUntil(t, 30*time.Second, "the relay on again", func() bool { l, _ := relay.state(); return l == gpio.High })

	// Its own settings change (active_low): no hand-over. The old driver
	// goes to its safe state (off: low) on its way out, the new one starts
	// in its own (off with active_low: high).
	_, lowsMid := relay.state()
	write("  - {name: wave, kind: sim, interval: 1s}\n", ", active_low: true")
	if err := g.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the old relay driven safe (low), the new one safe (high)", func() bool {
		l, lows := relay.state()
		return lows > lowsMid && l == gpio.High
	})
}
