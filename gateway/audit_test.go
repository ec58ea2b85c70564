package gateway_test

import (
	"context"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"os"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// TestAuditFullDiskShutdown: with the audit log on a full disk its writes
// fail; the gateway logs that and goes on, and a shutdown (SIGTERM) still
// returns nil: the audit log is best effort.
func TestAuditFullDiskShutdown(t *testing.T) {
	mnt := buffertest.MustMountTmpfs(t, 256<<10)
	auditFile := filepath.Join(mnt, "audit.log")
	if err := os.WriteFile(auditFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fillDisk(t, mnt)

	cloud := mqtttest.Start(t)
	yaml, addr := testConfig(t, t.TempDir(), cloud.URL(), "audit: {file: "+auditFile+"}\n")
	logs := newLogWatch()
	g, err := gateway.New(loadConfig(t, yaml), logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()

	// A client connecting is audited; writing it fails.
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("audited").SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	c.Disconnect(50)
	logs.waitLine(t, 30*time.Second, "audit log write failed")
	select {
	case err := <-done:
		t.Fatalf("the gateway stopped on an audit write failure: %v", err)
	default:
	}

	cancel() // SIGTERM
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v after a shutdown with the audit log on a full disk, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the gateway did not stop")
	}
}
