package uplink

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/event"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/ferrygw/ferry/internal/tcpproxy"
)

// checkInOrder checks that evs hold seq first..last of one stream in order,
// allowing only replays (a resend restarts at an earlier seq and repeats).
func checkInOrder(t *testing.T, evs []event.Event, stream string, first, last int) {
	t.Helper()
	seen := map[event.ID]bool{}
	want := first
	for i := range evs {
		if evs[i].Stream != stream {
			continue
		}
		seq := seqOf(t, &evs[i])
		if seen[evs[i].ID] {
			continue // a duplicate (resend); its first copy was in order
		}
		if seq != want {
			t.Fatalf("stream %s: got seq %d, want %d (order broken or event lost)", stream, seq, want)
		}
		seen[evs[i].ID] = true
		want++
	}
	if want != last+1 {
		t.Fatalf("stream %s: got seq %d..%d, want up to %d", stream, first, want-1, last)
	}
}

func TestForwardInOrderWithWindow(t *testing.T) {
	for _, qos := range []byte{1, 0} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			leakCheck(t)
			b := mqtttest.Start(t)
			sub := subscribe(t, b.URL())
			q := newMemQueue()
			const n = 3000
			q.append("telemetry", mkEvents(t, "telemetry", 1, n)...)
			cfg := testConfig(t, b.URL())
			cfg.QoS = qos
			cfg.Inflight = 50
			f, stop := startForwarder(t, q, cfg)
			waitFor(t, 20*time.Second, "all events acked", func() bool { return q.acked("telemetry") == n })
			waitFor(t, 10*time.Second, "all events received", func() bool { return len(sub.messages()) >= n })
			stop()
			checkInOrder(t, sub.events(), "telemetry", 1, n)
			st := f.Status()
			t.Logf("peak inflight %d", st.PeakInflight)
			if qos == 1 && st.PeakInflight <= 1 {
				t.Errorf("PeakInflight = %d, want > 1 (window not used)", st.PeakInflight)
			}
			if st.ForwardedEvents != n || st.ForwardedMessages != n || st.Acked["telemetry"] != n || st.Inflight != 0 {
				t.Errorf("status = %+v", st)
			}
			if st.Endpoint != b.URL() || st.Connected {
				t.Errorf("endpoint %q connected %v after stop", st.Endpoint, st.Connected)
			}
			if got := sub.messages()[0].topic; got != "gw-test/telemetry/sensor-1" {
				t.Errorf("topic = %q", got)
			}
		})
	}
}

func TestOutageRewindsAndDrains(t *testing.T) {
	leakCheck(t)
	b := mqtttest.Start(t)
	p := tcpproxy.Start(t, b.Addr)
	sub := subscribe(t, b.URL())
	q := newMemQueue()
	q.append("s", mkEvents(t, "s", 1, 10)...)
	cfg := testConfig(t, p.URL())
	cfg.Inflight = 100
	f, stop := startForwarder(t, q, cfg)
	waitFor(t, 10*time.Second, "first events acked", func() bool { return q.acked("s") == 10 })
	waitFor(t, 10*time.Second, "first events received", func() bool { return len(sub.messages()) == 10 })

	b.Stop()
	waitFor(t, 10*time.Second, "disconnect noticed", func() bool { return !f.Status().Connected })
	acks := q.acks()
	const n = 2000
	q.append("s", mkEvents(t, "s", 11, n)...)
	time.Sleep(300 * time.Millisecond) // several reconnect attempts
	if got := q.acks(); got != acks {
		t.Fatalf("%d acks while the cloud was down", got-acks)
	}
	if q.acked("s") != 10 {
		t.Fatalf("acked %d while the cloud was down", q.acked("s"))
	}

	p.SetOpen(false) // keep the forwarder out until the new subscriber listens
	b.StartAgain()
	sub.close()
	sub = subscribe(t, b.URL())
	p.SetOpen(true)
	// No new events from here on: the backlog must drain by itself.
	waitFor(t, 20*time.Second, "backlog acked", func() bool { return q.acked("s") == 10+n })
	waitFor(t, 10*time.Second, "backlog received", func() bool { return len(sub.events()) >= n })
	stop()
	evs := sub.events()
	checkInOrder(t, evs, "s", 11, 10+n)
	st := f.Status()
	if st.Reconnects < 1 || st.LastError == "" || st.LastDisconnected.IsZero() {
		t.Errorf("status after outage: %+v", st)
	}
}

func TestAckOnlyAfterPuback(t *testing.T) {
	leakCheck(t)
	b := mqtttest.Start(t)
	p := tcpproxy.Start(t, b.Addr)
	sub := subscribe(t, b.URL())
	q := newMemQueue()
	cfg := testConfig(t, p.URL())
	f, stop := startForwarder(t, q, cfg)
	waitFor(t, 10*time.Second, "connected", func() bool { return f.Status().Connected })

	p.Pause() // PUBACKs from the broker are held back from here on
	q.append("s", mkEvents(t, "s", 1, 5)...)
	waitFor(t, 10*time.Second, "events reach the broker", func() bool { return len(sub.messages()) == 5 })
	time.Sleep(200 * time.Millisecond)
	if q.acks() != 0 {
		t.Fatalf("%d acks before any PUBACK reached the forwarder", q.acks())
	}
	if st := f.Status(); st.Inflight != 5 || st.ForwardedEvents != 0 {
		t.Fatalf("status with PUBACKs held: inflight %d forwarded %d", st.Inflight, st.ForwardedEvents)
	}
	p.Unpause()
	waitFor(t, 10*time.Second, "acks after PUBACK", func() bool { return q.acked("s") == 5 })
	stop()
}

func TestFailoverToSecondEndpoint(t *testing.T) {
	leakCheck(t)
	b := mqtttest.Start(t)
	down := fmt.Sprintf("tcp://127.0.0.1:%d", mqtttest.FreePort(t))
	sub := subscribe(t, b.URL())
	q := newMemQueue()
	q.append("s", mkEvents(t, "s", 1, 20)...)
	f, stop := startForwarder(t, q, testConfig(t, down, b.URL()))
	waitFor(t, 10*time.Second, "events acked", func() bool { return q.acked("s") == 20 })
	waitFor(t, 10*time.Second, "events received", func() bool { return len(sub.messages()) == 20 })
	stop()
	if st := f.Status(); st.Endpoint != b.URL() || st.Reconnects != 0 {
		t.Errorf("endpoint %q reconnects %d, want %q and 0", st.Endpoint, st.Reconnects, b.URL())
	}
	checkInOrder(t, sub.events(), "s", 1, 20)
}

func TestAllEndpointsDownProbes(t *testing.T) {
	leakCheck(t)
	q := newMemQueue()
	q.append("s", mkEvents(t, "s", 1, 3)...)
	cfg := testConfig(t, fmt.Sprintf("tcp://127.0.0.1:%d", mqtttest.FreePort(t)))
	f, stop := startForwarder(t, q, cfg)
	waitFor(t, 5*time.Second, "a connect error", func() bool { return f.Status().LastError != "" })
	stop()
	st := f.Status()
	if st.Connected || !strings.Contains(st.LastError, "cannot connect") || !strings.Contains(st.LastError, ErrUnreachable.Error()) || q.acks() != 0 {
		t.Errorf("status %+v, acks %d", st, q.acks())
	}
}

func TestBatching(t *testing.T) {
	tests := []struct {
		name      string
		format    Format
		maxEvents int
		maxBytes  int
	}{
		{"json by count", FormatJSON, 7, 0},
		{"json by bytes", FormatJSON, 50, 1200},
		{"cbor by count", FormatCBOR, 7, 0},
		{"cbor by bytes", FormatCBOR, 50, 600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakCheck(t)
			b := mqtttest.Start(t)
			sub := subscribe(t, b.URL())
			q := newMemQueue()
			const n = 200
			evs := mkEvents(t, "s", 1, n)
			for i := range evs {
				evs[i].Topic = fmt.Sprintf("room/%d", i/30) // the topic changes every 30 events
			}
			q.append("s", evs...)
			cfg := testConfig(t, b.URL())
			cfg.Format = tt.format
			cfg.Topic = "{gateway_id}/{stream}/{topic}"
			cfg.BatchMaxEvents, cfg.BatchMaxBytes = tt.maxEvents, tt.maxBytes
			cfg.MaxMessageBytes = 4096
			_, stop := startForwarder(t, q, cfg)
			waitFor(t, 10*time.Second, "all acked", func() bool { return q.acked("s") == n })
			waitFor(t, 10*time.Second, "all received", func() bool { return len(sub.events()) >= n })
			stop()
			limit := tt.maxBytes
			if limit == 0 {
				limit = cfg.MaxMessageBytes
			}
			msgs := sub.messages()
			t.Logf("%d events in %d messages", n, len(msgs))
			if len(msgs) >= n/2 {
				t.Errorf("%d messages for %d events: not batched", len(msgs), n)
			}
			for _, m := range msgs {
				got, err := DecodeMessage(m.payload)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) > tt.maxEvents || (len(got) > 1 && len(m.payload) > limit) {
					t.Errorf("message of %d events, %d bytes exceeds %d events / %d bytes", len(got), len(m.payload), tt.maxEvents, limit)
				}
				want := "gw-test/s/" + got[0].Topic
				for _, ev := range got {
					if "gw-test/s/"+ev.Topic != want || m.topic != want {
						t.Fatalf("batch on %q mixes topic %q", m.topic, ev.Topic)
					}
				}
				if tt.format == FormatJSON && m.payload[0] != '[' {
					t.Errorf("JSON batch is not an array: %.20q", m.payload)
				}
			}
			checkInOrder(t, sub.events(), "s", 1, n)
		})
	}
}

func TestOversizeEventIsSkippedAndCounted(t *testing.T) {
	leakCheck(t)
	b := mqtttest.Start(t)
	sub := subscribe(t, b.URL())
	q := newMemQueue()
	evs := mkEvents(t, "s", 1, 3)
	evs[1].Payload = bytes.Repeat([]byte("x"), 1000)
	q.append("s", evs...)
	cfg := testConfig(t, b.URL())
	cfg.MaxMessageBytes = 512
	f, stop := startForwarder(t, q, cfg)
	waitFor(t, 10*time.Second, "all acked", func() bool { return q.acked("s") == 3 })
	waitFor(t, 10*time.Second, "2 received", func() bool { return len(sub.messages()) == 2 })
	stop()
	got := sub.events()
	if len(got) != 2 || got[0].ID != evs[0].ID || got[1].ID != evs[2].ID {
		t.Fatalf("received %d events, want events 1 and 3", len(got))
	}
	st := f.Status()
	if st.Dropped["oversize"] != 1 || st.ForwardedEvents != 2 || st.Acked["s"] != 3 {
		t.Errorf("status %+v", st)
	}
}

func TestRoundRobinFairness(t *testing.T) {
	leakCheck(t)
	b := mqtttest.Start(t)
	sub := subscribe(t, b.URL())
	q := newMemQueue()
	q.append("big", mkEvents(t, "big", 1, 1000)...)
	q.append("live", mkEvents(t, "live", 1, 20)...)
	cfg := testConfig(t, b.URL())
	cfg.Inflight = 4
	_, stop := startForwarder(t, q, cfg)
	waitFor(t, 20*time.Second, "all acked", func() bool { return q.acked("big") == 1000 && q.acked("live") == 20 })
	waitFor(t, 10*time.Second, "all received", func() bool { return len(sub.messages()) >= 1020 })
	stop()
	evs := sub.events()
	lastLive := -1
	for i := range evs {
		if evs[i].Stream == "live" {
			lastLive = i
		}
	}
	// Served round-robin, the live stream's 20 events go out within roughly
	// the first 40 messages, not after the 1000-event backlog.
	t.Logf("last live event: message %d of %d", lastLive, len(evs))
	if lastLive > 100 {
		t.Errorf("last live event was message %d of %d: the backlog starved it", lastLive, len(evs))
	}
	checkInOrder(t, evs, "big", 1, 1000)
	checkInOrder(t, evs, "live", 1, 20)
}

func TestStreamsFilter(t *testing.T) {
	leakCheck(t)
	b := mqtttest.Start(t)
	sub := subscribe(t, b.URL())
	q := newMemQueue()
	cfg := testConfig(t, b.URL())
	cfg.Streams = []string{"keep"}
	_, stop := startForwarder(t, q, cfg)
	q.append("skip", mkEvents(t, "skip", 1, 5)...)
	q.append("keep", mkEvents(t, "keep", 1, 5)...)
	waitFor(t, 10*time.Second, "keep acked", func() bool { return q.acked("keep") == 5 })
	waitFor(t, 10*time.Second, "keep received", func() bool { return len(sub.messages()) == 5 })
	stop()
	if q.acked("skip") != 0 {
		t.Errorf("stream outside Streams was forwarded")
	}
}

func TestRunTwice(t *testing.T) {
	leakCheck(t)
	q := newMemQueue()
	cfg := testConfig(t, fmt.Sprintf("tcp://127.0.0.1:%d", mqtttest.FreePort(t)))
	f, stop := startForwarder(t, q, cfg)
	time.Sleep(20 * time.Millisecond)
	if err := f.Run(t.Context()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run: %v, want ErrRunning", err)
	}
	stop()
}

func TestLostPubacksAreResent(t *testing.T) {
	leakCheck(t)
	b := mqtttest.Start(t)
	p := tcpproxy.Start(t, b.Addr)
	sub := subscribe(t, b.URL())
	q := newMemQueue()
	cfg := testConfig(t, p.URL())
	cfg.Keepalive = time.Second // the held-back PINGRESP ends the connection quickly
	f, stop := startForwarder(t, q, cfg)
	waitFor(t, 10*time.Second, "connected", func() bool { return f.Status().Connected })

	p.Pause() // PUBACKs (and PINGRESPs) are lost from here on
	evs := mkEvents(t, "s", 1, 5)
	q.append("s", evs...)
	waitFor(t, 10*time.Second, "events reach the broker", func() bool { return len(sub.messages()) == 5 })
	waitFor(t, 10*time.Second, "connection given up", func() bool { return !f.Status().Connected })
	if q.acks() != 0 {
		t.Fatalf("%d acks without PUBACK", q.acks())
	}
	p.Unpause()
	waitFor(t, 10*time.Second, "acked after resend", func() bool { return q.acked("s") == 5 })
	waitFor(t, 10*time.Second, "resent", func() bool { return len(sub.messages()) == 10 })
	stop()
	if st := f.Status(); st.Resent != 5 {
		t.Errorf("Resent = %d, want 5", st.Resent)
	}
	got := sub.events()
	for i := range got {
		if got[i].ID != evs[i%5].ID {
			t.Fatalf("message %d carries %v, want a resend of the 5 events in order", i, got[i].ID)
		}
	}
}

func TestRateCapSpacesPublishes(t *testing.T) {
	leakCheck(t)
	b := mqtttest.Start(t)
	q := newMemQueue()
	cfg := testConfig(t, b.URL())
	cfg.MessagesPerSecond = 100 // no burst: publishes at least 10 ms apart
	f, stop := startForwarder(t, q, cfg)
	waitFor(t, 10*time.Second, "connected", func() bool { return f.Status().Connected })
	start := time.Now()
	q.append("s", mkEvents(t, "s", 1, 11)...)
	waitFor(t, 10*time.Second, "acked", func() bool { return q.acked("s") == 11 })
	// A lower bound only, which the limiter guarantees: never flaky.
	if el := time.Since(start); el < 90*time.Millisecond {
		t.Errorf("11 messages at 100/s took %v, want >= 100ms", el)
	}
	stop()
}

// TestReturningCloudFoundWithinSeconds is issue 10: after an outage longer
// than the max backoff, the forwarder must find the cloud, back on the same
// port, within a few seconds and deliver its backlog. While the port
// refuses connections it probes every ProbeInterval; the old schedule
// backed off on these too and, drawing the worst case (Rand near 1: 1, 2, 4,
// 6, 6 s after the drop), next tried 13 s after the drop, 5 s after this
// cloud is back.
func TestReturningCloudFoundWithinSeconds(t *testing.T) {
	leakCheck(t)
	const (
		outage   = 8 * time.Second // > BackoffMax, and 1 s after the old schedule's attempt at 7 s
		deadline = 3 * time.Second // from the restart; 6 probe intervals, for loaded and emulated machines
	)
	b := mqtttest.Start(t)
	q := newMemQueue()
	cfg := testConfig(t, b.URL())
	cfg.BackoffMin, cfg.BackoffMax = time.Second, 6*time.Second
	cfg.Rand = func() float64 { return 0.999999 }
	cfg.ProbeInterval = 500 * time.Millisecond
	cfg.StableAfter = 300 * time.Millisecond
	f, stop := startForwarder(t, q, cfg)
	q.append("s", mkEvents(t, "s", 1, 5)...)
	waitFor(t, 10*time.Second, "first events acked", func() bool { return q.acked("s") == 5 })
	waitFor(t, 10*time.Second, "a connection up for StableAfter", func() bool {
		st := f.Status()
		return st.Connected && time.Since(st.LastConnected) >= 300*time.Millisecond
	})

	down := time.Now()
	b.Stop()
	waitFor(t, 10*time.Second, "disconnect noticed", func() bool { return !f.Status().Connected })
	const n = 100
	q.append("s", mkEvents(t, "s", 6, n)...)
	// The outage is the stimulus, not a wait for an expected event: the
	// cloud stays away this long whatever the forwarder does.
	outageOver := time.NewTimer(time.Until(down.Add(outage)))
	<-outageOver.C
	if q.acked("s") != 5 {
		t.Fatalf("acked %d while the cloud was down", q.acked("s"))
	}

	back := time.Now()
	b.StartAgain()
	waitFor(t, 30*time.Second, "backlog acked by the returned cloud", func() bool { return q.acked("s") == 5+n })
	took := time.Since(back)
	t.Logf("cloud down %v; backlog delivered %v after it was started again", back.Sub(down).Round(time.Millisecond), took.Round(time.Millisecond))
	if took > deadline {
		t.Errorf("backlog delivered %v after the cloud was back, want within %v (probe interval %v)",
			took.Round(time.Millisecond), deadline, cfg.ProbeInterval)
	}
	stop()
	if st := f.Status(); st.Reconnects != 1 || st.ForwardedEvents != 5+n {
		t.Errorf("status after outage: reconnects %d forwarded %d, want 1 and %d", st.Reconnects, st.ForwardedEvents, 5+n)
	}
}

// TestCloudRefusalsBackOff: a cloud that refuses (a CONNACK refusal from a
// real Mosquitto) or drops connections right after accepting them is
// retried on the capped exponential backoff, never on the short probe
// cadence. The bound is a lower one, which the schedule guarantees on any
// machine: with Rand near 1 the pauses before attempts 2..6 are 0.1, 0.2,
// 0.4, 0.4, 0.4 s, while probing would take 5 × 20 ms.
func TestCloudRefusalsBackOff(t *testing.T) {
	tests := []struct {
		name    string
		target  func(t testing.TB) string // broker address behind the proxy
		kick    bool
		lastErr string
	}{
		{"CONNACK not authorised", startRefusingMosquitto, false, ErrRefused.Error()},
		{"dropped right after CONNACK", func(t testing.TB) string { return mqtttest.Start(t).Addr }, true, ErrConnectionLost.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakCheck(t)
			p := tcpproxy.Start(t, tt.target(t))
			p.SetKick(tt.kick)
			q := newMemQueue()
			q.append("s", mkEvents(t, "s", 1, 3)...)
			cfg := testConfig(t, p.URL())
			cfg.BackoffMin, cfg.BackoffMax = 100*time.Millisecond, 400*time.Millisecond
			cfg.ProbeInterval = 20 * time.Millisecond
			cfg.StableAfter = time.Minute
			cfg.Rand = func() float64 { return 0.999999 }
			start := time.Now()
			f, stop := startForwarder(t, q, cfg)
			waitFor(t, 30*time.Second, "6 connection attempts", func() bool { return p.Accepted.Load() >= 6 })
			took := time.Since(start)
			stop()
			const least = 1490 * time.Millisecond // 0.1+0.2+0.4+0.4+0.4 s, less the draw's shortfall
			if took < least {
				t.Errorf("6 attempts within %v, want at least %v: not backing off", took, least)
			}
			if st := f.Status(); !strings.Contains(st.LastError, tt.lastErr) || q.acked("s") != 0 {
				t.Errorf("last error %q (want it to contain %q), acked %d", st.LastError, tt.lastErr, q.acked("s"))
			}
		})
	}
}
