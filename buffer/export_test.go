package buffer

// Queued returns how many appends and updates wait for the commit loop,
// so a test can hold the loop and know every request of its group is
// queued before releasing it (they then share one commit).
func (l *Log) Queued() int { return len(l.reqs) }
