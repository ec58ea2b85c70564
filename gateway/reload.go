package gateway

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/ferrygw/ferry/buffer"

	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/internal/sdnotify"
	"github.com/ferrygw/ferry/uplink"
)

// Sentinel errors of New, Reload, Apply and Replay.
var (
	// ErrReloadUnavailable is returned by Reload when the gateway was not
	// given a way to re-read its configuration (see WithReload).
	ErrReloadUnavailable = errors.New("gateway: reload: no configuration source")
	// ErrReloadRefused is returned by Reload and Apply when the new
	// configuration is invalid or changes a key that needs a restart; the
	// running configuration stays in force.
	ErrReloadRefused = errors.New("gateway: reload refused")
	// ErrNotRunning is returned by Reload, Apply and Replay when the
	// gateway is not running.
	ErrNotRunning = errors.New("gateway: not running")
	// ErrListen is returned by New when a listener's address cannot be
	// bound (taken, or not an address of this machine); the error names
	// the config key and the address.
	ErrListen = errors.New("gateway: cannot listen")
)

// WithReload lets Reload re-read the configuration with load (typically
// config.Load of the file the gateway started with).
func WithReload(load func() (*config.Config, error)) Option {
	return func(g *Gateway) { g.load = load }
}

// reloadReq hands new parts to runParts, which stops the old ones first.
type reloadReq struct {
	cfg   *config.Config
	parts *parts
	// between, when set, runs after the old parts stopped and before the
	// new ones start; its error is reported in err.
	between func() error
	err     error
	done    chan struct{}
}

// current returns the configuration and the parts in force.
func (g *Gateway) current() (*config.Config, *parts) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.cfg, g.parts
}

// runParts runs the replaceable parts (uplink, pipelines and their
// outboxes, drivers) and swaps them when Reload hands over new ones: the
// old parts are stopped and waited for before the new ones start, so no
// two forwarders or runners ever share a stream. A part failing stops the
// gateway, as any component does.
func (g *Gateway) runParts(ctx context.Context) error {
	defer close(g.partsDone)
	cfg, p := g.current()
	for {
		pctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- supervise(pctx, g.log, p.components(g, cfg)) }()

		var req *reloadReq
	wait:
		for {
			select {
			case err := <-done:
				if err != nil || ctx.Err() != nil {
					cancel()
					return err
				}
				done = nil // no part runs (none configured): wait on
			case <-ctx.Done():
				cancel()
				if done != nil {
					<-done
				}
				return nil
			case req = <-g.reloads:
				if old, next := p.dl, req.parts.dl; old != nil && next != nil && old.presence != "" && old.presence == next.presence {
					old.client.Handover()
				}
				g.handOverActuators(p, req.parts)
				break wait
			}
		}
		cancel()
		if done != nil {
			if err := <-done; err != nil {
				g.log.Warn("part failed while stopping for a reload", "err", err)
			}
		}
		g.settle(ctx)
		if req.between != nil {
			req.err = req.between()
		}
		g.mu.Lock()
		g.cfg, g.parts = req.cfg, req.parts
		g.mu.Unlock()
		cfg, p = req.cfg, req.parts
		close(req.done)
	}
}

// settleMsg is logged while a hand-over waits for the stopped parts'
// progress to be committed (a slow SD card shows here).
const settleMsg = "waiting for the stopped parts' progress to commit"

// settle returns once every acknowledgement the stopped parts made is
// committed. The last ones may still be in a commit under way, and while it
// runs buffer.Log.Acked reports neither them pending nor committed; the new
// uplink and deliverers start after what Acked says, so without this they
// would send those events again, under the new configuration. One commit
// of nothing, queued after them, waits for it.
func (g *Gateway) settle(ctx context.Context) {
	g.log.Debug(settleMsg)
	err := g.buf.Update(ctx, func(*buffer.Tx) error { return nil })
	if err != nil && ctx.Err() == nil {
		// A failed commit puts its acknowledgements back as pending,
		// where Acked sees them: the new parts still start right.
		g.log.Warn("buffer commit failed during a hand-over", "err", err)
	}
}

// Reload re-reads the configuration and applies it while the broker keeps
// its clients connected and the buffer keeps every event: pipelines, the
// uplink, drivers, ingest routes, users, ACLs, login limits and the TLS
// certificate change; buffered events stay where they are and each
// pipeline resumes from its committed position. A configuration that does
// not load, does not validate, or changes a key that needs a restart is
// refused (errors.Is ErrReloadRefused) with every reason, and the running
// one stays in force. With remote_config enabled in the file, what is
// applied is the file with the stored remote configuration in force
// (remoteconfig.Effective), not the file alone.
func (g *Gateway) Reload(ctx context.Context) error {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	if g.load == nil {
		return ErrReloadUnavailable
	}
	// systemd shows "reloading" meanwhile; ready again either way, since a
	// refused reload leaves the running configuration in force.
	_ = sdnotify.Reloading()
	defer func() { _ = sdnotify.Ready() }()
	local, err := g.load()
	if err != nil {
		return g.refuse(err)
	}
	cfg, version := g.effective(local)
	old := g.configVersion.Swap(version) // announced by the new parts' presence
	if err := g.apply(ctx, cfg); err != nil {
		g.configVersion.CompareAndSwap(version, old)
		return err
	}
	g.mu.Lock()
	g.local = local
	g.mu.Unlock()
	return nil
}

// Apply applies cfg, a configuration loaded and validated (config.Load,
// config.LoadRemote), exactly as Reload applies the file it reads: the
// same checks, the same refusals (errors.Is ErrReloadRefused, with every
// reason; the running configuration stays), the same hand-over. The
// remote configuration manager applies pushed configurations with it.
func (g *Gateway) Apply(ctx context.Context, cfg *config.Config) error {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	_ = sdnotify.Reloading()
	defer func() { _ = sdnotify.Ready() }()
	return g.apply(ctx, cfg)
}

// refuse logs and audits a refused configuration and returns err as a
// refusal.
func (g *Gateway) refuse(err error) error {
	g.log.Error("config reload refused; the running configuration stays", "err", err)
	g.auditConfig("config_refused", err.Error())
	return fmt.Errorf("%w: %w", ErrReloadRefused, err)
}

// apply puts cfg in force, or refuses it; the caller holds reloadMu.
func (g *Gateway) apply(ctx context.Context, cfg *config.Config) error {
	old, _ := g.current()
	if keys := restartKeys(old, cfg); len(keys) > 0 {
		return g.refuse(fmt.Errorf("these keys need a restart to change: %s", strings.Join(keys, ", ")))
	}
	bc, err := brokerConfig(cfg, g.log.With("component", "broker"))
	if err != nil {
		return g.refuse(err)
	}
	// The new TLS files must load, or the broker would keep serving the
	// old certificate while the reload says ok.
	if err := g.broker.CheckReconfigure(bc); err != nil {
		return g.refuse(err)
	}
	bopts, err := bufferOptions(cfg, g.log.With("component", "buffer"))
	if err != nil {
		return g.refuse(err)
	}
	p, err := g.buildParts(cfg)
	if err != nil {
		return g.refuse(err)
	}
	// From here on the new configuration is applied. Streams first, so a
	// new pipeline's position keeps its events from being deleted.
	g.buf.Configure(bopts.Streams)
	if err := g.broker.Reconfigure(bc); err != nil {
		// Checked by brokerConfig; a failure here leaves the old auth.
		g.log.Error("broker settings not applied", "err", err)
	}
	req := &reloadReq{cfg: cfg, parts: p, done: make(chan struct{})}
	if err := g.handOver(ctx, req); err != nil {
		return err
	}
	g.log.Info("config reloaded", "pipelines", len(cfg.Pipelines), "drivers", len(cfg.Drivers), "uplink", p.fwd != nil)
	g.auditConfig("config_reload", "")
	return nil
}

// restartKeys lists the keys whose change Reload cannot apply: listeners,
// where and how the buffer is stored, the broker's per-client limits (fixed
// when the broker starts), logging and the demo.
func restartKeys(old, new *config.Config) []string {
	var keys []string
	diff := func(key string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			keys = append(keys, key)
		}
	}
	diff("data_dir", old.DataDir, new.DataDir)
	diff("log", old.Log, new.Log)
	diff("broker.listen", old.Broker.Listen, new.Broker.Listen)
	diff("broker.websocket", old.Broker.Websocket, new.Broker.Websocket)
	// broker.tls: cert_file, key_file and client_ca_file (paths and
	// contents) and username_from reload (broker.Reconfigure): they apply
	// to clients connecting afterwards. The listener, and the policies
	// every client is held to, need a restart, which reconnects every
	// client under them.
	diff("broker.tls.listen", old.Broker.TLS.Listen, new.Broker.TLS.Listen)
	diff("broker.tls.require_client_cert", old.Broker.TLS.RequireClientCert, new.Broker.TLS.RequireClientCert)
	diff("broker.tls.min_version", old.Broker.TLS.MinVersion, new.Broker.TLS.MinVersion)
	diff("broker.persist_sessions", old.Broker.PersistSessions, new.Broker.PersistSessions)
	diff("broker.max_packet_size", old.Broker.MaxPacketSize, new.Broker.MaxPacketSize)
	diff("broker.max_clients", old.Broker.MaxClients, new.Broker.MaxClients)
	diff("broker.max_inflight", old.Broker.MaxInflight, new.Broker.MaxInflight)
	diff("broker.max_queued", old.Broker.MaxQueued, new.Broker.MaxQueued)
	diff("broker.max_keepalive", old.Broker.MaxKeepalive, new.Broker.MaxKeepalive)
	// The memory budget is fixed when the broker starts, like the
	// per-client limits.
	ob, nb := &old.Broker, &new.Broker
	diff("broker.max_connect_size", ob.MaxConnectSize, nb.MaxConnectSize)
	diff("broker.max_connecting", ob.MaxConnecting, nb.MaxConnecting)
	diff("broker.connect_timeout", ob.ConnectTimeout, nb.ConnectTimeout)
	diff("broker.max_retained", ob.MaxRetained, nb.MaxRetained)
	diff("broker.max_retained_bytes", ob.MaxRetainedBytes, nb.MaxRetainedBytes)
	diff("broker.max_subscriptions_per_client", ob.MaxSubscriptionsPerClient, nb.MaxSubscriptionsPerClient)
	diff("broker.max_subscriptions", ob.MaxSubscriptions, nb.MaxSubscriptions)
	diff("broker.max_offline_sessions", ob.MaxOfflineSessions, nb.MaxOfflineSessions)
	diff("broker.max_session_expiry", ob.MaxSessionExpiry, nb.MaxSessionExpiry)
	diff("broker.max_session_queue_bytes", ob.MaxSessionQueueBytes, nb.MaxSessionQueueBytes)
	diff("broker.max_queue_bytes", ob.MaxQueueBytes, nb.MaxQueueBytes)
	diff("ingest.durability", old.Ingest.Durability, new.Ingest.Durability)
	diff("ingest.batch_interval", old.Ingest.BatchInterval, new.Ingest.BatchInterval)
	diff("ingest.commit_interval", old.Ingest.CommitInterval, new.Ingest.CommitInterval)
	diff("buffer.ack_interval", old.Buffer.AckInterval, new.Buffer.AckInterval)
	diff("ingest.max_batch", old.Ingest.MaxBatch, new.Ingest.MaxBatch)
	diff("buffer.path", old.Buffer.Path, new.Buffer.Path)
	diff("buffer.on_corrupt", old.Buffer.OnCorrupt, new.Buffer.OnCorrupt)
	diff("buffer.min_free_disk", old.Buffer.MinFreeDisk, new.Buffer.MinFreeDisk)
	diff("buffer.encryption", old.Buffer.Encryption, new.Buffer.Encryption)
	diff("status", old.Status, new.Status)
	diff("audit", old.Audit, new.Audit)
	diff("demo", old.Demo, new.Demo)
	// The downlink subscribes to the remote configuration's topics when
	// it starts; the trusted keys and rollback_after reload.
	diff("remote_config.enabled", old.RemoteConfig.Enabled, new.RemoteConfig.Enabled)
	diff("remote_config.topic", old.RemoteConfig.Topic, new.RemoteConfig.Topic)
	diff("remote_config.status_topic", old.RemoteConfig.StatusTopic, new.RemoteConfig.StatusTopic)
	return keys
}

// Replay makes the uplink forward stream again from offset from: the
// event-streaming model, where a consumer can rejoin the log at any offset
// it still holds (see buffer.streams[].retain for keeping forwarded events).
// The uplink and the other parts are restarted around the rewind so no
// acknowledgement in flight moves the position past it. Handing the parts
// over waits at most a minute, or until ctx ends.
func (g *Gateway) Replay(ctx context.Context, stream string, from uint64) error {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	cfg, _ := g.current()
	if !cfg.Forwarded(stream) {
		return fmt.Errorf("gateway: replay: stream %q is not forwarded by the uplink", stream)
	}
	p, err := g.buildParts(cfg)
	if err != nil {
		return fmt.Errorf("gateway: replay: %w", err)
	}
	if p.fwd == nil {
		return errors.New("gateway: replay: the uplink is off")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req := &reloadReq{cfg: cfg, parts: p, done: make(chan struct{}), between: func() error {
		return g.buf.Rewind(stream, uplink.Consumer, from)
	}}
	if err := g.handOver(ctx, req); err != nil {
		return fmt.Errorf("gateway: replay: %w", err)
	}
	if req.err != nil {
		return fmt.Errorf("gateway: replay: %w", req.err)
	}
	g.log.Info("replaying a stream", "stream", stream, "from", from)
	return nil
}

// handOver gives req to runParts and waits until the new parts run.
func (g *Gateway) handOver(ctx context.Context, req *reloadReq) error {
	select {
	case g.reloads <- req:
	case <-g.partsDone:
		return ErrNotRunning
	case <-ctx.Done():
		return ctx.Err()
	}
	<-req.done // runParts always finishes a hand-over it took
	return nil
}
