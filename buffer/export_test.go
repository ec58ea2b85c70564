package buffer

import (
	"encoding/binary"
	"errors"
	"os"
)

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

// MakeCycle points the first bucket element with a page of its own, in
// the root bucket's page, back at that page: a tree with a cycle, as a
// damaged card may leave. It reports false when there is none to bend.
func MakeCycle(path string) (bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	m, ok := readMeta(f)
	if !ok {
		return false, errors.New("no meta")
	}
	ps := int64(m.pageSize)
	p := make([]byte, ps)
	if _, err := f.ReadAt(p, int64(m.root)*ps); err != nil {
		return false, err
	}
	le := binary.LittleEndian
	count := int(le.Uint16(p[10:]))
	for i := range count {
		e := pageHeader + i*elemSize
		if le.Uint16(p[8:])&leafPageFlag == 0 || le.Uint32(p[e:])&bucketLeafFlag == 0 {
			continue
		}
		pos, ksize := int(le.Uint32(p[e+4:])), int(le.Uint32(p[e+8:]))
		v := e + pos + ksize
		if le.Uint64(p[v:]) == 0 {
			continue // inline
		}
		le.PutUint64(p[v:], m.root)
		_, err := f.WriteAt(p, int64(m.root)*ps)
		return true, err
	}
	return false, nil
}

// SetMaxGapRecords bounds the drop records of a stream to n until the
// returned function restores the bound (tests of coarsening).
func SetMaxGapRecords(n int) (restore func()) {
	old := maxGapRecords
	maxGapRecords = n
	return func() { maxGapRecords = old }
}

// GapRecords returns how many drop records stream has.
func (l *Log) GapRecords(stream string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.streams[stream]; ok {
		return s.gaps.n
	}
	return 0
}

// UsagePending reports whether a saved usage waits for a commit.
func (l *Log) UsagePending() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.usage) > 0 || len(l.usageTx) > 0
}
