package commands

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/downlink"
	"github.com/ferrygw/ferry/event"
	"github.com/mochi-mqtt/server/v2/packets"
)

var t0 = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return t0 }

// storeAndRead stores c through a Sink and reads it back from the log.
func storeAndRead(t *testing.T, log *buffertest.Log, c *downlink.Command) (uint64, *event.Event) {
	t.Helper()
	s := &Sink{Store: log, Stream: "commands", Now: fixedNow, Rand: bytes.NewReader(make([]byte, 64)), Log: slog.Default()}
	if err := s.AcceptCommand(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	var off uint64
	var got event.Event
	from := log.Acked("commands", Consumer) + 1
	n, err := log.Read("commands", from, 100, func(o uint64, ev *event.Event) error {
		off, got = o, *ev
		got.Payload = bytes.Clone(ev.Payload)
		return nil
	})
	if err != nil || n == from {
		t.Fatalf("read back: n=%d err=%v", n, err)
	}
	if err := log.Ack("commands", Consumer, off); err != nil {
		t.Fatal(err)
	}
	return off, &got
}

// TestPacket: a stored command comes back as the PUBLISH it arrived as,
// with the expiry that remains and the local response topic.
func TestPacket(t *testing.T) {
	log := buffertest.MustOpen(t, buffer.Options{})
	for _, tc := range []struct {
		name    string
		cmd     downlink.Command
		now     time.Time
		wantErr error
		want    func(off uint64) packets.Properties
		qos     byte
	}{
		{
			name: "plain",
			cmd:  downlink.Command{LocalTopic: "cmd/valve", Payload: []byte("on"), QoS: 1},
			now:  t0, qos: 1,
			want: func(uint64) packets.Properties { return packets.Properties{} },
		},
		{
			name: "qos 0",
			cmd:  downlink.Command{LocalTopic: "cmd/valve", Payload: []byte("on"), QoS: 0},
			now:  t0, qos: 0,
			want: func(uint64) packets.Properties { return packets.Properties{} },
		},
		{
			name: "request",
			cmd: downlink.Command{LocalTopic: "cmd/valve", Payload: []byte(`{"state":"on"}`), QoS: 1,
				ResponseTopic: "svc/replies/7", CorrelationData: []byte{0, 1, 0xff}, ContentType: "application/json",
				UserProperties: [][2]string{{"b", "2"}, {"a", "1"}}},
			now: t0, qos: 1,
			want: func(off uint64) packets.Properties {
				return packets.Properties{ContentType: "application/json", ResponseTopic: ReplyTopic(off),
					CorrelationData: []byte{0, 1, 0xff},
					User:            []packets.UserProperty{{Key: "a", Val: "1"}, {Key: "b", Val: "2"}}}
			},
		},
		{
			name: "expiry remains",
			cmd:  downlink.Command{LocalTopic: "cmd/valve", Payload: []byte("on"), QoS: 1, Expires: t0.Add(90 * time.Second)},
			now:  t0.Add(100 * time.Millisecond), qos: 1,
			want: func(uint64) packets.Properties { return packets.Properties{MessageExpiryInterval: 90} },
		},
		{
			name:    "expired",
			cmd:     downlink.Command{LocalTopic: "cmd/valve", Payload: []byte("on"), QoS: 1, Expires: t0.Add(time.Second)},
			now:     t0.Add(time.Second),
			wantErr: ErrExpired,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			off, ev := storeAndRead(t, log, &tc.cmd)
			pk, err := Packet(off, ev, tc.now)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil {
				return
			}
			if pk.TopicName != tc.cmd.LocalTopic || !bytes.Equal(pk.Payload, tc.cmd.Payload) || pk.FixedHeader.Qos != tc.qos {
				t.Errorf("packet %q %q qos %d", pk.TopicName, pk.Payload, pk.FixedHeader.Qos)
			}
			want := tc.want(off)
			want.User = append([]packets.UserProperty{{Key: CommandIDProperty, Val: ev.ID.String()}}, want.User...)
			if !reflect.DeepEqual(pk.Properties, want) {
				t.Errorf("properties\n got  %+v\n want %+v", pk.Properties, want)
			}
		})
	}
}

// TestRepliesResolve: a reply gets the response topic and correlation
// data of the command it names, never what the device claims.
func TestRepliesResolve(t *testing.T) {
	log := buffertest.MustOpen(t, buffer.Options{})
	ctx := context.Background()
	withResp, _ := storeAndRead(t, log, &downlink.Command{LocalTopic: "cmd/a", ResponseTopic: "svc/r/1", CorrelationData: []byte("c1")})
	noResp, _ := storeAndRead(t, log, &downlink.Command{LocalTopic: "cmd/b"})

	replies := []struct {
		topic       string
		attrs       map[string]string
		wantTopic   string
		wantCorrB64 string
	}{
		{ReplyTopic(withResp), nil, "svc/r/1", "YzE="},
		// The device's own "response_topic" user property is ignored.
		{ReplyTopic(withResp), map[string]string{downlink.AttrResponseTopic: "evil/topic"}, "svc/r/1", "YzE="},
		{ReplyTopic(noResp), map[string]string{downlink.AttrResponseTopic: "evil/topic"}, "", ""},
		{ReplyTopic(999), nil, "", ""},
		{"ferry/reply/x", nil, "", ""},
	}
	for _, r := range replies {
		if err := log.Append(ctx, &event.Event{Stream: "replies", Topic: r.topic, Payload: []byte("ok"), Attrs: r.attrs}); err != nil {
			t.Fatal(err)
		}
	}
	rq := &Replies{Log: log, Commands: "commands"}
	i := 0
	_, err := rq.Read("replies", 1, 100, func(off uint64, ev *event.Event) error {
		r := replies[i]
		i++
		if got := ev.Attrs[downlink.AttrResponseTopic]; got != r.wantTopic {
			t.Errorf("reply on %s: response topic %q, want %q", r.topic, got, r.wantTopic)
		}
		if got := ev.Attrs[downlink.AttrCorrelationData]; got != r.wantCorrB64 {
			t.Errorf("reply on %s: correlation %q, want %q", r.topic, got, r.wantCorrB64)
		}
		return nil
	})
	if err != nil || i != len(replies) {
		t.Fatalf("read %d of %d replies: %v", i, len(replies), err)
	}
}
