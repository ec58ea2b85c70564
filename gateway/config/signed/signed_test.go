package signed_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrygw/ferry/gateway/config/signed"
	"github.com/ferrygw/ferry/internal/testbin"
)

// key returns a fixed key, so golden bytes stay the same.
func key(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

const doc = "gateway:\n  id: gw-01\n"

func TestSignVerify(t *testing.T) {
	k := key(1)
	trusted := []ed25519.PublicKey{key(9).Public().(ed25519.PublicKey), k.Public().(ed25519.PublicKey)}
	env, err := signed.Sign([]byte(doc), 7, "gw-01", k)
	if err != nil {
		t.Fatal(err)
	}
	e, err := signed.Verify(env, trusted, "gw-01", 6)
	if err != nil {
		t.Fatal(err)
	}
	if e.Version != 7 || string(e.Document) != doc || e.Gateway != "gw-01" {
		t.Fatalf("verified %+v", e)
	}
	if !bytes.Equal(e.Marshal(), env) {
		t.Fatalf("Marshal:\n%q\nwant\n%q", e.Marshal(), env)
	}
	// The golden header: a change to the format is a change users see.
	wantHead := "ferry-config v1\nversion: 7\ngateway: gw-01\nkey: " + signed.KeyID(k.Public().(ed25519.PublicKey)) + "\nsignature: "
	if !strings.HasPrefix(string(env), wantHead) || !strings.HasSuffix(string(env), "==\n\n"+doc) {
		t.Fatalf("envelope:\n%s", env)
	}

	forAll, err := signed.Sign([]byte(doc), 8, signed.AnyGateway, k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := signed.Verify(forAll, trusted, "gw-02", 7); err != nil {
		t.Fatalf("an envelope for every gateway: %v", err)
	}
}

// TestRefused: every change to a signed envelope, and every envelope this
// gateway must not apply, is refused with its own error.
func TestRefused(t *testing.T) {
	k := key(1)
	trusted := []ed25519.PublicKey{k.Public().(ed25519.PublicKey)}
	env, err := signed.Sign([]byte(doc), 7, "gw-01", k)
	if err != nil {
		t.Fatal(err)
	}
	other, err := signed.Sign([]byte(doc), 7, "gw-01", key(2))
	if err != nil {
		t.Fatal(err)
	}
	replace := func(old, new string) []byte { return bytes.Replace(env, []byte(old), []byte(new), 1) }
	flip := bytes.Clone(env)
	i := bytes.Index(flip, []byte("signature: ")) + len("signature: ")
	if flip[i] == 'A' {
		flip[i] = 'B'
	} else {
		flip[i] = 'A'
	}
	cases := []struct {
		name    string
		env     []byte
		gateway string
		running uint64
		want    error
	}{
		{"document changed", replace("id: gw-01", "id: gw-02"), "gw-01", 0, signed.ErrBadSignature},
		{"document appended", append(bytes.Clone(env), "  extra: 1\n"...), "gw-01", 0, signed.ErrBadSignature},
		{"version raised", replace("version: 7", "version: 9"), "gw-01", 0, signed.ErrBadSignature},
		{"gateway changed", replace("gateway: gw-01", "gateway: *"), "gw-02", 0, signed.ErrBadSignature},
		{"signature changed", flip, "gw-01", 0, signed.ErrBadSignature},
		{"untrusted key", other, "gw-01", 0, signed.ErrUnknownKey},
		{"other gateway", env, "gw-02", 0, signed.ErrWrongGateway},
		{"replay", env, "gw-01", 7, signed.ErrNotNewer},
		{"rollback", env, "gw-01", 12, signed.ErrNotNewer},
		{"not an envelope", []byte(doc), "gw-01", 0, signed.ErrMalformed},
		{"CRLF", bytes.ReplaceAll(env, []byte("\n"), []byte("\r\n")), "gw-01", 0, signed.ErrMalformed},
		{"leading zero", replace("version: 7", "version: 07"), "gw-01", 0, signed.ErrMalformed},
		{"version 0", replace("version: 7", "version: 0"), "gw-01", 0, signed.ErrMalformed},
		{"no empty line", replace("\n\n", "\n"), "gw-01", 0, signed.ErrMalformed},
		{"too large", append(bytes.Clone(env), make([]byte, signed.MaxSize)...), "gw-01", 0, signed.ErrTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := signed.Verify(tc.env, trusted, tc.gateway, tc.running)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
		})
	}
}

// TestKeysOpenSSL: keys written by OpenSSL are read, and ours are read by
// OpenSSL, so a fleet's signing key can live in whatever tool it already
// uses.
func TestKeysOpenSSL(t *testing.T) {
	ossl := testbin.Require(t, "signed", "openssl", "openssl")
	dir := t.TempDir()
	priv := filepath.Join(dir, "k.pem")
	if out, err := exec.Command(ossl, "genpkey", "-algorithm", "ed25519", "-out", priv).CombinedOutput(); err != nil {
		t.Fatalf("openssl genpkey: %v\n%s", err, out)
	}
	pubPEM, err := exec.Command(ossl, "pkey", "-in", priv, "-pubout").Output()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(priv)
	if err != nil {
		t.Fatal(err)
	}
	k, err := signed.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := signed.ParsePublicKey(string(pubPEM))
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(k.Public()) {
		t.Fatal("OpenSSL's public key is not the private key's")
	}
	again, err := signed.ParsePublicKey(signed.EncodePublicKey(pub))
	if err != nil || !again.Equal(pub) {
		t.Fatalf("base64 round trip: %v", err)
	}
	ours, err := signed.MarshalPrivateKey(key(3))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(priv, ours, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(ossl, "pkey", "-in", priv, "-noout").CombinedOutput(); err != nil {
		t.Fatalf("openssl cannot read our key: %v\n%s", err, out)
	}
}

// FuzzParse: Parse never panics, and what it accepts it gives back byte
// for byte (one encoding per envelope).
func FuzzParse(f *testing.F) {
	env, err := signed.Sign([]byte(doc), 7, "gw-01", key(1))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(env)
	f.Add([]byte("ferry-config v1\nversion: 1\ngateway: *\nkey: 0011223344556677\nsignature: \n\n"))
	f.Add([]byte(doc))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := signed.Parse(b)
		if err != nil {
			return
		}
		if !bytes.Equal(e.Marshal(), b) {
			t.Fatalf("Parse then Marshal:\n%q\nfrom\n%q", e.Marshal(), b)
		}
		_, _ = signed.Verify(b, []ed25519.PublicKey{key(1).Public().(ed25519.PublicKey)}, "gw-01", 0)
	})
}
