package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/drivers"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/config"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/onewire"
)

// Option configures a Gateway beyond its config file.
type Option func(*Gateway)

// WithHardware gives the drivers the board's buses and pins. Only cmd
// opens real hardware; tests pass periph's playback fakes. Without it,
// drivers that need a bus fail (and are retried) while sim drivers run.
func WithHardware(env drivers.Env) Option {
	return func(g *Gateway) { g.hw = env }
}

// stateStore keeps drivers' small state (the pulse counter's total) in
// the buffer file, committed like everything else.
type stateStore struct{ l *buffer.Log }

func (s stateStore) Load(key string) ([]byte, error) { return s.l.State("driver/" + key) }

func (s stateStore) Save(key string, val []byte) error {
	return s.l.Update(context.Background(), func(tx *buffer.Tx) error { return tx.PutState("driver/"+key, val) })
}

// errNoHardware is what a bus lookup returns when no hardware was given.
var errNoHardware = errors.New("no hardware opened (ferry run opens the board's buses)")

// buildDrivers constructs the configured drivers. A configuration error
// (unknown kind, bad option) is fatal; a sensor that cannot be reached yet
// is wrapped by drivers.Retrying so the scheduler retries it with backoff,
// like one that disappears later.
func buildDrivers(cfg *config.Config, hw drivers.Env, store drivers.Store) ([]drivers.Item, error) {
	env := hw
	noHW := func(string) error { return errNoHardware }
	if env.I2C == nil {
		env.I2C = func(b string) (i2cBus, error) { return nil, noHW(b) }
	}
	if env.OneWire == nil {
		env.OneWire = func(b string) (oneWireBus, error) { return nil, noHW(b) }
	}
	if env.Pin == nil {
		env.Pin = func(p string) (gpioPin, error) { return nil, noHW(p) }
	}
	env.Store = store
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.Rand == nil {
		env.Rand = rand.Float64
	}
	var items []drivers.Item
	var errs config.Errors
	for i, dc := range cfg.Drivers {
		spec := drivers.Spec{Name: dc.Name, Kind: dc.Kind, Bus: dc.Bus, Address: dc.Address,
			Interval: dc.Interval, Options: dc.Options}
		it, err := drivers.New(spec, env)
		if err != nil && !errors.Is(err, drivers.ErrOption) && !errors.Is(err, drivers.ErrUnknownKind) {
			it, err = drivers.Retrying(spec, env, err)
		}
		if err != nil {
			path := fmt.Sprintf("drivers[%d]", i)
			if oe := (*drivers.OptionError)(nil); errors.As(err, &oe) {
				path += "." + oe.Key // point at the setting's own line
			}
			errs = append(errs, cfg.ErrorAt(path, "%v", err))
			continue
		}
		items = append(items, it)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return items, nil
}

// driverEvents turns samples and status changes into events in the buffer.
type driverEvents struct {
	cfg *config.Config
	buf *buffer.Log
	log *slog.Logger
}

func (de *driverEvents) stream(name string) string {
	for _, d := range de.cfg.Drivers {
		if d.Name == name {
			return d.Stream
		}
	}
	return config.DefaultStream
}

// emit stores one sample: a JSON object of quantity -> value, with the
// units in the event's attributes ("unit.temperature": "Cel").
// ctx is the scheduler's: an append waiting for room stops with it.
func (de *driverEvents) emit(ctx context.Context, spec drivers.Spec, s drivers.Sample) {
	fields := make(map[string]float64, len(s.Readings))
	attrs := map[string]string{"driver": spec.Kind}
	for _, r := range s.Readings {
		fields[r.Name] = r.Value
		if r.Unit != "" {
			attrs["unit."+r.Name] = r.Unit
		}
	}
	payload, err := json.Marshal(fields)
	if err != nil { // NaN or Inf: a driver bug, not a reading
		de.log.Warn("driver reading not encodable: dropped", "driver", spec.Name, "err", err)
		return
	}
	id, _ := event.NewID(s.Time, nil)
	ev := &event.Event{ID: id, Stream: de.stream(spec.Name), Source: spec.Name, Topic: config.DriverTopic(spec.Name),
		Time: s.Time, ContentType: "application/json", Payload: payload, Attrs: attrs}
	if err := de.buf.Append(ctx, ev); err != nil && ctx.Err() == nil {
		de.log.Warn("driver reading not stored", "driver", spec.Name, "err", err)
	}
}

// status stores a failure or recovery on the status stream.
func (de *driverEvents) status(ctx context.Context, st drivers.DriverStatus) {
	body := map[string]any{"driver": st.Name, "kind": st.Kind, "consecutive_errors": st.Consecutive,
		"retry_in_s": st.Retry.Seconds(), "recovered": st.Recovered}
	if st.Err != nil {
		body["error"] = st.Err.Error()
	}
	payload, _ := json.Marshal(body)
	now := time.Now()
	id, _ := event.NewID(now, nil)
	ev := &event.Event{ID: id, Stream: de.cfg.DriverSettings.StatusStream, Source: st.Name,
		Topic: config.DriverTopic(st.Name) + "/status", Time: now, ContentType: "application/json", Payload: payload}
	if err := de.buf.Append(ctx, ev); err != nil && ctx.Err() == nil {
		de.log.Warn("driver status not stored", "driver", st.Name, "err", err)
	}
}

// Local names for periph's bus types, to keep the no-hardware stubs short.
type (
	i2cBus     = i2c.Bus
	oneWireBus = onewire.Bus
	gpioPin    = gpio.PinIn
)
