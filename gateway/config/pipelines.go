package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Pipeline configures one rules pipeline: which ingested events it reads,
// its stages in order, and where its results go.
type Pipeline struct {
	Name    string        `yaml:"name"`
	Input   PipelineInput `yaml:"input"`
	Time    string        `yaml:"time"` // event (default) or processing
	Stages  []StageConfig `yaml:"stages"`
	Outputs []Output      `yaml:"outputs"`
}

// PipelineInput selects the events a pipeline reads.
type PipelineInput struct {
	Stream string   `yaml:"stream"` // default: the first route's stream
	Topics []string `yaml:"topics"` // MQTT topic filters; empty: every event of the stream
	Format string   `yaml:"format"` // auto, json, cbor, senml+json, senml+cbor, number
}

// StageConfig is one stage; exactly one of its keys is set.
type StageConfig struct {
	Filter string       `yaml:"filter"` // keep events for which this expression is true
	Map    *MapStage    `yaml:"map"`
	Window *WindowStage `yaml:"window"`
	Detect *DetectStage `yaml:"detect"`
	Dedup  *DedupStage  `yaml:"dedup"`
}

// MapStage computes, renames and drops fields (in that order).
type MapStage struct {
	Set    []Assign `yaml:"set"`
	Rename []Rename `yaml:"rename"`
	Drop   []string `yaml:"drop"`
}

// Assign sets Field to the value of Expr.
type Assign struct {
	Field string `yaml:"field"`
	Expr  string `yaml:"expr"`
}

// Rename renames field From to To.
type Rename struct {
	From string `yaml:"from"`
	To   string `yaml:"to"`
}

// WindowStage aggregates over tumbling (hop unset) or hopping windows.
type WindowStage struct {
	Size            time.Duration `yaml:"size"`
	Hop             time.Duration `yaml:"hop"`
	AllowedLateness time.Duration `yaml:"allowed_lateness"`
	GroupBy         []string      `yaml:"group_by"`
	// Aggregates are "output = fn(field)" (or "fn(field)"), fn one of
	// count sum avg min max first last stddev p50 p95 p99 (any pNN).
	Aggregates []string `yaml:"aggregates"`
	MaxGroups  int      `yaml:"max_groups"`
}

// DetectStage raises and clears alerts on patterns.
type DetectStage struct {
	Kind       string        `yaml:"kind"` // threshold, consecutive, absence, rate
	Field      string        `yaml:"field"`
	GroupBy    []string      `yaml:"group_by"`
	RaiseAbove *float64      `yaml:"raise_above"`
	ClearBelow *float64      `yaml:"clear_below"`
	RaiseBelow *float64      `yaml:"raise_below"`
	ClearAbove *float64      `yaml:"clear_above"`
	Condition  string        `yaml:"condition"` // consecutive: expression
	Count      int           `yaml:"count"`     // consecutive: how many in a row
	Timeout    time.Duration `yaml:"timeout"`   // absence
	MaxRate    float64       `yaml:"max_rate"`  // rate: change per `per`
	Per        time.Duration `yaml:"per"`
	MaxGroups  int           `yaml:"max_groups"`
}

// DedupStage drops repeats of a key within a horizon.
type DedupStage struct {
	Key     string        `yaml:"key"` // expression; default the event's ID
	Horizon time.Duration `yaml:"horizon"`
	MaxKeys int           `yaml:"max_keys"`
}

// Output is one destination of a pipeline's results; exactly one key is set.
type Output struct {
	Stream  string   `yaml:"stream"` // a buffer stream forwarded by the uplink
	MQTT    string   `yaml:"mqtt"`   // a local topic on the embedded broker ({source}, {topic}, {pipeline})
	Webhook *Webhook `yaml:"webhook"`
	// Format of the results: json (an object of the fields) or
	// senml+json (a SenML pack).
	Format string `yaml:"format"`
}

// Webhook POSTs each result as JSON.
type Webhook struct {
	URL        string        `yaml:"url"`
	SecretFile string        `yaml:"secret_file"` // HMAC-SHA256 key for the X-Ferry-Signature header
	Timeout    time.Duration `yaml:"timeout"`
	Retries    int           `yaml:"retries"` // attempts before the result goes to dead letters; 0: retry forever
}

// DeadLetters configures where events that fail a pipeline go.
type DeadLetters struct {
	Stream  string `yaml:"stream"`
	Forward bool   `yaml:"forward"` // also forward dead letters to the cloud
	// MaxPayload is how much of a failed event's payload a dead letter
	// keeps (its original size and a truncated flag are kept too); 0
	// keeps none. Default DefaultDeadLetterMaxPayload.
	MaxPayload ByteSize `yaml:"max_payload"`
}

// Defaults for pipelines.
const (
	DefaultDeadLetterStream = "deadletter"
	DefaultPipelineTime     = "event"
	DefaultPipelineFormat   = "auto"
	DefaultWebhookTimeout   = 10 * time.Second
)

// Bounds of a dead letter's payload.
const (
	// DefaultDeadLetterMaxPayload is enough of a payload to see why it
	// failed; 1,024 undecodable 250 KB payloads kept whole were 250 MB.
	DefaultDeadLetterMaxPayload = 4 * KiB
	// MaxDeadLetterPayload bounds dead_letters.max_payload.
	MaxDeadLetterPayload = 64 * KiB
)

// MQTTOutbox and WebhookOutbox name the streams that hold results waiting
// for their local MQTT or webhook delivery.
func MQTTOutbox() string { return "_mqtt" }

// WebhookOutbox is the outbox stream of output i of pipeline p.
func WebhookOutbox(p string, i int) string { return fmt.Sprintf("_webhook.%s.%d", p, i) }

// IsOutbox reports whether stream is an outbox (MQTTOutbox or a
// WebhookOutbox), drained by a deliverer rather than forwarded.
func IsOutbox(stream string) bool {
	return stream == MQTTOutbox() || strings.HasPrefix(stream, "_webhook.")
}

func (c *Config) setPipelineDefaults() {
	setString(&c.DeadLetters.Stream, DefaultDeadLetterStream)
	if c.DeadLetters.MaxPayload == 0 && !c.explicit("dead_letters.max_payload") {
		c.DeadLetters.MaxPayload = DefaultDeadLetterMaxPayload
	}
	for i := range c.Pipelines {
		p := &c.Pipelines[i]
		setString(&p.Time, DefaultPipelineTime)
		setString(&p.Input.Format, DefaultPipelineFormat)
		if p.Input.Stream == "" && len(c.Ingest.Routes) > 0 {
			p.Input.Stream = c.Ingest.Routes[0].Stream
		}
		for j := range p.Outputs {
			if w := p.Outputs[j].Webhook; w != nil {
				setDuration(&w.Timeout, DefaultWebhookTimeout)
			}
		}
	}
	// Every stream a pipeline writes gets a buffer entry with defaults.
	have := map[string]bool{}
	for _, s := range c.Buffer.Streams {
		have[s.Name] = true
	}
	add := func(name string) {
		if name != "" && !have[name] {
			have[name] = true
			c.Buffer.Streams = append(c.Buffer.Streams, Stream{Name: name, MaxEvents: DefaultStreamEvents,
				MaxBytes: DefaultStreamBytes, Overflow: DefaultOverflow})
		}
	}
	if len(c.Pipelines) > 0 {
		add(c.DeadLetters.Stream)
	}
	for _, p := range c.Pipelines {
		for j, o := range p.Outputs {
			switch {
			case o.Stream != "":
				add(o.Stream)
			case o.MQTT != "":
				add(MQTTOutbox())
			case o.Webhook != nil:
				add(WebhookOutbox(p.Name, j))
			}
		}
	}
}

// PipelinesReading returns the names of the pipelines that read stream.
func (c *Config) PipelinesReading(stream string) []string {
	var out []string
	for _, p := range c.Pipelines {
		if p.Input.Stream == stream {
			out = append(out, p.Name)
		}
	}
	return out
}

// Forwarded reports whether the uplink forwards stream: a route's stream
// when the route says forward (by default: when no pipeline reads it), a
// pipeline's stream output, and dead letters when dead_letters.forward.
func (c *Config) Forwarded(stream string) bool {
	if u := c.Uplink.Streams; len(u) > 0 {
		for _, s := range u {
			if s == stream {
				return true
			}
		}
		return false
	}
	for _, r := range c.Ingest.Routes {
		if r.Stream == stream {
			if r.Forward != nil {
				return *r.Forward
			}
			return len(c.PipelinesReading(stream)) == 0
		}
	}
	for _, p := range c.Pipelines {
		for _, o := range p.Outputs {
			if o.Stream == stream {
				return true
			}
		}
	}
	return stream == c.DeadLetters.Stream && c.DeadLetters.Forward
}

func (c *Config) validatePipelines(k *checker, streams map[string]bool) {
	if !validStreamName(c.DeadLetters.Stream) {
		k.add("dead_letters.stream", "stream name %q must be 1 to 64 letters, digits, '_', '.' or '-'", c.DeadLetters.Stream)
	}
	if c.DeadLetters.MaxPayload < 0 || c.DeadLetters.MaxPayload > MaxDeadLetterPayload {
		k.add("dead_letters.max_payload", "must be between 0 and %s, not %s", MaxDeadLetterPayload, c.DeadLetters.MaxPayload)
	}
	names := map[string]bool{}
	for i, p := range c.Pipelines {
		path := fmt.Sprintf("pipelines[%d]", i)
		switch {
		case !validStreamName(p.Name):
			k.add(path+".name", "pipeline name %q must be 1 to 64 letters, digits, '_', '.' or '-'", p.Name)
		case names[p.Name]:
			k.add(path+".name", "pipeline %q is defined twice", p.Name)
		}
		names[p.Name] = true
		k.oneOf(path+".time", p.Time, "event", "processing")
		k.oneOf(path+".input.format", p.Input.Format, "auto", "json", "cbor", "senml+json", "senml+cbor", "number")
		routed := false
		for _, r := range c.Ingest.Routes {
			routed = routed || r.Stream == p.Input.Stream
		}
		if !routed {
			k.add(path+".input.stream", "names no ingest route's stream: %q", p.Input.Stream)
		}
		for j, f := range p.Input.Topics {
			if err := checkFilter(f); err != nil {
				k.add(fmt.Sprintf("%s.input.topics[%d]", path, j), "topic filter %q: %v", f, err)
			}
		}
		if len(p.Stages) == 0 {
			k.add(path+".stages", "must list at least one stage (filter, map, window, detect or dedup)")
		}
		for j, s := range p.Stages {
			c.validateStage(k, fmt.Sprintf("%s.stages[%d]", path, j), &s)
		}
		if len(p.Outputs) == 0 {
			k.add(path+".outputs", "must list at least one output (stream, mqtt or webhook)")
		}
		for j, o := range p.Outputs {
			op := fmt.Sprintf("%s.outputs[%d]", path, j)
			n := 0
			if o.Stream != "" {
				n++
				if !validStreamName(o.Stream) || strings.HasPrefix(o.Stream, "_") {
					k.add(op+".stream", "stream name %q must be 1 to 64 letters, digits, '_', '.' or '-', not starting with '_'", o.Stream)
				}
				if o.Stream == p.Input.Stream {
					k.add(op+".stream", "a pipeline must not write the stream it reads (%q)", o.Stream)
				}
			}
			if o.MQTT != "" {
				n++
				if err := checkTopicName(strings.NewReplacer("{source}", "x", "{topic}", "x", "{pipeline}", "x").Replace(o.MQTT)); err != nil {
					k.add(op+".mqtt", "%v", err)
				}
			}
			if w := o.Webhook; w != nil {
				n++
				if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					k.add(op+".webhook.url", "must be an http:// or https:// URL, not %q", w.URL)
				}
				k.positive(op+".webhook.timeout", w.Timeout)
				if w.Retries < 0 {
					k.add(op+".webhook.retries", "must not be negative")
				}
			}
			if n != 1 {
				k.add(op, "must set exactly one of stream, mqtt and webhook")
			}
			if o.Format != "" {
				k.oneOf(op+".format", o.Format, "json", "senml+json")
			}
		}
	}
}

func (c *Config) validateStage(k *checker, path string, s *StageConfig) {
	n := 0
	if s.Filter != "" {
		n++
	}
	if m := s.Map; m != nil {
		n++
		for i, a := range m.Set {
			if a.Field == "" || a.Expr == "" {
				k.add(fmt.Sprintf("%s.map.set[%d]", path, i), "needs both field and expr")
			}
		}
		for i, r := range m.Rename {
			if r.From == "" || r.To == "" {
				k.add(fmt.Sprintf("%s.map.rename[%d]", path, i), "needs both from and to")
			}
		}
	}
	if w := s.Window; w != nil {
		n++
		k.positive(path+".window.size", w.Size)
		if w.Hop < 0 || w.Hop > w.Size {
			k.add(path+".window.hop", "must be between 0 (tumbling) and window.size, not %s", w.Hop)
		}
		k.nonNegative(path+".window.allowed_lateness", w.AllowedLateness)
		if len(w.Aggregates) == 0 {
			k.add(path+".window.aggregates", "must list at least one aggregate, like \"avg_temp = avg(temp_c)\"")
		}
	}
	if d := s.Detect; d != nil {
		n++
		k.oneOf(path+".detect.kind", d.Kind, "threshold", "consecutive", "absence", "rate")
	}
	if d := s.Dedup; d != nil {
		n++
		k.positive(path+".dedup.horizon", d.Horizon)
	}
	if n != 1 {
		k.add(path, "must set exactly one of filter, map, window, detect and dedup")
	}
}

// ErrorAt returns an error for the key at path, with the file and line it
// was written on (for problems found after loading, e.g. by compiling a
// pipeline's expressions).
func (c *Config) ErrorAt(path, format string, args ...any) *Error {
	k := &checker{c: c}
	k.add(path, format, args...)
	return k.errs[0]
}
