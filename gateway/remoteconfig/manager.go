package remoteconfig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/gateway/config/signed"
)

// Applier applies a configuration to the running gateway as a reload
// does (the gateway's Apply): it returns once the configuration is in
// force, or refuses it with every reason, the running one staying.
// version is the configuration's (0: the local file), for what the
// gateway announces about itself while it starts the new parts.
type Applier interface {
	Apply(ctx context.Context, cfg *config.Config, version uint64) error
}

// Uplink reports on the uplink of the configuration in force.
type Uplink interface {
	// UplinkConnected reports whether the uplink is connected now, and
	// when it last connected (zero: never since it was started).
	UplinkConnected() (up bool, last time.Time)
}

// StatusSink publishes the latest payload of each topic, retained (the
// downlink: QoS 1, again on every connect). SetRetained must not block
// on the network.
type StatusSink interface {
	SetRetained(topic string, payload []byte)
}

// Config configures a Manager.
type Config struct {
	// Dir holds the state: Dir(local).
	Dir string
	// Local returns the gateway's local file as in force (New, then each
	// reload): trusted keys, gateway ID, topics and rollback_after come
	// from it, and it is the configuration of version 0.
	Local func() *config.Config
	// Check checks a configuration before it is applied; required.
	Check CheckFunc
	// Applier, Uplink and Status are the gateway and the downlink.
	Applier Applier
	Uplink  Uplink
	Status  StatusSink
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// Poll is how often Run looks at the uplink while an applied
	// configuration awaits it; 0: a second.
	Poll time.Duration
	// Logger is the one logger; nil: discard.
	Logger *slog.Logger
}

// maxAttempts is how many times Run starts applying a version before it
// refuses it as interrupted: a version whose apply crashes the gateway is
// not tried forever.
const maxAttempts = 2

// Manager receives, applies and if need be rolls back pushed
// configurations; see the package documentation.
type Manager struct {
	cfg   Config
	log   *slog.Logger
	store store
	wake  chan struct{}

	mu    sync.Mutex // guards the fields below and the files in Dir
	state state
	// candidate is the version of candidate.conf (0: none), candSHA its
	// digest.
	candidate uint64
	candSHA   string
	// pendingSince is when the applied configuration, pending, started
	// waiting for the uplink in this process: at its apply, or at New.
	pendingSince time.Time
}

// New returns a Manager over the state in c.Dir (as AtStart left it).
func New(c Config) (*Manager, error) {
	if c.Local == nil || c.Check == nil || c.Applier == nil || c.Uplink == nil || c.Status == nil || c.Dir == "" {
		return nil, errors.New("remoteconfig: Dir, Local, Check, Applier, Uplink and Status are required")
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Poll <= 0 {
		c.Poll = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{cfg: c, log: c.Logger.With("component", "remote-config"), store: store{c.Dir}, wake: make(chan struct{}, 1)}
	st, err := m.store.loadState()
	if err != nil {
		m.log.Warn("remote configuration state unreadable; rebuilt from the stored envelopes", "err", err)
		st = m.store.rebuild()
	}
	m.state = st
	if b, err := m.store.read(candidateFile); err == nil {
		if e, err := signed.Parse(b); err == nil {
			m.candidate, m.candSHA = e.Version, digest(b)
		}
		if m.candidate == 0 || (m.candidate <= st.Tried && m.candidate != st.Applying) {
			// Unreadable, or done with (the crash came before its
			// removal).
			m.candidate = 0
			_ = m.store.remove(candidateFile)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remoteconfig: %w", err)
	}
	if st.Pending {
		m.pendingSince = c.Now()
	}
	return m, nil
}

// Version returns the version in force (0: the local file).
func (m *Manager) Version() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state.Applied
}

// Offer takes a signed configuration as it arrived from the cloud. It
// returns nil once it is stored to be applied (or is the version in force
// or the one waiting already): the message may be acknowledged. A
// configuration that will not be applied returns an error wrapping
// ErrRefused and the reason (acknowledge it too; the refusal is on the
// status topic unless the last status is about the same version). Any
// other error means it was not stored. Offer does not wait for the
// configuration to be applied.
func (m *Manager) Offer(ctx context.Context, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	local := m.cfg.Local()
	if !local.RemoteConfig.Enabled {
		return fmt.Errorf("%w: %w", ErrRefused, ErrDisabled)
	}
	env, err := verify(payload, local)
	if err != nil {
		var v uint64
		if e, perr := signed.Parse(payload); perr == nil {
			v = e.Version
		}
		return m.refuseOffer(local, v, err)
	}
	sum := digest(payload)
	m.mu.Lock()
	st := &m.state
	switch {
	case env.Version == st.Applied && sum == st.AppliedSHA:
		m.mu.Unlock()
		m.log.Debug("remote configuration offered again: already in force", "version", env.Version)
		return nil
	case env.Version == m.candidate && sum == m.candSHA:
		m.mu.Unlock()
		return nil
	case env.Version <= max(st.Tried, st.Applied, m.candidate):
		running := max(st.Tried, st.Applied, m.candidate)
		m.mu.Unlock()
		why := fmt.Errorf("%w: version %d, this gateway has had version %d", signed.ErrNotNewer, env.Version, running)
		if env.Version == st.Applied {
			why = fmt.Errorf("%w: version %d is in force with another document; sign this one with a higher version", signed.ErrNotNewer, env.Version)
		}
		return m.refuseOffer(local, env.Version, why)
	}
	defer m.mu.Unlock()
	if err := m.store.write(candidateFile, payload); err != nil {
		m.log.Error("cannot store an offered remote configuration", "version", env.Version, "err", err)
		return fmt.Errorf("remoteconfig: store version %d: %w", env.Version, err)
	}
	m.candidate, m.candSHA = env.Version, sum
	m.log.Info("remote configuration received", "version", env.Version)
	select {
	case m.wake <- struct{}{}:
	default:
	}
	return nil
}

// verify checks the size and the envelope of payload for local.
func verify(payload []byte, local *config.Config) (*signed.Envelope, error) {
	if len(payload) > signed.MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", signed.ErrTooLarge, len(payload), signed.MaxSize)
	}
	keys, err := local.RemoteConfig.PublicKeys()
	if err != nil {
		return nil, err
	}
	return signed.Verify(payload, keys, local.GatewayID, 0)
}

// refuseOffer reports an offer refused for why; a version the last status
// is about already is refused without a new status (a retained message
// comes back on every reconnect).
func (m *Manager) refuseOffer(local *config.Config, version uint64, why error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !aboutVersion(m.state.Status, version) {
		m.log.Warn("remote configuration refused", "version", version, "err", why)
		m.setStatus(local, version, StatusRefused, errorList(why))
	} else {
		m.log.Debug("remote configuration refused again", "version", version, "err", why)
	}
	return fmt.Errorf("%w: %w", ErrRefused, why)
}

// setStatus records an outcome, saves the state and hands the payload to
// the sink, unless it is the outcome reported last. Callers hold mu.
func (m *Manager) setStatus(local *config.Config, version uint64, status string, errs []StatusError) {
	if sameOutcome(m.state.Status, version, status, errs) {
		return
	}
	m.state.Status = marshalStatus(local.GatewayID, version, m.state.Applied, status, errs, m.cfg.Now())
	m.save()
	_, topic := local.RemoteConfigTopics()
	m.cfg.Status.SetRetained(topic, m.state.Status)
}

// save writes the state; a failure is logged (the next save may work, and
// the in-memory state stays right for this process). Callers hold mu.
func (m *Manager) save() {
	if err := m.store.saveState(&m.state); err != nil {
		m.log.Error("cannot save the remote configuration state", "err", err)
	}
}

// Run applies what Offer stored and watches the uplink after an apply,
// until ctx ends. It starts by publishing the last status again and
// applying a candidate left by a previous run.
func (m *Manager) Run(ctx context.Context) error {
	_, topic := m.cfg.Local().RemoteConfigTopics()
	m.mu.Lock()
	if len(m.state.Status) > 0 {
		m.cfg.Status.SetRetained(topic, m.state.Status)
	}
	m.mu.Unlock()
	tick := time.NewTicker(m.cfg.Poll)
	defer tick.Stop()
	for {
		m.applyCandidate(ctx)
		m.watchUplink(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-m.wake:
		case <-tick.C:
		}
	}
}

// applyCandidate applies the candidate, if there is one, or refuses it.
func (m *Manager) applyCandidate(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	m.mu.Lock()
	v := m.candidate
	if v == 0 {
		m.mu.Unlock()
		return
	}
	b, err := m.store.read(candidateFile)
	if err != nil {
		m.log.Error("cannot read the stored remote configuration", "version", v, "err", err)
		m.candidate = 0
		m.mu.Unlock()
		return
	}
	st := &m.state
	if st.Applying == v {
		st.Attempts++
	} else {
		st.Applying, st.Attempts = v, 1
	}
	st.Tried = max(st.Tried, v)
	attempts := st.Attempts
	m.save()
	m.mu.Unlock()

	local := m.cfg.Local()
	var cfg *config.Config
	var env *signed.Envelope
	if attempts > maxAttempts {
		err = fmt.Errorf("%w %d times (the gateway stopped or crashed while applying it): not tried again", ErrInterrupted, attempts-1)
	} else if cfg, env, err = load(b, local, m.cfg.Check); err == nil && env.Version != v {
		err = fmt.Errorf("%w: the stored candidate changed", signed.ErrMalformed)
	}
	// The uplink's connections from here on are under the new
	// configuration's forwarder: Apply replaces it.
	since := m.cfg.Now()
	if err == nil {
		err = m.cfg.Applier.Apply(ctx, cfg, v)
		if err != nil && ctx.Err() != nil {
			return // stopped meanwhile: the next start tries again
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	st.Applying, st.Attempts = 0, 0
	if err != nil {
		m.log.Warn("remote configuration refused", "version", v, "err", err)
		m.setStatus(local, v, StatusRefused, errorList(err))
	} else {
		if werr := m.store.write(appliedFile, b); werr != nil {
			// In force now, but a restart goes back to the previous one.
			m.log.Error("cannot store the applied remote configuration", "version", v, "err", werr)
		}
		st.Applied, st.AppliedSHA, st.Pending, st.Boots, st.AppliedAt = v, digest(b), true, 0, since
		m.pendingSince = since
		m.log.Info("remote configuration applied", "version", v)
		m.setStatus(local, v, StatusApplied, []StatusError{})
	}
	m.save()
	if m.candidate == v {
		m.candidate = 0
		if rerr := m.store.remove(candidateFile); rerr != nil {
			m.log.Error("cannot remove the stored remote configuration", "version", v, "err", rerr)
		}
	}
}

// watchUplink keeps the applied configuration once the uplink connects
// under it, and rolls it back if it has not within rollback_after.
func (m *Manager) watchUplink(ctx context.Context) {
	m.mu.Lock()
	pending, since, v := m.state.Pending, m.pendingSince, m.state.Applied
	m.mu.Unlock()
	if !pending || ctx.Err() != nil {
		return
	}
	up, last := m.cfg.Uplink.UplinkConnected()
	if up || (!last.IsZero() && !last.Before(since)) {
		m.confirm(v)
		return
	}
	local := m.cfg.Local()
	if after := local.RemoteConfig.RollbackAfter; m.cfg.Now().Sub(since) >= after {
		m.rollback(ctx, local, v, after)
	}
}

// confirm records version v as good: the uplink connected under it.
func (m *Manager) confirm(v uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := &m.state
	if !st.Pending || st.Applied != v {
		return
	}
	var err error
	if v == 0 {
		err = m.store.remove(goodFile)
	} else {
		var b []byte
		if b, err = m.store.read(appliedFile); err == nil {
			err = m.store.write(goodFile, b)
		}
	}
	if err != nil {
		m.log.Error("cannot store the good remote configuration", "version", v, "err", err)
		return // tried again at the next poll
	}
	st.Good, st.Pending, st.Boots = v, false, 0
	m.save()
	m.log.Info("uplink connected under the remote configuration; kept", "version", v)
}

// rollback applies the last configuration the uplink connected with
// instead of version v, which it did not connect under within after; if
// that cannot be applied, the local file.
func (m *Manager) rollback(ctx context.Context, local *config.Config, v uint64, after time.Duration) {
	m.mu.Lock()
	st := m.state
	m.mu.Unlock()
	cfg, target, doc, err := goodConfig(m.store, &st, local, m.cfg.Check)
	if err != nil {
		m.log.Warn("last good remote configuration not usable; rolling back to the local file", "err", err)
	}
	err = m.cfg.Applier.Apply(ctx, cfg, target)
	if err != nil && target != 0 && ctx.Err() == nil {
		m.log.Warn("last good remote configuration refused; rolling back to the local file", "version", target, "err", err)
		cfg, target, doc = local, 0, nil
		err = m.cfg.Applier.Apply(ctx, cfg, 0)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			m.log.Error("cannot roll back the remote configuration; trying again later", "version", v, "err", err)
			m.pendingSince = m.cfg.Now() // another rollback_after before the next try
		}
		return
	}
	if m.state.Applied != v {
		return // replaced meanwhile
	}
	if perr := putInForce(m.store, &m.state, target, doc, m.cfg.Now()); perr != nil {
		m.log.Error("cannot store the rolled-back configuration", "version", target, "err", perr)
	}
	why := fmt.Errorf("%w within %s; back to version %d", ErrNoUplink, after, target)
	m.log.Warn("remote configuration rolled back", "version", v, "back_to", target, "err", why)
	m.setStatus(local, v, StatusRolledBack, errorList(why))
	m.save()
}
