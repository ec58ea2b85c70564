package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ferrygw/ferry/gateway/config/signed"
	"github.com/ferrygw/ferry/internal/testbin"
)

// ferryCmd runs the ferry command line in this process.
func ferryCmd(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// pushedConfig is a configuration to push to gateway gw1 whose data lives
// in dir.
func pushedConfig(dir string) string {
	return fmt.Sprintf(`gateway_id: gw1
data_dir: %s
broker:
  listen: 127.0.0.1:18830
uplink:
  endpoints:
    - url: tcp://127.0.0.1:1883
  topic: "v2/{stream}/{source}"
status:
  listen: ""
`, dir)
}

// TestConfigSignVerify: keygen, sign and verify as an operator runs them,
// and verify against a gateway's local file.
func TestConfigSignVerify(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "fleet.key")
	code, pub, msg := ferryCmd("config", "keygen", "-out", keyFile)
	if code != 0 || !regexp.MustCompile(`^[A-Za-z0-9+/]{43}=\n$`).MatchString(pub) {
		t.Fatalf("keygen: exit %d, stdout %q, stderr %q", code, pub, msg)
	}
	pub = strings.TrimSpace(pub)
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v, want mode 0600", fi, err)
	}
	if code, _, msg := ferryCmd("config", "keygen", "-out", keyFile); code != 1 || !strings.Contains(msg, "exists") {
		t.Fatalf("keygen over an existing key: exit %d, %q", code, msg)
	}

	cfgFile := filepath.Join(dir, "v2.yaml")
	if err := os.WriteFile(cfgFile, []byte(pushedConfig(dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	signedFile := filepath.Join(dir, "v2.conf")
	code, out, msg := ferryCmd("config", "sign", "-key", keyFile, "-version", "2", "-gateway", "gw1", "-o", signedFile, cfgFile)
	if code != 0 || out != "" || !strings.Contains(msg, "version 2 for gateway gw1") {
		t.Fatalf("sign: exit %d, stdout %q, stderr %q", code, out, msg)
	}
	env, err := os.ReadFile(signedFile)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := signed.ParsePublicKey(pub)
	if _, err := signed.Verify(env, []ed25519.PublicKey{k}, "gw1", 1); err != nil {
		t.Fatalf("the signed file does not verify: %v", err)
	}
	// To stdout, for every gateway.
	if code, out, msg := ferryCmd("config", "sign", "-key", keyFile, "-version", "3", "-gateway", "*", cfgFile); code != 0 || !strings.HasPrefix(out, "ferry-config v1\nversion: 3\ngateway: *\n") {
		t.Fatalf("sign to stdout: exit %d, stdout %q, stderr %q", code, out, msg)
	}

	pubFile := filepath.Join(dir, "fleet.pub")
	if err := os.WriteFile(pubFile, []byte(pub+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{pub, pubFile} {
		code, out, msg := ferryCmd("config", "verify", "-pub", p, signedFile)
		if code != 0 || !strings.Contains(out, "ok: version 2 for gateway gw1, signed by key "+signed.KeyID(k)) {
			t.Fatalf("verify -pub %s: exit %d, stdout %q, stderr %q", p, code, out, msg)
		}
	}
	tampered := filepath.Join(dir, "tampered.conf")
	if err := os.WriteFile(tampered, bytes.Replace(env, []byte("v2/"), []byte("v9/"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, msg := ferryCmd("config", "verify", "-pub", pub, tampered); code != 1 || !strings.Contains(msg, "signature does not verify") {
		t.Fatalf("verify a tampered file: exit %d, %q", code, msg)
	}
	if code, _, msg := ferryCmd("config", "verify", "-pub", pub, "-gateway", "gw2", signedFile); code != 1 || !strings.Contains(msg, "another gateway") {
		t.Fatalf("verify for another gateway: exit %d, %q", code, msg)
	}

	// Against the gateway's local file: its keys, its ID, and the document
	// checked as the gateway would.
	localFile := filepath.Join(dir, "ferry.yaml")
	local := strings.Replace(pushedConfig(dir), `"v2/`, `"v1/`, 1) + "remote_config:\n  enabled: true\n  trusted_keys: [" + pub + "]\n"
	if err := os.WriteFile(localFile, []byte(local), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, msg := ferryCmd("config", "verify", "-c", localFile, signedFile); code != 0 || !strings.Contains(out, "ok: version 2") {
		t.Fatalf("verify -c: exit %d, stdout %q, stderr %q", code, out, msg)
	}
	// A document changing a key that needs a restart: its line in the
	// signed file (6 header lines before the document).
	restart := filepath.Join(dir, "restart.yaml")
	if err := os.WriteFile(restart, []byte(strings.Replace(pushedConfig(dir), "18830", "18831", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	restartSigned := filepath.Join(dir, "restart.conf")
	if code, _, msg := ferryCmd("config", "sign", "-key", keyFile, "-version", "4", "-gateway", "gw1", "-o", restartSigned, restart); code != 0 {
		t.Fatalf("sign: %s", msg)
	}
	if code, _, msg := ferryCmd("config", "verify", "-c", localFile, restartSigned); code != 1 || !strings.Contains(msg, restartSigned+":10: broker.listen: needs a restart") {
		t.Fatalf("verify -c of a restart key: exit %d, %q", code, msg)
	}
	otherLocal := filepath.Join(dir, "other.yaml")
	code, other, _ := ferryCmd("config", "keygen", "-out", filepath.Join(dir, "other.key"))
	if code != 0 {
		t.Fatal("keygen")
	}
	if err := os.WriteFile(otherLocal, []byte(strings.Replace(local, pub, strings.TrimSpace(other), 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, msg := ferryCmd("config", "verify", "-c", otherLocal, signedFile); code != 1 || !strings.Contains(msg, "does not trust") {
		t.Fatalf("verify -c with another key: exit %d, %q", code, msg)
	}

	// Usage errors.
	for _, args := range [][]string{
		{"config"}, {"config", "bogus"}, {"config", "sign", "-key", keyFile, cfgFile},
		{"config", "verify", signedFile}, {"config", "verify", "-pub", pub, "-c", localFile, signedFile},
	} {
		if code, _, _ := ferryCmd(args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

// TestConfigSignRefuses: sign checks the document as the gateways will,
// and signs one with problems only when forced.
func TestConfigSignRefuses(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "k")
	if code, _, msg := ferryCmd("config", "keygen", "-out", keyFile); code != 0 {
		t.Fatal(msg)
	}
	for _, tc := range []struct {
		name, doc, gateway, want string
	}{
		{"unknown key", pushedConfig(dir) + "bogus: 1\n", "gw1", "doc.yaml:11: bogus: unknown key"},
		{"bad expression", pushedConfig(dir) + "pipelines:\n  - name: p\n    input: {stream: telemetry}\n    stages:\n      - filter: \"v >\"\n    outputs:\n      - stream: o\n",
			"*", "doc.yaml:15: pipelines[0].stages[0].filter: expression error"},
		{"sets remote_config", pushedConfig(dir) + "remote_config: {enabled: false}\n", "gw1", "doc.yaml:11: remote_config: a pushed configuration must not set"},
		{"other gateway", pushedConfig(dir), "gw2", `doc.yaml:1: gateway_id: is "gw1" but this gateway is "gw2"`},
		{"uplink off", strings.Replace(pushedConfig(dir), "uplink:\n", "uplink:\n  enabled: false\n", 1), "*", "uplink.enabled: must be true in a pushed configuration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := filepath.Join(t.TempDir(), "doc.yaml")
			if err := os.WriteFile(doc, []byte(tc.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out, msg := ferryCmd("config", "sign", "-key", keyFile, "-version", "5", "-gateway", tc.gateway, doc)
			if code != 1 || out != "" || !strings.Contains(msg, tc.want) || !strings.Contains(msg, "not signed") {
				t.Fatalf("sign: exit %d, stdout %q, stderr %q; want %q", code, out, msg, tc.want)
			}
			code, out, msg = ferryCmd("config", "sign", "-force", "-key", keyFile, "-version", "5", "-gateway", tc.gateway, doc)
			if code != 0 || !strings.HasPrefix(out, "ferry-config v1\n") || !strings.Contains(msg, "-force") {
				t.Fatalf("sign -force: exit %d, stdout %q, stderr %q", code, out, msg)
			}
		})
	}
	// -root checks the files the document names, on this machine.
	doc := filepath.Join(dir, "users.yaml")
	withFile := strings.Replace(pushedConfig(dir), "  listen: 127.0.0.1:18830\n", "  listen: 127.0.0.1:18830\n  users_file: /nonexistent/users\n", 1)
	if err := os.WriteFile(doc, []byte(withFile), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, msg := ferryCmd("config", "sign", "-key", keyFile, "-version", "5", "-gateway", "gw1", doc); code != 0 {
		t.Fatalf("sign without -root: exit %d, %q", code, msg)
	}
	if code, _, msg := ferryCmd("config", "sign", "-root", "/", "-key", keyFile, "-version", "5", "-gateway", "gw1", doc); code != 1 || !strings.Contains(msg, "broker.users_file: cannot read /nonexistent/users") {
		t.Fatalf("sign -root /: exit %d, %q", code, msg)
	}
}

// TestConfigOpenSSL: a key made with openssl signs, its public key from
// openssl verifies, and openssl verifies the envelope's signature over
// the bytes the package documents: the signing side can be any Ed25519
// tool.
func TestConfigOpenSSL(t *testing.T) {
	ossl := testbin.Require(t, "ferry config", "openssl", "openssl")
	dir := t.TempDir()
	keyFile, pubFile := filepath.Join(dir, "k.pem"), filepath.Join(dir, "pub.pem")
	for _, args := range [][]string{
		{"genpkey", "-algorithm", "ed25519", "-out", keyFile},
		{"pkey", "-in", keyFile, "-pubout", "-out", pubFile},
	} {
		if out, err := exec.Command(ossl, args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	cfgFile := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfgFile, []byte(pushedConfig(dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	signedFile := filepath.Join(dir, "c.conf")
	if code, _, msg := ferryCmd("config", "sign", "-key", keyFile, "-version", "1", "-gateway", "gw1", "-o", signedFile, cfgFile); code != 0 {
		t.Fatalf("sign with an openssl key: %s", msg)
	}
	if code, out, msg := ferryCmd("config", "verify", "-pub", pubFile, signedFile); code != 0 {
		t.Fatalf("verify with an openssl public key: %s %s", out, msg)
	}
	b, err := os.ReadFile(signedFile)
	if err != nil {
		t.Fatal(err)
	}
	e, err := signed.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	// What is signed: the envelope without its signature line.
	sigLine := "signature: " + base64.StdEncoding.EncodeToString(e.Signature) + "\n"
	msgFile, sigFile := filepath.Join(dir, "signed.bin"), filepath.Join(dir, "sig.bin")
	if err := os.WriteFile(msgFile, bytes.Replace(b, []byte(sigLine), nil, 1), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sigFile, e.Signature, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(ossl, "pkeyutl", "-verify", "-pubin", "-inkey", pubFile, "-rawin", "-in", msgFile, "-sigfile", sigFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Signature Verified Successfully") {
		t.Fatalf("openssl pkeyutl -verify: %v\n%s", err, out)
	}
}
