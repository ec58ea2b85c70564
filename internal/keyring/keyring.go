// Package keyring seals ferry's buffered data at rest, so that an SD card
// pulled out of the board does not give away the events it holds.
//
// # Key file
//
// Text, one key per line: the standard base64 encoding (with padding) of
// 32 random bytes. Blank lines and lines starting with '#' are ignored.
// The LAST key is the active one: it seals; every key in the file opens.
// Rotation appends a key (Generate, or "ferry key new -f FILE"): data
// sealed with an older key stays readable as long as its line stays in the
// file. The file must be owned by the effective uid and have no permission
// bits for group or others (mode 0600); Load refuses it otherwise, because
// a key that other users of the board can read protects nothing.
//
// A key's id is the first 4 bytes of SHA-256("ferry-keyring-v1" || key),
// written as 8 hex digits. It names the key in sealed data and in messages
// without revealing anything about it.
//
// # Sealed format
//
//	0xFE | key id (4 bytes) | nonce (24 bytes) | ciphertext and tag (len(plaintext)+16)
//
// Sealed data is Overhead (45) bytes longer than its plaintext. The marker
// 0xFE can never start a well-formed CBOR data item (major type 7 with
// additional information 30 is reserved, RFC 8949 section 3.3), so it
// never starts a buffered event (a CBOR array: 0x80 to 0x9f), and it never
// occurs in UTF-8 text: a reader tells sealed values from values written
// in the clear before encryption was turned on by their first byte alone
// (IsSealed). A future format would take another marker. The id is not
// authenticated on its own: it only selects the key, and a changed id
// selects no key or a key under which authentication fails.
//
// # Cipher
//
// XChaCha20-Poly1305 with a random nonce per message. The Raspberry Pi's
// ARM cores have no AES instructions (the ARMv6 of the Pi Zero and Pi 1;
// the Pi 4's BCM2711 lacks the ARMv8 crypto extensions), so AES-GCM runs
// there in slow constant-time software, while ChaCha20-Poly1305 is fast in
// plain integer code everywhere. Its 192-bit nonces can be drawn at random
// for every message: after 2^64 messages under one key the chance of any
// repeated nonce is still below 2^-64, so there is no counter to persist
// across power cuts and no message limit forcing a rotation.
//
// # Concurrency
//
// A *Ring is immutable after Load and safe for concurrent use. Generate
// rewrites the file and does not change rings already loaded: Load the
// file again to seal with the new key. Two Generate calls on the same file
// at the same time may lose one of the new keys (the last rename wins).
package keyring

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

const (
	// Marker is the first byte of sealed data (see the package doc).
	Marker = 0xFE
	// KeySize is the length of a key in bytes.
	KeySize = chacha20poly1305.KeySize
	// Overhead is how many bytes longer sealed data is than its plaintext:
	// marker, key id, nonce and authentication tag.
	Overhead = headerLen + chacha20poly1305.Overhead

	idLen     = 4
	nonceLen  = chacha20poly1305.NonceSizeX
	headerLen = 1 + idLen + nonceLen

	// idContext separates key ids from any other use of SHA-256 over a
	// key, and versions them with the format.
	idContext = "ferry-keyring-v1"

	// maxFileSize bounds what Load reads: a key file is a few lines, and
	// a path pointing at something huge must not exhaust a small board.
	maxFileSize = 1 << 20
)

// Ring holds the keys that seal buffered data: the last key of the file
// seals, every key opens.
type Ring struct {
	path string
	keys []key // file order; the last one is active
	// rand supplies nonces; nil means crypto/rand. Only tests set it,
	// to get reproducible sealed bytes.
	rand io.Reader
}

type key struct {
	id   uint32 // first 4 bytes of the id hash, big-endian
	hex  string // id as shown to operators
	aead cipher.AEAD
	line int // for duplicate messages
}

// Load reads the key file at path. It refuses a file that group or others
// can access or that another user owns (ErrKeyFilePerms), a file without
// keys (ErrNoKeys) and a line that is not a key (ErrBadKeyFile).
func Load(path string) (*Ring, error) {
	data, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	keys, err := parse(path, data)
	if err != nil {
		return nil, err
	}
	return &Ring{path: path, keys: keys}, nil
}

// readKeyFile checks the file's owner and mode on the open descriptor
// (so the checked file is the one read) and returns its contents.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, errorf(ErrBadKeyFile, "%s is not a regular file", path)
	}
	if err := checkPerms(path, fi); err != nil {
		return nil, err
	}
	if fi.Size() > maxFileSize {
		return nil, errorf(ErrBadKeyFile, "%s is %d bytes: too large for a key file", path, fi.Size())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("keyring: read %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, errorf(ErrBadKeyFile, "%s is too large for a key file", path)
	}
	return data, nil
}

// parse reads the keys of a key file's contents and builds their AEADs,
// once, so that Seal and Open allocate nothing but their output.
func parse(path string, data []byte) ([]key, error) {
	var keys []key
	for i, line := range strings.Split(string(data), "\n") {
		n := i + 1
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, errorf(ErrBadKeyFile, "%s:%d: not a key: want the base64 encoding of %d random bytes (ferry key new writes one)", path, n, KeySize)
		}
		if len(raw) != KeySize {
			clear(raw)
			return nil, errorf(ErrBadKeyFile, "%s:%d: key is %d bytes, want %d (ferry key new writes one)", path, n, len(raw), KeySize)
		}
		k, err := newKey(raw)
		clear(raw)
		if err != nil {
			return nil, fmt.Errorf("keyring: %s:%d: %w", path, n, err)
		}
		k.line = n
		for _, o := range keys {
			if o.id == k.id {
				return nil, errorf(ErrBadKeyFile, "%s:%d: key %s already appears on line %d", path, n, k.hex, o.line)
			}
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errorf(ErrNoKeys, "%s holds no keys (create one with: ferry key new -f %s)", path, path)
	}
	return keys, nil
}

func newKey(raw []byte) (key, error) {
	aead, err := chacha20poly1305.NewX(raw)
	if err != nil {
		return key{}, err // only in FIPS 140-only mode, which forbids ChaCha20
	}
	h := sha256.New()
	h.Write([]byte(idContext))
	h.Write(raw)
	sum := h.Sum(nil)
	return key{id: binary.BigEndian.Uint32(sum), hex: hex.EncodeToString(sum[:idLen]), aead: aead}, nil
}

// Generate adds a new random key to the key file at path, creating the
// file (mode 0600) if it is missing; the new key becomes the active one
// (rotation). The file is replaced atomically and durably (temporary file
// in the same directory, fsync, rename, fsync of the directory), so a power
// cut leaves either the old file or the new one. An existing file must
// pass Load's checks. rand nil means crypto/rand. Generate returns the new
// key's id; the key itself is only ever written to the file.
func Generate(path string, rand io.Reader) (id string, err error) {
	var old []byte
	var existing []key
	switch data, err := readKeyFile(path); {
	case err == nil:
		if existing, err = parse(path, data); err != nil && !errors.Is(err, ErrNoKeys) {
			return "", err
		}
		old = data
	case errors.Is(err, os.ErrNotExist):
	default:
		return "", err
	}
	raw := make([]byte, KeySize)
	defer clear(raw)
	if err := readRandom(rand, raw); err != nil {
		return "", fmt.Errorf("keyring: new key: %w", err)
	}
	k, err := newKey(raw)
	if err != nil {
		return "", fmt.Errorf("keyring: new key: %w", err)
	}
	for _, o := range existing {
		if o.id == k.id { // a 2^-32 accident, or a broken random source
			return "", fmt.Errorf("keyring: new key %s collides with the key on %s:%d; run again", k.hex, path, o.line)
		}
	}
	var buf bytes.Buffer
	if len(old) == 0 {
		buf.WriteString("# ferry buffer encryption keys, one per line. The LAST key seals new data;\n" +
			"# every key opens data sealed with it: remove a line only once nothing\n" +
			"# sealed with that key is left. Keep this file secret and backed up:\n" +
			"# without it the buffered data cannot be read.\n")
	} else {
		buf.Write(old)
		if old[len(old)-1] != '\n' {
			buf.WriteByte('\n')
		}
	}
	fmt.Fprintf(&buf, "# key %s, added %s\n", k.hex, time.Now().UTC().Format(time.RFC3339))
	buf.WriteString(base64.StdEncoding.EncodeToString(raw))
	buf.WriteByte('\n')
	defer clear(buf.Bytes())
	if err := writeFileAtomic(path, buf.Bytes()); err != nil {
		return "", err
	}
	return k.hex, nil
}

func readRandom(r io.Reader, b []byte) error {
	if r == nil {
		_, _ = rand.Read(b) // never fails: crypto/rand crashes the program rather than return an error
		return nil
	}
	_, err := io.ReadFull(r, b)
	return err
}

// writeFileAtomic replaces path with data, mode 0600. The directory is
// synced too, and its error reported: a key lost to a power cut after
// data was sealed with it would make that data unreadable for good.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("keyring: write %s: %w", f.Name(), err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("keyring: sync %s: %w", f.Name(), err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("keyring: close %s: %w", f.Name(), err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("keyring: sync directory of %s: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("keyring: sync directory of %s: %w", path, err)
	}
	return nil
}

// ActiveID returns the id of the key that seals: the file's last key.
func (r *Ring) ActiveID() string { return r.keys[len(r.keys)-1].hex }

// IDs returns the ids of all keys, in file order (the last one is active).
func (r *Ring) IDs() []string {
	ids := make([]string, len(r.keys))
	for i, k := range r.keys {
		ids[i] = k.hex
	}
	return ids
}

// Has reports whether the key with id (8 hex digits) is in the ring.
func (r *Ring) Has(id string) bool {
	return slices.ContainsFunc(r.keys, func(k key) bool { return k.hex == id })
}

// Path returns the key file the ring was loaded from.
func (r *Ring) Path() string { return r.path }

// Seal appends the sealed form of plaintext to dst, with the active key and
// a fresh random nonce, and returns the extended slice. aad is
// authenticated but not stored: Open must be given the same aad, which
// binds the data to its place (ferry passes the stream name). dst must not
// overlap plaintext. The only allocation is dst's growth.
func (r *Ring) Seal(dst, plaintext, aad []byte) []byte {
	k := &r.keys[len(r.keys)-1]
	dst = slices.Grow(dst, Overhead+len(plaintext))
	n := len(dst)
	dst = dst[:n+headerLen]
	dst[n] = Marker
	binary.BigEndian.PutUint32(dst[n+1:], k.id)
	nonce := dst[n+1+idLen : n+headerLen]
	if err := readRandom(r.rand, nonce); err != nil {
		// Only a test's injected reader can fail; sealing without a
		// fresh nonce would be worse than stopping.
		panic("keyring: nonce source failed: " + err.Error())
	}
	return k.aead.Seal(dst, nonce, plaintext, aad)
}

// Open authenticates sealed (as made by Seal with the same aad), appends
// the plaintext to dst and returns the extended slice. Errors: ErrUnknownKey
// when the sealing key is not in the ring, ErrDecrypt when the data is not
// sealed, is truncated, or fails authentication. On error dst is returned
// unextended. dst must not overlap sealed.
func (r *Ring) Open(dst, sealed, aad []byte) ([]byte, error) {
	if len(sealed) < Overhead || sealed[0] != Marker {
		return dst, errorf(ErrDecrypt, "%d bytes are not data sealed by a keyring", len(sealed))
	}
	id := binary.BigEndian.Uint32(sealed[1:])
	for i := range r.keys {
		k := &r.keys[i]
		if k.id != id {
			continue
		}
		out, err := k.aead.Open(dst, sealed[1+idLen:headerLen], sealed[headerLen:], aad)
		if err != nil {
			return dst, errorf(ErrDecrypt, "data sealed with key %s fails authentication: it was corrupted or tampered with", k.hex)
		}
		return out, nil
	}
	return dst, errorf(ErrUnknownKey, "data sealed with key %08x, which is not in %s", id, r.path)
}

// IsSealed reports whether b starts with the sealed-format marker, that is
// whether b was written by Seal rather than stored in the clear.
func IsSealed(b []byte) bool { return len(b) > 0 && b[0] == Marker }

// KeyID returns the id of the key that sealed b, and false when b is not
// long enough to be sealed data.
func KeyID(b []byte) (string, bool) {
	if len(b) < Overhead || b[0] != Marker {
		return "", false
	}
	return hex.EncodeToString(b[1 : 1+idLen]), true
}
