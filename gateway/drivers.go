package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/drivers"
	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/gateway/config"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
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
// units in the event's attributes ("unit.temperature": "Cel"), and the
// sample's labels as strings in the same object (a gpio_out's
// {"state":1,"cause":"command"}; a reading wins over a label of the same
// name). ctx is the scheduler's: an append waiting for room stops with it.
func (de *driverEvents) emit(ctx context.Context, spec drivers.Spec, s drivers.Sample) {
	fields := make(map[string]any, len(s.Readings)+len(s.Labels))
	for k, v := range s.Labels {
		fields[k] = v
	}
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

// runDrivers runs p's drivers: the scheduler, with each actuator
// (gpio_out) subscribed to its command topic on the embedded broker for
// as long as the scheduler runs, so a reload, which stops the old parts
// before it starts the new ones, unsubscribes the old drivers first.
func (g *Gateway) runDrivers(p *parts) func(context.Context) error {
	return func(ctx context.Context) error {
		if len(p.actuators) > 0 {
			unsubscribe, err := subscribeActuators(g.broker.Server(), p.actuators, g.log.With("component", "drivers"), g.now)
			if err != nil {
				return err
			}
			defer unsubscribe()
		}
		return p.sched.Run(ctx)
	}
}

// handOverActuators hands each actuator of old whose replacement in next
// (the driver of the same name) drives the same output the same way over
// to it (drivers.Resumer), so that a reload does not pass a relay through
// its safe state. runParts calls it once the reload is certain, before
// it stops old.
func (g *Gateway) handOverActuators(old, next *parts) {
	if old == nil || next == nil || len(old.actuators) == 0 {
		return
	}
	successor := map[string]drivers.Actuator{}
	for _, it := range next.actuators {
		successor[it.Spec.Name] = it.Actuator()
	}
	for _, it := range old.actuators {
		r, ok := it.Actuator().(drivers.Resumer)
		if n := successor[it.Spec.Name]; ok && n != nil && r.HandOverTo(n) {
			g.log.Info("actuator handed over to the reloaded configuration", "component", "drivers", "driver", it.Spec.Name)
		}
	}
}

// actuatorSubID numbers the inline subscriptions of command topics. Mochi
// keys an inline subscription by its filter and this ID, so IDs are never
// reused: the Unsubscribe of one driver cannot remove another's
// subscription to the same topic. They start high, clear of small
// constants other inline subscribers may pick.
var actuatorSubID atomic.Int64

func init() { actuatorSubID.Store(1 << 20) }

// subscribeActuators subscribes an inline handler for each actuator to
// its command topic, and returns the function that unsubscribes them all.
//
// The subscriptions go straight into mochi's topic index
// (Topics.InlineSubscribe), not through Server.Subscribe, which would run
// the broker's hooks for the inline client: the session store would
// persist the subscription as a client's (and be written after it closed,
// at shutdown), and the retained message on the topic would be replayed
// as a command. So a retained message on a command topic is no command:
// the pin starts in its safe state after every start, and after a reload
// in the state it had (handOverActuators) or, when its settings changed,
// in its safe state, whatever the broker retains.
//
// Mochi calls an inline handler in the publishing client's goroutine, so
// the handler only hands the payload to Command, which parses it and
// leaves the state in the driver's one-slot mailbox without blocking. A
// refused command is logged with driver, topic and publishing client, not
// its payload; a command whose MQTT 5 message expiry has passed is
// ignored (logged likewise).
//
// The broker's ACL applies to network clients only: any client the ACL
// lets publish on a command topic (and the gateway's own inline client,
// such as a pipeline's mqtt output) drives the pin.
func subscribeActuators(srv *mqtt.Server, items []drivers.Item, log *slog.Logger, now func() time.Time) (func(), error) {
	type sub struct {
		topic string
		id    int
	}
	var subs []sub
	unsubscribe := func() {
		for _, s := range subs {
			srv.Topics.InlineUnsubscribe(s.id, s.topic)
		}
	}
	for _, it := range items {
		act, name := it.Actuator(), it.Spec.Name
		topic := act.CommandTopic()
		if !mqtt.IsValidFilter(topic, false) {
			unsubscribe()
			return nil, fmt.Errorf("driver %s: command topic %q is not a valid topic filter", name, topic)
		}
		handler := func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
			if pk.Expiry > 0 && now().Unix() > pk.Expiry {
				log.Warn("driver command expired: ignored", "driver", name, "topic", pk.TopicName, "client_id", pk.Origin)
				return
			}
			if err := act.Command(pk.Payload); err != nil {
				log.Warn("driver command refused", "driver", name, "topic", pk.TopicName, "client_id", pk.Origin, "err", err)
			}
		}
		id := int(actuatorSubID.Add(1))
		srv.Topics.InlineSubscribe(mqtt.InlineSubscription{
			Subscription: packets.Subscription{Filter: topic, Identifier: id},
			Handler:      handler,
		})
		subs = append(subs, sub{topic, id})
	}
	return unsubscribe, nil
}

// Local names for periph's bus types, to keep the no-hardware stubs short.
type (
	i2cBus     = i2c.Bus
	oneWireBus = onewire.Bus
	gpioPin    = gpio.PinIn
)
