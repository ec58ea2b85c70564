package gateway_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// TestBrokerUsersAndACL checks broker.users_file and broker.acl reach the
// broker, and that a users file that cannot be loaded names its key.
func TestBrokerUsersAndACL(t *testing.T) {
	dir := t.TempDir()
	cloud := fmt.Sprintf("tcp://127.0.0.1:%d", mqtttest.FreePort(t)) // nobody listens
	yml, addr := testConfig(t, dir, cloud, "")

	missing := loadConfig(t, yml)
	missing.Broker.AllowAnonymous = false
	missing.Broker.UsersFile = filepath.Join(dir, "no-such-users")
	if _, err := gateway.New(missing, nil); err == nil ||
		!strings.Contains(err.Error(), "broker.users_file") || !strings.Contains(err.Error(), "no-such-users") {
		t.Fatalf("missing users file: %v", err)
	}

	users := filepath.Join(t.TempDir(), "users")
	if err := broker.SetUser(users, "s1", []byte("pw1")); err != nil {
		t.Fatal(err)
	}
	cfg := loadConfig(t, yml)
	cfg.Broker.AllowAnonymous = false
	cfg.Broker.UsersFile = users
	cfg.Broker.ACL = []config.ACLRule{{User: "*", Publish: []string{"sensors/%u/#"}}}
	runGateway(t, cfg)

	conn := func(user, pw string) (paho.Client, error) {
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("c-" + user).
			SetUsername(user).SetPassword(pw).SetAutoReconnect(false))
		tok := c.Connect()
		if !tok.WaitTimeout(5 * time.Second) {
			return nil, fmt.Errorf("connect timed out")
		}
		return c, tok.Error()
	}
	if _, err := conn("", ""); err == nil {
		t.Fatal("anonymous client accepted with allow_anonymous false")
	}
	if _, err := conn("s1", "wrong"); err == nil {
		t.Fatal("wrong password accepted")
	}
	c, err := conn("s1", "pw1")
	if err != nil {
		t.Fatalf("right password: %v", err)
	}
	defer c.Disconnect(50)
	if tok := c.Publish("sensors/s1/t", 1, false, "ok"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("allowed publish: %v", tok.Error())
	}
}
