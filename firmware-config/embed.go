// Package firmwareconfig holds the example configurations shipped with
// ferry, embedded in the binary: default.yaml (what `make run` uses),
// reference.yaml (every key, its default and what it does) and ready-made
// configs for common clouds. All of them load and validate; a test in
// gateway/config keeps it so.
package firmwareconfig

import (
	"bytes"
	"embed"
)

// FS holds every *.yaml file of this directory, by file name.
//
//go:embed *.yaml
var FS embed.FS

//go:embed default.yaml
var defaultYAML []byte

// Default returns default.yaml: the demo configuration `make run` starts
// with, everything on loopback. The caller may modify the returned slice.
func Default() []byte {
	return bytes.Clone(defaultYAML)
}
