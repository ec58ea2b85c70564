//go:build !linux || !(amd64 || arm64)

package lazyfs

import (
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"time"
)

// BlockSize is the unit lazyfs saves, restores and loses unsynced data in.
const BlockSize = 4096

// Stats counts what went through a mount and what its power cut lost.
type Stats struct {
	Writes, BytesWritten, SizeChanges, Fsyncs, DirFsyncs, FsyncsFailed, Creates int64
	ChangesFailed                                                               int64
	UnsyncedFiles                                                               int
	UnsyncedBlocks                                                              int64
	Cut                                                                         bool
	CutFiles                                                                    int
	CutBytes, CutBlocks, CutKept                                                int64
	CutRemoved                                                                  int
	CutDetached                                                                 bool
}

// Fault is a storage fault SetFault injects (see the Linux version).
type Fault struct{ Write, Fsync syscall.Errno }

// FS is a mounted lazyfs; lazyfs is implemented on 64-bit Linux only
// (go-fuse v2.12.1 does not build for 32-bit ARM).
type FS struct{ backing, mountpoint string }

var errUnsupported = fmt.Errorf("lazyfs: not implemented on %s/%s: %w", runtime.GOOS, runtime.GOARCH, errors.ErrUnsupported)

// Mount fails: lazyfs is implemented on 64-bit Linux only.
func Mount(backing, mountpoint string) (*FS, error) { return nil, errUnsupported }

func (l *FS) Backing() string                                { return l.backing }
func (l *FS) Mountpoint() string                             { return l.mountpoint }
func (l *FS) SetSyncDelay(d time.Duration)                   {}
func (l *FS) SetFault(f Fault)                               {}
func (l *FS) Fault() Fault                                   { return Fault{} }
func (l *FS) Stats() Stats                                   { return Stats{} }
func (l *FS) PowerCut() error                                { return errUnsupported }
func (l *FS) PowerCutRandom(keep float64, seed uint64) error { return errUnsupported }
func (l *FS) Unmount() error                                 { return errUnsupported }
