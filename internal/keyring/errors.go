package keyring

import (
	"errors"
	"fmt"
)

// Errors returned by Load, Generate and Ring.Open; check them with
// errors.Is. The error values returned carry a complete message for the
// operator (which file, which line, which key id, what to do); these
// sentinels only classify them.
var (
	// ErrKeyFilePerms: the key file is accessible by group or others
	// (mode&0o077 != 0) or is not owned by the effective uid. A key
	// anyone else on the board can read protects nothing.
	ErrKeyFilePerms = errors.New("keyring: key file permissions too open")

	// ErrNoKeys: the key file holds no key.
	ErrNoKeys = errors.New("keyring: no keys")

	// ErrBadKeyFile: the key file does not parse; the message names the
	// line.
	ErrBadKeyFile = errors.New("keyring: bad key file")

	// ErrUnknownKey: the data was sealed with a key whose id is not in the
	// ring (the key was removed from the file, or this is another file).
	ErrUnknownKey = errors.New("keyring: unknown key")

	// ErrDecrypt: authentication failed. Ids are derived from the keys, so
	// a different key under the same id is impossible in practice: the data
	// (or its associated data) was corrupted or tampered with.
	ErrDecrypt = errors.New("keyring: decryption failed")
)

// keyError is an operator-facing message classified by one of the
// sentinels above; the message stands alone, so the sentinel's own text
// is not repeated in it.
type keyError struct {
	msg  string
	kind error
}

func (e *keyError) Error() string { return e.msg }
func (e *keyError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &keyError{msg: "keyring: " + fmt.Sprintf(format, args...), kind: kind}
}
