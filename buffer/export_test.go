package buffer

// Queued returns how many appends and updates wait for the commit loop,
// so a test can hold the loop and know every request of its group is
// queued before releasing it (they then share one commit).
func (l *Log) Queued() int { return len(l.reqs) }

// WithSyncFreelist returns o with bbolt's freelist written by every
// commit, as before NoFreelistSync (BenchmarkWear's before rows).
func WithSyncFreelist(o Options) Options { o.syncFreelist = true; return o }

// FreelistInFile reports whether the file's current meta page points at a
// freelist written by the last commit.
var FreelistInFile = freelistInFile
