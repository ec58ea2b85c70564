package gateway

import "time"

// SetStatusIdleTimeout shortens the status listener's idle timeout for
// gateways created afterwards; the returned func restores it.
func SetStatusIdleTimeout(d time.Duration) (restore func()) {
	old := statusIdleTimeout
	statusIdleTimeout = d
	return func() { statusIdleTimeout = old }
}

// SetSSEMaxLifetime shortens the status page streams' lifetime for
// gateways created afterwards; the returned func restores it.
func SetSSEMaxLifetime(d time.Duration) (restore func()) {
	old := sseMaxLifetime
	sseMaxLifetime = d
	return func() { sseMaxLifetime = old }
}
