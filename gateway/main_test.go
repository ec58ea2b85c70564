package gateway_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Whoever starts a goroutine stops it: after all tests no gateway, broker,
// buffer or uplink goroutine may be left.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
