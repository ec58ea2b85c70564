package remoteconfig_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"testing"

	"github.com/ferrygw/ferry/gateway/config/signed"
	"github.com/ferrygw/ferry/gateway/remoteconfig"
)

// FuzzOffer: whatever arrives on the configuration topic, Offer does not
// panic, and it stores (returns nil for) only an envelope signed by the
// trusted key for this gateway; everything else is refused.
func FuzzOffer(f *testing.F) {
	valid, err := signed.Sign([]byte("gateway_id: gw1\n"), 3, "gw1", key(1))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(bytes.Replace(valid, []byte("version: 3"), []byte("version: 4"), 1))
	f.Add([]byte("ferry-config v1\nversion: 1\ngateway: *\nkey: 0011223344556677\nsignature: \n\n"))
	f.Add([]byte{})
	trusted := []ed25519.PublicKey{key(1).Public().(ed25519.PublicKey)}
	e := newEnv(f) // one gateway for every input: Offer changes its state only for a valid envelope
	e.newManager()
	f.Fuzz(func(t *testing.T, b []byte) {
		err := e.m.Offer(context.Background(), b)
		if err == nil {
			if _, verr := signed.Verify(b, trusted, "gw1", 0); verr != nil {
				t.Fatalf("stored an envelope that does not verify: %v", verr)
			}
			return
		}
		if !errors.Is(err, remoteconfig.ErrRefused) {
			t.Fatalf("Offer = %v, want nil or ErrRefused", err)
		}
	})
}
