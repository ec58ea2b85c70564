package buffer_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer"
	"github.com/ferrygw/ferry/buffer/buffertest"
	bolt "go.etcd.io/bbolt"
)

// TestAcksRideAppends: an ack starts no commit of its own; the next
// append's commit applies it (the acked events are deleted there).
func TestAcksRideAppends(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{AckInterval: time.Hour, CommitInterval: -1})
	for i := range 3 {
		mustAppend(t, l, ev("s", i, 10))
	}
	c0, _ := l.CommitStats()
	if err := l.Ack("s", buffer.DefaultConsumer, 3); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, ev("s", 3, 10))
	c1, _ := l.CommitStats()
	if c1 != c0+1 {
		t.Fatalf("%d commits for an ack and an append, want 1 (the ack rides the append)", c1-c0)
	}
	if st := statsOf(l, "s"); st.Events != 1 || st.First != 4 {
		t.Fatalf("after the append's commit: %+v, want the acked events deleted", st)
	}
	if p := l.Position("s", buffer.DefaultConsumer); p != 3 {
		t.Fatalf("committed uplink position %d, want 3", p)
	}
}

// TestAckIntervalAlone: with nothing appended, acks are committed on their
// own once AckInterval has passed, in one commit.
func TestAckIntervalAlone(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{AckInterval: 30 * time.Millisecond, CommitInterval: -1})
	for i := range 3 {
		mustAppend(t, l, ev("s", i, 10))
	}
	c0, _ := l.CommitStats()
	for through := uint64(1); through <= 3; through++ {
		if err := l.Ack("s", buffer.DefaultConsumer, through); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return statsOf(l, "s").Events == 0 })
	if c1, _ := l.CommitStats(); c1 != c0+1 {
		t.Fatalf("%d commits for three acks, want 1", c1-c0)
	}
}

// TestUpdateDeferredRides: an UpdateDeferred runs in the commit of a later
// append and never in a commit of its own.
func TestUpdateDeferredRides(t *testing.T) {
	l := buffertest.MustOpen(t, buffer.Options{AckInterval: time.Hour, CommitInterval: -1})
	mustAppend(t, l, ev("s", 0, 10))
	c0, _ := l.CommitStats()
	done := make(chan error, 1)
	go func() {
		done <- l.UpdateDeferred(context.Background(), func(tx *buffer.Tx) error {
			return tx.PutState("k", []byte("v"))
		})
	}()
	appends := 0
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if c, _ := l.CommitStats(); c-c0 != uint64(appends) {
				t.Fatalf("%d commits for %d appends and a deferred update, want %d", c-c0, appends, appends)
			}
			if v, err := l.State("k"); err != nil || string(v) != "v" {
				t.Fatalf("state %q, %v", v, err)
			}
			return
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the deferred update never rode an append's commit")
		}
		mustAppend(t, l, ev("s", appends+1, 10))
		appends++
	}
}

// TestDeferredCommittedOnStop: a deferred update and pending acks are
// committed when the log stops, not dropped.
func TestDeferredCommittedOnStop(t *testing.T) {
	path := t.TempDir() + "/b.db"
	opts := buffer.Options{AckInterval: time.Hour}
	l := buffertest.MustOpenPath(t, path, opts)
	mustAppend(t, l, ev("s", 0, 10))
	if err := l.Ack("s", buffer.DefaultConsumer, 1); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- l.UpdateDeferred(context.Background(), func(tx *buffer.Tx) error { return tx.PutState("k", []byte("v")) })
	}()
	// The update is queued or about to be: Close drains the queue, and an
	// update queued after the last drain gets ErrClosed, never silence.
	l.Close()
	err := <-done
	l = buffertest.MustOpenPath(t, path, opts)
	if p := l.Position("s", buffer.DefaultConsumer); p != 1 {
		t.Fatalf("uplink position %d after a clean stop, want 1", p)
	}
	if v, _ := l.State("k"); err == nil && string(v) != "v" {
		t.Fatalf("the deferred update returned nil but its state is %q", v)
	}
}

// TestSparseAppendsGrouped: writers that each append every second (sensors)
// share commits when CommitInterval holds them open, instead of paying one
// fsync each.
func TestSparseAppendsGrouped(t *testing.T) {
	if testing.Short() {
		t.Skip("paced in real time: about 4 s")
	}
	l := buffertest.MustOpen(t, buffer.Options{CommitInterval: time.Second})
	const writers, each = 5, 4
	c0, _ := l.CommitStats()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			// Phases 100 ms apart, one append a second each: sparse,
			// nobody waiting on anybody. The sleep shapes the load (the
			// test is about traffic arriving over time); nothing waits
			// on it for a result.
			time.Sleep(time.Duration(w) * 100 * time.Millisecond)
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for i := range each {
				mustAppend(t, l, ev("s", w*each+i, 50))
				<-tick.C
			}
		})
	}
	wg.Wait()
	c1, _ := l.CommitStats()
	if n := c1 - c0; n > writers*each/2 {
		t.Fatalf("%d commits for %d sparse appends, want them grouped (at most half)", n, writers*each)
	}
	t.Logf("%d sparse appends in %d commits", writers*each, c1-c0)
}

// TestMetaBehindEventsRecounted: a power cut with durability none can keep
// pages of a commit but not its metadata, leaving events past the stream's
// next offset. Open recounts the stream, so new appends do not reuse those
// offsets (which the uplink, already past them, would never forward).
func TestMetaBehindEventsRecounted(t *testing.T) {
	path := t.TempDir() + "/b.db"
	l := buffertest.MustOpenPath(t, path, buffer.Options{})
	for i := range 10 {
		mustAppend(t, l, ev("s", i, 20))
	}
	want := statsOf(l, "s")
	l.Close()

	// The metadata of an earlier commit: next 5, four events.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		sb := tx.Bucket([]byte("streams")).Bucket([]byte("s"))
		meta := make([]byte, 32)
		binary.BigEndian.PutUint64(meta[0:], 1)
		binary.BigEndian.PutUint64(meta[8:], 5)
		binary.BigEndian.PutUint64(meta[16:], 4)
		binary.BigEndian.PutUint64(meta[24:], uint64(want.Bytes*4/10))
		return sb.Put([]byte("meta"), meta)
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	l = buffertest.MustOpenPath(t, path, buffer.Options{})
	got := statsOf(l, "s")
	if got.First != want.First || got.Next != want.Next || got.Events != want.Events || got.Bytes != want.Bytes {
		t.Fatalf("after reopening: %+v, want %+v", got, want)
	}
	mustAppend(t, l, ev("s", 10, 20))
	if n := statsOf(l, "s").Next; n != want.Next+1 {
		t.Fatalf("next offset %d after one more append, want %d", n, want.Next+1)
	}
}

// TestCheckAfterUncleanBoot: a file left open without fsync (durability
// none) by another boot of the machine, or left damaged, is checked page by
// page at Open; one left by a killed process of this boot, or closed
// cleanly, is not. A check that fails quarantines the file.
func TestCheckAfterUncleanBoot(t *testing.T) {
	for _, tc := range []struct {
		name, state, boot string
		damage            bool
		checked, corrupt  bool
	}{
		{"clean", "clean", "B", false, false, false},
		{"killed in this boot", "running A nosync", "A", false, false, false},
		{"power cut, sync", "running A sync", "B", false, false, false},
		{"power cut, none", "running A nosync", "B", false, true, false},
		{"boot unknown, none", "running A nosync", "", false, true, false},
		{"damaged at runtime", "damaged", "A", false, true, false},
		{"power cut, none, pages damaged", "running A nosync", "B", true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := t.TempDir() + "/b.db"
			l := buffertest.MustOpenPath(t, path, buffer.Options{Durability: buffer.DurabilityNone, BootID: "A"})
			for i := range 300 {
				mustAppend(t, l, ev("s", i, 100))
			}
			l.Close()
			if tc.damage {
				damageLeaves(t, path)
			}
			if err := os.WriteFile(path+".state", []byte(tc.state+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			l2, err := buffer.Open(path, buffer.Options{Durability: buffer.DurabilityNone, BootID: tc.boot,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer l2.Close()
			if checked := strings.Contains(logs.String(), "checked page by page"); checked != (tc.checked && !tc.corrupt) {
				t.Errorf("checked and intact: %v, want %v; log:\n%s", checked, tc.checked && !tc.corrupt, logs.String())
			}
			if corrupt := l2.Quarantined() != ""; corrupt != tc.corrupt {
				t.Errorf("quarantined %q, want %v; log:\n%s", l2.Quarantined(), tc.corrupt, logs.String())
			}
			st, _ := os.ReadFile(path + ".state")
			if want := "running " + map[string]string{"": "unknown"}[tc.boot] + tc.boot + " nosync"; strings.TrimSpace(string(st)) != want {
				t.Errorf("state %q, want %q", st, want)
			}
		})
	}
}

// damageLeaves zeroes every leaf page of the file, keeping the meta pages
// and branches, as writes lost under a surviving meta page would.
func damageLeaves(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for off := 2 * 4096; off+4096 <= len(b); off += 4096 {
		if b[off+8] == 0x02 { // a leaf page (bbolt's leafPageFlag)
			n++
			clear(b[off : off+4096])
		}
	}
	if n < 2 {
		t.Fatalf("only %d leaf pages found to damage", n)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
