package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/ferrygw/ferry/internal/mqtttest"
	bolt "go.etcd.io/bbolt"
)

// TestRefusedSubscriptionsNotStored checks mochi patch 8: filters the
// broker refused (over the subscription budget, or denied by the ACL) are
// not written to the session store, so a client cannot grow sessions.db
// without bound with subscriptions it never got.
func TestRefusedSubscriptionsNotStored(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{})
	sessions := t.TempDir() + "/sessions.db"
	addr := fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	b := run(t, ctx, l, func(c *broker.Config) {
		c.Listen, c.SessionPath = addr, sessions
		c.Budget = broker.Budget{MaxClientSubscriptions: 2, MaxSubscriptions: 100}
	})
	// A persistent MQTT 3.1.1 session: its subscriptions are stored.
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("flooder").
		SetCleanSession(false).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	filters := map[string]byte{}
	for i := range 200 {
		filters[fmt.Sprintf("sensors/%d/#", i)] = 1
	}
	tok := c.SubscribeMultiple(filters, nil)
	if !tok.WaitTimeout(5 * time.Second) {
		t.Fatal("no SUBACK")
	}
	granted := 0
	for _, code := range tok.(*paho.SubscribeToken).Result() {
		if code < 0x80 {
			granted++
		}
	}
	if granted != 2 {
		t.Fatalf("%d filters granted, want the budget's 2", granted)
	}
	c.Disconnect(50)
	_ = b
	cancel()
	waitRun(t)

	db, err := bolt.Open(sessions, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var stored int
	if err := db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, bk *bolt.Bucket) error {
			return bk.ForEach(func(k, _ []byte) error {
				if bytes.HasPrefix(k, []byte("SUB")) && bytes.Contains(k, []byte("flooder")) {
					stored++
				}
				return nil
			})
		})
	}); err != nil {
		t.Fatal(err)
	}
	if stored != 2 {
		t.Fatalf("session store holds %d subscriptions of the flooder, want the 2 granted", stored)
	}
}
