//go:build linux

package wear

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// ackTimeout bounds the wait for one PUBACK; a reading not acknowledged by
// then counts as unacknowledged (and a sensor stops on a lost connection).
const ackTimeout = 10 * time.Second

// sensor is one MQTT client publishing a reading every period, at QoS 1,
// each after the previous one's PUBACK.
type sensor struct {
	idx    int
	tag    string // reading IDs are "<tag>-s<idx>"
	topic  string
	client mqtt.Client

	// sent[seq] is when reading seq was published, acks[seq] when its
	// PUBACK arrived (zero: none).
	sent, acks []time.Time
	published  int
	late       int // readings published after their slot (previous PUBACK slow)
	err        error
}

// mqttOptions are paho's options for the harness's clients.
func mqttOptions(broker, clientID string) *mqtt.ClientOptions {
	return mqtt.NewClientOptions().
		AddBroker(broker).
		SetClientID(clientID).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(10 * time.Second).
		SetWriteTimeout(5 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetOrderMatters(true)
}

func connectClient(ctx context.Context, o *mqtt.ClientOptions) (mqtt.Client, error) {
	c := mqtt.NewClient(o)
	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		c.Disconnect(0)
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return c, nil
}

// reading is sensor idx's reading seq: about 50 bytes of JSON, e.g.
// {"id":"c03-s07","t":21.57,"h":40.21,"seq":1234}, its values drifting
// slowly like a room's.
func reading(tag string, idx, seq int) []byte {
	x := float64(seq)/60 + float64(idx)
	t := 21.5 + 1.5*math.Sin(x)
	h := 40.2 + 5*math.Cos(x/3)
	b := make([]byte, 0, 64)
	b = append(b, `{"id":"`...)
	b = append(b, tag...)
	b = append(b, "-s"...)
	b = fmt.Appendf(b, "%02d", idx)
	b = append(b, `","t":`...)
	b = strconv.AppendFloat(b, t, 'f', 2, 64)
	b = append(b, `,"h":`...)
	b = strconv.AppendFloat(b, h, 'f', 2, 64)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, int64(seq), 10)
	return append(b, '}')
}

// runSensors connects n sensors to broker and has each publish from start
// until stop, sensor i at start + i*period/n + k*period for k = 0, 1, ...:
// the phases are spread evenly over the period, so the edge sees one
// reading every period/n. Publishing at QoS 1, each sensor waits for a
// reading's PUBACK before the next; a late PUBACK makes the next reading
// late, not skipped. It returns when every sensor has finished.
func runSensors(ctx context.Context, broker, tag string, n int, period time.Duration, start, stop time.Time) ([]*sensor, error) {
	slots := int(stop.Sub(start)/period) + 2
	ss := make([]*sensor, n)
	for i := range ss {
		s := &sensor{idx: i, tag: tag, topic: fmt.Sprintf("wear/s%02d", i), sent: make([]time.Time, slots), acks: make([]time.Time, slots)}
		c, err := connectClient(ctx, mqttOptions(broker, fmt.Sprintf("wear-%s-s%02d", tag, i)))
		if err != nil {
			for _, s := range ss[:i] {
				s.client.Disconnect(100)
			}
			return nil, fmt.Errorf("sensor %d: connect %s: %w", i, broker, err)
		}
		s.client = c
		ss[i] = s
	}
	var wg sync.WaitGroup
	for _, s := range ss {
		phase := period * time.Duration(s.idx) / time.Duration(n)
		wg.Go(func() { s.run(ctx, start.Add(phase), period, stop) })
	}
	wg.Wait()
	return ss, nil
}

func (s *sensor) run(ctx context.Context, first time.Time, period time.Duration, stop time.Time) {
	for seq := 0; seq < len(s.acks); seq++ {
		due := first.Add(time.Duration(seq) * period)
		if !due.Before(stop) {
			return
		}
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return
			}
		} else if d < -period/10 {
			s.late++
		}
		s.sent[seq] = time.Now()
		tok := s.client.Publish(s.topic, 1, false, reading(s.tag, s.idx, seq))
		s.published++
		if !tok.WaitTimeout(ackTimeout) {
			s.err = fmt.Errorf("sensor %d: no PUBACK for reading %d within %v", s.idx, seq, ackTimeout)
			return
		}
		if err := tok.Error(); err != nil {
			s.err = fmt.Errorf("sensor %d: reading %d: %w", s.idx, seq, err)
			return
		}
		s.acks[seq] = time.Now()
	}
}

// ackedBetween counts the readings whose PUBACK arrived in [t0, t1).
func ackedBetween(ss []*sensor, t0, t1 time.Time) int64 {
	var n int64
	for _, s := range ss {
		for _, t := range s.acks {
			if !t.IsZero() && !t.Before(t0) && t.Before(t1) {
				n++
			}
		}
	}
	return n
}

// ackLatency returns the median and 99th percentile of publish-to-PUBACK
// of the readings acknowledged in [t0, t1).
func ackLatency(ss []*sensor, t0, t1 time.Time) (p50, p99 time.Duration) {
	var l []time.Duration
	for _, s := range ss {
		for i, t := range s.acks {
			if !t.IsZero() && !t.Before(t0) && t.Before(t1) {
				l = append(l, t.Sub(s.sent[i]))
			}
		}
	}
	if len(l) == 0 {
		return 0, 0
	}
	slices.Sort(l)
	q := func(f float64) time.Duration { return l[min(len(l)-1, int(f*float64(len(l))))] }
	return q(0.50), q(0.99)
}

func disconnectSensors(ss []*sensor) {
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Go(func() { s.client.Disconnect(250) })
	}
	wg.Wait()
}
