package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/uplink"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// demo is what `make run` shows: a few MQTT sensors publishing readings to
// the gateway, and an embedded broker standing in for the cloud that goes
// down and comes back on a schedule, so the backlog can be watched growing
// and draining.
type demo struct {
	cfg config.Demo
	log *slog.Logger
}

func newDemo(cfg *config.Config, log *slog.Logger) *demo {
	return &demo{cfg: cfg.Demo, log: log}
}

func (d *demo) Run(ctx context.Context, brokerAddr string) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	if d.cfg.Cloud.Listen != "" {
		wg.Add(1)
		go func() { defer wg.Done(); d.runCloud(ctx) }()
	}
	for i := 1; i <= d.cfg.Sensors; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); d.runSensor(ctx, i, brokerAddr) }()
	}
	<-ctx.Done()
	return nil
}

// runSensor publishes a JSON temperature reading (a slow sine wave) at QoS
// 1 every interval, as a real sensor would, reconnecting when needed.
func (d *demo) runSensor(ctx context.Context, i int, addr string) {
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).
		SetClientID(fmt.Sprintf("demo-sensor-%d", i)).SetCleanSession(true).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(time.Second)
	c := paho.NewClient(opts)
	c.Connect()
	defer c.Disconnect(100)
	topic := fmt.Sprintf("%s/%d", d.cfg.Topic, i)
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	for seq := 1; ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		temp := 21 + 3*math.Sin(float64(seq)/30+float64(i))
		payload := fmt.Sprintf(`{"seq":%d,"temp_c":%.2f}`, seq, temp)
		c.Publish(topic, 1, false, payload)
	}
}

// runCloud serves the stand-in cloud, cutting it off the network for
// DownFor after every UpFor when both are set. The outage is a network
// outage, as a real one is: the cloud broker itself keeps running with its
// sessions, so a watcher with a persistent session (`mosquitto_sub -c`)
// gets the readings the gateway replays even if the gateway reconnects
// first.
func (d *demo) runCloud(ctx context.Context) {
	var received atomic.Uint64
	s := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	_ = s.AddHook(new(auth.AllowHook), nil)
	_ = s.AddHook(&cloudHook{log: d.log, received: &received}, nil)
	if err := s.Serve(); err != nil {
		d.log.Error("stand-in cloud cannot start", "err", err)
		return
	}
	defer s.Close()
	const id = "cloud"
	for {
		if err := s.AddListener(listeners.NewTCP(listeners.Config{ID: id, Address: d.cfg.Cloud.Listen})); err != nil {
			d.log.Error("stand-in cloud cannot listen", "addr", d.cfg.Cloud.Listen, "err", err)
			return
		}
		s.Listeners.Serve(id, s.EstablishConnection)
		d.log.Info("stand-in cloud UP", "addr", d.cfg.Cloud.Listen, "received_total", received.Load())
		if !sleep(ctx, d.cfg.Cloud.UpFor) {
			return
		}
		s.Listeners.Close(id, func(string) { dropClients(s, id) })
		s.Listeners.Delete(id)
		d.log.Info("stand-in cloud DOWN: the gateway keeps every event in its buffer until it returns",
			"for", d.cfg.Cloud.DownFor, "received_total", received.Load())
		if !sleep(ctx, d.cfg.Cloud.DownFor) {
			return
		}
	}
}

// dropClients cuts the connections of listener's clients as a network
// outage does, without a DISCONNECT: MQTT 3.1.1 has no server DISCONNECT,
// and clients such as mosquitto_sub treat one as a protocol error and exit
// instead of reconnecting.
func dropClients(s *mqtt.Server, listener string) {
	for _, cl := range s.Clients.GetByListener(listener) {
		cl.Stop(packets.ErrServerShuttingDown)
	}
}

// sleep waits for d (forever when d is 0) and reports whether ctx is still
// live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		<-ctx.Done()
		return false
	}
	return sleepCtx(ctx, d)
}

// cloudHook logs what the stand-in cloud receives, at most one line a
// second.
type cloudHook struct {
	mqtt.HookBase
	log      *slog.Logger
	received *atomic.Uint64
	last     atomic.Int64
}

func (h *cloudHook) ID() string { return "demo-cloud" }

func (h *cloudHook) Provides(b byte) bool { return b == mqtt.OnPublish }

func (h *cloudHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	n := h.received.Add(1)
	now := time.Now().Unix()
	if last := h.last.Load(); last != now && h.last.CompareAndSwap(last, now) {
		evs, err := uplink.DecodeMessage(pk.Payload)
		attrs := []any{"topic", pk.TopicName, "received_total", n}
		if err == nil && len(evs) > 0 {
			attrs = append(attrs, "events", len(evs), "id", evs[0].ID.String(),
				"age", time.Since(evs[0].Time).Round(time.Millisecond).String())
		}
		h.log.Info("cloud received", attrs...)
	}
	return pk, nil
}

// sleepCtx waits for d, or until ctx ends; it reports whether ctx is still
// live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
