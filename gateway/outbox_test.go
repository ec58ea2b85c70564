package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/gateway/opsapi"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// runGatewayWatched runs g until the test ends; the channel gets Run's
// result if it returns before that.
func runGatewayWatched(t *testing.T, g *gateway.Gateway) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done, stopped := make(chan error, 1), make(chan error, 1)
	go func() {
		err := g.Run(ctx)
		stopped <- err
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	return stopped
}

// TestWebhookDeadLetterRefused: a webhook result the endpoint refuses goes
// to the dead letters; while the buffer refuses that append (here: the
// dead-letter stream is full and rejects), the event stays in its outbox
// and the append is retried. The gateway keeps running, and once there is
// room again the dead letter is stored: nothing is lost.
func TestWebhookDeadLetterRefused(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		retries int // webhook retries; 0: a permanent failure gives up at once
	}{
		{"4xx gives up at once", http.StatusBadRequest, 0},
		{"5xx after its retries", http.StatusServiceUnavailable, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var posts atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				posts.Add(1)
				w.WriteHeader(tc.status)
			}))
			defer srv.Close()
			// The dead letters are forwarded; with the cloud down, the
			// first one fills their stream.
			cloud := mqtttest.StartWith(t, mqtttest.Options{Persistent: true})
			sub := subscribeCloud(t, cloud.URL(), "dl-sub")
			cloud.Stop()
			extra := fmt.Sprintf(`
dead_letters: {stream: dl, forward: true}
buffer:
  streams:
    - {name: dl, max_events: 1, overflow: reject}
pipelines:
  - name: p
    stages:
      - filter: "s >= 0"
    outputs:
      - webhook: {url: %s, timeout: 5s, retries: %d}
`, srv.URL, tc.retries)
			yaml, addr := testConfig(t, t.TempDir(), cloud.URL(), extra)
			g, err := gateway.New(loadConfig(t, yaml), nil)
			if err != nil {
				t.Fatal(err)
			}
			stopped := runGatewayWatched(t, g)
			running := func() {
				t.Helper()
				select {
				case err := <-stopped:
					t.Fatalf("the gateway stopped: %v", err)
				default:
				}
			}
			stream := func(name string) (st opsapi.StreamStatus) {
				for _, s := range g.Status().Streams {
					if s.Name == name {
						st = s
					}
				}
				return st
			}

			publishAll(t, addr, 1, 2)
			waitUntil(t, 60*time.Second, "the second dead letter refused", func() bool {
				running()
				return stream("dl").Drops[buffer.DropFull] > 0
			})
			if dl := stream("dl"); dl.Events != 1 {
				t.Fatalf("dead letters hold %d events, want 1", dl.Events)
			}
			// Forwarding the first dead letter makes room for the second.
			cloud.StartAgain()
			waitUntil(t, 60*time.Second, "both dead letters at the cloud", func() bool {
				running()
				return sub.distinct() == 2
			})
			waitUntil(t, 30*time.Second, "the webhook outbox acknowledged", func() bool {
				running()
				return stream("_webhook.p.0").Events == 0
			})
			running()
			want := int64(2 * max(1, tc.retries))
			if n := posts.Load(); n != want {
				t.Errorf("webhook called %d times, want %d: a refused dead letter is retried without posting again", n, want)
			}
		})
	}
}
