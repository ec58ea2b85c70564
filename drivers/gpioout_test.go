package drivers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
)

// The gpio_out tests drive a gpioOut on a gpiotest.Pin and read the pin's
// level back. The dead man's switch runs on gpioOutFakeTimers: each timer
// the driver starts is handed to the test, which fires it when it likes,
// so no test waits on real time.

// gpioOutFakeTimers is the driver's timer for tests.
type gpioOutFakeTimers struct {
	started chan *gpioOutFakeTimer // every timer the driver starts, in order
}

type gpioOutFakeTimer struct {
	d       time.Duration
	c       chan time.Time
	stopped atomic.Bool
}

func (f *gpioOutFakeTimers) start(d time.Duration) (<-chan time.Time, func()) {
	t := &gpioOutFakeTimer{d: d, c: make(chan time.Time, 1)}
	f.started <- t
	return t.c, func() { t.stopped.Store(true) }
}

// gpioOutRig runs one gpio_out driver's Watch on a fake pin.
type gpioOutRig struct {
	t      *testing.T
	pin    *gpiotest.Pin
	now    *gpioFakeNow
	timers *gpioOutFakeTimers
	d      *gpioOut
	events chan Sample
	emit   func(Sample) // Watch's emit; default: to events
	cancel context.CancelFunc
	exited chan struct{}
	err    error
}

func newGPIOOutRig(t *testing.T, o GPIOOutOptions) *gpioOutRig {
	t.Helper()
	r := &gpioOutRig{
		t:      t,
		pin:    &gpiotest.Pin{N: "GPIO23", Num: 23},
		now:    &gpioFakeNow{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)},
		timers: &gpioOutFakeTimers{started: make(chan *gpioOutFakeTimer, 100)},
		events: make(chan Sample, 100),
	}
	if o.Pin == "" {
		o.Pin = "GPIO23"
	}
	it, err := New(Spec{Name: "relay", Kind: "gpio_out", Options: &o}, r.env())
	if err != nil {
		t.Fatal(err)
	}
	r.d = it.Actuator().(*gpioOut)
	r.d.timer = r.timers.start
	r.emit = func(s Sample) { r.events <- s }
	return r
}

func (r *gpioOutRig) env() Env {
	return Env{
		Pin: func(name string) (gpio.PinIn, error) {
			if name != r.pin.N {
				return nil, fmt.Errorf("no pin %q", name)
			}
			return r.pin, nil
		},
		Now: r.now.Now,
	}
}

func (r *gpioOutRig) watch() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.exited = make(chan struct{})
	go func() {
		defer close(r.exited)
		r.err = r.d.Watch(ctx, r.emit)
	}()
}

// stop cancels Watch and returns its result.
func (r *gpioOutRig) stop() error {
	r.t.Helper()
	r.cancel()
	select {
	case <-r.exited:
		return r.err
	case <-time.After(5 * time.Second):
		r.t.Fatal("Watch did not return after cancel")
		return nil
	}
}

// next returns Watch's next sample as "state cause", checking its form.
func (r *gpioOutRig) next() string {
	r.t.Helper()
	exited := r.exited
	if len(r.events) > 0 {
		exited = nil // what Watch emitted before it returned comes first
	}
	select {
	case s := <-r.events:
		if len(s.Readings) != 1 || s.Readings[0].Name != "state" || s.Readings[0].Unit != "" || len(s.Labels) != 1 {
			r.t.Fatalf("sample %+v: want one unitless \"state\" reading and a cause", s)
		}
		if !s.Time.Equal(r.now.Now()) {
			r.t.Errorf("sample time %v, want Env.Now %v", s.Time, r.now.Now())
		}
		return fmt.Sprintf("%v %s", s.Readings[0].Value, s.Labels["cause"])
	case <-exited:
		r.t.Fatalf("Watch returned: %v", r.err)
	case <-time.After(5 * time.Second):
		r.t.Fatal("no sample from Watch")
	}
	return ""
}

// timer returns the next dead man's timer Watch started.
func (r *gpioOutRig) timer() *gpioOutFakeTimer {
	r.t.Helper()
	select {
	case tm := <-r.timers.started:
		return tm
	case <-time.After(5 * time.Second):
		r.t.Fatal("Watch started no timer")
		return nil
	}
}

func (r *gpioOutRig) command(payload string) {
	r.t.Helper()
	if err := r.d.Command([]byte(payload)); err != nil {
		r.t.Fatalf("Command(%q) = %v", payload, err)
	}
}

func (r *gpioOutRig) level(want gpio.Level) {
	r.t.Helper()
	if got := r.pin.Read(); got != want {
		r.t.Fatalf("pin level %v, want %v", got, want)
	}
}

func TestGPIOOutPayloads(t *testing.T) {
	const (
		on      = "on"
		off     = "off"
		refused = "refused"
	)
	big := strings.Repeat(" ", gpioOutMaxPayload) + "on"
	for _, tc := range []struct {
		field, payload, want string
	}{
		{"", "on", on}, {"", "off", off}, {"", "1", on}, {"", "0", off},
		{"", "true", on}, {"", "false", off}, {"", "ON", on}, {"", "Off", off},
		{"", "TRUE", on}, {"", "fAlSe", off}, {"", " on\n", on}, {"", "\t0 \r\n", off},
		{"", `"on"`, on}, {"", `"OFF"`, off}, {"", ` " 1 " `, on}, {"", `"false"`, off},
		{"", "", refused}, {"", "  \n", refused}, {"", "onn", refused}, {"", "2", refused},
		{"", "yes", refused}, {"", "1.0", refused}, {"", "o n", refused}, {"", "null", refused},
		{"", `{"state":"on"}`, refused}, {"", `"on`, refused}, {"", `["on"]`, refused},
		{"", "\u212Aon", refused}, {"", "on\x00", refused}, {"", "\xff", refused}, {"", big, refused},

		{"state", `{"state":"on"}`, on}, {"state", `{"state": true}`, on}, {"state", `{"state":0}`, off},
		{"state", `{"state":"OFF"}`, off}, {"state", `{"id":"c-17","state":1}`, on}, {"state", " {\"state\":\"1\"}\n", on},
		{"state", `{"state":false,"state":true}`, on}, // encoding/json: the last member wins
		{"state", "on", refused}, {"state", `{"State":"on"}`, refused}, {"state", `{"state":2}`, refused},
		{"state", `{"state":null}`, refused}, {"state", `{"state":{"v":1}}`, refused}, {"state", `{"other":1}`, refused},
		{"state", `{"state":"on"`, refused}, {"state", `{"state":1.0}`, refused}, {"state", `[{"state":1}]`, refused},
		{"state", `"on"`, refused}, {"state", "", refused},
	} {
		got, err := parseGPIOOutCommand([]byte(tc.payload), tc.field)
		res := off
		switch {
		case err != nil:
			res = refused
			if !errors.Is(err, ErrCommandRefused) {
				t.Errorf("field %q payload %q: error %v does not wrap ErrCommandRefused", tc.field, tc.payload, err)
			}
			if p := strings.TrimSpace(tc.payload); len(p) > 3 && strings.Contains(err.Error(), p) {
				t.Errorf("field %q payload %q: the refusal %q quotes the payload", tc.field, tc.payload, err)
			}
		case got:
			res = on
		}
		if res != tc.want {
			t.Errorf("field %q payload %q: %s (%v), want %s", tc.field, tc.payload, res, err, tc.want)
		}
	}
}

// TestGPIOOutCommands follows one driver through its life: safe state on
// start, commands, a refusal, shutdown and Halt, with active_low in one
// run and not in the other.
func TestGPIOOutCommands(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, activeLow := range []bool{false, true} {
		t.Run(fmt.Sprint("active_low=", activeLow), func(t *testing.T) {
			onLevel, offLevel := gpio.High, gpio.Low
			if activeLow {
				onLevel, offLevel = gpio.Low, gpio.High
			}
			r := newGPIOOutRig(t, GPIOOutOptions{ActiveLow: activeLow})
			r.pin.L = onLevel // whatever the line was: start makes it safe
			r.watch()
			if got := r.next(); got != "0 start" {
				t.Fatalf("first sample %q, want the safe state at start", got)
			}
			r.level(offLevel)

			r.command("on")
			if got := r.next(); got != "1 command" {
				t.Fatalf("after on: %q", got)
			}
			r.level(onLevel)

			// A refused command leaves the pin and the state alone.
			err := r.d.Command([]byte("maybe"))
			if !errors.Is(err, ErrCommandRefused) {
				t.Fatalf("Command(maybe) = %v, want ErrCommandRefused", err)
			}
			r.level(onLevel)
			st := r.d.commandStats()
			if st.Accepted != 1 || st.Refused != 1 || !strings.Contains(st.LastRefusal, "none of on, off") {
				t.Fatalf("command stats %+v", st)
			}

			// A command for the state the pin has reports nothing; the
			// next change is the next sample.
			r.command("1")
			r.command(`"off"`)
			if got := r.next(); got != "0 command" {
				t.Fatalf("after on, off: %q", got)
			}
			r.level(offLevel)

			r.command("true")
			if got := r.next(); got != "1 command" {
				t.Fatal(got)
			}
			r.now.add(time.Minute)
			if err := r.stop(); err != nil {
				t.Fatalf("Watch returned %v", err)
			}
			if got := r.next(); got != "0 shutdown" {
				t.Fatalf("last sample %q, want the safe state at shutdown", got)
			}
			r.level(offLevel)
			if len(r.timers.started) != 0 {
				t.Error("a timer was started without dead_man")
			}

			// Halt sets the safe state too, with no sample.
			r.pin.L = onLevel
			if err := r.d.Halt(); err != nil {
				t.Fatal(err)
			}
			r.level(offLevel)
			if len(r.events) != 0 {
				t.Errorf("Halt emitted %v", <-r.events)
			}
		})
	}
}

func TestGPIOOutSafeStateOn(t *testing.T) {
	defer goleak.VerifyNone(t)
	r := newGPIOOutRig(t, GPIOOutOptions{SafeState: "on", Field: "state"})
	r.watch()
	if got := r.next(); got != "1 start" {
		t.Fatal(got)
	}
	r.level(gpio.High)
	r.command(`{"state": "off", "by": "ops"}`)
	if got := r.next(); got != "0 command" {
		t.Fatal(got)
	}
	r.level(gpio.Low)
	if err := r.d.Command([]byte("on")); !errors.Is(err, ErrCommandRefused) {
		t.Fatalf("bare payload with field: %v", err)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if got := r.next(); got != "1 shutdown" {
		t.Fatal(got)
	}
	r.level(gpio.High)
}

func TestGPIOOutDeadMan(t *testing.T) {
	defer goleak.VerifyNone(t)
	r := newGPIOOutRig(t, GPIOOutOptions{DeadMan: 30 * time.Second})
	r.watch()
	if got := r.next(); got != "0 start" {
		t.Fatal(got)
	}
	r.command("on")
	if got := r.next(); got != "1 command" {
		t.Fatal(got)
	}
	t1 := r.timer()
	if t1.d != 30*time.Second {
		t.Fatalf("dead man's timer for %v, want 30s", t1.d)
	}
	// A heartbeat (same state) restarts the wait: the first timer is
	// stopped and a new one started; no sample.
	r.command("on")
	t2 := r.timer()
	if !t1.stopped.Load() {
		t.Fatal("the first timer was not stopped by the heartbeat")
	}
	// A refused command is no heartbeat.
	if err := r.d.Command([]byte("??")); err == nil {
		t.Fatal("accepted ??")
	}
	r.now.add(30 * time.Second)
	t2.c <- r.now.Now()
	if got := r.next(); got != "0 dead_man" {
		t.Fatalf("after the timer fired: %q", got)
	}
	r.level(gpio.Low)
	// Already safe: a command that keeps it off arms the timer, which
	// then has nothing to do.
	r.command("off")
	t3 := r.timer()
	t3.c <- r.now.Now()
	r.command("on")
	if got := r.next(); got != "1 command" {
		t.Fatalf("after off, timer, on: %q (the timer of an off state reported something)", got)
	}
	t4 := r.timer()
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if got := r.next(); got != "0 shutdown" {
		t.Fatal(got)
	}
	if !t4.stopped.Load() {
		t.Error("the running timer was not stopped at shutdown")
	}
	if len(r.timers.started) != 0 {
		t.Error("a timer was started after the last command")
	}
}

// TestGPIOOutCoalesces: a burst of commands while Watch is busy costs one
// mailbox slot, and Watch applies only the last of them.
func TestGPIOOutCoalesces(t *testing.T) {
	defer goleak.VerifyNone(t)
	r := newGPIOOutRig(t, GPIOOutOptions{})
	release := make(chan struct{})
	var once sync.Once
	r.emit = func(s Sample) {
		r.events <- s
		once.Do(func() { <-release }) // hold Watch in its first emit
	}
	r.watch()
	if got := r.next(); got != "0 start" {
		t.Fatal(got)
	}
	const n = 1000
	for i := range n {
		r.command([]string{"on", "off"}[i%2]) // ends with off
	}
	r.command("on")
	if st := r.d.commandStats(); st.Accepted != n+1 || st.Coalesced != n {
		t.Fatalf("command stats %+v, want %d accepted and %d coalesced", st, n+1, n)
	}
	close(release)
	if got := r.next(); got != "1 command" {
		t.Fatal(got)
	}
	// Nothing else of the burst is left: the next sample is the next
	// command's.
	r.command("off")
	if got := r.next(); got != "0 command" {
		t.Fatalf("after the burst: %q", got)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if got := r.next(); got != "0 shutdown" {
		t.Fatal(got)
	}
}

// TestGPIOOutCommandsConcurrent hammers Command from several goroutines
// while Watch applies them (for the race detector): the samples still
// tell a consistent story, each command sample a change from the one
// before.
func TestGPIOOutCommandsConcurrent(t *testing.T) {
	defer goleak.VerifyNone(t)
	r := newGPIOOutRig(t, GPIOOutOptions{})
	r.events = make(chan Sample, 10000)
	r.watch()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 500 {
				_ = r.d.Command([]byte([]string{"on", "off", "x"}[(g+i)%3]))
			}
		})
	}
	wg.Wait()
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	prev := r.next()
	if prev != "0 start" {
		t.Fatal(prev)
	}
	for len(r.events) > 0 {
		got := r.next()
		if got[0] == prev[0] && got != "0 shutdown" { // shutdown is always reported
			t.Fatalf("%q after %q: not a change", got, prev)
		}
		if !strings.HasSuffix(got, " command") && got != "0 shutdown" {
			t.Fatalf("sample %q", got)
		}
		prev = got
	}
	if prev != "0 shutdown" {
		t.Fatalf("last sample %q", prev)
	}
	r.level(gpio.Low)
	if st := r.d.commandStats(); st.Accepted+st.Refused != 2000 || st.Refused == 0 {
		t.Fatalf("command stats %+v", st)
	}
}

// inOnlyPin is a pin that cannot drive an output.
type inOnlyPin struct{ gpio.PinIn }

func TestGPIOOutPinErrors(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, tc := range []struct {
		name string
		pin  func(string) (gpio.PinIn, error)
		want string
	}{
		{"missing", func(string) (gpio.PinIn, error) { return nil, errors.New("no such pin") }, `pin "GPIO23": no such pin`},
		{"nil", func(string) (gpio.PinIn, error) { return nil, nil }, `pin "GPIO23": not found`},
		{"input only", func(string) (gpio.PinIn, error) { return inOnlyPin{&gpiotest.Pin{N: "GPIO23"}}, nil }, "cannot drive an output"},
		{"no pins", nil, "no GPIO pins"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Construction never opens the pin: a pin that is not there
			// yet fails Watch, which the Scheduler retries.
			it, err := New(Spec{Name: "relay", Kind: "gpio_out", Options: &GPIOOutOptions{Pin: "GPIO23"}}, Env{Pin: tc.pin})
			if err != nil {
				t.Fatal(err)
			}
			err = it.Watcher().Watch(context.Background(), func(s Sample) { t.Errorf("emitted %+v", s) })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Watch = %v, want %q", err, tc.want)
			}
			if err := it.Watcher().Halt(); err == nil {
				t.Error("Halt on a pin that does not open = nil")
			}
		})
	}
}

func TestGPIOOutOptions(t *testing.T) {
	ok := GPIOOutOptions{Pin: "GPIO23"}
	for _, tc := range []struct {
		name string
		spec Spec
		opts GPIOOutOptions
		key  string // "": valid
		msg  string
	}{
		{"defaults", Spec{}, ok, "", ""},
		{"everything", Spec{}, GPIOOutOptions{Pin: "P1_16", ActiveLow: true, SafeState: "on", CommandTopic: "cmd/pump",
			Field: "state", DeadMan: time.Minute}, "", ""},
		{"no pin", Spec{}, GPIOOutOptions{}, "options.pin", `option "pin" is required`},
		{"bad pin name", Spec{}, GPIOOutOptions{Pin: "GPIO 17"}, "options.pin", `option "pin" is "GPIO 17"`},
		{"bad safe_state", Spec{}, GPIOOutOptions{Pin: "GPIO23", SafeState: "closed"}, "options.safe_state", "want off or on"},
		{"negative dead_man", Spec{}, GPIOOutOptions{Pin: "GPIO23", DeadMan: -time.Second}, "options.dead_man", "-1s"},
		{"wildcard topic", Spec{}, GPIOOutOptions{Pin: "GPIO23", CommandTopic: "cmd/+/set"}, "options.command_topic", "wildcards"},
		{"$ topic", Spec{}, GPIOOutOptions{Pin: "GPIO23", CommandTopic: "$SYS/x"}, "options.command_topic", "broker's own"},
		{"field not UTF-8", Spec{}, GPIOOutOptions{Pin: "GPIO23", Field: "\xff"}, "options.field", "UTF-8"},
		{"interval", Spec{Interval: time.Second}, ok, "interval", "does not apply"},
		{"bus", Spec{Bus: "1"}, ok, "bus", "does not apply"},
		{"address", Spec{Address: 0x20}, ok, "address", "does not apply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec
			spec.Name, spec.Kind, spec.Options = "relay", "gpio_out", &tc.opts
			k, _ := Lookup("gpio_out")
			// What the config loader does (SetDefaults, Validate,
			// CheckSpec) and what New does must agree.
			o := tc.opts
			o.SetDefaults()
			checkErr := o.Validate()
			if checkErr == nil {
				checkErr = k.CheckSpec(spec)
			}
			_, newErr := New(spec, Env{})
			for _, err := range []error{checkErr, newErr} {
				if tc.key == "" {
					if err != nil {
						t.Fatalf("valid options refused: %v", err)
					}
					continue
				}
				oe := (*OptionError)(nil)
				if !errors.As(err, &oe) || oe.Key != tc.key || !errors.Is(err, ErrOption) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("error %v (key %v), want key %s and %q", err, oe, tc.key, tc.msg)
				}
			}
		})
	}
	it, err := New(Spec{Name: "pump", Kind: "gpio_out", Options: &ok}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	if got := it.Actuator().CommandTopic(); got != "actuators/pump/set" {
		t.Errorf("default command topic %q", got)
	}
	if _, err := New(Spec{Name: "a+b", Kind: "gpio_out", Options: &ok}, Env{}); err == nil {
		t.Error("a name that makes a bad default topic was accepted")
	}
	if k, _ := Lookup("gpio_out"); !k.Watches() {
		t.Error("gpio_out is not a watched kind")
	}
	if (Item{}).Actuator() != nil {
		t.Error("the zero Item is an Actuator")
	}
}

// TestGPIOOutScheduler runs the driver under the real Scheduler: its
// samples reach Emit, including the shutdown report, which Emit gets
// after Run's context ended with a context that is still live; the
// Scheduler halts it and reports its command counters.
func TestGPIOOutScheduler(t *testing.T) {
	defer goleak.VerifyNone(t)
	r := newGPIOOutRig(t, GPIOOutOptions{})
	type emitted struct {
		cause  string
		state  float64
		ctxErr error
	}
	got := make(chan emitted, 10)
	it := WatchItem(Spec{Name: "relay", Kind: "gpio_out"}, r.d)
	s := NewScheduler([]Item{it}, SchedulerConfig{
		Emit: func(ctx context.Context, _ Spec, smp Sample) {
			got <- emitted{smp.Labels["cause"], smp.Readings[0].Value, ctx.Err()}
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	wait := func() emitted {
		t.Helper()
		select {
		case e := <-got:
			return e
		case <-time.After(5 * time.Second):
			t.Fatal("nothing emitted")
			return emitted{}
		}
	}
	if e := wait(); e.cause != CauseStart || e.state != 0 {
		t.Fatalf("first %+v", e)
	}
	r.command("on")
	if e := wait(); e.cause != CauseCommand || e.state != 1 {
		t.Fatalf("then %+v", e)
	}
	r.level(gpio.High)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	if e := wait(); e.cause != CauseStop || e.state != 0 || e.ctxErr != nil {
		t.Fatalf("last %+v, want the shutdown report with a live context", e)
	}
	r.level(gpio.Low)
	st := s.Stats()[0]
	if st.Reads != 3 || st.Commands == nil || st.Commands.Accepted != 1 {
		t.Fatalf("stats %+v (commands %+v)", st, st.Commands)
	}
}

// refusalRE is every refusal parseGPIOOutCommand may give (field "state"
// or none): fixed texts around the option's name and the payload's
// length, never the payload.
var refusalRE = regexp.MustCompile(`^drivers: command refused: (payload of \d+ bytes, more than 4096|empty payload|` +
	`payload is none of on, off, 1, 0, true or false \(as text or a JSON string\)|` +
	`payload is not a JSON object \(option field is "state"\)|JSON object has no member "state"|` +
	`member "state" is none of on, off, 1, 0, true or false \(a JSON boolean, 0, 1 or a string\))$`)

// FuzzGPIOOutCommand: no payload panics the parser, a refusal is one of
// the fixed texts, and an accepted payload is one of the documented forms.
func FuzzGPIOOutCommand(f *testing.F) {
	for _, s := range []string{"on", "OFF", " 1\n", `"on"`, `{"state":true}`, `{"state":"0"}`, `{"state":`, "\xff", ""} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, payload []byte, withField bool) {
		field := ""
		if withField {
			field = "state"
		}
		on, err := parseGPIOOutCommand(payload, field)
		if err != nil {
			if !errors.Is(err, ErrCommandRefused) || !refusalRE.MatchString(err.Error()) {
				t.Fatalf("refusal %q", err)
			}
			return
		}
		if len(payload) > gpioOutMaxPayload {
			t.Fatalf("accepted %d bytes", len(payload))
		}
		if !withField {
			p := strings.TrimSpace(string(payload))
			if strings.HasPrefix(p, `"`) {
				if err := json.Unmarshal([]byte(p), &p); err != nil {
					t.Fatalf("accepted %q, not a JSON string: %v", payload, err)
				}
				p = strings.TrimSpace(p)
			}
			if want, ok := gpioOutWords[strings.ToLower(p)]; !ok || want != on || len(p) > 5 {
				t.Fatalf("accepted %q as %v", payload, on)
			}
		}
	})
}

// recordingPin is a gpiotest.Pin that records every level written, so a
// test sees a glitch that a later write hid.
type recordingPin struct {
	*gpiotest.Pin
	mu     sync.Mutex
	writes []gpio.Level
}

func (p *recordingPin) Out(l gpio.Level) error {
	p.mu.Lock()
	p.writes = append(p.writes, l)
	p.mu.Unlock()
	return p.Pin.Out(l)
}

func (p *recordingPin) written() []gpio.Level {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]gpio.Level(nil), p.writes...)
}

// TestGPIOOutHandOver: across a reload that keeps the relay's settings
// the output is handed over: the old driver leaves the pin on, the new
// one starts on (cause reload) with what was left of the dead man's wait,
// and the pin is never driven to the safe state in between. A new
// configuration that drives the pin otherwise is no hand-over: the old
// driver goes safe as before.
func TestGPIOOutHandOver(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("same settings", func(t *testing.T) {
		old := newGPIOOutRig(t, GPIOOutOptions{DeadMan: time.Minute})
		rec := &recordingPin{Pin: old.pin}
		env := old.env()
		env.Pin = func(string) (gpio.PinIn, error) { return rec, nil }
		old.d.lookup = env.Pin
		old.watch()
		if got := old.next(); got != "0 start" {
			t.Fatal(got)
		}
		old.command("on")
		if got := old.next(); got != "1 command" {
			t.Fatal(got)
		}
		old.timer()
		old.now.add(20 * time.Second)

		it, err := New(Spec{Name: "relay", Kind: "gpio_out", Options: &GPIOOutOptions{Pin: "GPIO23", DeadMan: time.Minute}}, env)
		if err != nil {
			t.Fatal(err)
		}
		next := it.Actuator().(*gpioOut)
		next.timer = old.timers.start
		if !old.d.HandOverTo(next) {
			t.Fatal("HandOverTo refused the same settings")
		}
		if err := old.stop(); err != nil {
			t.Fatal(err)
		}
		if err := old.d.Halt(); err != nil {
			t.Fatal(err)
		}
		old.level(gpio.High)
		if len(old.events) != 0 {
			t.Fatalf("the old driver reported %v on hand-over", <-old.events)
		}

		nr := &gpioOutRig{t: t, pin: old.pin, now: old.now, timers: old.timers, d: next, events: make(chan Sample, 10)}
		nr.emit = func(s Sample) { nr.events <- s }
		nr.watch()
		if got := nr.next(); got != "1 reload" {
			t.Fatalf("new driver's first sample %q, want the state it took over", got)
		}
		if tm := nr.timer(); tm.d != 40*time.Second {
			t.Fatalf("dead man's wait resumed at %v, want the 40s left", tm.d)
		}
		for i, l := range rec.written() {
			if i > 0 && l == gpio.Low {
				t.Fatalf("the pin was driven low during the hand-over: writes %v", rec.written())
			}
		}
		if err := nr.stop(); err != nil {
			t.Fatal(err)
		}
		if got := nr.next(); got != "0 shutdown" {
			t.Fatalf("after the hand-over a shutdown is safe again: %q", got)
		}
		nr.level(gpio.Low)
	})
	t.Run("other settings", func(t *testing.T) {
		old := newGPIOOutRig(t, GPIOOutOptions{})
		old.watch()
		old.next()
		old.command("on")
		old.next()
		for _, o := range []GPIOOutOptions{{Pin: "GPIO24"}, {Pin: "GPIO23", ActiveLow: true}, {Pin: "GPIO23", SafeState: "on"}, {Pin: "GPIO23", DeadMan: time.Second}} {
			it, err := New(Spec{Name: "relay", Kind: "gpio_out", Options: &o}, old.env())
			if err != nil {
				t.Fatal(err)
			}
			if old.d.HandOverTo(it.Actuator()) {
				t.Fatalf("HandOverTo took %+v", o)
			}
		}
		if err := old.stop(); err != nil {
			t.Fatal(err)
		}
		if got := old.next(); got != "0 shutdown" {
			t.Fatal(got)
		}
		old.level(gpio.Low)
	})
	t.Run("predecessor not running", func(t *testing.T) {
		// The old driver's Watch had failed (its pin gone): nothing to
		// take over, the new one starts safe.
		old := newGPIOOutRig(t, GPIOOutOptions{})
		next := newGPIOOutRig(t, GPIOOutOptions{})
		if !old.d.HandOverTo(next.d) {
			t.Fatal("refused")
		}
		next.pin.L = gpio.High
		next.watch()
		if got := next.next(); got != "0 start" {
			t.Fatal(got)
		}
		next.level(gpio.Low)
		if err := next.stop(); err != nil {
			t.Fatal(err)
		}
	})
}
