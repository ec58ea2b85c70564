// Package drivers reads the sensors wired to the gateway's own board (I2C,
// 1-Wire, GPIO) into the same durable path as MQTT events.
//
// A driver is one file: a constructor registered by kind, returning a
// Poller (read on an interval by the Scheduler) or a Watcher (edge
// triggered, runs until cancelled). Drivers take buses from an Env and
// never close them: the caller owns the buses (periph's convention); only
// cmd opens real hardware (periph.io/x/host), tests pass periph's
// i2ctest.Playback, onewiretest and gpiotest fakes.
//
// Concurrency: the Scheduler runs each driver in its own goroutine, so a
// sensor that hangs or fails delays no other; a driver's methods are never
// called concurrently with themselves. Scheduler.Run returns after every
// goroutine it started has ended, except a Read that ignores its context:
// Run gives it a grace period, then returns, and that call's goroutine
// ends when the Read does (a driver should honour ctx).
package drivers
