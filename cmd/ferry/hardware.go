package main

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/ferrygw/ferry/drivers"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/conn/v3/onewire"
	"periph.io/x/conn/v3/onewire/onewirereg"
	"periph.io/x/host/v3"
)

// hardware opens the board's buses for the drivers, once each, on first
// use, and closes them when the gateway stops: cmd owns the hardware, the
// drivers only borrow it (periph's convention).
type hardware struct {
	mu      sync.Mutex
	inited  bool
	closers []io.Closer
	i2c     map[string]i2c.Bus
	ow      map[string]onewire.Bus
}

func (h *hardware) init() error {
	if h.inited {
		return nil
	}
	if _, err := host.Init(); err != nil {
		return fmt.Errorf("periph host init: %w", err)
	}
	h.inited = true
	h.i2c = map[string]i2c.Bus{}
	h.ow = map[string]onewire.Bus{}
	return nil
}

// env returns the drivers' view of the board.
func (h *hardware) env() drivers.Env {
	return drivers.Env{
		I2C: func(name string) (i2c.Bus, error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			if err := h.init(); err != nil {
				return nil, err
			}
			if b, ok := h.i2c[name]; ok {
				return b, nil
			}
			b, err := i2creg.Open(name)
			if err != nil {
				return nil, fmt.Errorf("open I2C bus %q: %w", name, err)
			}
			h.i2c[name] = b
			h.closers = append(h.closers, b)
			return b, nil
		},
		OneWire: func(name string) (onewire.Bus, error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			if err := h.init(); err != nil {
				return nil, err
			}
			name, _, _ = strings.Cut(name, "/") // "bus/ROM": the ROM is the driver's
			if b, ok := h.ow[name]; ok {
				return b, nil
			}
			b, err := onewirereg.Open(name)
			if err != nil {
				return nil, fmt.Errorf("open 1-Wire bus %q: %w", name, err)
			}
			h.ow[name] = b
			h.closers = append(h.closers, b)
			return b, nil
		},
		Pin: func(name string) (gpio.PinIn, error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			if err := h.init(); err != nil {
				return nil, err
			}
			p := gpioreg.ByName(name)
			if p == nil {
				return nil, fmt.Errorf("no GPIO pin named %q", name)
			}
			return p, nil
		},
	}
}

func (h *hardware) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.closers {
		_ = c.Close()
	}
	h.closers = nil
}
