package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/ferrygw/ferry/drivers"
	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
)

// downlinkYAML is the downlink section of the end-to-end tests: commands
// on gw1/cmd/X are delivered locally on cmd/X.
const downlinkYAML = `downlink:
  session_expiry: 1h
  subscriptions:
    - cloud_prefix: "{gateway_id}/cmd/"
      local_prefix: "cmd/"
      reply_topic: "{gateway_id}/reply"
`

func u32(v uint32) *uint32 { return &v }

// presenceOf decodes a presence message.
func presenceOf(t *testing.T, m *paho.Publish) gateway.Presence {
	t.Helper()
	var p gateway.Presence
	if err := json.Unmarshal(m.Payload, &p); err != nil {
		t.Fatalf("presence %q: %v", m.Payload, err)
	}
	return p
}

// TestCommandRoundTrip runs the ferry binary against a Mosquitto cloud: a
// cloud service calls a local device through ferry and gets its answer
// (MQTT 5 request/response); the device sees the command's properties;
// nothing the downlink carries goes back up; presence says online and,
// after a clean stop, offline.
func TestCommandRoundTrip(t *testing.T) {
	bin := buildFerry(t)
	cloud := mqtttest.Start(t)
	dir := t.TempDir()
	yaml, addr := testConfig(t, filepath.Join(dir, "data"), cloud.URL(), downlinkYAML)
	cfgPath, logPath := ferryFiles(t, dir, yaml)

	svc := dial5(t, cloud.URL(), "svc", nil)
	svc.subscribe("gw1/presence", 1)
	svc.subscribe("svc/replies/#", 1)
	watch := dial5(t, cloud.URL(), "watch", nil)
	watch.subscribe("gw1/#", 1) // everything ferry sends up

	cmd := startFerry(t, bin, cfgPath, logPath)
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	p := presenceOf(t, svc.next("gw1/presence", 60*time.Second))
	if p.State != "online" || p.GatewayID != "gw1" || p.Version == "" {
		t.Fatalf("presence %+v, want online gw1 with a version", p)
	}

	// The device answers every command that has a response topic.
	dev := dial5(t, addr, "valve", nil)
	dev.subscribe("cmd/#", 1)

	svc.publish(&paho.Publish{Topic: "gw1/cmd/valve", QoS: 1, Payload: []byte("on"), Properties: &paho.PublishProperties{
		ResponseTopic: "svc/replies/42", CorrelationData: []byte("req-42"), MessageExpiry: u32(600), ContentType: "text/plain",
		User: paho.UserProperties{{Key: "by", Value: "svc"}},
	}})
	got := dev.next("cmd/valve", 30*time.Second)
	pr := got.Properties
	switch {
	case string(got.Payload) != "on":
		t.Errorf("device got %q", got.Payload)
	case pr == nil:
		t.Fatal("device got no properties")
	case !strings.HasPrefix(pr.ResponseTopic, "ferry/reply/"):
		t.Errorf("response topic %q, want ferry/reply/<n>", pr.ResponseTopic)
	case string(pr.CorrelationData) != "req-42":
		t.Errorf("correlation data %q", pr.CorrelationData)
	case pr.MessageExpiry == nil || *pr.MessageExpiry == 0 || *pr.MessageExpiry > 600:
		t.Errorf("message expiry %v, want 1..600", pr.MessageExpiry)
	case pr.ContentType != "text/plain" || pr.User.Get("by") != "svc" || pr.User.Get("ferry-command-id") == "":
		t.Errorf("content type %q, user properties %v", pr.ContentType, pr.User)
	}
	dev.publish(&paho.Publish{Topic: pr.ResponseTopic, QoS: 1, Payload: []byte("valve is on"),
		Properties: &paho.PublishProperties{CorrelationData: []byte("forged"), User: paho.UserProperties{{Key: "response_topic", Value: "evil"}}}})
	reply := svc.next("svc/replies/#", 30*time.Second)
	if reply.Topic != "svc/replies/42" || string(reply.Payload) != "valve is on" ||
		reply.Properties == nil || string(reply.Properties.CorrelationData) != "req-42" {
		t.Errorf("reply %s %q %+v, want svc/replies/42 \"valve is on\" with correlation req-42", reply.Topic, reply.Payload, reply.Properties)
	}

	// An MQTT 3.1.1-style command (no response topic) is answered on the
	// subscription's reply topic.
	svc.subscribe("gw1/reply", 1)
	svc.publish(&paho.Publish{Topic: "gw1/cmd/lamp", QoS: 1, Payload: []byte("off")})
	lamp := dev.next("cmd/lamp", 30*time.Second)
	if lamp.Properties == nil || !strings.HasPrefix(lamp.Properties.ResponseTopic, "ferry/reply/") {
		t.Fatalf("lamp command without a response topic: %+v", lamp.Properties)
	}
	dev.publish(&paho.Publish{Topic: lamp.Properties.ResponseTopic, QoS: 1, Payload: []byte("lamp is off")})
	if r := svc.next("gw1/reply", 30*time.Second); string(r.Payload) != "lamp is off" {
		t.Errorf("reply on gw1/reply: %q", r.Payload)
	}

	// No loop: a telemetry marker goes up; before it, the watcher saw the
	// cloud's own commands and ferry's presence, and nothing of the
	// command or reply streams.
	dev.publish(&paho.Publish{Topic: "sensors/marker", QoS: 1, Payload: []byte("marker")})
	for {
		m := watch.next("gw1/#", 30*time.Second)
		if m.Topic == "gw1/telemetry/valve" && string(m.Payload) != "" && strings.Contains(string(m.Payload), "marker") {
			break
		}
		switch {
		case m.Topic == "gw1/presence", m.Topic == "gw1/reply":
		case m.Topic == "gw1/cmd/valve", m.Topic == "gw1/cmd/lamp":
		default:
			t.Errorf("ferry sent %s %q up: a downlinked message or a reply looped", m.Topic, m.Payload)
		}
	}

	// A clean stop says offline.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("ferry exited: %v", err)
	}
	for {
		m := svc.next("gw1/presence", 30*time.Second)
		if presenceOf(t, m).State == "offline" {
			break
		}
	}
}

// device is a local actuator on ferry's broker that keeps an MQTT 5
// session (autopaho reconnects it whenever ferry comes back) and records
// every command it receives: payload and ferry-command-id, in order.
type device struct {
	mu   sync.Mutex
	got  []string // payloads, in arrival order
	ids  map[string]string
	cm   *autopaho.ConnectionManager
	stop func() // disconnects, keeping the session at ferry
}

func startDevice(t *testing.T, addr, id string) *device {
	t.Helper()
	d := &device{ids: map[string]string{}}
	subscribed := make(chan struct{}, 1)
	u, _ := url.Parse("mqtt://" + addr)
	ctx, cancel := context.WithCancel(context.Background())
	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: false,
		SessionExpiryInterval:         3600,
		ReconnectBackoff:              func(int) time.Duration { return 100 * time.Millisecond },
		ConnectTimeout:                2 * time.Second,
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			go func() {
				sctx, c := context.WithTimeout(ctx, 5*time.Second)
				defer c()
				if _, err := cm.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "cmd/#", QoS: 1}}}); err == nil {
					select {
					case subscribed <- struct{}{}:
					default:
					}
				}
			}()
		},
		ClientConfig: paho.ClientConfig{
			ClientID: id,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				d.mu.Lock()
				defer d.mu.Unlock()
				p := string(pr.Packet.Payload)
				d.got = append(d.got, p)
				cid := userProp(pr.Packet, "ferry-command-id")
				if prev, ok := d.ids[p]; ok && prev != cid {
					t.Errorf("command %q arrived twice with different IDs %q and %q", p, prev, cid)
				}
				d.ids[p] = cid
				return true, nil
			}},
		},
	}
	cm, err := autopaho.NewConnection(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.cm = cm
	select {
	case <-subscribed:
	case <-time.After(30 * time.Second):
		t.Fatal("the device did not subscribe")
	}
	d.stop = sync.OnceFunc(func() {
		dctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		defer c()
		_ = cm.Disconnect(dctx)
		cancel()
		<-cm.Done()
	})
	t.Cleanup(d.stop)
	return d
}

// has reports whether every payload arrived.
func (d *device) has(payloads ...string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range payloads {
		if _, ok := d.ids[p]; !ok {
			return false
		}
	}
	return true
}

// firstArrivals returns the payloads in the order they first arrived.
func (d *device) firstArrivals() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, p := range d.got {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// TestCommandsAcrossOutageAndKill: commands the cloud sends while ferry is
// down reach the device when it returns, except the one that expired
// meanwhile; and commands keep arriving, every one, in order, while ferry
// is SIGKILLed again and again between receiving them and delivering
// them.
//
// "Once" here: the cloud is acknowledged only after a command is on disk,
// so the cloud never has to send it again and ferry never loses it; ferry
// delivers it locally at least once, a second time only when killed
// between its local publish and the commit of that publish's
// acknowledgement, and both copies carry the same ferry-command-id for the
// device to drop the second.
func TestCommandsAcrossOutageAndKill(t *testing.T) {
	bin := buildFerry(t)
	cloud := mqtttest.Start(t)
	dir := t.TempDir()
	yaml, addr := testConfig(t, filepath.Join(dir, "data"), cloud.URL(), downlinkYAML)
	cfgPath, logPath := ferryFiles(t, dir, yaml)
	svc := dial5(t, cloud.URL(), "svc", nil)
	svc.subscribe("gw1/presence", 1)
	waitPresence := func(state string) {
		t.Helper()
		for presenceOf(t, svc.next("gw1/presence", 60*time.Second)).State != state {
		}
	}

	cmd := startFerry(t, bin, cfgPath, logPath)
	waitPresence("online")
	dev := startDevice(t, addr, "valve")
	svc.publish(&paho.Publish{Topic: "gw1/cmd/valve", QoS: 1, Payload: []byte("first")})
	waitUntil(t, 30*time.Second, "the first command at the device", func() bool { return dev.has("first") })

	// Down: the will says offline. Meanwhile the cloud queues three
	// commands in ferry's session, one of them expiring in 2 s.
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	waitPresence("offline")
	svc.publish(&paho.Publish{Topic: "gw1/cmd/valve", QoS: 1, Payload: []byte("expires"), Properties: &paho.PublishProperties{MessageExpiry: u32(2)}})
	sentExpiring := time.Now()
	svc.publish(&paho.Publish{Topic: "gw1/cmd/valve", QoS: 1, Payload: []byte("while-down-1")})
	svc.publish(&paho.Publish{Topic: "gw1/cmd/valve", QoS: 1, Payload: []byte("while-down-2")})
	// The expiry itself is what is waited for; Mosquitto counts it in
	// whole seconds.
	time.Sleep(time.Until(sentExpiring.Add(3500 * time.Millisecond)))
	cmd = startFerry(t, bin, cfgPath, logPath)
	waitUntil(t, 60*time.Second, "the commands sent while ferry was down", func() bool { return dev.has("while-down-1", "while-down-2") })
	if dev.has("expires") {
		t.Error("a command that expired while ferry was down was delivered")
	}

	// The device away: ferry takes a command that expires in 2 s and
	// queues it for the device with the expiry that remains; it is gone
	// when the device comes back, the next one is not.
	dev.stop()
	svc.publish(&paho.Publish{Topic: "gw1/cmd/valve", QoS: 1, Payload: []byte("expires-locally"), Properties: &paho.PublishProperties{MessageExpiry: u32(2)}})
	sentExpiring = time.Now()
	svc.publish(&paho.Publish{Topic: "gw1/cmd/valve", QoS: 1, Payload: []byte("kept-locally")})
	time.Sleep(time.Until(sentExpiring.Add(3500 * time.Millisecond)))
	dev = startDevice(t, addr, "valve")
	waitUntil(t, 30*time.Second, "the command queued while the device was away", func() bool { return dev.has("kept-locally") })
	if dev.has("expires-locally") {
		t.Error("a command that expired while the device was away was delivered")
	}

	// Killed again and again while commands flow.
	const n = 60
	var want []string
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := range n {
			p := fmt.Sprintf("k-%02d", i)
			want = append(want, p)
			svc.publish(&paho.Publish{Topic: "gw1/cmd/valve", QoS: 1, Payload: []byte(p)})
			time.Sleep(20 * time.Millisecond)
		}
	}()
	rng := rand.New(rand.NewPCG(3, 4))
	for range 4 {
		time.Sleep(time.Duration(200+rng.IntN(400)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		cmd = startFerry(t, bin, cfgPath, logPath)
	}
	<-pubDone
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	// Minutes, not seconds: under qemu on a loaded machine every restart
	// of ferry takes seconds. A lost command never arrives at all.
	deadline := time.Now().Add(3 * time.Minute)
	for !dev.has(want...) {
		if time.Now().After(deadline) {
			var missing []string
			for _, p := range want {
				if !dev.has(p) {
					missing = append(missing, p)
				}
			}
			t.Fatalf("after 3 min, %d of %d commands never reached the device: %v", len(missing), n, missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
	first := dev.firstArrivals()
	var ks []string
	for _, p := range first {
		if strings.HasPrefix(p, "k-") {
			ks = append(ks, p)
		}
	}
	if !slices.Equal(ks, want) {
		t.Errorf("commands arrived out of order:\n got  %v\n want %v", ks, want)
	}
	dev.mu.Lock()
	dups := len(dev.got) - len(first)
	dev.mu.Unlock()
	t.Logf("%d commands delivered across 4 SIGKILLs, in order; %d local duplicates (same ferry-command-id)", n, dups)
}

// TestCloudCommandDrivesRelay: a command the cloud sends reaches a
// gpio_out driver through the downlink, the buffer and the embedded
// broker: the pin follows, and the new state goes up as an event.
func TestCloudCommandDrivesRelay(t *testing.T) {
	cloud := mqtttest.Start(t)
	yaml, _ := testConfig(t, t.TempDir(), cloud.URL(), downlinkYAML+`
drivers:
  - {name: relay, kind: gpio_out, options: {pin: GPIO23, command_topic: cmd/relay}}
`)
	relay := &gpiotest.Pin{N: "GPIO23", L: gpio.High}
	env := drivers.Env{Pin: func(name string) (gpio.PinIn, error) {
		if name == relay.N {
			return relay, nil
		}
		return nil, fmt.Errorf("no pin %q", name)
	}}
	svc := dial5(t, cloud.URL(), "svc", nil)
	svc.subscribe("gw1/presence", 1)
	svc.subscribe("gw1/+/relay", 1)
	g, err := gateway.New(loadConfig(t, yaml), nil, gateway.WithHardware(env))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for presenceOf(t, svc.next("gw1/presence", 30*time.Second)).State != "online" {
	}
	level := func() gpio.Level {
		relay.Lock()
		defer relay.Unlock()
		return relay.L
	}
	waitUntil(t, 30*time.Second, "the relay in its safe state", func() bool { return level() == gpio.Low })

	svc.publish(&paho.Publish{Topic: "gw1/cmd/relay", QoS: 1, Payload: []byte("on")})
	waitUntil(t, 30*time.Second, "the relay on", func() bool { return level() == gpio.High })
	for {
		m := svc.next("gw1/+/relay", 30*time.Second)
		if strings.Contains(string(m.Payload), `\"state\":1`) || strings.Contains(string(m.Payload), `"state":1`) {
			break
		}
	}
	svc.publish(&paho.Publish{Topic: "gw1/cmd/relay", QoS: 1, Payload: []byte("off")})
	waitUntil(t, 30*time.Second, "the relay off", func() bool { return level() == gpio.Low })
}

// TestCommandACL: local ACLs decide who may receive commands. The valve
// may subscribe to its command topic; another local client may not, and
// gets nothing.
func TestCommandACL(t *testing.T) {
	cloud := mqtttest.Start(t)
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	for _, u := range []string{"valve", "other"} {
		if err := broker.SetUser(users, u, []byte(u+"-pw")); err != nil {
			t.Fatal(err)
		}
	}
	yaml, addr := testConfig(t, filepath.Join(dir, "data"), cloud.URL(), downlinkYAML)
	yaml = strings.Replace(yaml, "allow_anonymous: true", fmt.Sprintf(`allow_anonymous: false
  users_file: %s
  acl:
    - {user: valve, subscribe: ["cmd/valve"]}
    - {user: other, subscribe: ["sensors/#"]}`, users), 1)
	g, err := gateway.New(loadConfig(t, yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() { cancel(); <-done }()

	login := func(user string) func(*paho.Connect) {
		return func(cp *paho.Connect) {
			cp.Username, cp.UsernameFlag = user, true
			cp.Password, cp.PasswordFlag = []byte(user+"-pw"), true
		}
	}
	valve := dial5(t, addr, "valve", login("valve"))
	valve.subscribe("cmd/valve", 1)
	other := dial5(t, addr, "other", login("other"))
	ctxS, cancelS := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelS()
	sa, err := other.c.Subscribe(ctxS, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "cmd/#", QoS: 1}}})
	if err == nil && (len(sa.Reasons) != 1 || sa.Reasons[0] < 0x80) {
		t.Fatalf("other subscribed to cmd/#: %v", sa.Reasons)
	}

	svc := dial5(t, cloud.URL(), "svc", nil)
	svc.subscribe("gw1/presence", 1)
	for presenceOf(t, svc.next("gw1/presence", 30*time.Second)).State != "online" {
	}
	svc.publish(&paho.Publish{Topic: "gw1/cmd/valve", QoS: 1, Payload: []byte("open")})
	if m := valve.next("cmd/valve", 30*time.Second); string(m.Payload) != "open" {
		t.Fatalf("valve got %q", m.Payload)
	}
	// The valve has it; the other client would have had it by now.
	select {
	case m := <-other.msgs:
		t.Errorf("other got %s %q: the ACL did not apply to commands", m.Topic, m.Payload)
	default:
	}
}
