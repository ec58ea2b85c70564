package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/ferrygw/ferry/drivers"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/gateway/rules"
	"github.com/ferrygw/ferry/gateway/rules/detect"
	"github.com/ferrygw/ferry/gateway/rules/expr"
	"github.com/ferrygw/ferry/gateway/rules/payload"
	"github.com/ferrygw/ferry/gateway/rules/stage"
	"github.com/ferrygw/ferry/gateway/rules/window"
	"go.yaml.in/yaml/v3"
)

// Check builds everything the config describes that can be built without
// starting it, notably compiling every pipeline expression, and returns
// the problems as config.Errors with their YAML paths and lines. `ferry
// check` runs it after config.Load.
func Check(cfg *config.Config) error {
	_, perr := buildPipelines(cfg)
	// Drivers are built without hardware: option errors show, a bus that
	// is not there is only a retry at run time.
	_, derr := buildDrivers(cfg, drivers.Env{}, nil)
	var errs config.Errors
	for _, err := range []error{perr, derr} {
		var es config.Errors
		if errors.As(err, &es) {
			errs = append(errs, es...)
		} else if err != nil {
			return err
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// buildPipelines turns the pipelines of cfg into runnable rules.Pipelines.
func buildPipelines(cfg *config.Config) ([]*rules.Pipeline, error) {
	var errs config.Errors
	var out []*rules.Pipeline
	for i, pc := range cfg.Pipelines {
		path := fmt.Sprintf("pipelines[%d]", i)
		p := &rules.Pipeline{
			Name:       pc.Name,
			Input:      pc.Input.Stream,
			Topics:     pc.Input.Topics,
			EventTime:  pc.Time != "processing",
			DeadLetter: cfg.DeadLetters.Stream,
			// bounded by validation to config.MaxDeadLetterPayload
			DeadLetterPayload: int(cfg.DeadLetters.MaxPayload),
		}
		f, err := payload.ParseFormat(pc.Input.Format)
		if err != nil {
			errs = append(errs, cfg.ErrorAt(path+".input.format", "%v", err))
		}
		p.Format = f
		for j, sc := range pc.Stages {
			sp := fmt.Sprintf("%s.stages[%d]", path, j)
			st, err := buildStage(pc.Name, j, sp, &sc, p.EventTime)
			if err != nil {
				errs = append(errs, stageError(cfg, sp, &sc, err))
				continue
			}
			p.Stages = append(p.Stages, st)
		}
		for j, oc := range pc.Outputs {
			o := rules.Output{SenML: oc.Format == "senml+json"}
			switch {
			case oc.Stream != "":
				o.Stream = oc.Stream
			case oc.MQTT != "":
				o.Stream, o.Topic = config.MQTTOutbox(), oc.MQTT
			case oc.Webhook != nil:
				o.Stream = config.WebhookOutbox(pc.Name, j)
			}
			p.Outputs = append(p.Outputs, o)
		}
		p.Fingerprint = fingerprint(pc)
		out = append(out, p)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

// fingerprint identifies a pipeline's configuration, so state saved by a
// differently configured pipeline is not applied to this one.
func fingerprint(pc config.Pipeline) string {
	b, _ := yaml.Marshal(pc)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// stageError names the stage's key path, and the expression's line and
// column within it when an expression failed to compile.
func stageError(cfg *config.Config, path string, sc *config.StageConfig, err error) *config.Error {
	key := path
	switch {
	case sc.Filter != "":
		key += ".filter"
	case sc.Map != nil:
		key += ".map"
	case sc.Window != nil:
		key += ".window"
	case sc.Detect != nil:
		key += ".detect"
	case sc.Dedup != nil:
		key += ".dedup"
	}
	var ee *expr.CompileError
	if errors.As(err, &ee) {
		return cfg.ErrorAt(key, "expression error at line %d, column %d: %s", ee.Line, ee.Column, ee.Msg)
	}
	return cfg.ErrorAt(key, "%v", err)
}

func buildStage(pipeline string, j int, path string, sc *config.StageConfig, eventTime bool) (rules.Stage, error) {
	name := fmt.Sprintf("%s.%d", pipeline, j)
	switch {
	case sc.Filter != "":
		return stage.NewFilter(sc.Filter)
	case sc.Map != nil:
		mc := stage.MapConfig{Name: name, Drop: sc.Map.Drop}
		for _, a := range sc.Map.Set {
			mc.Set = append(mc.Set, stage.Assignment{Field: a.Field, Expr: a.Expr})
		}
		if len(sc.Map.Rename) > 0 {
			mc.Rename = map[string]string{}
			for _, r := range sc.Map.Rename {
				mc.Rename[r.From] = r.To
			}
		}
		return stage.NewMap(mc)
	case sc.Window != nil:
		w := sc.Window
		wc := window.Config{Name: name, Size: w.Size, Hop: w.Hop, EventTime: eventTime,
			AllowedLateness: w.AllowedLateness, GroupBy: w.GroupBy, MaxGroups: w.MaxGroups}
		for _, a := range w.Aggregates {
			out, spec, ok := strings.Cut(a, "=")
			if !ok {
				spec, out = a, ""
			}
			fn, field, err := window.ParseAggregate(strings.TrimSpace(spec))
			if err != nil {
				return nil, fmt.Errorf("aggregate %q: %w", a, err)
			}
			out = strings.TrimSpace(out)
			if out == "" {
				out = fn
				if field != "" && field != "*" {
					out = fn + "_" + field
				}
			}
			wc.Aggregates = append(wc.Aggregates, window.Aggregate{Output: out, Func: fn, Field: field})
		}
		return window.New(wc)
	case sc.Detect != nil:
		d := sc.Detect
		return detect.New(detect.Config{Name: name, Kind: d.Kind, Field: d.Field, GroupBy: d.GroupBy,
			RaiseAbove: d.RaiseAbove, ClearBelow: d.ClearBelow, RaiseBelow: d.RaiseBelow, ClearAbove: d.ClearAbove,
			Condition: d.Condition, Count: d.Count, Timeout: d.Timeout, MaxRate: d.MaxRate, Per: d.Per, MaxGroups: d.MaxGroups})
	case sc.Dedup != nil:
		return stage.NewDedup(stage.DedupConfig{Key: sc.Dedup.Key, Horizon: sc.Dedup.Horizon, MaxKeys: sc.Dedup.MaxKeys})
	}
	return nil, fmt.Errorf("%s: no stage kind", path)
}
