package buffer

import "time"

// observeCommit reports one successful commit to Options.OnCommit. It is
// a method of its own so the commit loop calls it in one line, and so the
// hook costs one nil check when unset.
func (l *Log) observeCommit(events int, took time.Duration) {
	if l.opts.OnCommit != nil {
		l.opts.OnCommit(events, took)
	}
}

// Running reports whether the commit loop (Run) is running: only then are
// appends written and acknowledged. It is false before Run starts and
// after it returns.
func (l *Log) Running() bool { return l.running.Load() }
