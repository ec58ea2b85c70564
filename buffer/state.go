package buffer

import (
	"fmt"
	"os"
	"strings"

	"github.com/ferrygw/ferry/internal/durable"
)

// The state file (<path>.state) records how the log was last left:
// "clean" after Close, "running <boot id> sync|nosync" while it runs,
// "damaged" after bbolt panicked in a commit. bbolt keeps its file
// consistent across a power cut only when every commit is fsynced: with
// DurabilityNone a cut can leave pages of a commit without its meta page,
// or a freelist that hands out live pages, which bbolt does not notice at
// Open and panics on later (found by gateway.TestPowerCut). So Open checks
// every page (bbolt's tx.Check) when the file was left running without
// fsync by another boot of the machine (a power cut or an OS crash; a
// killed process leaves the page cache, and so the file, intact), or was
// left damaged, and treats a failure as ErrCorrupt.

const (
	stateClean   = "clean"
	stateRunning = "running"
	stateDamaged = "damaged"
)

func (l *Log) statePath() string { return l.path + ".state" }

// checkDue says why Open must check every page, or "" if it need not.
func (l *Log) checkDue() string {
	b, err := os.ReadFile(l.statePath())
	if err != nil {
		return "" // a new file, or one from before the state file
	}
	f := strings.Fields(string(b))
	switch {
	case len(f) == 0:
		return ""
	case f[0] == stateDamaged:
		return "bbolt failed on the file while it ran"
	case f[0] == stateRunning && len(f) == 3 && f[2] == "nosync" && (l.opts.BootID == "" || f[1] != l.opts.BootID):
		return "left open without fsync when the machine went down"
	}
	return ""
}

// setState replaces the state file durably.
func (l *Log) setState(state string) {
	if err := durable.WriteFile(l.statePath(), state+"\n"); err != nil {
		l.logger.Warn("buffer state file not written", "path", l.statePath(), "err", err)
	}
}

func (l *Log) runningState() string {
	boot, mode := l.opts.BootID, "sync"
	if boot == "" {
		boot = "unknown"
	}
	if l.opts.Durability == DurabilityNone {
		mode = "nosync"
	}
	return stateRunning + " " + boot + " " + mode
}

// errDamaged wraps a bbolt panic in a commit.
func errDamaged(p any) error {
	return fmt.Errorf("%w: bbolt failed in a commit: %v", ErrCorrupt, p)
}
