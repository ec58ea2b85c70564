// Package signed is the envelope of a configuration pushed to a gateway
// from the cloud: the YAML document, its version, the gateway it is for,
// and an Ed25519 signature by a key the gateway trusts.
//
// The envelope is text, so that `ferry config sign` can write it and
// `mosquitto_pub -f` publish it:
//
//	ferry-config v1
//	version: 7
//	gateway: gw-01
//	key: 3f2a9c0d1e4b5a67
//	signature: 9Xk…(base64 of 64 bytes)…==
//
//	<the YAML document, as it is>
//
// The signature covers every byte of the envelope except the signature
// line: the other header lines, the empty line and the document. So the
// version and the gateway cannot be changed without the key: an attacker
// replaying an old envelope is refused by its version (Verify wants one
// above the running one), and one made for another gateway by its name
// ("*" is every gateway). key is KeyID of the signing key, which names it
// among the trusted ones.
//
// Parse accepts only the canonical form (the header lines in this order,
// "\n" line ends, no other spaces), so an envelope has one encoding, and
// Marshal gives back the bytes Parse read. Nothing here keeps state: every
// function is safe for concurrent use.
package signed

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
)

// Errors returned by Parse and Verify, wrapped with what was wrong; check
// them with errors.Is.
var (
	// ErrMalformed is returned when the bytes are not an envelope.
	ErrMalformed = errors.New("not a signed configuration")
	// ErrTooLarge is returned for an envelope above MaxSize.
	ErrTooLarge = errors.New("signed configuration too large")
	// ErrUnknownKey is returned when the envelope names a key that is not
	// among the trusted ones.
	ErrUnknownKey = errors.New("signed by a key this gateway does not trust")
	// ErrBadSignature is returned when the signature does not verify
	// with the key named.
	ErrBadSignature = errors.New("signature does not verify")
	// ErrWrongGateway is returned when the envelope is for another
	// gateway.
	ErrWrongGateway = errors.New("signed for another gateway")
	// ErrNotNewer is returned when the envelope's version is not above
	// the running configuration's: a replay or a rollback.
	ErrNotNewer = errors.New("version not above the running configuration's")
)

// MaxSize is the largest envelope accepted: the config loader's limit on a
// configuration file (1 MiB) and room for the header.
const MaxSize = 1<<20 + 512

// magic is the first line, naming the format and its version.
const magic = "ferry-config v1"

// AnyGateway, as an envelope's gateway, makes it valid for every gateway.
const AnyGateway = "*"

// Envelope is a parsed signed configuration.
type Envelope struct {
	// Version orders the configurations of a fleet; a gateway applies
	// only one above the version it runs.
	Version uint64
	// Gateway is the gateway ID the envelope is for, or AnyGateway.
	Gateway string
	// KeyID names the signing key (KeyID of its public key).
	KeyID string
	// Signature is the Ed25519 signature of Signed().
	Signature []byte
	// Document is the YAML configuration.
	Document []byte
}

// KeyID returns the name of a public key in envelopes: the first 8 bytes
// of its SHA-256, in hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// Signed returns the bytes the signature covers.
func (e *Envelope) Signed() []byte {
	var b bytes.Buffer
	e.header(&b, false)
	b.Write(e.Document)
	return b.Bytes()
}

// Marshal returns the envelope's canonical bytes.
func (e *Envelope) Marshal() []byte {
	var b bytes.Buffer
	e.header(&b, true)
	b.Write(e.Document)
	return b.Bytes()
}

func (e *Envelope) header(b *bytes.Buffer, withSignature bool) {
	fmt.Fprintf(b, "%s\nversion: %d\ngateway: %s\nkey: %s\n", magic, e.Version, e.Gateway, e.KeyID)
	if withSignature {
		fmt.Fprintf(b, "signature: %s\n", base64.StdEncoding.EncodeToString(e.Signature))
	}
	b.WriteByte('\n')
}

// Sign returns the envelope of doc, at version, for gateway (or
// AnyGateway), signed with key.
func Sign(doc []byte, version uint64, gateway string, key ed25519.PrivateKey) ([]byte, error) {
	if err := checkGateway(gateway); err != nil {
		return nil, err
	}
	if version == 0 {
		return nil, fmt.Errorf("%w: version must be 1 or more", ErrMalformed)
	}
	e := &Envelope{Version: version, Gateway: gateway, KeyID: KeyID(key.Public().(ed25519.PublicKey)), Document: doc}
	e.Signature = ed25519.Sign(key, e.Signed())
	out := e.Marshal()
	if len(out) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(out), MaxSize)
	}
	return out, nil
}

// Parse reads an envelope without verifying it.
func Parse(b []byte) (*Envelope, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(b), MaxSize)
	}
	var e Envelope
	rest := b
	line := func(prefix string) (string, error) {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return "", fmt.Errorf("%w: header ends early, want %q", ErrMalformed, prefix)
		}
		l := string(rest[:i])
		rest = rest[i+1:]
		if len(l) < len(prefix) || l[:len(prefix)] != prefix {
			return "", fmt.Errorf("%w: want a line %q", ErrMalformed, prefix+"…")
		}
		return l[len(prefix):], nil
	}
	if v, err := line(magic); err != nil || v != "" {
		return nil, fmt.Errorf("%w: the first line must be %q", ErrMalformed, magic)
	}
	v, err := line("version: ")
	if err != nil {
		return nil, err
	}
	// Canonical decimal: no sign, no leading zero, at least 1.
	if e.Version, err = strconv.ParseUint(v, 10, 64); err != nil || v[0] == '0' || v[0] == '+' {
		return nil, fmt.Errorf("%w: version %q is not a number from 1", ErrMalformed, v)
	}
	if e.Gateway, err = line("gateway: "); err != nil {
		return nil, err
	}
	if err := checkGateway(e.Gateway); err != nil {
		return nil, err
	}
	if e.KeyID, err = line("key: "); err != nil {
		return nil, err
	}
	if len(e.KeyID) != 16 || hex.EncodeToString(mustHex(e.KeyID)) != e.KeyID {
		return nil, fmt.Errorf("%w: key %q is not 16 lower-case hex digits", ErrMalformed, e.KeyID)
	}
	sig, err := line("signature: ")
	if err != nil {
		return nil, err
	}
	if e.Signature, err = base64.StdEncoding.Strict().DecodeString(sig); err != nil ||
		len(e.Signature) != ed25519.SignatureSize || base64.StdEncoding.EncodeToString(e.Signature) != sig {
		return nil, fmt.Errorf("%w: signature is not the base64 of %d bytes", ErrMalformed, ed25519.SignatureSize)
	}
	if len(rest) == 0 || rest[0] != '\n' {
		return nil, fmt.Errorf("%w: want an empty line after the header", ErrMalformed)
	}
	e.Document = rest[1:]
	return &e, nil
}

// mustHex decodes s, or returns nil.
func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil
	}
	return b
}

// checkGateway accepts a gateway ID that fits on the header line: 1 to 128
// printable ASCII characters, no spaces.
func checkGateway(g string) error {
	if len(g) == 0 || len(g) > 128 {
		return fmt.Errorf("%w: gateway must be 1 to 128 characters", ErrMalformed)
	}
	for i := 0; i < len(g); i++ {
		if g[i] <= ' ' || g[i] > '~' {
			return fmt.Errorf("%w: gateway %q has a space or a character outside printable ASCII", ErrMalformed, g)
		}
	}
	return nil
}

// Verify parses b and checks it: signed by one of trusted, for gateway
// (or every gateway), at a version above running. It returns the
// envelope, or an error wrapping one of the Err values.
func Verify(b []byte, trusted []ed25519.PublicKey, gateway string, running uint64) (*Envelope, error) {
	e, err := Parse(b)
	if err != nil {
		return nil, err
	}
	var key ed25519.PublicKey
	for _, k := range trusted {
		if KeyID(k) == e.KeyID {
			key = k
			break
		}
	}
	if key == nil {
		return nil, fmt.Errorf("%w: key %s", ErrUnknownKey, e.KeyID)
	}
	if !ed25519.Verify(key, e.Signed(), e.Signature) {
		return nil, fmt.Errorf("%w: key %s", ErrBadSignature, e.KeyID)
	}
	if e.Gateway != AnyGateway && e.Gateway != gateway {
		return nil, fmt.Errorf("%w: %q, this is %q", ErrWrongGateway, e.Gateway, gateway)
	}
	if e.Version <= running {
		return nil, fmt.Errorf("%w: version %d, running %d", ErrNotNewer, e.Version, running)
	}
	return e, nil
}
