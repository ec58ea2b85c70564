package config

import (
	"errors"
	"io/fs"
	"testing"

	firmwareconfig "github.com/ferrygw/ferry/firmware-config"
)

// FuzzParse checks that no input makes Parse, SetDefaults, Validate,
// Warnings or LoadBytes panic, and that failures are always Errors with a
// message. Seeds: the shipped configs, a few inline cases and
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	names, _ := fs.Glob(firmwareconfig.FS, "*.yaml")
	for _, name := range names {
		data, err := firmwareconfig.FS.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"",
		"{}",
		"a: &x [*x]\n",
		"log: &a {<<: *a}\n",
		"uplink: {endpoints: [{url: 'ssl://[::1]:8883', tls: {cert_file: c}}], topic: '{a{b}}'}\n",
		"buffer: {streams: [{name: a, max_bytes: 1.5KiB, ttl: 0}]}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.yaml")
		checkErrors(t, "Parse", err)
		if err == nil {
			c.SetDefaults()
			checkErrors(t, "Validate", c.Validate())
			for _, w := range c.Warnings() {
				if w.Msg == "" {
					t.Errorf("warning without message: %+v", w)
				}
			}
		}
		_, err = LoadBytes(data, "fuzz.yaml")
		checkErrors(t, "LoadBytes", err)
	})
}

// checkErrors fails t unless err is nil or a non-empty Errors whose every
// problem has a message.
func checkErrors(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var errs Errors
	if !errors.As(err, &errs) || len(errs) == 0 {
		t.Fatalf("%s: error %v (%T) is not a non-empty Errors", what, err, err)
	}
	for _, e := range errs {
		if e == nil || e.Msg == "" {
			t.Fatalf("%s: empty problem in %v", what, err)
		}
	}
}
