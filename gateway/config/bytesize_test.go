package config

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    ByteSize
		wantErr string // substring; "" for success
	}{
		{"0", 0, ""},
		{"4096", 4096, ""},
		{"512B", 512, ""},
		{"128KB", 128_000, ""},
		{"128kb", 128_000, ""},
		{"1K", 1000, ""},
		{"64MiB", 64 << 20, ""},
		{"256 KiB", 256 << 10, ""},
		{"  256KiB ", 256 << 10, ""},
		{"1G", 1_000_000_000, ""},
		{"1Gi", 1 << 30, ""},
		{"2GB", 2_000_000_000, ""},
		{"3GiB", 3 << 30, ""},
		{"1MB", 1_000_000, ""},
		{"2TiB", 2 << 40, ""},
		{"1.5KiB", 1536, ""},
		{"0.5MB", 500_000, ""},
		{"8EiB", 0, "unknown unit"},
		{"", 0, "empty"},
		{"   ", 0, "empty"},
		{"MiB", 0, "want a number"},
		{"-1", 0, "negative"},
		{"-5MiB", 0, "negative"},
		{"+5", 0, "want a number"},
		{"1.2.3KB", 0, "want a number"},
		{".", 0, "want a number"},
		{"64 MegaBytes", 0, `unknown unit "MegaBytes"`},
		{"1e6", 0, "unknown unit"},
		{"0x10", 0, "unknown unit"},
		{"1.1B", 0, "whole number of bytes"},
		{"9223372036854775807", 1<<63 - 1, ""},
		{"9223372036854775808", 0, "too large"},
		{"8388608TiB", 0, "too large"},
		{"9000000000GB", 9_000_000_000_000_000_000, ""},
		{"10000000000GB", 0, "too large"},
		{"10000000000.5GB", 0, "too large"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseByteSize(tc.in)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("= %d, want error containing %q", got, tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %q does not contain %q", err, tc.wantErr)
			case got != tc.want:
				t.Fatalf("= %d, want %d", got, tc.want)
			}
		})
	}
}

func TestByteSizeString(t *testing.T) {
	tests := []struct {
		in   ByteSize
		want string
	}{
		{0, "0B"},
		{1, "1B"},
		{1000, "1KB"},
		{1024, "1KiB"},
		{256 * KiB, "256KiB"},
		{64 * MiB, "64MiB"},
		{128 * KB, "125KiB"}, // binary units first
		{3 * MB, "3MB"},
		{1536, "1536B"}, // 1.5KiB: no unit divides it
		{1_000_001, "1000001B"},
		{3 * GiB, "3GiB"},
		{-5, "-5B"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := tc.in.String(); got != tc.want {
				t.Fatalf("String() = %q, want %q", got, tc.want)
			}
			if tc.in < 0 {
				return
			}
			back, err := ParseByteSize(tc.in.String())
			if err != nil || back != tc.in {
				t.Fatalf("ParseByteSize(%q) = %d, %v; want %d", tc.in.String(), back, err, tc.in)
			}
		})
	}
}

func TestByteSizeYAML(t *testing.T) {
	tests := []struct {
		yml     string
		want    ByteSize
		wantErr bool
	}{
		{"1048576", MiB, false},
		{"0x400", KiB, false},
		{"64MiB", 64 * MiB, false},
		{`"2048"`, 2048, false},
		{"-1", 0, true},
		{"1.5", 0, true},
		{"true", 0, true},
		{"[1]", 0, true},
		{"{a: 1}", 0, true},
		{"99999999999999999999", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.yml, func(t *testing.T) {
			var b ByteSize
			err := yaml.Unmarshal([]byte(tc.yml), &b)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil && b != tc.want {
				t.Fatalf("= %d, want %d", b, tc.want)
			}
		})
	}
	out, err := yaml.Marshal(struct {
		S ByteSize `yaml:"s"`
	}{256 * KiB})
	if err != nil || string(out) != "s: 256KiB\n" {
		t.Errorf("Marshal = %q, %v", out, err)
	}
}
