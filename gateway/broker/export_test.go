package broker

import "time"

// Covers exposes covers to the external tests.
var Covers = covers

// SetConnectTimeout shortens the CONNECT deadline for a test; the returned
// function restores it.
func SetConnectTimeout(d time.Duration) (restore func()) {
	old := connectTimeout
	connectTimeout = d
	return func() { connectTimeout = old }
}
