package signed

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// ErrKey is returned for a key that cannot be read.
var ErrKey = errors.New("not an Ed25519 key")

// EncodePublicKey returns pub as the configuration writes trusted keys:
// the base64 of its 32 bytes.
func EncodePublicKey(pub ed25519.PublicKey) string {
	return base64.StdEncoding.EncodeToString(pub)
}

// ParsePublicKey reads a trusted key: the base64 of its 32 bytes, or a PEM
// "PUBLIC KEY" block (as `openssl pkey -pubout` writes).
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "-----BEGIN") {
		blk, _ := pem.Decode([]byte(s))
		if blk == nil || blk.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("%w: want a PEM PUBLIC KEY block", ErrKey)
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrKey, err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%w: a %T", ErrKey, k)
		}
		return pub, nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: want the base64 of %d bytes", ErrKey, ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// MarshalPrivateKey returns key as a PEM "PRIVATE KEY" block (PKCS #8, as
// `openssl genpkey -algorithm ed25519` writes).
func MarshalPrivateKey(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParsePrivateKey reads a PEM "PRIVATE KEY" block holding an Ed25519 key.
func ParsePrivateKey(b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: want a PEM PRIVATE KEY block", ErrKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: a %T", ErrKey, k)
	}
	return key, nil
}
