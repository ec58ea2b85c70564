package buffer

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Link usage: what a link (the uplink) has carried in its current budget
// period, for the uplink's data budget (uplink.BudgetStore). It is kept
// in the file under meta/usage/<link>: the period's start (Unix seconds,
// 8 bytes) and its bytes (8). SaveUsage, like Ack, does not wait: the
// next commit writes the latest value (one that appends, or one after
// Options.AckInterval when nothing is appended), so a crash loses at most
// the usage saved since the last commit, at most AckInterval of it while
// commits succeed.

const usagePrefix = "usage/"

const usageLen = 16

// linkUsage is one link's usage in one period.
type linkUsage struct {
	start int64
	bytes uint64
}

// SaveUsage records that link has carried bytes in the budget period
// starting at periodStart (Unix seconds). It does not wait for a commit.
func (l *Log) SaveUsage(link string, periodStart int64, bytes uint64) error {
	select {
	case <-l.stopped:
		return ErrClosed
	default:
	}
	l.mu.Lock()
	if l.usage == nil {
		l.usage = map[string]linkUsage{}
	}
	l.usage[link] = linkUsage{periodStart, bytes}
	l.mu.Unlock()
	select {
	case l.acked <- struct{}{}:
	default:
	}
	return nil
}

// LoadUsage returns the usage last saved for link, committed or not:
// its period's start (Unix seconds) and bytes; zeros when none was saved.
func (l *Log) LoadUsage(link string) (periodStart int64, bytes uint64, err error) {
	l.mu.Lock()
	u, ok := l.usage[link]
	if !ok {
		u, ok = l.usageTx[link]
	}
	l.mu.Unlock()
	if ok {
		return u.start, u.bytes, nil
	}
	err = l.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bktMeta)
		if b == nil {
			return nil
		}
		v := b.Get([]byte(usagePrefix + link))
		if v == nil {
			return nil
		}
		if len(v) != usageLen {
			return fmt.Errorf("%w: usage of %q is %d bytes, not %d", ErrCorrupt, link, len(v), usageLen)
		}
		u = linkUsage{int64(binary.BigEndian.Uint64(v)), binary.BigEndian.Uint64(v[8:])}
		return nil
	})
	return u.start, u.bytes, err
}

// writeUsage stores the usage a commit took in its transaction.
func writeUsage(tx *bolt.Tx, usage map[string]linkUsage) error {
	if len(usage) == 0 {
		return nil
	}
	b, err := tx.CreateBucketIfNotExists(bktMeta)
	if err != nil {
		return err
	}
	for link, u := range usage {
		var v [usageLen]byte
		binary.BigEndian.PutUint64(v[:], uint64(u.start))
		binary.BigEndian.PutUint64(v[8:], u.bytes)
		if err := b.Put([]byte(usagePrefix+link), v[:]); err != nil {
			return err
		}
	}
	return nil
}
