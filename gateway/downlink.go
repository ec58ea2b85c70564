package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/ferrygw/ferry/downlink"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/ferrygw/ferry/gateway/commands"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/gateway/outbox"
	"github.com/ferrygw/ferry/gateway/remoteconfig"
	"github.com/ferrygw/ferry/gateway/resend"
	"github.com/ferrygw/ferry/uplink"
	"github.com/mochi-mqtt/server/v2/packets"
)

// WithVersion tells the gateway its own version, for presence messages.
func WithVersion(v string) Option {
	return func(g *Gateway) { g.version = v }
}

// downlinkPart is the downlink session and the local deliverer of its
// commands: a reload replaces them together.
type downlinkPart struct {
	client  *downlink.Client
	sink    *commands.Sink
	deliver *commands.Deliverer
	stream  string
	log     *slog.Logger
	// presence is the presence topic ("" none): a reload to a downlink
	// with the same one hands presence over (downlink.Client.Handover).
	presence string
}

// buildDownlink builds the downlink of cfg, or returns nil when cfg runs
// no downlink session; fwd (nil: none) serves its resend requests.
func (g *Gateway) buildDownlink(cfg *config.Config, fwd *uplink.Forwarder) (*downlinkPart, error) {
	if !cfg.DownlinkSession() {
		return nil, nil
	}
	log := g.log.With("component", "downlink")
	d := &cfg.Downlink
	// The uplink's endpoints, TLS and credentials, read the same way.
	uc, err := uplinkConfig(cfg, log)
	if err != nil {
		return nil, err
	}
	p := &downlinkPart{
		sink:    &commands.Sink{Store: g.buf, Stream: d.Stream, Now: g.now, Log: log},
		deliver: &commands.Deliverer{Pub: localBroker{g}, Now: g.now, Log: log.With("component", "commands")},
		stream:  d.Stream,
		log:     log,
	}
	dc := downlink.Config{
		ClientID:       d.ClientID,
		Username:       uc.Username,
		Password:       uc.Password,
		Keepalive:      uc.Keepalive,
		ConnectTimeout: uc.ConnectTimeout,
		SessionExpiry:  d.SessionExpiry,
		BackoffMin:     uc.BackoffMin,
		BackoffMax:     uc.BackoffMax,
		ProbeInterval:  uc.ProbeInterval,
		StableAfter:    uc.StableAfter,
		// A command must not land where replies are ingested.
		ReservedLocal: []string{config.ReplyTopicPrefix},
		Commands:      p.sink,
		Retained:      g.retained,
		Replies:       &commands.Replies{Log: g.buf, Commands: d.Stream},
		ReplyStream:   d.ReplyStream,
		MaxPayload:    int(d.MaxPayload),
		Now:           g.now,
		Rand:          rand.Float64,
		Logger:        log,
	}
	for _, ep := range uc.Endpoints {
		dc.Endpoints = append(dc.Endpoints, downlink.Endpoint{URL: ep.URL, TLS: ep.TLS})
	}
	for _, s := range d.Subscriptions {
		dc.Subscriptions = append(dc.Subscriptions, downlink.Subscription{
			Filter:      cfg.Render(s.CloudPrefix + s.Topic),
			CloudPrefix: cfg.Render(s.CloudPrefix),
			LocalPrefix: s.LocalPrefix,
			QoS:         byte(*s.QoS),
			ReplyTopic:  cfg.Render(s.ReplyTopic),
		})
	}
	if cfg.RemoteConfig.Enabled && g.remote != nil {
		dc.ConfigTopic, _ = cfg.RemoteConfigTopics()
		dc.Configs = remoteOffers{g.remote}
	}
	if cfg.ResendOn() {
		h := &resend.Handler{GatewayID: cfg.GatewayID, Epoch: g.buf.Epoch, Log: g.log.With("component", "resend")}
		if fwd != nil {
			h.Fwd = fwd // a reload replaces both: a pending resend may be lost
		}
		dc.ResendTopic, dc.Resends = cfg.ResendTopic(), h
	}
	if cfg.PresenceOn() {
		topic := cfg.Render(d.Presence.Topic)
		dc.Presence = downlink.Presence{
			Topic:   topic,
			Online:  g.presence(cfg.GatewayID, "online"),
			Offline: g.presence(cfg.GatewayID, "offline"),
		}
		p.presence = topic
	}
	if p.client, err = downlink.New(dc); err != nil {
		return nil, fmt.Errorf("downlink: %w", err)
	}
	return p, nil
}

// localBroker publishes on the gateway's broker, which New creates after
// the parts.
type localBroker struct{ g *Gateway }

func (b localBroker) Inject(pk packets.Packet) error { return b.g.broker.Inject(pk) }

// Presence is the payload of a presence message (downlink.presence).
type Presence struct {
	State         string    `json:"state"` // online or offline
	GatewayID     string    `json:"gateway_id"`
	Version       string    `json:"version,omitempty"`
	ConfigVersion uint64    `json:"config_version"` // 0: the local file
	Since         time.Time `json:"since"`          // when this gateway process started
}

func (g *Gateway) presence(gatewayID, state string) []byte {
	b, _ := json.Marshal(Presence{ // cannot fail: strings, a number and a time
		State: state, GatewayID: gatewayID, Version: g.version,
		ConfigVersion: g.configVersion.Load(), Since: g.since,
	})
	return b
}

// remoteStatus hands the remote configuration's status to the downlink,
// which publishes it retained after every connect.
type remoteStatus struct{ g *Gateway }

func (s remoteStatus) SetRetained(topic string, payload []byte) { s.g.retained.Set(topic, payload) }

// remoteOffers passes configurations from the cloud to the remote
// configuration manager: one it refuses is acknowledged all the same (the
// refusal is on the status topic), one it could not store is not.
type remoteOffers struct{ m *remoteconfig.Manager }

func (r remoteOffers) OfferConfig(ctx context.Context, payload []byte) error {
	err := r.m.Offer(ctx, payload)
	if errors.Is(err, remoteconfig.ErrRefused) {
		return nil
	}
	return err
}

// components lists the downlink's components.
func (p *downlinkPart) components(g *Gateway) []component {
	return []component{
		{"downlink", p.client.Run},
		{"commands", func(ctx context.Context) error {
			return outbox.DrainAs(ctx, g.buf, p.stream, commands.Consumer, p.log, p.deliver.Deliver)
		}},
	}
}

// replyRoute is the ingest route that stores local replies to commands.
func replyRoute(cfg *config.Config) (broker.Route, bool) {
	if !cfg.DownlinkSession() {
		return broker.Route{}, false
	}
	return broker.Route{Topics: []string{commands.ReplyFilter}, Stream: cfg.Downlink.ReplyStream}, true
}
