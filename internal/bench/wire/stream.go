package wire

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/ferrygw/ferry/event"
)

// Quantities per reading event: temperature, humidity, pressure.
const Quantities = 3

// Stream generates the readings of a set of sensors, one event per sensor
// per period, as a BME280 on a small MQTT client publishes them: a compact
// JSON object, temperature in °C to 0.01, relative humidity in % to 0.1,
// pressure in hPa to 0.01, on topic sensors/<name>, its client ID <name>.
//
// The values follow a daily cycle, a slow weather drift and per-sensor
// offsets, with each sensor's own random walk and measurement noise (σ
// 0.02 °C, 0.12 %RH, 0.03 hPa), so that neither a constant nor white noise
// flatters or punishes a compressor. A sensor publishes at its own phase
// in the period, with some milliseconds of jitter.
type Stream struct {
	rnd     *rand.Rand
	period  time.Duration
	next    time.Time
	sensors []sensor
	ids     *rand.ChaCha8
}

type sensor struct {
	name, topic  string
	phase        time.Duration
	t0, h0, p0   float64 // offsets
	walkT, walkH float64
	dayPhase     float64
}

// NewStream returns a stream of n sensors publishing every period from
// start, its randomness drawn from seed.
func NewStream(seed uint64, n int, period time.Duration, start time.Time) *Stream {
	s := &Stream{
		rnd:    rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		period: period,
		next:   start,
	}
	var key [32]byte
	for i := range key {
		key[i] = byte(seed >> (8 * (i % 8)))
	}
	s.ids = rand.NewChaCha8(key)
	for i := range n {
		name := fmt.Sprintf("bme280-%02d", i+1)
		s.sensors = append(s.sensors, sensor{
			name: name, topic: "sensors/" + name,
			phase:    time.Duration(i) * period / time.Duration(n),
			t0:       19 + 5*s.rnd.Float64(),
			h0:       35 + 25*s.rnd.Float64(),
			p0:       s.rnd.Float64() - 0.5, // altitude differences
			dayPhase: 0.3 * s.rnd.Float64(),
		})
	}
	return s
}

// Next returns the next period's events, one per sensor, in publish order.
func (s *Stream) Next(stream string) []event.Event {
	start := s.next
	s.next = s.next.Add(s.period)
	day := float64(start.Unix()%86400) / 86400
	weather := 6 * math.Sin(2*math.Pi*float64(start.Unix())/(5*86400))
	evs := make([]event.Event, 0, len(s.sensors))
	for i := range s.sensors {
		sn := &s.sensors[i]
		sn.walkT = 0.995*sn.walkT + 0.01*s.rnd.NormFloat64()
		sn.walkH = 0.995*sn.walkH + 0.05*s.rnd.NormFloat64()
		diurnal := math.Sin(2 * math.Pi * (day + sn.dayPhase))
		t := sn.t0 + 2.5*diurnal + sn.walkT + 0.02*s.rnd.NormFloat64()
		h := sn.h0 - 4*diurnal + sn.walkH + 0.12*s.rnd.NormFloat64()
		p := 1013.25 + weather + sn.p0 + 0.03*s.rnd.NormFloat64()
		at := start.Add(sn.phase + time.Duration(s.rnd.IntN(60))*time.Millisecond)
		ev := event.Event{
			Stream: stream, Source: sn.name, Topic: sn.topic, Time: at,
			Payload: fmt.Appendf(nil, `{"temperature":%.2f,"humidity":%.1f,"pressure":%.2f}`, t, h, p),
		}
		var err error
		if ev.ID, err = event.NewID(at, s.ids); err != nil {
			panic(err) // ChaCha8 never fails to read
		}
		evs = append(evs, ev)
	}
	return evs
}
