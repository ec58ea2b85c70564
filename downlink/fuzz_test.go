package downlink

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/packets"

	"github.com/ferrygw/ferry/event"
)

// FuzzMapTopic: whatever the cloud topic and prefixes hold, MapTopic never
// panics and what it returns is a valid local topic name under the local
// prefix.
func FuzzMapTopic(f *testing.F) {
	f.Add("gw1/cmd/", "dev/", "gw1/cmd/relay/1")
	f.Add("", "", "a/+/b")
	f.Add("gw1/", "", "gw1/$SYS/x")
	f.Add("x", "y", "x\x00")
	f.Fuzz(func(t *testing.T, cloudPrefix, localPrefix, topic string) {
		s := Subscription{CloudPrefix: cloudPrefix, LocalPrefix: localPrefix}
		local, err := s.MapTopic(topic)
		if err != nil {
			if !errors.Is(err, ErrTopic) {
				t.Fatalf("error %v does not wrap ErrTopic", err)
			}
			return
		}
		if cerr := checkTopicName(local); cerr != nil || local[0] == '$' || !strings.HasPrefix(local, localPrefix) {
			t.Fatalf("MapTopic(%q) = %q: %v", topic, local, cerr)
		}
	})
}

// FuzzFilters: a topic matching two valid filters means they overlap, and
// overlap is symmetric, so New never accepts filters that can deliver a
// message twice.
func FuzzFilters(f *testing.F) {
	f.Add("a/#", "a/+/c", "a/b/c")
	f.Add("#", "$SYS/#", "$SYS/x")
	f.Add("+/+", "a", "a")
	f.Add("a/b/#", "a/b", "a/b")
	f.Fuzz(func(t *testing.T, a, b, topic string) {
		ab, ba := FiltersOverlap(a, b), FiltersOverlap(b, a)
		if checkFilter(a) != nil || checkFilter(b) != nil {
			return
		}
		if ab != ba {
			t.Fatalf("FiltersOverlap(%q, %q) = %v but reversed %v", a, b, ab, ba)
		}
		if checkTopicName(topic) == nil && MatchFilter(a, topic) && MatchFilter(b, topic) && !ab {
			t.Fatalf("%q matches %q and %q, which do not overlap", topic, a, b)
		}
	})
}

// FuzzWire: bytes from the cloud pass the frame limit and paho's decoder
// without a panic, and no packet above the limit reaches the decoder.
func FuzzWire(f *testing.F) {
	f.Add([]byte{0x20, 0x03, 0x00, 0x00, 0x00})                                      // CONNACK
	f.Add([]byte{0x32, 0x0a, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x01, 0x00, 'x', 'y'}) // PUBLISH QoS 1
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0x7f})                                      // 256 MB
	f.Add([]byte{0xe0, 0x02, 0x8e, 0x00})                                            // DISCONNECT
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 1 << 10
		r := &limitedReader{r: bytes.NewReader(data), limit: frameLimit{max: max}}
		for range 64 {
			cp, err := packets.ReadPacket(r)
			if err != nil {
				return
			}
			if p, ok := cp.Content.(*packets.Publish); ok && len(p.Payload) > max {
				t.Fatalf("a %d-byte payload passed the %d-byte limit", len(p.Payload), max)
			}
		}
	})
}

// limitedReader applies a frameLimit to a reader, as wireConn does.
type limitedReader struct {
	r     io.Reader
	limit frameLimit
}

func (l *limitedReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if lerr := l.limit.scan(p[:n]); lerr != nil {
		return 0, lerr
	}
	return n, err
}

// FuzzReply: whatever a reply event's attributes hold, makeReply never
// panics, and a reply it lets through has a valid topic and decoded
// correlation data.
func FuzzReply(f *testing.F) {
	f.Add("app/resp/1", base64.StdEncoding.EncodeToString([]byte{0, 1}), "text/plain", []byte("ok"))
	f.Add("gw1/cmd/x", "", "", []byte{})
	f.Add("r/#", "!!", "\xff", []byte{0})
	cfg := testConfig(f, "gw1-cmd", "tcp://cloud:1883")
	cfg.Subscriptions = []Subscription{{Filter: "gw1/cmd/#", CloudPrefix: "gw1/cmd/"}}
	cfg.Commands = newSink()
	cfg.MaxPayload = 1 << 10
	c, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	s := &session{c: c, serverMaxPacket: 2 << 10}
	f.Fuzz(func(t *testing.T, topic, corr, ct string, payload []byte) {
		ev := &event.Event{Payload: payload, Attrs: map[string]string{AttrResponseTopic: topic, AttrCorrelationData: corr, AttrContentType: ct}}
		r := s.makeReply(1, ev)
		if r.drop != "" {
			return
		}
		if checkTopicName(r.topic) != nil || c.subscribed(r.topic) || len(r.payload) > cfg.MaxPayload {
			t.Fatalf("reply to %q passed", r.topic)
		}
		if want, _ := base64.StdEncoding.DecodeString(corr); !bytes.Equal(want, r.props.CorrelationData) {
			t.Fatalf("correlation %q decoded to %q", corr, r.props.CorrelationData)
		}
	})
}

func TestFuzzCorporaPresent(t *testing.T) {
	for _, name := range []string{"FuzzMapTopic", "FuzzFilters", "FuzzWire", "FuzzReply"} {
		ents, err := os.ReadDir(filepath.Join("testdata", "fuzz", name))
		if err != nil || len(ents) == 0 {
			t.Errorf("seed corpus of %s missing: %v", name, err)
		}
	}
}
