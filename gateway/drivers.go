package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"regexp"
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
// is wrapped so the scheduler retries it with backoff, like one that
// disappears later.
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
		d, err := drivers.New(spec, env)
		switch {
		case err == nil:
		case errors.Is(err, drivers.ErrOption) || errors.Is(err, drivers.ErrUnknownKind):
			path := fmt.Sprintf("drivers[%d]", i)
			if m := optionKey.FindStringSubmatch(err.Error()); m != nil {
				path += ".options." + m[1] // point at the option's own line
			}
			errs = append(errs, cfg.ErrorAt(path, "%v", err))
			continue
		default:
			d = retrying(spec, env, err)
		}
		items = append(items, drivers.Item{Spec: spec, Driver: d})
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return items, nil
}

// optionKey finds the option a driver's ErrOption names.
var optionKey = regexp.MustCompile(`option "([a-z_]+)"`)

// retrying stands in for a driver whose construction failed for a reason
// that may pass (the bus or chip is not there yet): each Read or Watch
// tries to construct it again, and the scheduler's backoff paces that.
func retrying(spec drivers.Spec, env drivers.Env, first error) drivers.Driver {
	r := &retryDriver{spec: spec, env: env, err: first}
	if spec.Kind == "gpio" || spec.Kind == "counter" {
		return retryWatcher{r}
	}
	return r
}

type retryDriver struct {
	spec drivers.Spec
	env  drivers.Env
	d    drivers.Driver
	err  error
}

func (r *retryDriver) get() (drivers.Driver, error) {
	if r.d != nil {
		return r.d, nil
	}
	if r.err != nil {
		err := r.err
		r.err = nil // the first failure is reported once, then retried
		return nil, err
	}
	d, err := drivers.New(r.spec, r.env)
	if err != nil {
		return nil, err
	}
	r.d = d
	return d, nil
}

func (r *retryDriver) Read(ctx context.Context) ([]drivers.Reading, error) {
	d, err := r.get()
	if err != nil {
		return nil, err
	}
	p, ok := d.(drivers.Poller)
	if !ok {
		return nil, fmt.Errorf("driver %s is not a poller", r.spec.Name)
	}
	return p.Read(ctx)
}

type retryWatcher struct{ r *retryDriver }

func (w retryWatcher) Watch(ctx context.Context, emit func(drivers.Sample)) error {
	d, err := w.r.get()
	if err != nil {
		return err
	}
	wd, ok := d.(drivers.Watcher)
	if !ok {
		return fmt.Errorf("driver %s is not a watcher", w.r.spec.Name)
	}
	return wd.Watch(ctx, emit)
}

// driverEvents turns samples and status changes into events in the buffer.
type driverEvents struct {
	cfg *config.Config
	buf *buffer.Log
	log *slog.Logger
	ctx context.Context
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
func (de *driverEvents) emit(spec drivers.Spec, s drivers.Sample) {
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
	if err := de.buf.Append(de.ctx, ev); err != nil && de.ctx.Err() == nil {
		de.log.Warn("driver reading not stored", "driver", spec.Name, "err", err)
	}
}

// status stores a failure or recovery on the status stream.
func (de *driverEvents) status(st drivers.DriverStatus) {
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
	if err := de.buf.Append(de.ctx, ev); err != nil && de.ctx.Err() == nil {
		de.log.Warn("driver status not stored", "driver", st.Name, "err", err)
	}
}

// Local names for periph's bus types, to keep the no-hardware stubs short.
type (
	i2cBus     = i2c.Bus
	oneWireBus = onewire.Bus
	gpioPin    = gpio.PinIn
)
