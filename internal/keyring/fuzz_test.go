package keyring

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzOpen feeds arbitrary bytes to Ring.Open, as a damaged or hostile SD
// card would: it must never panic, must fail with one of its two errors,
// and can only succeed on what Seal produced.
func FuzzOpen(f *testing.F) {
	// A fixed nonce: the fuzzing workers rebuild good and must get the
	// same bytes as the seed.
	r := &Ring{path: "fuzz.key", rand: repeatReader(0x42)}
	k, err := newKey(testKey())
	if err != nil {
		f.Fatal(err)
	}
	r.keys = []key{k}
	good := r.Seal(nil, []byte("hello, ferry"), []byte("raw"))
	f.Add(good, []byte("raw"))
	f.Add(good[:Overhead], []byte("raw"))
	f.Add([]byte{Marker}, []byte(nil))
	f.Add([]byte{0x88, 0x50, 0x01}, []byte("raw"))
	f.Fuzz(func(t *testing.T, sealed, aad []byte) {
		out, err := r.Open([]byte("dst"), sealed, aad)
		if err != nil {
			if !errors.Is(err, ErrDecrypt) && !errors.Is(err, ErrUnknownKey) {
				t.Fatalf("Open: unclassified error %v", err)
			}
			if string(out) != "dst" {
				t.Fatalf("Open failed but changed dst: %q", out)
			}
			return
		}
		if !bytes.Equal(sealed, good) || string(aad) != "raw" || string(out) != "dsthello, ferry" {
			t.Fatalf("Open accepted %x (aad %q) as %q", sealed, aad, out)
		}
	})
}

// FuzzParse feeds arbitrary key file contents to the parser: it must never
// panic, and either find keys or fail with one of Load's errors.
func FuzzParse(f *testing.F) {
	f.Add([]byte("# keys\n" + keyLine(testKey()) + "\n"))
	f.Add([]byte(""))
	f.Add([]byte("AAAA\n"))
	f.Add([]byte(keyLine(testKey()) + "\r\n" + keyLine(testKey())))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := parse("fuzz.key", data)
		if err != nil {
			if !errors.Is(err, ErrBadKeyFile) && !errors.Is(err, ErrNoKeys) {
				t.Fatalf("parse: unclassified error %v", err)
			}
			return
		}
		if len(keys) == 0 {
			t.Fatal("parse succeeded without keys")
		}
	})
}
