//go:build !unix

package gateway

import "errors"

// statFileSystem cannot measure file systems here: the disk checks are
// skipped.
func statFileSystem(string) (FSUsage, error) {
	return FSUsage{}, errors.New("gateway: statfs not supported on this system")
}
