package natstest_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/ferrygw/ferry/internal/natstest"
)

// TestClusterSurvivesNodeLoss: a QoS 1 message the cluster acknowledged
// reaches a persistent subscriber although the node that led the MQTT
// message stream was killed, and the cluster reports healthy again after
// the node is restarted.
func TestClusterSurvivesNodeLoss(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	c := natstest.StartCluster(t, 3)

	var mu sync.Mutex
	got := map[string]bool{}
	sub := connect(t, c.Nodes[2].MQTTURL(), "sub", false, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		got[string(m.Payload())] = true
		mu.Unlock()
	})
	if tok := sub.Subscribe("t/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	defer sub.Disconnect(50)
	// The subscription created the MQTT streams: wait for their replicas.
	if err := c.WaitHealthy(60 * time.Second); err != nil {
		t.Fatal(err)
	}

	publish := func(url, id string, from, n int) {
		t.Helper()
		p := connect(t, url, id, true, nil)
		defer p.Disconnect(50)
		for i := from; i < from+n; i++ {
			tok := p.Publish("t/x", 1, false, fmt.Sprint(i))
			if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
				t.Fatalf("publish %d: %v", i, tok.Error())
			}
		}
	}
	publish(c.Nodes[0].MQTTURL(), "pub1", 0, 50)

	leader := c.StreamLeader("$MQTT_msgs")
	victim := -1
	for i, n := range c.Nodes {
		if n.Name == leader {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("no leader for $MQTT_msgs (%q)", leader)
	}
	c.Kill(victim)
	if err := c.WaitHealthy(60 * time.Second); err != nil {
		t.Fatalf("after killing %s: %v\n%s", leader, err, c.LogTails())
	}
	if nl := c.StreamLeader("$MQTT_msgs"); nl == leader || nl == "" {
		t.Fatalf("leader after the kill: %q", nl)
	}
	alive := (victim + 1) % 3
	publish(c.Nodes[alive].MQTTURL(), "pub2", 50, 50)
	c.Restart(victim)
	if err := c.WaitHealthy(60 * time.Second); err != nil {
		t.Fatalf("after restarting %s: %v\n%s", leader, err, c.LogTails())
	}
	publish(c.Nodes[victim].MQTTURL(), "pub3", 100, 50)

	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 150 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscriber has %d of 150 messages", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func connect(t *testing.T, url, id string, clean bool, h paho.MessageHandler) paho.Client {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(clean).
		SetAutoReconnect(true).SetMaxReconnectInterval(500 * time.Millisecond).SetConnectTimeout(10 * time.Second)
	if h != nil {
		opts.SetDefaultPublishHandler(h)
	}
	cl := paho.NewClient(opts)
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The first MQTT connection creates the MQTT streams, which can
		// take longer than a connection attempt: retry.
		tok := cl.Connect()
		if tok.WaitTimeout(15*time.Second) && tok.Error() == nil {
			return cl
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect %s to %s: %v", id, url, tok.Error())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
