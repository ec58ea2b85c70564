// Package drivers reads the sensors wired to the gateway's own board (I2C,
// 1-Wire, GPIO) into the same durable path as MQTT events, and drives its
// outputs (relays, LEDs, valves on GPIO pins) from commands.
//
// # Kinds and options
//
// Kinds is the explicit table of every kind of driver (no registration at
// init time): each Kind has a name, an options type and a constructor.
// A kind's options are a struct of its own, defined next to its driver
// (BME280Options, SHT3xOptions, ADS1115Options, DS18B20Options,
// GPIOOptions, GPIOOutOptions, CounterOptions, SimOptions), with yaml tags, SetDefaults
// and a Validate that returns an *OptionError naming the config key. The
// config loader decodes a driver's options mapping into the type
// Kind.NewOptions returns, so a key the kind does not take is an unknown
// key there; constructors default and validate their copy again, so New
// is safe to call directly.
//
// # Interfaces
//
// Every driver is a Driver (Halt) and either a Poller, read on an
// interval by the Scheduler (Read takes one measurement), or a Watcher,
// edge triggered (Watch runs until its context ends, emitting a Sample
// per change). New returns an Item, the typed pair the Scheduler runs;
// Retrying wraps a driver whose construction failed for a reason that may
// pass (the bus or chip is not there yet) and builds it again on each
// call until that succeeds. An Actuator (kind gpio_out) is a Watcher that
// also takes commands (Command), which the gateway hands it from a topic
// of its embedded broker (CommandTopic); its Watch applies them to the
// pin and reports the states it sets as Samples.
//
// Halt has periph's conn.Resource meaning: stop what the driver is doing
// and leave the hardware in a safe state. The input pin drivers switch
// edge detection off; gpio_out sets its pin to its safe state; the I2C and
// 1-Wire drivers have nothing running between reads (each documents why).
//
// # Buses
//
// Drivers take buses from an Env and never close them: the caller owns
// the buses (periph's convention); only cmd opens real hardware
// (periph.io/x/host), tests pass periph's i2ctest.Playback, onewiretest
// and gpiotest fakes.
//
// # Concurrency and ordering
//
// The Scheduler runs each driver in its own goroutine, so a sensor that
// hangs or fails delays no other; a driver's methods are never called
// concurrently with themselves or with each other: each Read or Watch
// runs in a goroutine of its own, one at a time per driver, and at most
// once Halt, after the last of them has returned (a driver whose call was
// abandoned at shutdown is not halted, since Halt would race that call).
// Emit and Status are called from the drivers' goroutines, so
// concurrently for different drivers, in each driver's order, and never
// after Run returns (an Actuator's shutdown report, emitted as its Watch
// ends, is stored before Run returns). Actuator.Command is called from any
// goroutine (the broker's, for the gateway), concurrently with everything
// else; it never blocks: it leaves the latest command in a one-slot
// mailbox that the driver's Watch takes, so a burst of commands coalesces
// into the last one, applied in the order of acceptance. Scheduler.Run returns after every goroutine it
// started has ended, except a Read that ignores its context: Run gives it
// a grace period, then returns, and that call's goroutine ends when the
// Read does (a driver should honour ctx).
package drivers
