package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// boardFiles are the files the shipped examples name that a board has
// installed (see each example's comments), as paths under a root.
var boardFiles = map[string]string{
	"/etc/ferry/aws/AmazonRootCA1.pem": "ca",
	"/etc/ferry/aws/device.pem.crt":    "cert",
	"/etc/ferry/aws/private.pem.key":   "key",
}

// newBoardRoot returns a directory holding boardFiles, made in the test:
// a CA, and a certificate it signed with the certificate's key.
func newBoardRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "pi-greenhouse-01"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	pems := map[string]*pem.Block{
		"ca":   {Type: "CERTIFICATE", Bytes: caDER},
		"cert": {Type: "CERTIFICATE", Bytes: der},
		"key":  {Type: "PRIVATE KEY", Bytes: keyDER},
	}
	for path, kind := range boardFiles {
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, pem.EncodeToMemory(pems[kind]), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// TestCheckShippedExamples runs `ferry check` on every config we ship: a
// user copies these, so each must pass, on a board that has the files the
// example names (check -root with them).
func TestCheckShippedExamples(t *testing.T) {
	files, err := filepath.Glob("../../firmware-config/*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("shipped configs: %v %v", files, err)
	}
	root := newBoardRoot(t)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run([]string{"check", "-root", root, "-c", f}, nil, &out, &errb); code != 0 {
				t.Fatalf("exit %d\n%s%s", code, out.String(), errb.String())
			}
			if !strings.Contains(out.String(), "ok") {
				t.Fatalf("output %q", out.String())
			}
		})
	}
}

// TestCheckFilesNamed: check reads the files a config names, as ferry run
// will, and reports each it cannot read at its line; e.g. the AWS example
// on a machine without its certificates.
func TestCheckFilesNamed(t *testing.T) {
	dir := t.TempDir()
	own := filepath.Join(dir, "own.yaml")
	missing := filepath.Join(dir, "missing.key")
	yaml := "data_dir: " + filepath.Join(dir, "data") + "\nbuffer:\n  encryption:\n    key_file: " + missing + "\n"
	if err := os.WriteFile(own, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"own config", []string{"-c", own}, []string{
			own + ":4: buffer.encryption.key_file: cannot read " + missing + ": no such file or directory",
			own + ": 1 problem(s)",
		}},
		{"AWS example, no certificates", []string{"-root", t.TempDir(), "-c", "../../firmware-config/aws-iot-core.yaml"}, []string{
			"aws-iot-core.yaml:37: uplink.tls.ca_file: cannot read /etc/ferry/aws/AmazonRootCA1.pem",
			"aws-iot-core.yaml:38: uplink.tls.cert_file: cannot read /etc/ferry/aws/device.pem.crt",
			"aws-iot-core.yaml:39: uplink.tls.key_file: cannot read /etc/ferry/aws/private.pem.key",
			"aws-iot-core.yaml: 3 problem(s)",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(append([]string{"check"}, tt.args...), nil, &out, &errb); code != 1 {
				t.Fatalf("exit %d, want 1\n%s%s", code, out.String(), errb.String())
			}
			for _, want := range tt.want {
				if !strings.Contains(errb.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, errb.String())
				}
			}
		})
	}
}

// TestCheckSeveralFiles: every file given is checked, each line of output
// names its file, and the exit code is 1 if any file has a problem.
func TestCheckSeveralFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", "data_dir: "+filepath.Join(dir, "data")+"\nbroker: {listen: \"127.0.0.1:1883\", allow_anonymous: true}\n")
	good2 := write("good2.yaml", "data_dir: "+filepath.Join(dir, "data2")+"\n")
	bad := write("bad.yaml", "broker:\n  bogus: 1\n")
	missing := filepath.Join(dir, "missing.yaml")
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr []string
	}{
		{"two good", []string{"-c", good, good2}, 0, []string{good + ": ok", good2 + ": ok"}, nil},
		{"second bad", []string{"-c", good, bad}, 1, []string{good + ": ok"},
			[]string{bad + ":2: broker.bogus: unknown key", bad + ": 1 problem(s)", "1 of 2 files have problems"}},
		{"first bad", []string{"-c", bad, "-c", good}, 1, []string{good + ": ok"}, []string{bad + ":2: broker.bogus"}},
		{"missing and bad", []string{"-c", missing, bad, good}, 1, []string{good + ": ok"},
			[]string{missing + ": read config", bad + ":2: broker.bogus", "2 of 3 files have problems"}},
		{"files only", []string{good, good2}, 0, []string{good + ": ok", good2 + ": ok"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(append([]string{"check"}, tt.args...), nil, &out, &errb)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out.String(), errb.String())
			}
			for _, s := range tt.stdout {
				if !strings.Contains(out.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, out.String())
				}
			}
			for _, s := range tt.stderr {
				if !strings.Contains(errb.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, errb.String())
				}
			}
			// Every line names the file it is about.
			for _, l := range strings.Split(strings.TrimSpace(out.String()+errb.String()), "\n") {
				l = strings.TrimPrefix(l, "warning: ")
				if l != "" && !strings.HasPrefix(l, dir) && !strings.HasPrefix(l, "ferry check: ") {
					t.Errorf("line %q names no file", l)
				}
			}
		})
	}
}

// TestCheckDiskTooSmall: with the default buffer.min_free_disk (64MiB) on
// a 20MiB file system the buffer would refuse every event; check warns at
// the key (its line when written).
func TestCheckDiskTooSmall(t *testing.T) {
	data := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", data).CombinedOutput()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount a tmpfs (CI runs as root): %v: %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", data).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	tests := []struct {
		name, yaml, want string
	}{
		{"default", "data_dir: " + data + "\n", "small.yaml: buffer.min_free_disk: 64MiB is more than the whole file system of " + data + " (20MiB)"},
		{"written", "data_dir: " + data + "\nbuffer:\n  min_free_disk: 30MB\n", "small.yaml:3: buffer.min_free_disk: 30MB is more than the whole file system"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "small.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errb bytes.Buffer
			if code := run([]string{"check", "-c", path}, nil, &out, &errb); code != 0 {
				t.Fatalf("exit %d\n%s%s", code, out.String(), errb.String())
			}
			if !strings.Contains(errb.String(), "warning: "+filepath.Dir(path)+"/"+tt.want) {
				t.Fatalf("stderr lacks the warning %q:\n%s", tt.want, errb.String())
			}
		})
	}
}

func TestCLI(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("broker:\n  listen: \":1883\"\n  bogus: 1\ningest:\n  durability: maybe\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badDrivers := filepath.Join(t.TempDir(), "drivers.yaml")
	if err := os.WriteFile(badDrivers, []byte("drivers:\n  - name: air\n    kind: bme280\n    bus: \"1\"\n    options:\n      channel: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr []string
	}{
		{"check bad", []string{"check", "-c", bad}, 1, "", []string{
			"bad.yaml:3: broker.bogus: unknown key",
			"bad.yaml:5: ingest.durability: must be one of",
			"2 problem(s)",
		}},
		{"check driver option", []string{"check", "-c", badDrivers}, 1, "", []string{
			`drivers.yaml:6: drivers[0].options.channel: unknown key; known keys here: mode, oversample`,
		}},
		{"check missing file", []string{"check", "-c", "/nonexistent.yaml"}, 1, "", []string{"nonexistent.yaml"}},
		{"check without -c", []string{"check"}, 2, "", []string{"-c FILE is required"}},
		{"version", []string{"version"}, 0, "ferry ", nil},
		{"unknown", []string{"frobnicate"}, 2, "", []string{`unknown command "frobnicate"`}},
		{"no args", nil, 2, "", []string{"usage: ferry"}},
		{"status of nothing", []string{"status", "-addr", "127.0.0.1:1"}, 1, "", []string{"is the gateway running"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tt.args, nil, &out, &errb)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out.String(), errb.String())
			}
			if !strings.Contains(out.String(), tt.stdout) {
				t.Fatalf("stdout %q, want %q", out.String(), tt.stdout)
			}
			for _, s := range tt.stderr {
				if !strings.Contains(errb.String(), s) {
					t.Fatalf("stderr lacks %q:\n%s", s, errb.String())
				}
			}
		})
	}
}

// TestREADMEDriverStanzas keeps the README true: its driver stanzas (one
// per kind) must pass `ferry check`.
func TestREADMEDriverStanzas(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(readme)
	i := strings.Index(s, "```yaml\ndrivers:")
	if i < 0 {
		t.Fatal("README has no drivers stanza")
	}
	j := strings.Index(s[i+7:], "```")
	cfg := "broker: {listen: \"127.0.0.1:1883\"}\n" + s[i+len("```yaml\n"):i+7+j]
	path := filepath.Join(t.TempDir(), "drivers.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"check", "-c", path}, nil, &out, &errb); code != 0 {
		t.Fatalf("README driver stanzas fail ferry check:\n%s%s", out.String(), errb.String())
	}
	for _, kind := range []string{"bme280", "sht3x", "ads1115", "ds18b20", "gpio", "gpio_out", "counter", "sim"} {
		if !strings.Contains(cfg, "kind: "+kind) {
			t.Errorf("README has no stanza for %s", kind)
		}
	}
}
