package buffer

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/ferrygw/ferry/internal/keyring"
	bolt "go.etcd.io/bbolt"
)

// Encryption at rest (Options.Keys). Event values are sealed with the
// stream name as associated data and state values with "state/"+name, so
// a value moved to another stream or state key fails to open instead of
// being read as someone else's. Keys, offsets, metadata and counters stay
// in the clear: they are needed without the key (Open, Stats) and say
// nothing about the events' contents.

const stateAADPrefix = "state/"

// wrongKeyError is an ErrWrongKey with a message that stands alone.
type wrongKeyError struct{ msg string }

func (e *wrongKeyError) Error() string { return e.msg }
func (e *wrongKeyError) Unwrap() error { return ErrWrongKey }

// wrongKey describes a sealed value of a stream's events or of a state
// entry (kind "stream" or "state") that keys cannot open.
func wrongKey(keys *keyring.Ring, kind, name string, v []byte) error {
	what := fmt.Sprintf("stream %q holds events", name)
	if kind == "state" {
		what = fmt.Sprintf("state %q is", name)
	}
	id, _ := keyring.KeyID(v)
	if keys == nil {
		return &wrongKeyError{fmt.Sprintf("buffer: %s sealed with key %s, but no key file is configured: the buffer is encrypted; configure buffer.encryption.key_file", what, id)}
	}
	return &wrongKeyError{fmt.Sprintf("buffer: %s sealed with key %s, which is not in %s", what, id, keys.Path())}
}

// checkKey returns an ErrWrongKey error when v is sealed with a key that
// keys lacks (or keys is nil). It only reads the key id: a value sealed
// with a known key that fails to open is a damaged record, which Read
// skips, not a reason to refuse the whole file.
func checkKey(keys *keyring.Ring, v []byte, kind, name string) error {
	id, ok := keyring.KeyID(v)
	if !ok || (keys != nil && keys.Has(id)) {
		return nil
	}
	return wrongKey(keys, kind, name, v)
}

// sealValue returns val sealed with aad prefix+name, or val itself
// without keys. The aad and the sealed value share one allocation (the
// aad bytes ride in front of the value until the commit is done with it):
// this runs once per event.
func sealValue(keys *keyring.Ring, val []byte, prefix, name string) []byte {
	if keys == nil {
		return val
	}
	n := len(prefix) + len(name)
	buf := make([]byte, 0, n+keyring.Overhead+len(val))
	buf = append(append(buf, prefix...), name...)
	return keys.Seal(buf[n:n], val, buf[:n])
}

// openValue returns v in the clear: v itself when it was stored in the
// clear, else its plaintext appended to dst. The error wraps ErrWrongKey
// when keys cannot open v (another or no key file), keyring.ErrDecrypt
// when v is damaged.
func openValue(keys *keyring.Ring, dst, v, aad []byte, kind, name string) ([]byte, error) {
	if !keyring.IsSealed(v) {
		return v, nil
	}
	if keys == nil {
		if err := checkKey(nil, v, kind, name); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: sealed value truncated to %d bytes", keyring.ErrDecrypt, len(v))
	}
	out, err := keys.Open(dst, v, aad)
	if errors.Is(err, keyring.ErrUnknownKey) {
		return nil, wrongKey(keys, kind, name, v)
	}
	return out, err
}

// checkKeys is Open's look at the file: the oldest and the newest event of
// each stream, and every state value, must be sealed with a key of the
// ring (or not at all). Checking both ends of a stream catches both a key
// removed too early (oldest) and a key file replaced by another (newest)
// at the cost of two seeks per stream, without reading the backlog.
func (l *Log) checkKeys(tx *bolt.Tx) error {
	keys := l.opts.Keys
	if root := tx.Bucket(bktStreams); root != nil {
		err := root.ForEachBucket(func(name []byte) error {
			eb := root.Bucket(name).Bucket(bktEvents)
			if eb == nil {
				return nil
			}
			c := eb.Cursor()
			_, oldest := c.First()
			_, newest := c.Last()
			if err := checkKey(keys, oldest, "stream", string(name)); err != nil {
				return err
			}
			return checkKey(keys, newest, "stream", string(name))
		})
		if err != nil {
			return err
		}
	}
	return l.sealState(tx)
}

// sealState checks every state value's key, and with keys re-seals the
// values written in the clear or under an older key with the active key.
// State entries are few and small, and an entry nobody rewrites any more
// (a pipeline removed from the config) would otherwise keep an old key
// needed, or stay in the clear, for good.
func (l *Log) sealState(tx *bolt.Tx) error {
	b := tx.Bucket(bktState)
	if b == nil {
		return nil
	}
	keys := l.opts.Keys
	var puts [][2][]byte // bbolt forbids writes inside ForEach
	err := b.ForEach(func(k, v []byte) error {
		name := string(k)
		if err := checkKey(keys, v, "state", name); err != nil {
			return err
		}
		if keys == nil {
			return nil
		}
		if id, ok := keyring.KeyID(v); ok && id == keys.ActiveID() {
			return nil
		}
		plain, err := openValue(keys, nil, v, []byte(stateAADPrefix+name), "state", name)
		if err != nil {
			l.logger.Error("buffer state value unreadable: left as it is", "state", name, "err", err)
			return nil
		}
		puts = append(puts, [2][]byte{bytes.Clone(k), sealValue(keys, plain, stateAADPrefix, name)})
		return nil
	})
	if err != nil {
		return err
	}
	for _, p := range puts {
		if err := b.Put(p[0], p[1]); err != nil {
			return err
		}
	}
	if len(puts) > 0 {
		l.logger.Info("buffer state sealed with the active key", "values", len(puts), "key", keys.ActiveID())
	}
	return nil
}
