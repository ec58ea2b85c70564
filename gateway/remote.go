package gateway

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/gateway/remoteconfig"
)

// The gateway is what the remote configuration manager applies
// configurations with and watches the uplink of.
var (
	_ remoteconfig.Applier = remoteApplier{}
	_ remoteconfig.Uplink  = (*Gateway)(nil)
)

// WithRemoteStatus sets where the remote configuration manager publishes
// its status (remote_config.status_topic) instead of the downlink, which
// publishes it retained on the cloud; for tests.
func WithRemoteStatus(s remoteconfig.StatusSink) Option {
	return func(g *Gateway) { g.remoteStatus = s }
}

// WithRemotePoll sets how often the remote configuration manager looks at
// the uplink after an apply (remoteconfig.Config.Poll); for tests.
func WithRemotePoll(d time.Duration) Option {
	return func(g *Gateway) { g.remotePoll = d }
}

// remoteOptions are the options of remoteconfig.Effective and AtStart.
func (g *Gateway) remoteOptions() remoteconfig.Options {
	return remoteconfig.Options{Check: CheckRemote, Now: g.now, Logger: g.log}
}

// startRemote returns the configuration the gateway starts with, given its
// local file: the stored remote configuration when remote_config is
// enabled and one is in force (remoteconfig.AtStart), else local.
func (g *Gateway) startRemote(local *config.Config) *config.Config {
	g.local = local
	cfg, v := remoteconfig.AtStart(local, g.remoteOptions())
	if v > 0 {
		g.log.Info("running a remote configuration", "component", "remote-config", "version", v)
	}
	g.configVersion.Store(v)
	return cfg
}

// effective is what Reload applies for the local file local, and its
// version (0: the file).
func (g *Gateway) effective(local *config.Config) (*config.Config, uint64) {
	cfg, v := remoteconfig.Effective(local, g.remoteOptions())
	if v > 0 {
		g.log.Info("a remote configuration is in force: of the file, only remote_config applies", "component", "remote-config", "version", v)
	}
	return cfg, v
}

// newRemote makes the remote configuration manager when the local file
// enables remote_config; New calls it last.
func (g *Gateway) newRemote() error {
	if !g.local.RemoteConfig.Enabled {
		return nil
	}
	sink := g.remoteStatus
	if sink == nil {
		sink = remoteStatus{g}
	}
	m, err := remoteconfig.New(remoteconfig.Config{
		Dir:     remoteconfig.Dir(g.local),
		Local:   g.localConfig,
		Check:   CheckRemote,
		Applier: remoteApplier{g},
		Uplink:  g,
		Status:  sink,
		Now:     g.now,
		Poll:    g.remotePoll,
		Logger:  g.log,
	})
	if err != nil {
		return fmt.Errorf("gateway: remote_config: %w", err)
	}
	g.remote = m
	return nil
}

// remoteComponents is the remote configuration manager, as a component
// of the gateway (it lives as long as the gateway: a reload does not
// restart it).
func (g *Gateway) remoteComponents() []component {
	if g.remote == nil {
		return nil
	}
	return []component{{"remote-config", g.remote.Run}}
}

// RemoteConfig returns the remote configuration manager, nil when the
// local file does not enable remote_config: the downlink hands it what
// arrives on remote_config.topic (Offer).
func (g *Gateway) RemoteConfig() *remoteconfig.Manager { return g.remote }

// localConfig returns the local file as last loaded (New, Reload).
func (g *Gateway) localConfig() *config.Config {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.local
}

// UplinkConnected reports whether the cloud links of the configuration in
// force are connected, and when they last were (zero: not since they were
// started, or the uplink is off). With a downlink session both must be:
// a configuration under which the board takes no more configurations
// (the cloud refuses the downlink's client ID, say) must be rolled back
// as much as one under which it sends no events.
func (g *Gateway) UplinkConnected() (bool, time.Time) {
	_, p := g.current()
	if p.fwd == nil {
		return false, time.Time{}
	}
	s := p.fwd.Status()
	up, last := s.Connected, s.LastConnected
	if p.dl != nil {
		d := p.dl.client.Status()
		up = up && d.Connected
		switch {
		case last.IsZero() || d.LastConnected.IsZero():
			last = time.Time{} // one of them never connected
		case d.LastConnected.After(last):
			last = d.LastConnected // both were up from then on
		}
	}
	return up, last
}

// CheckConfig checks cfg as `ferry check` does after config.Load: Check
// (pipeline expressions, driver options) and CheckHost (the files it
// names, the places it writes, the disk). The problems are config.Errors
// in line order; other errors end the check.
func CheckConfig(cfg *config.Config, h HostCheck) (warnings []*config.Error, err error) {
	var problems config.Errors
	collect := func(err error) error {
		var es config.Errors
		switch {
		case err == nil:
		case errors.As(err, &es):
			problems = append(problems, es...)
		default:
			return err
		}
		return nil
	}
	if err := collect(Check(cfg)); err != nil {
		return nil, err
	}
	warnings, err = CheckHost(cfg, h)
	if err := collect(err); err != nil {
		return warnings, err
	}
	if len(problems) > 0 {
		sortByLine(problems)
		return warnings, problems
	}
	return warnings, nil
}

// sortByLine orders problems by line, those without one last, as
// config.Load reports its own.
func sortByLine(es config.Errors) {
	sort.SliceStable(es, func(i, j int) bool {
		li, lj := es[i].Line, es[j].Line
		return li != 0 && (lj == 0 || li < lj)
	})
}

// CheckRemote checks cand, a pushed configuration loaded with
// config.LoadRemote, before it replaces local (the gateway's file): as
// `ferry check` does (CheckConfig, on this machine), that it changes no
// key a reload cannot change, and that its uplink forwards something (an
// uplink that stays off could never confirm it). The problems are
// config.Errors at cand's lines.
func CheckRemote(local, cand *config.Config) error {
	var problems config.Errors
	for _, key := range restartKeys(local, cand) {
		problems = append(problems, cand.ErrorAt(key, "needs a restart to change, which a pushed configuration cannot do: keep the gateway's value"))
	}
	if cand.Uplink.Enabled != nil && *cand.Uplink.Enabled && len(forwardedStreams(cand)) == 0 {
		problems = append(problems, cand.ErrorAt("uplink", "forwards no stream (every route is read by a pipeline that outputs no stream): the uplink would stay off"))
	}
	_, err := CheckConfig(cand, HostCheck{})
	var es config.Errors
	switch {
	case err == nil:
	case errors.As(err, &es):
		problems = append(problems, es...)
	default:
		return err
	}
	if len(problems) > 0 {
		sortByLine(problems)
		return problems
	}
	return nil
}

// remoteApplier applies the remote configuration manager's choices: the
// version in force is updated first, so that the downlink the new parts
// start announces it (presence), and put back if the gateway refuses.
type remoteApplier struct{ g *Gateway }

func (a remoteApplier) Apply(ctx context.Context, cfg *config.Config, version uint64) error {
	old := a.g.configVersion.Swap(version)
	err := a.g.Apply(ctx, cfg)
	if err != nil {
		a.g.configVersion.CompareAndSwap(version, old)
	}
	return err
}
