package gateway_test

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// Whoever starts a goroutine stops it: after all tests no gateway, broker,
// buffer or uplink goroutine may be left. The ferry binary built for the
// subprocess tests (buildFerry) is removed afterwards.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if ferryBin != "" {
			_ = os.RemoveAll(filepath.Dir(ferryBin))
		}
		os.Exit(code)
	}))
}
