package drivers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"periph.io/x/conn/v3/gpio"
)

// GPIO output driver (kind "gpio_out"): a relay, LED, valve or buzzer on
// one pin of the board, set from commands published on a local MQTT topic
// of the embedded broker. It is an Actuator: a Watcher whose Watch owns
// the pin, plus Command, through which the gateway hands it each message
// published on CommandTopic. The pin is driven through periph's
// gpio.PinOut: Env.Pin's pin must also be a gpio.PinOut (every pin of
// periph's gpioreg is a gpio.PinIO).
//
// YAML options: GPIOOutOptions.
//
// Spec.Bus, Spec.Address and Spec.Interval must be empty: timing comes
// from dead_man.
//
// States: "on" and "off" are logical; with active_low "on" drives the
// line low. The pin is looked up (Env.Pin) when Watch starts, so a pin
// that is not there yet fails that Watch and the Scheduler retries it
// with backoff like any driver; construction fails only on bad options.
//
// Safe state: Watch sets the pin to safe_state before it applies any
// command, and again when its context ends (shutdown, reload); Halt sets
// it too. Across a reload the gateway hands the output over instead
// (HandOverTo, Resumer) when the new configuration drives the same pin
// the same way: the old driver leaves the pin as it is, and the new one
// starts from that state (cause "reload") with what was left of the dead
// man's wait, so changing an unrelated setting does not click a relay. With dead_man > 0, when no accepted command arrived for
// dead_man the pin goes to the safe state (the dead man's switch); every
// accepted command restarts that wait, including one that asks for the
// state the pin already has (a heartbeat). A refused command does not.
//
// Events: each Sample holds the Reading {"state", 1 for on or 0 for
// off, ""} and the label "cause": "start" (Watch set the safe state at
// its start), "command", "dead_man" or "shutdown" (Watch set the safe
// state as its context ended; the Scheduler stores that last sample, see
// Actuator). Start and shutdown are always reported; a command or the
// dead man's switch only when the state changes, so a heartbeat that
// keeps a relay on adds no event.
//
// Commands: Command parses the payload at once, in the caller's
// goroutine, and refuses a bad one with an error wrapping
// ErrCommandRefused whose message never quotes the payload (the gateway
// logs it). An accepted command only replaces the desired state in a
// one-slot mailbox and wakes Watch, which sets the pin: for an output only
// the latest command matters, so a burst coalesces into the last one,
// Command never blocks and nothing queues. Accepted payloads (surrounding
// white space ignored, words case-insensitive): on, off, 1, 0, true,
// false, or a JSON string holding one of them ("on"). With field, the
// payload must instead be a JSON object whose top-level member field
// holds one of them: a JSON boolean, the number 0 or 1, or one of the
// words as a string ({"state": "on"}, {"state": true}). A payload is at
// most 4096 bytes.
//
// Concurrency: Command, CommandTopic and the counters are safe for
// concurrent use, with each other and with Watch and Halt; Watch and Halt
// follow the Scheduler's rules (never concurrently with each other), and
// the pin is written under a lock either way.
//
// Tests replace the driver's timer (the dead man's switch's clock); see
// gpioout_test.go.

// GPIOOutOptions are the options of kind "gpio_out".
type GPIOOutOptions struct {
	// Pin is required: the pin name Env.Pin knows ("GPIO23"), letters,
	// digits, '_', '-' and '.'.
	Pin string `yaml:"pin"`
	// ActiveLow inverts the line: on drives it low (most relay boards
	// with an optocoupler input).
	ActiveLow bool `yaml:"active_low"`
	// SafeState is off (the default) or on: the state on start, on
	// shutdown and when the dead man's switch trips.
	SafeState string `yaml:"safe_state"`
	// CommandTopic is the topic on the embedded broker the driver takes
	// commands from; empty means actuators/<driver name>/set
	// (GPIOOutCommandTopic). A topic name, no wildcards, not starting with
	// '$'.
	CommandTopic string `yaml:"command_topic"`
	// Field, when set, is the top-level member of a JSON object payload
	// that holds the state ("state"); without it the payload itself is the
	// state.
	Field string `yaml:"field"`
	// DeadMan, when > 0, is how long the pin may stay out of the safe
	// state without an accepted command; 0 (the default) disables it.
	DeadMan time.Duration `yaml:"dead_man"`
}

// SetDefaults implements Options. The command topic's default depends on
// the driver's name, so it is left empty here and resolved by the driver
// (GPIOOutCommandTopic).
// PinName returns the pin the driver owns (PinUser).
func (o *GPIOOutOptions) PinName() string { return o.Pin }

func (o *GPIOOutOptions) SetDefaults() {
	if o.SafeState == "" {
		o.SafeState = "off"
	}
}

// Validate implements Options.
func (o *GPIOOutOptions) Validate() error {
	switch {
	case o.Pin == "":
		return optionErr("pin", "option %q is required", "pin")
	case !validPinName(o.Pin):
		return optionErr("pin", "option %q is %q: a pin name has 1 to 64 letters, digits, '_', '-' or '.' (GPIO23, P1_16)", "pin", o.Pin)
	case o.SafeState != "off" && o.SafeState != "on":
		return optionErr("safe_state", "option %q is %q, want off or on", "safe_state", o.SafeState)
	case o.DeadMan < 0:
		return optionErr("dead_man", "option %q is %v, want 0 (off) or a positive duration", "dead_man", o.DeadMan)
	case o.Field != "" && !utf8.ValidString(o.Field):
		return optionErr("field", "option %q is not valid UTF-8", "field")
	}
	if o.CommandTopic != "" {
		if err := checkCommandTopic(o.CommandTopic); err != nil {
			return optionErr("command_topic", "option %q %v", "command_topic", err)
		}
	}
	return nil
}

// GPIOOutCommandTopic is the default command topic of the gpio_out
// driver named name.
func GPIOOutCommandTopic(name string) string { return "actuators/" + name + "/set" }

// gpioOutMaxPayload bounds a command's payload; a longer one is refused
// before it is parsed.
const gpioOutMaxPayload = 4096

// Causes of a gpio_out state report (the "cause" label).
const (
	CauseStart   = "start"
	CauseCommand = "command"
	CauseDeadMan = "dead_man"
	CauseStop    = "shutdown"
	CauseReload  = "reload" // started from the state of the driver it replaced (HandOverTo)
)

// Resumer is an Actuator that can take over, across a reload, the output
// of the driver it replaces instead of passing through its safe state.
type Resumer interface {
	Actuator
	// HandOverTo arranges for next to take over the output: when this
	// driver's Watch ends it leaves the output as it is (and Halt leaves
	// it too), and next's Watch starts from that state, with what was
	// left of the dead man's wait. It reports false and changes nothing
	// when next drives another output or differently. The caller calls it
	// once the replacement is certain, before next's Watch starts; if this
	// driver's Watch is not running then, next starts in its safe state.
	HandOverTo(next Actuator) bool
}

var _ Resumer = (*gpioOut)(nil)

// handover is the output a Watch left to its successor.
type handover struct {
	on       bool
	deadline time.Time // the dead man's switch trips then; zero: not armed
}

func validPinName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-', r == '.':
		default:
			return false
		}
	}
	return true
}

// checkCommandTopic checks a topic the gateway subscribes on the embedded
// broker: an MQTT topic name (no wildcards, no NUL, UTF-8, at most 65535
// bytes) outside the broker's own $-topics.
func checkCommandTopic(t string) error {
	switch {
	case t == "":
		return errors.New("is empty")
	case len(t) > 65535:
		return fmt.Errorf("is %d bytes long, more than MQTT's 65535", len(t))
	case !utf8.ValidString(t):
		return errors.New("is not valid UTF-8")
	case strings.ContainsAny(t, "+#"):
		return fmt.Errorf("is %q: a topic name, without the wildcards + and #", t)
	case strings.ContainsRune(t, 0):
		return errors.New("contains a NUL character")
	case strings.HasPrefix(t, "$"):
		return fmt.Errorf("is %q: topics starting with $ are the broker's own", t)
	}
	return nil
}

func checkGPIOOutSpec(spec Spec) error {
	if err := checkPinSpec(spec); err != nil {
		return err
	}
	if spec.Interval != 0 {
		return fieldErr("interval", "%q does not apply to gpio_out (option %q times the safe state)", "interval", "dead_man")
	}
	return nil
}

// gpioOutTimer starts a one-shot timer: its channel fires once after d;
// stop stops it (whether or not it fired). A field of the driver so that
// tests can drive the dead man's switch.
type gpioOutTimer func(d time.Duration) (c <-chan time.Time, stop func())

func realTimer(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}

type gpioOut struct {
	topic     string
	pinName   string
	activeLow bool
	safe      bool
	field     string
	deadMan   time.Duration
	lookup    func(string) (gpio.PinIn, error)
	now       func() time.Time
	timer     gpioOutTimer

	pinMu sync.Mutex  // serialises opening and writing the pin (Watch, Halt)
	pin   gpio.PinOut // nil until opened

	mu      sync.Mutex // guards the mailbox
	desired bool       // the latest accepted command's state...
	pending bool       // ...not yet taken by Watch
	wake    chan struct{}

	accepted, refused, coalesced atomic.Uint64
	lastRefusal                  atomic.Pointer[string]

	// Hand-over across a reload (HandOverTo).
	succ     atomic.Pointer[gpioOut] // leave the output to it
	pred     atomic.Pointer[gpioOut] // take the output over from it
	handed   chan struct{}           // closed once Watch left the output to succ...
	final    handover                // ...as this
	handOnce sync.Once
}

func newGPIOOut(spec Spec, o GPIOOutOptions, env Env) (*gpioOut, error) {
	o.SetDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if err := checkGPIOOutSpec(spec); err != nil {
		return nil, err
	}
	topic := o.CommandTopic
	if topic == "" {
		topic = GPIOOutCommandTopic(spec.Name)
		if err := checkCommandTopic(topic); err != nil {
			return nil, optionErr("command_topic", "the default command topic %v; set option %q", err, "command_topic")
		}
	}
	return &gpioOut{
		topic: topic, pinName: o.Pin, activeLow: o.ActiveLow,
		safe: o.SafeState == "on", field: o.Field, deadMan: o.DeadMan,
		lookup: env.Pin, now: pinNow(env), timer: realTimer,
		wake: make(chan struct{}, 1), handed: make(chan struct{}),
	}, nil
}

// HandOverTo implements Resumer: next must be a gpio_out on the same pin
// with the same active_low, safe_state and dead_man.
func (d *gpioOut) HandOverTo(next Actuator) bool {
	n, ok := next.(*gpioOut)
	if !ok || n == d || n.pinName != d.pinName || n.activeLow != d.activeLow || n.safe != d.safe || n.deadMan != d.deadMan {
		return false
	}
	n.pred.Store(d)
	d.succ.Store(n)
	return true
}

// CommandTopic implements Actuator.
func (d *gpioOut) CommandTopic() string { return d.topic }

// Command implements Actuator.
func (d *gpioOut) Command(payload []byte) error {
	on, err := parseGPIOOutCommand(payload, d.field)
	if err != nil {
		d.refused.Add(1)
		msg := err.Error()
		d.lastRefusal.Store(&msg)
		return err
	}
	d.accepted.Add(1)
	d.mu.Lock()
	if d.pending {
		d.coalesced.Add(1)
	}
	d.desired, d.pending = on, true
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default: // Watch is already due to look
	}
	return nil
}

// commandStats implements commandCounter.
func (d *gpioOut) commandStats() CommandStats {
	st := CommandStats{Accepted: d.accepted.Load(), Refused: d.refused.Load(), Coalesced: d.coalesced.Load()}
	if p := d.lastRefusal.Load(); p != nil {
		st.LastRefusal = *p
	}
	return st
}

// take empties the mailbox.
func (d *gpioOut) take() (on, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	on, ok = d.desired, d.pending
	d.pending = false
	return on, ok
}

// set drives the pin to the logical state on, opening it first if need
// be.
func (d *gpioOut) set(on bool) error {
	d.pinMu.Lock()
	defer d.pinMu.Unlock()
	if d.pin == nil {
		if d.lookup == nil {
			return errors.New("no GPIO pins in this environment")
		}
		p, err := d.lookup(d.pinName)
		if err != nil {
			return fmt.Errorf("pin %q: %w", d.pinName, err)
		}
		if p == nil {
			return fmt.Errorf("pin %q: not found", d.pinName)
		}
		out, ok := p.(gpio.PinOut)
		if !ok {
			return fmt.Errorf("pin %q (%T) cannot drive an output", d.pinName, p)
		}
		d.pin = out
	}
	level := gpio.Level(on != d.activeLow)
	if err := d.pin.Out(level); err != nil {
		return fmt.Errorf("pin %s: set %v: %w", d.pin, level, err)
	}
	return nil
}

func (d *gpioOut) sample(on bool, cause string) Sample {
	v := 0.0
	if on {
		v = 1
	}
	return Sample{Time: d.now(), Readings: []Reading{{Name: "state", Value: v}},
		Labels: map[string]string{"cause": cause}}
}

// Halt implements Driver: the pin goes to the safe state, unless the
// output was handed over (HandOverTo). It reports no event (Watch reports
// its own shutdown).
func (d *gpioOut) Halt() error {
	if d.succ.Load() != nil {
		return nil
	}
	return d.set(d.safe)
}

// resume returns the state Watch starts from: the predecessor's, when it
// left the output to this driver (once: a retried Watch starts safe), else
// the safe state.
func (d *gpioOut) resume() (on bool, cause string, deadline time.Time) {
	p := d.pred.Swap(nil)
	if p == nil {
		return d.safe, CauseStart, time.Time{}
	}
	select {
	case <-p.handed:
		return p.final.on, CauseReload, p.final.deadline
	default: // its Watch was not running: nothing to take over
		return d.safe, CauseStart, time.Time{}
	}
}

// Watch implements Watcher: see the kind's description above.
func (d *gpioOut) Watch(ctx context.Context, emit func(Sample)) error {
	state, cause, deadline := d.resume()
	if err := d.set(state); err != nil {
		return err
	}
	emit(d.sample(state, cause))
	var (
		deadC    <-chan time.Time
		stopDead = func() {}
	)
	defer func() { stopDead() }()
	if !deadline.IsZero() {
		deadC, stopDead = d.timer(max(deadline.Sub(d.now()), 0))
	}
	for {
		select {
		case <-ctx.Done():
			stopDead()
			if d.succ.Load() != nil {
				// Handed over: the output stays as it is for the successor.
				d.handOnce.Do(func() {
					d.final = handover{on: state, deadline: deadline}
					close(d.handed)
				})
				return nil
			}
			if err := d.set(d.safe); err != nil {
				return err
			}
			emit(d.sample(d.safe, CauseStop))
			return nil
		case <-d.wake:
			on, ok := d.take()
			if !ok {
				continue
			}
			if d.deadMan > 0 {
				stopDead()
				deadC, stopDead = d.timer(d.deadMan)
				deadline = d.now().Add(d.deadMan)
			}
			if on == state {
				continue
			}
			if err := d.set(on); err != nil {
				return err
			}
			state = on
			emit(d.sample(state, CauseCommand))
		case <-deadC:
			deadC, deadline = nil, time.Time{}
			stopDead()
			stopDead = func() {}
			if state == d.safe {
				continue
			}
			if err := d.set(d.safe); err != nil {
				return err
			}
			state = d.safe
			emit(d.sample(state, CauseDeadMan))
		}
	}
}

// gpioOutWords are the accepted command words, lower case.
var gpioOutWords = map[string]bool{"on": true, "off": false, "1": true, "0": false, "true": true, "false": false}

// gpioOutWant lists them for refusals.
const gpioOutWant = "on, off, 1, 0, true or false"

// parseGPIOOutCommand returns the state a command payload asks for: see
// the kind's description. Errors wrap ErrCommandRefused and never quote
// the payload.
func parseGPIOOutCommand(payload []byte, field string) (bool, error) {
	refuse := func(format string, args ...any) (bool, error) {
		return false, fmt.Errorf("%w: "+format, append([]any{ErrCommandRefused}, args...)...)
	}
	if len(payload) > gpioOutMaxPayload {
		return refuse("payload of %d bytes, more than %d", len(payload), gpioOutMaxPayload)
	}
	p := bytes.TrimSpace(payload)
	if len(p) == 0 {
		return refuse("empty payload")
	}
	if field == "" {
		if on, ok := gpioOutValue(p); ok {
			return on, nil
		}
		return refuse("payload is none of %s (as text or a JSON string)", gpioOutWant)
	}
	var obj map[string]json.RawMessage
	if p[0] != '{' || json.Unmarshal(p, &obj) != nil {
		return refuse("payload is not a JSON object (option field is %q)", field)
	}
	raw, ok := obj[field]
	if !ok {
		return refuse("JSON object has no member %q", field)
	}
	if on, ok := gpioOutValue(raw); ok {
		return on, nil
	}
	return refuse("member %q is none of %s (a JSON boolean, 0, 1 or a string)", field, gpioOutWant)
}

// gpioOutValue reads one state: a word, or a JSON string holding one.
func gpioOutValue(p []byte) (on, ok bool) {
	p = bytes.TrimSpace(p)
	if len(p) > 0 && p[0] == '"' {
		var s string
		if json.Unmarshal(p, &s) != nil {
			return false, false
		}
		p = bytes.TrimSpace([]byte(s))
	}
	if len(p) > 5 { // "false" is the longest word
		return false, false
	}
	lower := make([]byte, len(p))
	for i, c := range p { // ASCII only: no Unicode folding into a word
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	on, ok = gpioOutWords[string(lower)]
	return on, ok
}
