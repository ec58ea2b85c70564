package downlink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

const (
	// shutdownDrain is how long Run, when cancelled, waits for the PUBACKs
	// of publishes in flight before it disconnects.
	shutdownDrain = time.Second
	// disconnectWithWill is the DISCONNECT reason code that has the cloud
	// publish the will (the Offline presence) on a clean shutdown.
	disconnectWithWill = 0x04
	// queueRetry is the pause after a failed reply queue read.
	queueRetry = time.Second
)

// Client is ferry's MQTT 5 session with the cloud for commands, replies,
// configurations and presence. Create one with New and start it with Run;
// Status may be called from any goroutine.
type Client struct {
	cfg       Config
	log       *slog.Logger
	maxPacket int // announced Maximum Packet Size
	running   atomic.Bool
	handover  atomic.Bool // see Handover

	mu     sync.Mutex // guards status
	status Status

	resendOut chan resendReply // resend replies waiting to be published (resend.go)
}

// Handover makes the next stop of Run disconnect without the will: the
// presence stays online. The gateway calls it when a reload replaces this
// Client with one that publishes the same presence, so that a reload does
// not show the board offline for a moment.
func (c *Client) Handover() { c.handover.Store(true) }

// New validates cfg (errors wrap ErrConfig), applies defaults and returns
// a Client.
func New(cfg Config) (*Client, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	return &Client{
		cfg:       cfg,
		log:       cfg.Logger,
		maxPacket: cfg.MaxPayload + packetOverhead,
		status:    Status{Dropped: map[string]uint64{}},
		resendOut: make(chan resendReply, maxResendReplies),
	}, nil
}

// Run connects and serves the session until ctx is cancelled; it then
// disconnects (the cloud publishes the Offline presence), waits for all of
// its goroutines and returns nil. It returns an error only when called
// while another Run of c is active.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer c.running.Store(false)
	rc := newReconnect(c.cfg)
	for ctx.Err() == nil {
		s, err := c.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			c.setError(err)
			d := rc.afterConnectFailure(err)
			if errors.Is(err, ErrRefused) {
				c.log.Warn("cloud refused the connection; backing off", "retry_in", d.Round(time.Millisecond), "err", err)
			} else {
				c.log.Warn("no endpoint reachable; probing", "retry_in", d.Round(time.Millisecond), "err", err)
			}
			sleep(ctx, d)
			continue
		}
		up := c.cfg.Now()
		err = c.runSession(ctx, s)
		c.setDisconnected(err)
		if ctx.Err() != nil {
			break
		}
		upFor := c.cfg.Now().Sub(up)
		d := rc.afterSession(upFor, errors.Is(err, ErrSink))
		c.log.Warn("disconnected", "endpoint", s.url, "up_for", upFor.Round(time.Millisecond),
			"retry_in", d.Round(time.Millisecond), "err", err)
		sleep(ctx, d)
	}
	c.update(func(s *Status) { s.Connected = false })
	return nil
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// session is one connection and what runs on it.
type session struct {
	c       *Client
	url     string
	wire    *wireConn
	pc      *paho.Client
	connack *paho.Connack

	// link is cancelled, with the cause, when the connection is lost or
	// torn down; publishes wait on it.
	link       context.Context
	cancelLink context.CancelCauseFunc
	// work is cancelled with link or with Run's context: sinks get it,
	// and the publishing loops stop taking new work when it is done.
	work     context.Context
	stopWork context.CancelFunc

	serverMaxPacket int // the cloud's Maximum Packet Size (0: none)
	wg              sync.WaitGroup
}

// lost ends the session because of err: the connection is closed first,
// so that no PUBACK can follow (paho acknowledges a message after its
// handler returns), and paho's reader fails and shuts the client down.
func (s *session) lost(err error) {
	s.end(err)
	s.wire.Close()
}

// end cancels link with err (the first cause wins) and work, at once:
// the handler must see it for the next message paho routes.
func (s *session) end(err error) {
	s.cancelLink(err)
	s.stopWork()
}

// connect tries each endpoint in order and returns the first session.
func (c *Client) connect(ctx context.Context) (*session, error) {
	var errs []error
	for _, ep := range c.cfg.Endpoints {
		s, err := c.open(ctx, ep)
		if err == nil {
			return s, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs = append(errs, fmt.Errorf("%s: %w", ep.URL, err))
	}
	return nil, fmt.Errorf("%w: %w", ErrConnect, errors.Join(errs...))
}

// open dials ep and establishes the MQTT session. Errors wrap
// ErrUnreachable or ErrRefused.
func (c *Client) open(ctx context.Context, ep Endpoint) (*session, error) {
	w, err := dial(ctx, ep, c.cfg.ConnectTimeout, c.maxPacket)
	if err != nil {
		return nil, classifyDialError(err)
	}
	s := &session{c: c, url: ep.URL, wire: w}
	s.link, s.cancelLink = context.WithCancelCause(context.WithoutCancel(ctx))
	s.work, s.stopWork = context.WithCancel(ctx)
	stop := context.AfterFunc(s.link, s.stopWork)
	w.onDone = func(err error) {
		s.end(fmt.Errorf("%w: %s: %w", ErrConnectionLost, ep.URL, err))
	}
	s.pc = paho.NewClient(paho.ClientConfig{
		ClientID:          c.cfg.ClientID,
		Conn:              w,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){s.onPublish},
		PacketTimeout:     c.cfg.ConnectTimeout,
		OnClientError: func(err error) {
			s.lost(fmt.Errorf("%w: %s: %v", ErrConnectionLost, ep.URL, err))
		},
		// OnServerDisconnect is left out: paho closes the connection after
		// a DISCONNECT from the cloud, and wireConn reports its reason.
	})
	cctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	ca, err := s.pc.Connect(cctx, c.connectPacket())
	cancel()
	if err != nil {
		stop()
		s.stopWork()
		s.lost(err)
		if ca != nil && ca.ReasonCode >= 0x80 {
			reason := ""
			if ca.Properties != nil {
				reason = ca.Properties.ReasonString
			}
			return nil, fmt.Errorf("%w: CONNACK %#02x %q", ErrRefused, ca.ReasonCode, reason)
		}
		return nil, fmt.Errorf("%w: MQTT handshake: %w", ErrRefused, err)
	}
	s.connack = ca
	if ca.Properties != nil && ca.Properties.MaximumPacketSize != nil {
		s.serverMaxPacket = int(*ca.Properties.MaximumPacketSize)
	}
	return s, nil
}

// connectPacket is the CONNECT: a persistent session (Clean Start off,
// Session Expiry), the bounds on what the cloud may send, and the will.
func (c *Client) connectPacket() *paho.Connect {
	expiry := uint32(c.cfg.SessionExpiry / time.Second)
	recvMax := uint16(DefaultReceiveMaximum)
	maxPacket := uint32(c.maxPacket)
	topicAliases := uint16(0)
	cp := &paho.Connect{
		ClientID:   c.cfg.ClientID,
		KeepAlive:  uint16(c.cfg.Keepalive / time.Second),
		CleanStart: false,
		Properties: &paho.ConnectProperties{
			SessionExpiryInterval: &expiry,
			ReceiveMaximum:        &recvMax,
			MaximumPacketSize:     &maxPacket,
			TopicAliasMaximum:     &topicAliases,
			RequestProblemInfo:    true,
		},
	}
	if c.cfg.Username != "" {
		cp.Username, cp.UsernameFlag = c.cfg.Username, true
	}
	if c.cfg.Password != "" {
		cp.Password, cp.PasswordFlag = []byte(c.cfg.Password), true
	}
	if p := c.cfg.Presence; p.Topic != "" {
		cp.WillMessage = &paho.WillMessage{Retain: true, QoS: 1, Topic: p.Topic, Payload: p.Offline}
		cp.WillProperties = &paho.WillProperties{}
	}
	return cp
}

// classifyDialError wraps a failed dial in ErrUnreachable when nothing
// answered, and in ErrRefused when a TLS or WebSocket handshake failed.
func classifyDialError(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	return fmt.Errorf("%w: %w", ErrRefused, err)
}

// runSession serves s until the connection is lost or ctx is done, then
// disconnects and waits for every goroutine of the session. It returns why
// the session ended.
func (c *Client) runSession(ctx context.Context, s *session) error {
	ca := s.connack
	granted := c.cfg.SessionExpiry
	if ca.Properties != nil && ca.Properties.SessionExpiryInterval != nil {
		granted = time.Duration(*ca.Properties.SessionExpiryInterval) * time.Second
	}
	c.setConnected(s.url, c.cfg.Now(), ca.SessionPresent, granted)
	c.log.Info("connected", "endpoint", s.url, "session_present", ca.SessionPresent, "session_expiry", granted)
	if granted < c.cfg.SessionExpiry {
		c.log.Warn("the cloud keeps the session for less than configured: commands sent while the gateway is away longer are lost",
			"granted", granted, "configured", c.cfg.SessionExpiry)
	}

	// Replies need no subscription: they start first. Presence waits for
	// the subscriptions: "online" tells the cloud that a command sent now
	// is received (on a first session the cloud holds none before the
	// SUBACK).
	if c.cfg.Replies != nil {
		s.wg.Add(1)
		go s.replyLoop()
	}
	if c.cfg.ResendTopic != "" {
		s.wg.Add(1)
		go s.publishResendReplies()
	}
	if err := s.subscribe(); err != nil {
		s.lost(err)
	} else {
		s.wg.Add(1)
		go s.publishRetained()
	}

	<-s.work.Done()
	if ctx.Err() != nil && s.link.Err() == nil {
		// Shutting down: let the PUBACKs of publishes in flight arrive,
		// then disconnect so that the cloud publishes the will (the
		// Offline presence) and keeps the session.
		waitGroup(&s.wg, shutdownDrain)
		s.cancelLink(context.Canceled)
		reason := byte(0x00)
		if c.cfg.Presence.Topic != "" && !c.handover.Load() {
			reason = disconnectWithWill
		}
		_ = s.pc.Disconnect(&paho.Disconnect{ReasonCode: reason})
	}
	s.lost(context.Canceled) // no-op after a loss or the DISCONNECT
	s.wg.Wait()
	<-s.pc.Done()
	return context.Cause(s.link)
}

// waitGroup waits for wg, at most d.
func waitGroup(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// subscribe subscribes to the command filters and the config topic. A
// filter the cloud refuses is logged and the session goes on without it:
// presence, replies and the other filters still work.
func (s *session) subscribe() error {
	cfg := &s.c.cfg
	var subs []paho.SubscribeOptions
	for _, sub := range cfg.Subscriptions {
		subs = append(subs, paho.SubscribeOptions{Topic: sub.Filter, QoS: sub.QoS, RetainHandling: 1, NoLocal: true})
	}
	if cfg.ConfigTopic != "" {
		subs = append(subs, paho.SubscribeOptions{Topic: cfg.ConfigTopic, QoS: 1, RetainHandling: 1, NoLocal: true})
	}
	if cfg.ResendTopic != "" && !s.c.commandFilterMatches(cfg.ResendTopic) {
		// Not retained: a request is for now (RetainHandling 2).
		subs = append(subs, paho.SubscribeOptions{Topic: cfg.ResendTopic, QoS: 1, RetainHandling: 2, NoLocal: true})
	}
	if len(subs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(s.work, cfg.ConnectTimeout)
	defer cancel()
	sa, err := s.pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs})
	if sa == nil {
		if s.work.Err() != nil {
			return nil // shutting down, or already lost
		}
		return fmt.Errorf("%w: %s: subscribe: %v", ErrConnectionLost, s.url, err)
	}
	for i, code := range sa.Reasons {
		if i >= len(subs) {
			break
		}
		switch {
		case code >= 0x80:
			err := fmt.Errorf("the cloud refused the subscription to %q: reason %#02x", subs[i].Topic, code)
			s.c.setError(err)
			s.c.log.Error("subscription refused; its commands will not arrive", "filter", subs[i].Topic, "reason", fmt.Sprintf("%#02x", code))
		case code < subs[i].QoS:
			s.c.log.Warn("the cloud granted a lower QoS than asked: commands may be lost", "filter", subs[i].Topic, "granted", code, "asked", subs[i].QoS)
		}
	}
	return nil
}

// errCloudRefused is a publish the cloud answered with an error reason
// code (or that paho refused to send, such as a retained message to a
// cloud without retain): sending it again would fail again.
var errCloudRefused = errors.New("refused by the cloud")

// publish publishes at QoS 1 and waits for the PUBACK, at most
// ConnectTimeout. Errors wrap errCloudRefused or ErrConnectionLost.
func (s *session) publish(topic string, payload []byte, retain bool, props *paho.PublishProperties) error {
	ctx, cancel := context.WithTimeout(s.link, s.c.cfg.ConnectTimeout)
	defer cancel()
	resp, err := s.pc.Publish(ctx, &paho.Publish{QoS: 1, Retain: retain, Topic: topic, Payload: payload, Properties: props})
	switch {
	case err == nil:
		return nil
	case resp != nil && resp.ReasonCode >= 0x80:
		return fmt.Errorf("%w: reason %#02x", errCloudRefused, resp.ReasonCode)
	case errors.Is(err, paho.ErrInvalidArguments):
		return fmt.Errorf("%w: %v", errCloudRefused, err)
	}
	return fmt.Errorf("%w: %s: publish: %v", ErrConnectionLost, s.url, err)
}

// subscribed reports whether topic is the config topic or matches a
// command filter: the client never publishes there, so that nothing it
// sends can come back to it.
func (c *Client) subscribed(topic string) bool {
	if topic == c.cfg.ConfigTopic || topic == c.cfg.ResendTopic && topic != "" {
		return true
	}
	return c.commandFilterMatches(topic)
}

// commandFilterMatches reports whether a command filter matches topic.
func (c *Client) commandFilterMatches(topic string) bool {
	for _, sub := range c.cfg.Subscriptions {
		if MatchFilter(sub.Filter, topic) {
			return true
		}
	}
	return false
}

// publishRetained publishes the Online presence, then every Retained
// entry, then each one Set while the session lasts.
func (s *session) publishRetained() {
	defer s.wg.Done()
	cfg := &s.c.cfg
	if p := cfg.Presence; p.Topic != "" && !s.publishRetainedOne(p.Topic, p.Online) {
		return
	}
	if cfg.Retained == nil {
		return
	}
	sent := map[string]uint64{}
	for {
		changed, todo := cfg.Retained.pending(sent)
		for _, it := range todo {
			if s.work.Err() != nil || !s.publishRetainedOne(it.topic, it.payload) {
				return
			}
			sent[it.topic] = it.gen
		}
		select {
		case <-changed:
		case <-s.work.Done():
			return
		}
	}
}

// publishRetainedOne publishes one retained message. It returns false when
// the session is ending.
func (s *session) publishRetainedOne(topic string, payload []byte) bool {
	if err := checkTopicName(topic); err != nil || s.c.subscribed(topic) {
		if err == nil {
			err = errors.New("the client subscribes to it")
		}
		s.c.log.Error("not publishing a retained message to an invalid topic", "topic", topic, "err", err)
		return true
	}
	err := s.publish(topic, payload, true, nil)
	switch {
	case err == nil:
		s.c.update(func(st *Status) { st.RetainedPublished++ })
	case errors.Is(err, errCloudRefused):
		s.c.setError(err)
		s.c.log.Error("the cloud refused a retained message", "topic", topic, "err", err)
	default:
		if s.work.Err() == nil {
			s.lost(err)
		}
		return false
	}
	return true
}

func (c *Client) setConnected(url string, now time.Time, present bool, expiry time.Duration) {
	c.update(func(s *Status) {
		if !s.LastConnected.IsZero() {
			s.Reconnects++
		}
		s.Connected = true
		s.Endpoint = url
		s.LastConnected = now
		s.SessionPresent = present
		s.SessionExpiry = expiry
	})
}

func (c *Client) setDisconnected(err error) {
	now := c.cfg.Now()
	c.update(func(s *Status) {
		s.Connected = false
		s.LastDisconnected = now
		if err != nil && !errors.Is(err, context.Canceled) {
			s.LastError = err.Error()
		}
	})
}
