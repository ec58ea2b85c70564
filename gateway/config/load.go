package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

// Limits that keep a hostile or broken file from costing unbounded work.
const (
	maxErrors = 100     // problems reported before giving up
	maxVisits = 1 << 17 // nodes walked, counting alias expansions
	maxDepth  = 64      // nesting of nodes, counting aliases and merges
)

// source remembers where a Config came from: the file name and, for every
// key path written in the file (with a non-null value), the line it is on.
// Validate and Warnings use it to put lines on their problems, and
// SetDefaults uses it to tell an explicit zero from an absent key.
type source struct {
	file  string
	lines map[string]int
}

// MaxFileSize caps a configuration file: the largest real one is a few
// KB, and parsing costs many times the file's size in memory (a 10 MB file
// took 964 MB), which a 512 MB board does not have. It applies to the
// start, `ferry check` and a reload alike, which all read through Load.
const MaxFileSize = 1 << 20

// ErrTooLarge is returned by Load and LoadBytes for a configuration larger
// than MaxFileSize.
var ErrTooLarge = errors.New("config: file too large")

// Load reads the YAML file at path, fills defaults (SetDefaults) and
// validates the result (Validate). On failure the error is a read error,
// ErrTooLarge (naming the file and its size), or an Errors listing every
// problem found, each with its line and key path.
func Load(path string) (*Config, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return LoadBytes(data, path)
}

// readFile reads the file at path unless it is larger than MaxFileSize.
// A file that grows while read, or whose size stat does not tell (a pipe,
// /proc), is cut by the LimitReader, so a refusal never costs more than
// MaxFileSize bytes of memory.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() > MaxFileSize {
		return nil, tooLarge(path, fi.Size())
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(data) > MaxFileSize {
		return nil, tooLarge(path, -1)
	}
	return data, nil
}

// tooLarge is the ErrTooLarge of a file of size bytes; size < 0: larger
// than MaxFileSize by an unknown amount (the read was cut there).
func tooLarge(name string, size int64) error {
	if size < 0 {
		return fmt.Errorf("read config %s: more than the %d bytes allowed: %w", name, MaxFileSize, ErrTooLarge)
	}
	return fmt.Errorf("read config %s: %d bytes, more than the %d allowed: %w", name, size, MaxFileSize, ErrTooLarge)
}

// LoadBytes is Load for a configuration already in memory (such as
// firmwareconfig.Default()); name is used in error messages.
func LoadBytes(data []byte, name string) (*Config, error) {
	if len(data) > MaxFileSize {
		return nil, tooLarge(name, int64(len(data)))
	}
	c, errs, gaveUp := parse(data, name)
	if gaveUp {
		return nil, errs // the config is only partly decoded
	}
	c.SetDefaults()
	if err := finish(c, errs, name); err != nil {
		return nil, err
	}
	return c, nil
}

// finish validates c, loaded from name with the problems errs, and returns
// every problem sorted by line, or nil.
func finish(c *Config, errs Errors, name string) error {
	// A key that failed to decode is reported once, not again by Validate.
	for _, v := range c.validate() {
		if len(errs) >= maxErrors {
			errs = append(errs, &Error{File: name, Msg: "too many problems; stopping here"})
			break
		}
		if !under(v.Path, errs) {
			errs = append(errs, v)
		}
	}
	if len(errs) > 0 {
		errs.sortByLine()
		return errs
	}
	return nil
}

// under reports whether path is, or is inside, the path of one of errs.
func under(path string, errs Errors) bool {
	for _, e := range errs {
		if e.Path == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(path, e.Path); ok && (rest == "" || rest[0] == '.' || rest[0] == '[') {
			return true
		}
	}
	return false
}

// Parse decodes a YAML configuration without filling defaults or
// validating it. name (typically the file name) is used in error messages.
// Unknown keys, duplicate keys, values of the wrong type and YAML syntax
// errors are reported together as Errors.
func Parse(data []byte, name string) (*Config, error) {
	c, errs, _ := parse(data, name)
	if len(errs) > 0 {
		return nil, errs
	}
	return c, nil
}

// parse decodes as much of data as it can. It always returns a usable
// Config, so that Load can go on to report validation problems too, unless
// gaveUp says decoding stopped early at a limit.
func parse(data []byte, name string) (c *Config, errs Errors, gaveUp bool) {
	c = &Config{src: &source{file: name, lines: map[string]int{}}}
	d := &decoder{file: name, lines: c.src.lines, active: map[*yaml.Node]bool{}}
	root, err := parseYAML(data)
	if err != nil {
		return c, Errors{yamlError(name, data, err)}, false
	}
	if root != nil {
		d.decode(root, reflect.ValueOf(c).Elem(), "", 0)
		d.decodeLater()
	}
	return c, d.errs, d.full
}

// parseYAML parses data as a single YAML document and returns its root node,
// or nil if the document is empty.
func parseYAML(data []byte) (root *yaml.Node, err error) {
	defer func() {
		// The YAML parser is not ours; never let it take the process down.
		if r := recover(); r != nil {
			root, err = nil, fmt.Errorf("yaml: internal parser error: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, err
	default:
		return nil, &Error{Line: extra.Line, Msg: "only one YAML document is allowed (found a second one)"}
	}
	root = &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, nil
		}
		root = root.Content[0]
	}
	return root, nil
}

var (
	yamlLineRE   = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	yamlAnchorRE = regexp.MustCompile(`^yaml: unknown anchor '(.*)' referenced$`)
)

// yamlParserProblems are the messages of the YAML parser (as opposed to its
// scanner). The parser reports 0-based lines, the scanner 1-based ones.
var yamlParserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"found undefined tag handle":             true,
	"did not find expected node content":     true,
	"did not find expected '-' indicator":    true,
	"did not find expected key":              true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found duplicate %TAG directive":         true,
}

// yamlError turns an error from the YAML parser into an Error with the
// (1-based) line of the problem.
func yamlError(file string, data []byte, err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		e.File = file
		return e
	}
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		if yamlParserProblems[m[2]] {
			line++
		}
		return &Error{File: file, Line: line, Msg: "bad YAML: " + m[2]}
	}
	if m := yamlAnchorRE.FindStringSubmatch(msg); m != nil {
		line := 0
		if i := bytes.Index(data, []byte("*"+m[1])); i >= 0 {
			line = 1 + bytes.Count(data[:i], []byte("\n"))
		}
		return &Error{File: file, Line: line, Msg: fmt.Sprintf("bad YAML: alias *%s refers to no anchor &%s", m[1], m[1])}
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	line := 0
	if yamlParserProblems[msg] || !strings.Contains(msg, "internal") {
		// The problem is on the first line: the parser leaves out line 0.
		line = 1
	}
	return &Error{File: file, Line: line, Msg: "bad YAML: " + msg}
}

// decoder walks a YAML node tree alongside a Go value, guided by the yaml
// struct tags, filling the value and recording the line of every key path.
type decoder struct {
	file   string
	lines  map[string]int
	errs   Errors
	visits int
	full   bool                // maxErrors or maxVisits reached; stop
	active map[*yaml.Node]bool // aliased nodes being decoded, to catch cycles
	later  []lateField         // interface fields, decoded by decodeLater
}

// A fieldChooser is a struct with an interface field whose concrete type
// its other fields choose: a driver's options are of its kind's type.
// decodeStruct leaves such a field to decodeLater, which decodes it once
// the whole document is, into what newField returns for its key: a
// pointer, or nil to leave it unset (the choosing field is invalid, which
// Validate reports).
type fieldChooser interface {
	newField(key string) any
}

// lateField is an interface field of owner (a struct) left for
// decodeLater.
type lateField struct {
	n     *yaml.Node
	owner reflect.Value
	field int
	key   string
	path  string
	depth int
}

// decodeLater decodes the interface fields decodeStruct left. A field set
// twice for the same struct (by a merge, then by the mapping's own key)
// takes the last value, as decodeStruct's own fields do.
func (d *decoder) decodeLater() {
	type at struct {
		owner uintptr
		field int
	}
	last := map[at]int{}
	for i, l := range d.later {
		last[at{l.owner.Addr().Pointer(), l.field}] = i
	}
	for i, l := range d.later {
		if last[at{l.owner.Addr().Pointer(), l.field}] != i {
			continue
		}
		ch, ok := l.owner.Addr().Interface().(fieldChooser)
		if !ok {
			d.fail(l.n.Line, l.path, "internal error: cannot decode into %s", l.owner.Field(l.field).Type())
			continue
		}
		target := ch.newField(l.key)
		if target == nil {
			continue
		}
		tv := reflect.ValueOf(target)
		d.decode(l.n, tv.Elem(), l.path, l.depth)
		l.owner.Field(l.field).Set(tv)
	}
}

var (
	durationType    = reflect.TypeFor[time.Duration]()
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
)

// fail records a problem.
func (d *decoder) fail(line int, path, format string, args ...any) {
	if d.full {
		return
	}
	if len(d.errs) >= maxErrors {
		d.errs = append(d.errs, &Error{File: d.file, Line: line, Msg: "too many problems; stopping here"})
		d.full = true
		return
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// decode fills v from n. v is settable. path names v, "" for the root.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string, depth int) {
	if d.full {
		return
	}
	d.visits++
	if d.visits > maxVisits {
		d.fail(n.Line, path, "document is too complex (too many nodes or alias expansions)")
		d.full = true
		return
	}
	if depth > maxDepth {
		d.fail(n.Line, path, "nested too deeply")
		return
	}
	if n.Kind == yaml.AliasNode {
		target := n.Alias
		if target == nil {
			d.fail(n.Line, path, "alias *%s refers to nothing", n.Value)
			return
		}
		if d.active[target] {
			d.fail(n.Line, path, "alias *%s refers to itself", n.Value)
			return
		}
		d.active[target] = true
		defer delete(d.active, target)
		d.decode(target, v, path, depth+1)
		return
	}
	if isNull(n) {
		return // an absent value: keep the zero value, SetDefaults fills it
	}

	if v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		if err := v.Addr().Interface().(yaml.Unmarshaler).UnmarshalYAML(n); err != nil {
			d.fail(n.Line, path, "%v", err)
		}
		return
	}

	t := v.Type()
	if t == durationType {
		dur, err := decodeDuration(n)
		if err != nil {
			d.fail(n.Line, path, "%v", err)
			return
		}
		v.SetInt(int64(dur))
		return
	}

	switch t.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(t.Elem()))
		}
		d.decode(n, v.Elem(), path, depth+1)
	case reflect.Struct:
		d.decodeStruct(n, v, path, depth)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n.Line, path, "must be a list, not %s", describe(n))
			return
		}
		if len(n.Content) == 0 {
			v.Set(reflect.Zero(t)) // "[]" is the same as leaving the key out
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.lines[p] = item.Line
			d.decode(item, s.Index(i), p, depth+1)
		}
		v.Set(s)
	case reflect.Map:
		// Only maps with string keys (uplink.priorities); a key is a
		// path element: "uplink.priorities.alerts".
		if t.Key().Kind() != reflect.String {
			d.fail(n.Line, path, "internal error: cannot decode into %s", t)
			return
		}
		if n.Kind != yaml.MappingNode {
			d.fail(n.Line, path, "must be a mapping, not %s", describe(n))
			return
		}
		if len(n.Content) == 0 {
			v.Set(reflect.Zero(t)) // "{}" is the same as leaving the key out
			return
		}
		m := reflect.MakeMapWithSize(t, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || k.Value == "" {
				d.fail(k.Line, path, "keys must be names, not %s", describe(k))
				continue
			}
			p := path + "." + k.Value
			if m.MapIndex(reflect.ValueOf(k.Value).Convert(t.Key())).IsValid() {
				d.fail(k.Line, p, "is given twice")
				continue
			}
			d.lines[p] = val.Line
			e := reflect.New(t.Elem()).Elem()
			d.decode(val, e, p, depth+1)
			m.SetMapIndex(reflect.ValueOf(k.Value).Convert(t.Key()), e)
		}
		v.Set(m)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.fail(n.Line, path, "must be a string, not %s", describe(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			d.fail(n.Line, path, "must be true or false, not %s", describe(n))
			return
		}
		b, err := strconv.ParseBool(strings.ToLower(n.Value))
		if err != nil {
			d.fail(n.Line, path, "must be true or false, not %s", describe(n))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!float" && bigIntRE.MatchString(n.Value) {
			d.fail(n.Line, path, "number %s is out of range", n.Value)
			return
		}
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			d.fail(n.Line, path, "must be a whole number, not %s", describe(n))
			return
		}
		i, err := parseYAMLInt(n.Value)
		if err != nil || v.OverflowInt(i) {
			d.fail(n.Line, path, "number %s is out of range", n.Value)
			return
		}
		v.SetInt(i)
	case reflect.Uint8, reflect.Uint16, reflect.Uint32:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			d.fail(n.Line, path, "must be a whole number, not %s", describe(n))
			return
		}
		i, err := parseYAMLInt(n.Value)
		if err != nil || i < 0 || v.OverflowUint(uint64(i)) {
			d.fail(n.Line, path, "number %s is out of range", n.Value)
			return
		}
		v.SetUint(uint64(i))
	case reflect.Float32, reflect.Float64:
		f, err := decodeFloat(n)
		if err != nil {
			d.fail(n.Line, path, "%v", err)
			return
		}
		v.SetFloat(f)
	default:
		// A field type this decoder does not know: a bug, not a user error.
		d.fail(n.Line, path, "internal error: cannot decode into %s", t)
	}
}

// decodeStruct fills the fields of struct v from mapping n.
func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string, depth int) {
	if n.Kind != yaml.MappingNode {
		if path == "" {
			d.fail(n.Line, path, "the configuration must be a mapping of keys to values, not %s", describe(n))
		} else {
			d.fail(n.Line, path, "must be a mapping of keys to values, not %s", describe(n))
		}
		return
	}
	fields := fieldsOf(v.Type())
	// Merge keys ("<<: *base") first, so that explicit keys override them.
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if !isMergeKey(k) {
			continue
		}
		d.merge(val, v, path, depth)
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if isMergeKey(k) {
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.fail(k.Line, path, "keys must be strings, not %s", describe(k))
			continue
		}
		name := k.Value
		p := name
		if path != "" {
			p = path + "." + name
		}
		if first, dup := seen[name]; dup {
			d.fail(k.Line, p, "duplicate key (first set on line %d)", first)
			continue
		}
		seen[name] = k.Line
		idx, ok := fields.index[name]
		if !ok {
			d.fail(k.Line, p, "unknown key%s", suggest(name, fields.names))
			continue
		}
		if !isNull(val) {
			d.lines[p] = k.Line
		}
		if v.Field(idx).Kind() == reflect.Interface {
			if !isNull(val) {
				d.later = append(d.later, lateField{n: val, owner: v, field: idx, key: name, path: p, depth: depth + 1})
			}
			continue
		}
		d.decode(val, v.Field(idx), p, depth+1)
	}
}

// merge applies the value of a "<<" key: a mapping, or a list of mappings
// of which earlier ones take precedence.
func (d *decoder) merge(val *yaml.Node, v reflect.Value, path string, depth int) {
	n := val
	if n.Kind == yaml.AliasNode && n.Alias != nil && n.Alias.Kind == yaml.SequenceNode {
		n = n.Alias
	}
	if n.Kind == yaml.SequenceNode {
		for i := len(n.Content) - 1; i >= 0; i-- {
			d.decode(n.Content[i], v, path, depth+1)
		}
		return
	}
	d.decode(val, v, path, depth+1)
}

// structFields maps the yaml names of a struct's fields to field indexes.
type structFields struct {
	index map[string]int
	names []string // sorted
}

var fieldCache sync.Map // reflect.Type -> *structFields

// fieldsOf returns the yaml-tagged fields of struct type t. Fields without
// a yaml tag, tagged "-", or unexported are not configuration keys.
func fieldsOf(t reflect.Type) *structFields {
	if f, ok := fieldCache.Load(t); ok {
		return f.(*structFields)
	}
	f := &structFields{index: map[string]int{}}
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		f.index[name] = i
		f.names = append(f.names, name)
	}
	sort.Strings(f.names)
	fieldCache.Store(t, f)
	return f
}

// isNull reports whether n is an explicit or implicit null ("key:", "~").
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// isMergeKey reports whether k is the YAML merge key "<<".
func isMergeKey(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge"
}

// bigIntRE matches integers too big for int64, which YAML reads as floats.
var bigIntRE = regexp.MustCompile(`^[-+]?[0-9_]+$`)

// parseYAMLInt parses an integer as YAML writes it: decimal, 0x hex, 0o or
// 0 octal, 0b binary, with optional sign and "_" separators.
func parseYAMLInt(s string) (int64, error) {
	return strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 0, 64)
}

// decodeDuration reads a Go duration string ("30s", "1m30s", "10ms"); a
// plain 0 is also accepted.
func decodeDuration(n *yaml.Node) (time.Duration, error) {
	const want = `must be a duration with a unit, like "30s", "10ms" or "5m"`
	if n.Kind != yaml.ScalarNode {
		return 0, fmt.Errorf("%s, not %s", want, describe(n))
	}
	switch n.ShortTag() {
	case "!!str":
		dur, err := time.ParseDuration(strings.TrimSpace(n.Value))
		if err != nil {
			return 0, fmt.Errorf("%s, not %q", want, n.Value)
		}
		return dur, nil
	case "!!int":
		if i, err := parseYAMLInt(n.Value); err == nil && i == 0 {
			return 0, nil
		}
	}
	return 0, fmt.Errorf("%s, not %s", want, describe(n))
}

// decodeFloat reads a finite number.
func decodeFloat(n *yaml.Node) (float64, error) {
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!int":
			i, err := parseYAMLInt(n.Value)
			if err == nil {
				return float64(i), nil
			}
		case "!!float":
			f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
			if err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
				return f, nil
			}
			return 0, fmt.Errorf("must be a finite number, not %s", describe(n))
		}
	}
	return 0, fmt.Errorf("must be a number, not %s", describe(n))
}

// describe names a node for an error message: "a mapping", "the string
// \"abc\"", "the number 5".
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	case yaml.ScalarNode:
		v := n.Value
		if len(v) > 40 {
			v = v[:37] + "..."
		}
		switch n.ShortTag() {
		case "!!null":
			return "null"
		case "!!bool":
			return "the boolean " + v
		case "!!int", "!!float":
			return "the number " + v
		case "!!str":
			return "the string " + strconv.Quote(v)
		default:
			return fmt.Sprintf("the %s value %q", n.ShortTag(), v)
		}
	}
	return "an empty node"
}

// suggest returns a "did you mean" hint for an unknown key, or lists the
// known keys when none is close.
func suggest(name string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if dist := editDistance(strings.ToLower(name), k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return "; known keys here: " + strings.Join(known, ", ")
}

// editDistance is the Levenshtein distance between a and b, in bytes.
// Long inputs are not compared (the answer would be "far").
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return math.MaxInt
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// File returns the name of the file c was loaded from, or "" for a Config
// built in code.
func (c *Config) File() string {
	if c.src == nil {
		return ""
	}
	return c.src.file
}
