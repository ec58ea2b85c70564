package gateway_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway"
)

// TestListenerTaken starts a gateway whose listen address another program
// holds: the start fails once, with an error naming the key and the
// address, before anything was announced (no "broker listening").
func TestListenerTaken(t *testing.T) {
	tests := []struct {
		name string
		key  string // the config key whose address is taken
		// yaml returns the config with that key on addr.
		yaml func(t *testing.T, dataDir, addr string) string
	}{
		{"status.listen", "status.listen", func(t *testing.T, dir, addr string) string {
			y, _ := testConfig(t, dir, "tcp://127.0.0.1:1", "")
			return strings.Replace(y, `listen: ""`, "listen: "+addr, 1)
		}},
		{"broker.listen", "broker.listen", func(t *testing.T, dir, addr string) string {
			y, brokerAddr := testConfig(t, dir, "tcp://127.0.0.1:1", "")
			return strings.Replace(y, "listen: "+brokerAddr, "listen: "+addr, 1)
		}},
		{"broker.tls.listen", "broker.tls.listen", func(t *testing.T, dir, addr string) string {
			y, _ := testConfig(t, dir, "tcp://127.0.0.1:1", "")
			cert, key := newPKI(t, t.TempDir(), "ca").issue(t, "broker", true)
			return strings.Replace(y, "  allow_anonymous: true\n", "  allow_anonymous: true\n  tls:\n    listen: "+addr+
				"\n    cert_file: "+cert+"\n    key_file: "+key+"\n", 1)
		}},
		{"broker.websocket", "broker.websocket", func(t *testing.T, dir, addr string) string {
			y, _ := testConfig(t, dir, "tcp://127.0.0.1:1", "")
			return strings.Replace(y, "  allow_anonymous: true\n", "  allow_anonymous: true\n  websocket: "+addr+"\n", 1)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			taken, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer taken.Close()
			addr := taken.Addr().String()
			logs := newLogWatch()
			g, err := gateway.New(loadConfig(t, tc.yaml(t, t.TempDir(), addr)), logs.logger())
			if err == nil {
				// Failing later, in Run, is what this test is against;
				// run it until it fails or announces the broker to see how.
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				done := make(chan error, 1)
				go func() { done <- g.Run(ctx) }()
				select {
				case err = <-done:
				case <-logs.wait(ctx, "broker listening"):
					cancel()
					err = <-done
				}
				cancel()
				t.Errorf("New succeeded; Run then returned %v", err)
			}
			if !errors.Is(err, gateway.ErrListen) || !strings.Contains(err.Error(), tc.key+" "+addr) ||
				!strings.Contains(err.Error(), "address already in use") {
				t.Errorf("error %v, want ErrListen naming %s %s and why", err, tc.key, addr)
			} else {
				t.Log(err)
			}
			if l := logs.find("broker listening"); len(l) > 0 {
				t.Errorf("logged %q before failing:\n%s", l[0].msg, logs)
			}
		})
	}
}
