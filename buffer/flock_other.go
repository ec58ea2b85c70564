//go:build !unix

package buffer

import (
	"os"
	"time"
)

// lockShared is a no-op where flock does not exist; bbolt's open still
// locks the file.
func lockShared(*os.File, time.Duration) error { return nil }
