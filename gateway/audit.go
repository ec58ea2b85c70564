package gateway

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/internal/audit"
	"github.com/ferrygw/ferry/internal/keyring"
)

// openAudit opens the audit log of cfg, or returns nil when it is off (a
// nil *audit.Log records nothing).
func openAudit(cfg *config.Config, log *slog.Logger) (*audit.Log, error) {
	a := cfg.Audit
	if a.Enabled != nil && !*a.Enabled {
		return nil, nil
	}
	l, err := audit.Open(audit.Options{
		Path:     a.File,
		MaxSize:  int64(a.MaxSize),
		MaxFiles: a.MaxFiles,
		Logger:   log,
	})
	if err != nil {
		return nil, fmt.Errorf("audit.file: %w", err)
	}
	return l, nil
}

// auditConfig records a configuration event: the file reloaded, or why a
// reload was refused.
func (g *Gateway) auditConfig(event, reason string) {
	cfg, _ := g.current()
	g.audit.Record(audit.Entry{Event: event, Detail: configFile(cfg), Reason: reason})
}

// auditKeys records which encryption keys the buffer uses (their IDs,
// never the keys) and the file they came from.
func (g *Gateway) auditKeys(r *keyring.Ring) {
	g.audit.Record(audit.Entry{Event: "key_loaded",
		Detail: fmt.Sprintf("file %s active %s keys %s", r.Path(), r.ActiveID(), strings.Join(r.IDs(), ","))})
}

// configFile names the file cfg was loaded from, for the audit log.
func configFile(cfg *config.Config) string {
	if f := cfg.File(); f != "" {
		if abs, err := filepath.Abs(f); err == nil {
			return abs
		}
		return f
	}
	return "(embedded default)"
}
