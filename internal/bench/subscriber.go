package bench

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// subscriber receives at the cloud broker and feeds the checker. It uses a
// persistent session (clean session off) and paho's automatic reconnection
// so that the broker queues messages across a subscriber outage instead of
// counting them as lost; close removes the session again.
type subscriber struct {
	cfg      *Config
	clientID string
	client   mqtt.Client
	chk      *checker
	logf     func(string, ...any)

	connects atomic.Int64
	first    chan error
}

func startSubscriber(ctx context.Context, cfg *Config, run RunID, chk *checker, logf func(string, ...any)) (*subscriber, error) {
	s := &subscriber{
		cfg:      cfg,
		clientID: fmt.Sprintf("%s-%s-sub", cfg.ClientPrefix, run.String()[:8]),
		chk:      chk,
		logf:     logf,
		first:    make(chan error, 1),
	}
	handler := func(_ mqtt.Client, m mqtt.Message) { s.chk.ingest(m.Payload()) }
	o := clientOptions(cfg, cfg.Subscribe, s.clientID).
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(2 * time.Second).
		SetDefaultPublishHandler(handler).
		SetOnConnectHandler(func(c mqtt.Client) {
			// Called on its own goroutine after every (re)connection;
			// subscribing again is harmless when the session survived.
			n := s.connects.Add(1)
			tok := c.Subscribe(cfg.SubTopic, 1, handler)
			tok.Wait()
			err := tok.Error()
			if err == nil {
				if st, ok := tok.(*mqtt.SubscribeToken); ok {
					if q := st.Result()[cfg.SubTopic]; q > 2 {
						err = fmt.Errorf("broker refused the subscription (return code %#x)", q)
					}
				}
			}
			if n == 1 {
				s.first <- err
			} else if err != nil {
				s.logf("subscriber: resubscribe %q after reconnect: %v", cfg.SubTopic, err)
			} else {
				s.logf("subscriber: reconnected to %s", cfg.Subscribe)
			}
		})
	s.client = mqtt.NewClient(o)
	if err := connect(ctx, s.client, cfg.Subscribe); err != nil {
		return nil, fmt.Errorf("subscriber: %w", err)
	}
	select {
	case err := <-s.first:
		if err != nil {
			s.close()
			return nil, fmt.Errorf("subscriber: subscribe %q at %s: %w", cfg.SubTopic, cfg.Subscribe, err)
		}
	case <-ctx.Done():
		s.close()
		return nil, fmt.Errorf("subscriber: subscribe %q at %s: %w", cfg.SubTopic, cfg.Subscribe, ctx.Err())
	}
	return s, nil
}

// reconnects returns how many times the subscriber reconnected.
func (s *subscriber) reconnects() int64 {
	if s == nil {
		return 0
	}
	return max(s.connects.Load()-1, 0)
}

// close disconnects and then discards the persistent session on the broker
// by connecting once more with a clean session.
func (s *subscriber) close() {
	s.client.Disconnect(disconnectQuiet)
	o := clientOptions(s.cfg, s.cfg.Subscribe, s.clientID).SetCleanSession(true).SetAutoReconnect(false)
	c := mqtt.NewClient(o)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := connect(ctx, c, s.cfg.Subscribe); err != nil {
		s.logf("subscriber: could not clear session %s: %v", s.clientID, err)
		return
	}
	c.Disconnect(disconnectQuiet)
}
