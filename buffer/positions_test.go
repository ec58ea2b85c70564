package buffer_test

import (
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/event"
)

// fixtureBase is the clock of the events in testdata/positions-v1.db.gz.
var fixtureBase = time.Unix(1_700_000_000, 0)

// openFixture copies testdata/positions-v1.db.gz, a buffer file written
// before consumers passed their names to Ack (Log.Ack then always acked
// as "uplink", and Tx.Consume moved pipelines' positions), and opens it.
// It holds:
//
//	telemetry  events 1..10, Retain, Consumers uplink and pipeline:agg;
//	           uplink acked through 6, pipeline:agg consumed through 4
//	_mqtt      events 1..5, Retain, no consumers listed; acked through 3
//	           by its outbox deliverer (as "uplink")
//	plain      events 1..3; acked through 2 (events 1 and 2 deleted)
func openFixture(t *testing.T, opts buffer.Options) (*buffertest.Log, string) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "positions-v1.db.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "buffer.db")
	out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, zr); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return buffertest.MustOpenPath(t, path, opts), path
}

func fixtureOptions() buffer.Options {
	return buffer.Options{Now: func() time.Time { return fixtureBase }, Streams: []buffer.StreamConfig{
		{Name: "telemetry", Retain: 1000 * time.Hour, Consumers: []string{buffer.DefaultConsumer, "pipeline:agg"}},
		{Name: "_mqtt", Retain: 1000 * time.Hour},
		{Name: "plain"},
	}}
}

// TestPositionsOfOlderFile opens a file written before the positions API
// named its consumers: every position is read back under the name it was
// stored under, and the consumers go on from there with today's API.
func TestPositionsOfOlderFile(t *testing.T) {
	l, path := openFixture(t, fixtureOptions())
	for _, tc := range []struct {
		stream, consumer string
		want             uint64
	}{
		{"telemetry", buffer.DefaultConsumer, 6},
		{"telemetry", "pipeline:agg", 4},
		{"_mqtt", buffer.DefaultConsumer, 3},
		{"plain", buffer.DefaultConsumer, 2},
	} {
		if p := l.Position(tc.stream, tc.consumer); p != tc.want {
			t.Errorf("Position(%s, %s) = %d, want %d", tc.stream, tc.consumer, p, tc.want)
		}
		if p := l.Acked(tc.stream, tc.consumer); p != tc.want {
			t.Errorf("Acked(%s, %s) = %d, want %d", tc.stream, tc.consumer, p, tc.want)
		}
	}
	if s := statsOf(l, "plain"); s.First != 3 || s.Events != 1 {
		t.Fatalf("plain: first %d, %d events; want 3, 1", s.First, s.Events)
	}
	// A reader going on after its position reads what it had not acked.
	if offs, _ := readAll(t, l, "_mqtt", l.Acked("_mqtt", buffer.DefaultConsumer)+1); len(offs) != 2 || offs[0] != 4 {
		t.Fatalf("_mqtt after the stored position: %v, want offsets 4 and 5", offs)
	}

	// Today's API moves the same positions.
	if err := l.Ack("_mqtt", buffer.DefaultConsumer, 5); err != nil {
		t.Fatal(err)
	}
	if err := l.Update(context.Background(), func(tx *buffer.Tx) error {
		return tx.Ack("telemetry", "pipeline:agg", 7)
	}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l = buffertest.MustOpenPath(t, path, fixtureOptions())
	if p := l.Position("_mqtt", buffer.DefaultConsumer); p != 5 {
		t.Fatalf("_mqtt position after reopening %d, want 5", p)
	}
	if p := l.Position("telemetry", "pipeline:agg"); p != 7 {
		t.Fatalf("pipeline:agg position after reopening %d, want 7", p)
	}
	if p := l.Position("telemetry", buffer.DefaultConsumer); p != 6 {
		t.Fatalf("uplink position after reopening %d, want 6", p)
	}
}

// TestAckNamesItsConsumer: Log.Ack moves the position of the consumer it
// names and no other, and events are deleted once every required
// consumer has acked them, whichever way each acked.
func TestAckNamesItsConsumer(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{Streams: []buffer.StreamConfig{
		{Name: "s", Consumers: []string{buffer.DefaultConsumer, "outbox"}},
	}})
	for i := 1; i <= 10; i++ {
		mustAppend(t, l, ev("s", i, 10))
	}
	if err := l.Ack("s", "outbox", 8); err != nil {
		t.Fatal(err)
	}
	if got := l.Acked("s", "outbox"); got != 8 {
		t.Fatalf("Acked(outbox) = %d, want 8", got)
	}
	if got := l.Acked("s", buffer.DefaultConsumer); got != 0 {
		t.Fatalf("Acked(uplink) = %d after only outbox acked, want 0", got)
	}
	commit(t, l)
	if s := statsOf(l, "s"); s.First != 1 {
		t.Fatalf("first %d after one of two required consumers acked, want 1", s.First)
	}
	if err := l.Update(context.Background(), func(tx *buffer.Tx) error {
		return tx.Ack("s", buffer.DefaultConsumer, 5)
	}); err != nil {
		t.Fatal(err)
	}
	if s := statsOf(l, "s"); s.First != 6 {
		t.Fatalf("first %d after both acked through 5 or more, want 6", s.First)
	}
	if p := l.Position("s", "outbox"); p != 8 {
		t.Fatalf("outbox position %d, want 8", p)
	}
}

// TestInherit: a renamed consumer (StreamConfig.Inherit) starts from its
// former name's position, in the fixture written before consumers had
// names: only when it has none of its own, and the former position is
// forgotten unless the stream still requires it. The inherited position
// reaches the file with the stream's next commit.
func TestInherit(t *testing.T) {
	cases := []struct {
		name      string
		consumers []string
		preset    uint64 // a position of its own under "outbox" from before
		want      uint64 // "outbox"'s position after opening
		former    uint64 // "uplink"'s position after opening
	}{
		{"renamed", []string{"outbox"}, 0, 3, 0},
		{"former still required", []string{"outbox", "uplink"}, 0, 3, 3},
		{"own position kept", []string{"outbox"}, 1, 1, 0},
	}
	with := func(mqtt buffer.StreamConfig) buffer.Options {
		o := fixtureOptions()
		for i := range o.Streams {
			if o.Streams[i].Name == "_mqtt" {
				mqtt.Name, mqtt.Retain = "_mqtt", o.Streams[i].Retain
				o.Streams[i] = mqtt
			}
		}
		return o
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, path := openFixture(t, with(buffer.StreamConfig{Consumers: []string{"outbox", "uplink"}}))
			if tc.preset > 0 {
				if err := l.Ack("_mqtt", "outbox", tc.preset); err != nil {
					t.Fatal(err)
				}
			}
			l.Close()
			opts := with(buffer.StreamConfig{Consumers: tc.consumers, Inherit: map[string]string{"outbox": "uplink"}})
			for round := range 2 { // the second: after a commit and a restart
				l = buffertest.MustOpenPath(t, path, opts)
				if p := l.Position("_mqtt", "outbox"); p != tc.want {
					t.Errorf("round %d: outbox at %d, want %d", round, p, tc.want)
				}
				if p := l.Position("_mqtt", "uplink"); p != tc.former {
					t.Errorf("round %d: uplink at %d, want %d", round, p, tc.former)
				}
				if err := l.Append(context.Background(), &event.Event{Stream: "_mqtt", Topic: "t", Time: fixtureBase, Payload: []byte("x")}); err != nil {
					t.Fatal(err)
				}
				l.Close()
			}
		})
	}
}
