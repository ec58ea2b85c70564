package fleet

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferrygw/ferry/uplink"
)

// connectCloud connects a subscriber with a persistent session (clean
// session off) to the first of urls that accepts it, subscribes to filter
// at QoS 1 and hands every message to h on paho's ordered callback
// goroutine. paho reconnects by itself, trying urls in order, and the
// session (in the cluster, not in one node) resumes where it was.
func connectCloud(tb testing.TB, urls []string, id, filter string, h paho.MessageHandler) paho.Client {
	tb.Helper()
	opts := paho.NewClientOptions().SetClientID(id).SetCleanSession(false).
		SetAutoReconnect(true).SetMaxReconnectInterval(500 * time.Millisecond).
		SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).
		SetConnectTimeout(10 * time.Second).SetOrderMatters(true).
		// Messages of the persistent session arrive right after CONNACK,
		// before a Subscribe could register its handler.
		SetDefaultPublishHandler(h)
	for _, u := range urls {
		opts.AddBroker(u)
	}
	subscribed := make(chan error, 1)
	opts.SetOnConnectHandler(func(c paho.Client) {
		tok := c.Subscribe(filter, 1, h)
		go func() {
			tok.Wait()
			select {
			case subscribed <- tok.Error():
			default:
			}
		}()
	})
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
		tb.Fatalf("cloud subscriber %s: connect: %v", id, tok.Error())
	}
	// The SUBACK must be in before events flow, or the session would not
	// hold the subscription yet.
	select {
	case err := <-subscribed:
		if err != nil {
			tb.Fatalf("cloud subscriber %s: subscribe: %v", id, err)
		}
	case <-time.After(60 * time.Second):
		tb.Fatalf("cloud subscriber %s: no SUBACK", id)
	}
	return c
}

// Received is one message as the cloud subscriber got it.
type Received struct {
	Topic   string
	Payload []byte
	At      time.Time
}

// recorder keeps every message the cloud subscriber receives.
type recorder struct {
	mu   sync.Mutex
	msgs []Received
	// readings counts distinct readings decoded so far (for waiting).
	seen map[reading]bool
	bad  int
}

func newRecorder() *recorder { return &recorder{seen: map[reading]bool{}} }

func (r *recorder) handle(_ paho.Client, m paho.Message) {
	p := append([]byte(nil), m.Payload()...)
	evs, err := uplink.DecodeMessage(p)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, Received{Topic: m.Topic(), Payload: p, At: time.Now()})
	if err != nil {
		r.bad++
		return
	}
	for _, e := range evs {
		var rd reading
		if json.Unmarshal(e.Payload, &rd) == nil {
			r.seen[rd] = true
		}
	}
}

// distinct returns how many distinct readings arrived.
func (r *recorder) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

// snapshot returns the messages received so far.
func (r *recorder) snapshot() []Received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Received(nil), r.msgs...)
}

// reading is what a fleet sensor publishes: its gateway, its own number
// and a sequence number.
type reading struct {
	G int `json:"g"`
	P int `json:"p"`
	S int `json:"s"`
}

// Report is what checkDelivery found in everything the cloud received.
type Report struct {
	Messages   int // MQTT messages
	Events     int // events in them, duplicates included
	Distinct   int // distinct event IDs
	Duplicates int // events whose ID had arrived before
	Acked      int // readings a sensor got a PUBACK for
	Missing    []reading
	// Reordered counts, per (gateway, sensor), first arrivals of a
	// reading that came after a later one (order is per stream, and a
	// sensor's readings are one stream's, in publish order).
	Reordered int
	// Undecodable counts messages DecodeMessage refused, and Foreign
	// events whose payload is not a fleet reading.
	Undecodable, Foreign int
	// SameReadingTwoIDs counts readings that arrived under two event IDs:
	// the gateway took one PUBLISH twice (it must not).
	SameReadingTwoIDs int
}

func (r Report) String() string {
	return fmt.Sprintf("%d messages, %d events (%d distinct IDs, %d duplicates), %d acknowledged readings, %d missing, %d reordered, %d undecodable, %d foreign, %d readings under two IDs",
		r.Messages, r.Events, r.Distinct, r.Duplicates, r.Acked, len(r.Missing), r.Reordered, r.Undecodable, r.Foreign, r.SameReadingTwoIDs)
}

// checkDelivery is the fleet's completeness check, by event ID: it
// decodes every message (single or batched, JSON or CBOR), drops
// duplicates by event ID, and lists every reading a sensor got a PUBACK
// for that never arrived. acked[g][p] is the sensor's acknowledged
// sequence numbers.
//
// It takes the raw messages, like ferry verify: the hook where the
// verify package's sequence-number check runs as well once it is merged
// (see verifyHook).
func checkDelivery(msgs []Received, acked map[int]map[int][]int) Report {
	var rep Report
	rep.Messages = len(msgs)
	ids := map[string]bool{}
	byReading := map[reading]string{}
	last := map[[2]int]int{}
	for _, m := range msgs {
		evs, err := uplink.DecodeMessage(m.Payload)
		if err != nil {
			rep.Undecodable++
			continue
		}
		for _, e := range evs {
			rep.Events++
			id := e.ID.String()
			if ids[id] {
				rep.Duplicates++
				continue
			}
			ids[id] = true
			var rd reading
			if err := json.Unmarshal(e.Payload, &rd); err != nil {
				rep.Foreign++
				continue
			}
			if prev, ok := byReading[rd]; ok && prev != id {
				rep.SameReadingTwoIDs++
				continue
			}
			byReading[rd] = id
			k := [2]int{rd.G, rd.P}
			if l, ok := last[k]; ok && rd.S < l {
				rep.Reordered++
			}
			last[k] = max(last[k], rd.S)
		}
	}
	rep.Distinct = len(ids)
	for g, sensors := range acked {
		for p, seqs := range sensors {
			for _, s := range seqs {
				rep.Acked++
				rd := reading{G: g, P: p, S: s}
				if _, ok := byReading[rd]; !ok {
					rep.Missing = append(rep.Missing, rd)
				}
			}
		}
	}
	sort.Slice(rep.Missing, func(i, j int) bool {
		a, b := rep.Missing[i], rep.Missing[j]
		if a.G != b.G {
			return a.G < b.G
		}
		if a.P != b.P {
			return a.P < b.P
		}
		return a.S < b.S
	})
	return rep
}

// missingSample formats the first few missing readings.
func missingSample(m []reading) string {
	var b strings.Builder
	for i, r := range m {
		if i == 10 {
			fmt.Fprintf(&b, " … (%d in all)", len(m))
			break
		}
		fmt.Fprintf(&b, " g%d/p%d/%d", r.G, r.P, r.S)
	}
	return b.String()
}
