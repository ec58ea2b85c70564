package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckShippedExamples runs `ferry check` on every config we ship: a
// user copies these, so each must pass.
func TestCheckShippedExamples(t *testing.T) {
	files, err := filepath.Glob("../../firmware-config/*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("shipped configs: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run([]string{"check", "-c", f}, nil, &out, &errb); code != 0 {
				t.Fatalf("exit %d\n%s%s", code, out.String(), errb.String())
			}
			if !strings.Contains(out.String(), "ok") {
				t.Fatalf("output %q", out.String())
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
			`drivers.yaml:6: drivers[0].options.channel: driver air (bme280): drivers: bad option: option "channel" does not apply to bme280`,
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
	for _, kind := range []string{"bme280", "sht3x", "ads1115", "ds18b20", "gpio", "counter", "sim"} {
		if !strings.Contains(cfg, "kind: "+kind) {
			t.Errorf("README has no stanza for %s", kind)
		}
	}
}
