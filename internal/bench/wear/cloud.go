//go:build linux

package wear

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferrygw/ferry/uplink"
)

// readingKey is one reading: sensor index (-1 for a probe) and sequence.
type readingKey struct{ sensor, seq int }

// cloudSub subscribes to everything at the cloud broker and records the
// readings of one run (by tag) that arrive, raw (a Mosquitto bridge
// forwards payloads unchanged) or inside ferry's cloud envelope.
type cloudSub struct {
	tag    string
	client mqtt.Client

	mu      sync.Mutex
	arrived map[readingKey]int // arrivals of each reading (>1: duplicates)
	other   int64              // messages holding no reading of this run
}

func startCloudSub(ctx context.Context, cloud, tag string) (*cloudSub, error) {
	c := &cloudSub{tag: tag, arrived: map[readingKey]int{}}
	o := mqttOptions(cloud, "wear-"+tag+"-cloud").SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { c.ingest(m.Payload()) })
	cl, err := connectClient(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("cloud subscriber: connect %s: %w", cloud, err)
	}
	tok := cl.Subscribe("#", 1, nil)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		cl.Disconnect(0)
		return nil, fmt.Errorf("cloud subscriber: subscribe: %v", tok.Error())
	}
	c.client = cl
	return c, nil
}

func (c *cloudSub) close() { c.client.Disconnect(250) }

func (c *cloudSub) ingest(msg []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k, ok := c.parse(msg); ok {
		c.arrived[k]++
		return
	}
	evs, err := uplink.DecodeMessage(msg)
	found := false
	if err == nil {
		for _, ev := range evs {
			if k, ok := c.parse(ev.Payload); ok {
				c.arrived[k]++
				found = true
			}
		}
	}
	if !found {
		c.other++
	}
}

// parse decodes a reading of this run: {"id":"<tag>-s07",...,"seq":N}, or
// a probe, {"id":"<tag>-probe","seq":N}.
func (c *cloudSub) parse(b []byte) (readingKey, bool) {
	var r struct {
		ID  string `json:"id"`
		Seq *int   `json:"seq"`
	}
	if json.Unmarshal(b, &r) != nil || r.Seq == nil {
		return readingKey{}, false
	}
	rest, ok := strings.CutPrefix(r.ID, c.tag+"-")
	if !ok {
		return readingKey{}, false
	}
	if rest == "probe" {
		return readingKey{-1, *r.Seq}, true
	}
	s, ok := strings.CutPrefix(rest, "s")
	n, err := strconv.Atoi(s)
	if !ok || err != nil {
		return readingKey{}, false
	}
	return readingKey{n, *r.Seq}, true
}

func (c *cloudSub) has(k readingKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.arrived[k] > 0
}

// delivery is the end-to-end check of one run.
type delivery struct {
	Acked      int64 // readings PUBACKed over the whole run, warm-up included
	Arrived    int64 // of those, how many reached the cloud
	Lost       int64 // Acked - Arrived
	Duplicates int64 // extra arrivals
	Unacked    int64 // published, never acknowledged
	Other      int64 // cloud messages holding no reading of the run
}

// check counts which acknowledged readings have arrived.
func (c *cloudSub) check(ss []*sensor) delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	var d delivery
	for _, s := range ss {
		for seq, t := range s.acks {
			if t.IsZero() {
				if seq < s.published {
					d.Unacked++
				}
				continue
			}
			d.Acked++
			if c.arrived[readingKey{s.idx, seq}] > 0 {
				d.Arrived++
			}
		}
	}
	for k, n := range c.arrived {
		if k.sensor >= 0 && n > 1 {
			d.Duplicates += int64(n - 1)
		}
	}
	d.Lost = d.Acked - d.Arrived
	d.Other = c.other
	return d
}

// waitDelivered waits up to d for every acknowledged reading to arrive.
func (c *cloudSub) waitDelivered(ctx context.Context, ss []*sensor, d time.Duration) delivery {
	deadline := time.Now().Add(d)
	for {
		got := c.check(ss)
		if got.Lost == 0 || time.Now().After(deadline) {
			return got
		}
		select {
		case <-ctx.Done():
			return got
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// probe publishes probe readings to the edge broker until one arrives at
// the cloud: the whole path (edge, its link to the cloud, the subscriber)
// is up, and the ports found are this run's.
func (c *cloudSub) probe(ctx context.Context, edge string) error {
	cl, err := connectClient(ctx, mqttOptions(edge, "wear-"+c.tag+"-probe"))
	if err != nil {
		return fmt.Errorf("probe: connect %s: %w", edge, err)
	}
	defer cl.Disconnect(100)
	for seq, deadline := 0, time.Now().Add(30*time.Second); time.Now().Before(deadline); seq++ {
		tok := cl.Publish("wear/probe", 1, false, fmt.Sprintf(`{"id":"%s-probe","seq":%d}`, c.tag, seq))
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			return fmt.Errorf("probe: publish to %s: %v", edge, tok.Error())
		}
		for range 10 {
			for s := range seq + 1 {
				if c.has(readingKey{-1, s}) {
					return nil
				}
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return fmt.Errorf("probe: nothing published to %s reached the cloud in 30 s", edge)
}
