package remoteconfig

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/gateway/config/signed"
)

// CheckFunc checks cand, a configuration replacing local's, as `ferry
// check` does and as a reload would: the gateway's CheckRemote. Its
// problems are config.Errors at cand's lines where it can.
type CheckFunc func(local, cand *config.Config) error

// Options are what AtStart and Effective need besides the local file.
type Options struct {
	// Check checks a stored configuration again; required.
	Check CheckFunc
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// Logger says why a stored configuration is not used; nil: discard.
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// maxPendingBoots is how many times the gateway may start with an applied
// configuration the uplink has not yet connected with; the next start puts
// back the last good one (AtStart).
const maxPendingBoots = 3

// Effective returns the configuration the gateway is to run, given its
// local file local, and its version: with remote_config enabled, the
// stored applied configuration when there is one that still verifies
// against local's trusted keys and passes Check, else local (version 0),
// logging why. It reads the state and writes nothing: a reload uses it.
func Effective(local *config.Config, o Options) (*config.Config, uint64) {
	o.defaults()
	if !local.RemoteConfig.Enabled {
		return local, 0
	}
	s := store{Dir(local)}
	cfg, v, err := loadStored(s, appliedFile, local, o.Check)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return local, 0
	case err != nil:
		o.Logger.Warn("stored remote configuration not used; running the local file", "component", "remote-config", "err", err)
		return local, 0
	}
	return cfg, v
}

// AtStart is Effective for the start of the gateway: it also counts the
// starts while the applied configuration awaits the uplink, and after
// maxPendingBoots of them puts the last good configuration back in force
// (persisted, status rolled_back) before the gateway runs the pending one
// again: one that crashes the gateway cannot keep it restarting.
func AtStart(local *config.Config, o Options) (*config.Config, uint64) {
	o.defaults()
	if !local.RemoteConfig.Enabled {
		return local, 0
	}
	s := store{Dir(local)}
	st, err := s.loadState()
	if err != nil {
		o.Logger.Warn("remote configuration state unreadable; rebuilt from the stored envelopes", "component", "remote-config", "err", err)
		st = s.rebuild()
	}
	if st.Pending {
		st.Boots++
		if st.Boots > maxPendingBoots {
			return rollbackAtStart(s, &st, local, o)
		}
	}
	if st.Pending || err != nil {
		if err := s.saveState(&st); err != nil {
			o.Logger.Error("cannot save the remote configuration state", "component", "remote-config", "err", err)
		}
	}
	return Effective(local, o)
}

// rollbackAtStart puts the good configuration in force instead of the
// pending one, which the gateway started with too often.
func rollbackAtStart(s store, st *state, local *config.Config, o Options) (*config.Config, uint64) {
	cfg, v, doc, err := goodConfig(s, st, local, o.Check)
	if err != nil {
		o.Logger.Warn("last good remote configuration not used; running the local file", "component", "remote-config", "err", err)
	}
	why := fmt.Errorf("%w: the gateway started %d times under it", ErrNoUplink, st.Boots-1)
	o.Logger.Warn("remote configuration rolled back at start", "component", "remote-config",
		"version", st.Applied, "back_to", v, "err", why)
	rolled := st.Applied
	if err := putInForce(s, st, v, doc, o.Now()); err != nil {
		o.Logger.Error("cannot save the remote configuration state", "component", "remote-config", "err", err)
	}
	st.Status = marshalStatus(local.GatewayID, rolled, v, StatusRolledBack, errorList(why), o.Now())
	if err := s.saveState(st); err != nil {
		o.Logger.Error("cannot save the remote configuration state", "component", "remote-config", "err", err)
	}
	return cfg, v
}

// goodConfig loads the last configuration the uplink connected with:
// good.conf, checked again, else local (version 0, doc nil).
func goodConfig(s store, st *state, local *config.Config, check CheckFunc) (*config.Config, uint64, []byte, error) {
	if st.Good == 0 {
		return local, 0, nil, nil
	}
	cfg, v, err := loadStored(s, goodFile, local, check)
	if err != nil {
		return local, 0, nil, err
	}
	doc, err := s.read(goodFile)
	if err != nil {
		return local, 0, nil, err
	}
	return cfg, v, doc, nil
}

// putInForce records version v (its envelope doc; nil: the local file) as
// the applied configuration, known good. The caller saves st.
func putInForce(s store, st *state, v uint64, doc []byte, now time.Time) error {
	var err error
	if v == 0 {
		err = s.remove(appliedFile)
		st.AppliedSHA = ""
	} else {
		err = s.write(appliedFile, doc)
		st.AppliedSHA = digest(doc)
	}
	st.Applied, st.Pending, st.Boots, st.AppliedAt = v, false, 0, now
	return err
}

// loadStored reads the envelope name, verifies it against local's
// trusted keys and gateway, and loads and checks its document as the
// configuration replacing local's.
func loadStored(s store, name string, local *config.Config, check CheckFunc) (*config.Config, uint64, error) {
	b, err := s.read(name)
	if err != nil {
		return nil, 0, err
	}
	cfg, env, err := load(b, local, check)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", s.path(name), err)
	}
	return cfg, env.Version, nil
}

// load verifies envelope b against local's trusted keys and gateway (any
// version) and loads and checks its document.
func load(b []byte, local *config.Config, check CheckFunc) (*config.Config, *signed.Envelope, error) {
	keys, err := local.RemoteConfig.PublicKeys()
	if err != nil {
		return nil, nil, err
	}
	env, err := signed.Verify(b, keys, local.GatewayID, 0)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := config.LoadRemote(env.Document, documentName(env.Version), local)
	if err != nil {
		return nil, env, err
	}
	if check != nil {
		if err := check(local, cfg); err != nil {
			return nil, env, err
		}
	}
	return cfg, env, nil
}

// documentName names a pushed configuration in errors and the audit log.
func documentName(v uint64) string { return fmt.Sprintf("remote configuration version %d", v) }
