package buffer

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"
)

// The epoch names one buffer file: a random 64-bit id created with the
// file and stored in it (meta/epoch, 8 bytes), so offsets, which are
// only unique within a file, are unique with it. A file set aside as
// corrupt is replaced by a new one with a new epoch, which tells the
// cloud that the offsets started over. A file written before epochs
// gets one at its first open and keeps it.
var (
	bktMeta  = []byte("meta")
	keyEpoch = []byte("epoch")
)

const epochLen = 8

// loadEpoch reads the file's epoch, drawing and storing one if the file
// has none (or one that is not 8 bytes: an epoch nobody can have seen
// intact). A failure to draw wraps errNoEpoch: the randomness failed, not
// the file.
func (l *Log) loadEpoch(tx *bolt.Tx) error {
	b, err := tx.CreateBucketIfNotExists(bktMeta)
	if err != nil {
		return err
	}
	v := b.Get(keyEpoch)
	if len(v) == epochLen {
		l.epoch = hex.EncodeToString(v)
		return nil
	}
	if v != nil {
		l.logger.Warn("buffer epoch record malformed: a new epoch starts", "path", l.path, "bytes", len(v))
	}
	r := l.opts.Rand
	if r == nil {
		r = rand.Reader
	}
	e := make([]byte, epochLen)
	if _, err := io.ReadFull(r, e); err != nil {
		return fmt.Errorf("%w: %w", errNoEpoch, err)
	}
	l.epoch = hex.EncodeToString(e)
	return b.Put(keyEpoch, e)
}

// Epoch returns the buffer file's epoch: 16 lowercase hex digits, the
// same for the life of the file (across restarts), different for a new
// file, such as the one that replaces a quarantined file. A stream's
// offsets are contiguous and never reused within an epoch.
func (l *Log) Epoch() string { return l.epoch }
