package broker_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/ferrygw/ferry/internal/logging"
	"github.com/ferrygw/ferry/internal/mqtttest"
	"github.com/mochi-mqtt/server/v2/packets"
)

// fullBroker runs a broker (mod applied to its config) on a log whose
// telemetry stream (reject policy, one event) is already full, so that it
// refuses every further event.
func fullBroker(t *testing.T, mod func(*broker.Config)) (*broker.Broker, *buffertest.Log) {
	t.Helper()
	l := buffertest.MustOpen(t, buffer.Options{Streams: []buffer.StreamConfig{{Name: "telemetry", MaxEvents: 1, Overflow: buffer.Reject}}})
	b := start(t, l, mod)
	c, _ := dialRaw(t, b.Addr(), 4, "filler", 30)
	c.send(publish("sensors/fill", 1, 1, []byte("first")))
	if pk, err := c.read(5 * time.Second); err != nil || pk.FixedHeader.Type != packets.Puback {
		t.Fatalf("filling the stream: %v %+v", err, pk.FixedHeader)
	}
	return b, l
}

// ackOf publishes pk on c and returns the packets the broker sent before
// answering a PINGREQ sent right after it: the broker handles a client's
// packets in order, so an acknowledgement, if any, comes before the
// PINGRESP.
func ackOf(t *testing.T, c *rawClient, pk packets.Packet) []packets.Packet {
	t.Helper()
	c.send(pk)
	if _, err := c.conn.Write([]byte{0xc0, 0}); err != nil { // PINGREQ
		t.Fatal(err)
	}
	var got []packets.Packet
	for {
		p, err := c.read(10 * time.Second)
		if err != nil {
			t.Fatalf("after %d packets: %v", len(got), err)
		}
		if p.FixedHeader.Type == packets.Pingresp {
			return got
		}
		got = append(got, p)
	}
}

// TestRefusedAck checks how each client is told that its PUBLISH was not
// stored: MQTT 5 gets the acknowledgement its QoS calls for (PUBACK for
// QoS 1, PUBREC for QoS 2) with reason 0x97, quota exceeded; MQTT 3.1.1,
// which has no reason codes, gets none, so it resends later. mochi
// v2.7.9 answered a refused QoS 2 PUBLISH with a PUBACK, a protocol error
// (third_party/mochi-mqtt/PATCHES.md, 2).
func TestRefusedAck(t *testing.T) {
	b, l := fullBroker(t, nil)
	tests := []struct {
		ver, qos byte
		want     byte // packet type of the acknowledgement; 0: none
	}{
		{5, 1, packets.Puback},
		{5, 2, packets.Pubrec},
		{4, 1, 0},
		{4, 2, 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("MQTT v%d QoS %d", tt.ver, tt.qos), func(t *testing.T) {
			c, _ := dialRaw(t, b.Addr(), tt.ver, fmt.Sprintf("refused-%d-%d", tt.ver, tt.qos), 30)
			got := ackOf(t, c, publish("sensors/full", tt.qos, 7, []byte("x")))
			if tt.want == 0 {
				if len(got) != 0 {
					t.Fatalf("got %s, want no acknowledgement", packets.PacketNames[got[0].FixedHeader.Type])
				}
				return
			}
			if len(got) != 1 || got[0].FixedHeader.Type != tt.want || got[0].PacketID != 7 || got[0].ReasonCode != packets.ErrQuotaExceeded.Code {
				t.Fatalf("got %+v, want one %s for packet 7 with reason 0x97", got, packets.PacketNames[tt.want])
			}
			// The refused QoS 2 flow is over [MQTT-4.3.3]: the next
			// one with the same packet ID is a new message, refused again.
			if tt.qos == 2 {
				if again := ackOf(t, c, publish("sensors/full", 2, 7, []byte("y"))); len(again) != 1 || again[0].ReasonCode != packets.ErrQuotaExceeded.Code {
					t.Fatalf("same packet ID again: got %+v, want PUBREC 0x97", again)
				}
			}
		})
	}

	// Debian's mosquitto_pub, a client nobody here wrote, reads the
	// PUBREC's reason ("Publish 1 failed: Quota exceeded") and ends the
	// flow there, without a PUBREL.
	pub := mqtttest.RequireClient(t, "mosquitto_pub")
	host, port, _ := net.SplitHostPort(b.Addr())
	out, _ := exec.Command(pub, "-V", "5", "-d", "-h", host, "-p", port, "-q", "2", "-t", "sensors/q2", "-m", "refused").CombinedOutput()
	if !bytes.Contains(out, []byte("received PUBREC")) || !bytes.Contains(out, []byte("Quota exceeded")) ||
		bytes.Contains(out, []byte("PUBACK")) || bytes.Contains(out, []byte("PUBREL")) {
		t.Fatalf("mosquitto_pub -V 5 -q 2: want a PUBREC with reason quota exceeded, no PUBACK, no PUBREL:\n%s", out)
	}
	if n := len(events(t, l, "telemetry")); n != 1 {
		t.Fatalf("%d events stored, want 1 (the filler)", n)
	}
}

// syncBuffer is a log destination the broker's goroutines write to while
// the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRefusalLog refuses many PUBLISHes with a recognisable payload and
// reads the gateway's log (internal/logging, as cmd/ferry builds it):
// the payload appears in no line, in no encoding (mochi v2.7.9 logged the
// whole packet at ERROR for each refusal, PATCHES.md 3), a refusal line
// names stream, client and topic, and the lines are bounded: the logger's
// burst, then one summary with the count, however many were refused.
func TestRefusalLog(t *testing.T) {
	const n = 60
	payload := []byte("SECRET-READING-4711")
	encodings := []string{
		string(payload),
		fmt.Sprint(payload),                        // [83 69 ...], how fmt and slog's text handler print a []byte
		base64.StdEncoding.EncodeToString(payload), // how encoding/json does
		hex.EncodeToString(payload),
		fmt.Sprintf("%q", payload),
	}
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			var now atomic.Int64
			now.Store(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC).UnixNano())
			clock := func() time.Time { return time.Unix(0, now.Load()).UTC() }
			out := new(syncBuffer)
			log, err := logging.New(out, "debug", format, func(string) string { return "" }, logging.WithNow(clock))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := fullBroker(t, func(c *broker.Config) { c.Logger = log })
			v5, _ := dialRaw(t, b.Addr(), 5, "sensor-5", 30)
			v4, _ := dialRaw(t, b.Addr(), 4, "sensor-4", 30)
			for i := range n {
				c := v5
				if i%3 == 2 {
					c = v4
				}
				ackOf(t, c, publish("sensors/secret", byte(1+i%2), uint16(1+i), payload))
			}
			if st := b.Stats(); st.Refused != n {
				t.Fatalf("refused %d, want %d", st.Refused, n)
			}
			// A minute later the next line brings the summary.
			now.Add(int64(2 * time.Minute))
			ackOf(t, v5, publish("sensors/secret", 1, 999, payload))

			text := out.String()
			for _, enc := range encodings {
				if strings.Contains(text, enc) {
					t.Fatalf("the payload is in the log (as %s):\n%s", enc, text)
				}
			}
			lines := strings.Split(strings.TrimSpace(text), "\n")
			refusals, suppressed := 0, 0
			for _, line := range lines {
				switch {
				case strings.Contains(line, logging.SuppressedMsg):
					if !strings.Contains(line, "publish refused") {
						t.Errorf("summary of another line: %s", line)
					}
					suppressed++
					if !strings.Contains(line, fmt.Sprintf("count=%d", n-logging.DefaultBurst)) &&
						!strings.Contains(line, fmt.Sprintf(`"count":%d`, n-logging.DefaultBurst)) {
						t.Errorf("summary %s, want count %d", line, n-logging.DefaultBurst)
					}
				case strings.Contains(line, "publish refused"):
					refusals++
					for _, want := range []string{"telemetry", "sensor-", "sensors/secret", buffer.ErrFull.Error()} {
						if !strings.Contains(line, want) {
							t.Errorf("refusal line without %q: %s", want, line)
						}
					}
				}
			}
			// The burst, the summary, and the first line of the next
			// minute; a few more lines (listening, …) are allowed, not n.
			if refusals != logging.DefaultBurst+1 || suppressed != 1 || len(lines) > logging.DefaultBurst+6 {
				t.Fatalf("%d refusal lines, %d summaries, %d lines in all for %d refusals, want %d, 1 and at most %d:\n%s",
					refusals, suppressed, len(lines), n+1, logging.DefaultBurst+1, logging.DefaultBurst+6, text)
			}
		})
	}
}

// TestMochiWarningsBounded has many clients, each under a new client ID,
// make mochi warn (a topic alias over the maximum: "error processing
// packet", and the client is disconnected): the logger lets a few of
// those lines through per minute in all, not a few per client ID, so
// clients cannot fill the board's flash by changing their IDs.
func TestMochiWarningsBounded(t *testing.T) {
	const n = 30
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	out := new(syncBuffer)
	log, err := logging.New(out, "info", "text", func(string) string { return "" }, logging.WithNow(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	l := buffertest.MustOpen(t, buffer.Options{})
	b := start(t, l, func(c *broker.Config) { c.Logger = log })
	for i := range n {
		c, _ := dialRaw(t, b.Addr(), 5, fmt.Sprintf("bad-alias-%d", i), 30)
		pk := publish("sensors/alias", 1, 1, []byte("x"))
		pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = 17, true
		c.send(pk)
		if _, closed := c.closed(10 * time.Second); !closed {
			t.Fatalf("client %d with topic alias 17 stayed connected", i)
		}
	}
	warned := strings.Count(out.String(), "error processing packet")
	if warned == 0 || warned > logging.DefaultBurst {
		t.Fatalf("%d warnings for %d clients, want 1 to %d:\n%s", warned, n, logging.DefaultBurst, out.String())
	}
	// mochi logs after closing the connection, so the clients' lines
	// come in no set order.
	if !strings.Contains(out.String(), "client_id=bad-alias-") {
		t.Fatalf("warning without the client:\n%s", out.String())
	}
}
