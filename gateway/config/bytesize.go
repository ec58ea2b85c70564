package config

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ByteSize is a number of bytes. In YAML it is written as a plain integer
// (bytes) or as a string with a unit: "512B", "128KB", "64MiB", "256 KiB",
// "1G". Decimal units are powers of 1000 (K, KB, M, MB, G, GB, T, TB);
// binary units are powers of 1024 (Ki, KiB, Mi, MiB, Gi, GiB, Ti, TiB).
// Units are case-insensitive and a fraction is allowed if the result is a
// whole number of bytes ("1.5KiB" is 1536). Negative sizes are rejected.
type ByteSize int64

// Common sizes.
const (
	KB  ByteSize = 1000
	MB  ByteSize = 1000 * KB
	GB  ByteSize = 1000 * MB
	TB  ByteSize = 1000 * GB
	KiB ByteSize = 1 << 10
	MiB ByteSize = 1 << 20
	GiB ByteSize = 1 << 30
	TiB ByteSize = 1 << 40
)

// byteUnits maps lower-cased unit suffixes to their size.
var byteUnits = map[string]ByteSize{
	"": 1, "b": 1,
	"k": KB, "kb": KB, "ki": KiB, "kib": KiB,
	"m": MB, "mb": MB, "mi": MiB, "mib": MiB,
	"g": GB, "gb": GB, "gi": GiB, "gib": GiB,
	"t": TB, "tb": TB, "ti": TiB, "tib": TiB,
}

// ParseByteSize parses a size such as "64MiB", "128KB", "256 KiB", "1G",
// "512B" or "4096". See ByteSize for the units.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, errors.New("empty size")
	}
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	if strings.HasPrefix(t, "-") {
		return 0, fmt.Errorf("size %q must not be negative", s)
	}
	if num == "" || strings.Count(num, ".") > 1 || num == "." {
		return 0, fmt.Errorf("size %q: want a number with an optional unit, like 64MiB or 128KB", s)
	}
	mult, ok := byteUnits[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (want B, KB, KiB, MB, MiB, GB, GiB, TB or TiB)", s, unit)
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n > math.MaxInt64/int64(mult) {
			return 0, fmt.Errorf("size %q is too large", s)
		}
		return ByteSize(n) * mult, nil
	}
	// A fraction: compute exactly, and insist on a whole number of bytes.
	if len(num) > 64 {
		return 0, fmt.Errorf("size %q is too long", s)
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("size %q: bad number %q", s, num)
	}
	r.Mul(r, new(big.Rat).SetInt64(int64(mult)))
	if !r.IsInt() {
		return 0, fmt.Errorf("size %q is not a whole number of bytes", s)
	}
	n := r.Num()
	if !n.IsInt64() {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return ByteSize(n.Int64()), nil
}

// String formats the size with the largest unit that divides it exactly,
// preferring binary units: 262144 is "256KiB", 128000 is "128KB", 1000001
// is "1000001B". The result parses back to the same size.
func (b ByteSize) String() string {
	if b == 0 {
		return "0B"
	}
	if b < 0 {
		return strconv.FormatInt(int64(b), 10) + "B"
	}
	for _, u := range []struct {
		size ByteSize
		name string
	}{
		{TiB, "TiB"}, {GiB, "GiB"}, {MiB, "MiB"}, {KiB, "KiB"},
		{TB, "TB"}, {GB, "GB"}, {MB, "MB"}, {KB, "KB"},
	} {
		if b%u.size == 0 {
			return strconv.FormatInt(int64(b/u.size), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}

// UnmarshalYAML accepts a plain integer (bytes) or a string with a unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("must be a size like 64MiB or a number of bytes, not %s", describe(n))
	}
	switch n.ShortTag() {
	case "!!int":
		v, err := parseYAMLInt(n.Value)
		if err != nil {
			return fmt.Errorf("size %s is out of range", n.Value)
		}
		if v < 0 {
			return fmt.Errorf("size %s must not be negative", n.Value)
		}
		*b = ByteSize(v)
		return nil
	case "!!str":
		v, err := ParseByteSize(n.Value)
		if err != nil {
			return err
		}
		*b = v
		return nil
	default:
		return fmt.Errorf("must be a size like 64MiB or a number of bytes, not %s", describe(n))
	}
}

// MarshalYAML writes the size in the form String gives, so that a marshalled
// config reads back the same.
func (b ByteSize) MarshalYAML() (any, error) {
	return b.String(), nil
}
