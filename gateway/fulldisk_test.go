package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/buffer/buffertest"
	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/internal/mqtttest"
)

// TestFullDisk is the black-box scenario of a board whose SD card fills
// during a long outage: data_dir on a 20 MiB tmpfs, the cloud down, an
// MQTT 5 sensor publishing until ferry refuses (0x97, never a failed
// commit), then the cloud back. Every acknowledged reading reaches the
// cloud, the disk keeps its reserve, and once the backlog drained the
// gateway accepts readings again, also after a restart, although bbolt
// never shrinks its file.
func TestFullDisk(t *testing.T) {
	pub := mqtttest.RequireClient(t, "mosquitto_pub")
	dir := buffertest.MustMountTmpfs(t, 20<<20)
	// Persistent: the subscriber's session outlives the cloud's restart,
	// so what ferry sends before it is back waits for it.
	cloud := mqtttest.StartWith(t, mqtttest.Options{Persistent: true})
	sub := subscribeCloud(t, cloud.URL(), "fulldisk-sub")
	cloud.Stop()
	const minFree = 4 << 20
	yaml, addr := testConfig(t, dir, cloud.URL(), fmt.Sprintf("buffer:\n  min_free_disk: %d\n", minFree))
	cfg := loadConfig(t, yaml)
	host, port, _ := net.SplitHostPort(addr)

	logs := newLogWatch()
	var g *gateway.Gateway // the running one
	start := func() (stop func()) {
		var err error
		g, err = gateway.New(cfg, logs.logger())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- g.Run(ctx) }()
		waitUntil(t, 30*time.Second, "the gateway ready", func() bool { return g.Ready() == nil })
		var once sync.Once
		stop = func() {
			once.Do(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("gateway: %v", err)
				}
			})
		}
		t.Cleanup(stop) // before the tmpfs is unmounted, also on failure
		return stop
	}
	// publish sends readings from..from+n-1 of publisher 7 with
	// mosquitto_pub -V 5 in one connection and returns how many got a
	// PUBACK without a reason code and how many got 0x97; ackedReadings
	// collects which (message IDs count from 1 in publish order).
	puback := regexp.MustCompile(`received PUBACK \(Mid: (\d+), RC:(\d+)\)`)
	var ackedReadings []int
	publish := func(from, n, pad int) (acked, refused int) {
		var in bytes.Buffer
		for s := from; s < from+n; s++ {
			fmt.Fprintf(&in, `{"p":7,"s":%d,"pad":"%s"}`+"\n", s, strings.Repeat("x", pad))
		}
		cmd := exec.Command(pub, "-V", "5", "-d", "-q", "1", "-h", host, "-p", port, "-i", "fulldisk-sensor", "-t", "sensors/7", "-l")
		cmd.Stdin = &in
		out, _ := cmd.Output() // exits non-zero after refusals; warnings on stderr
		for _, m := range puback.FindAllSubmatch(out, -1) {
			switch string(m[2]) {
			case "0":
				acked++
				mid, _ := strconv.Atoi(string(m[1]))
				ackedReadings = append(ackedReadings, from+mid-1)
			case "151":
				refused++
			default:
				t.Fatalf("PUBACK reason %s:\n%s", m[2], out)
			}
		}
		if acked+refused != n {
			t.Fatalf("%d of %d publishes answered:\n%s", acked+refused, n, out[max(0, len(out)-3000):])
		}
		return acked, refused
	}

	stop := start()
	// 12,000 readings of ~2 KiB: more than the 16 MiB above the reserve.
	acked, refused := publish(0, 12000, 2000)
	t.Logf("cloud down, disk filling: %d acknowledged, %d refused (0x97); %d bytes free", acked, refused, buffertest.FreeBytes(t, dir))
	if refused == 0 || acked == 0 {
		t.Fatalf("acked %d, refused %d: want the disk to fill part way", acked, refused)
	}
	if free := buffertest.FreeBytes(t, dir); free < minFree-(1<<20) {
		t.Errorf("%d bytes free on the data disk, want about min_free_disk (%d) kept", free, minFree)
	}
	if l := logs.find("buffer commit failed"); len(l) > 0 {
		t.Errorf("a commit failed (the watermark must refuse first): %v", l[0])
	}

	cloud.StartAgain()
	waitUntil(t, 120*time.Second, fmt.Sprintf("%d acknowledged readings at the cloud", acked), func() bool { return sub.distinct() >= acked })
	// Not the first `acked` readings: a commit that frees pages can take
	// a later reading after earlier ones were refused.
	for _, s := range ackedReadings {
		if !sub.has(reading{P: 7, S: s}) {
			t.Fatalf("acknowledged reading %d never reached the cloud", s)
		}
	}
	// Drained: the file's own free pages take new readings. The buffer
	// deletes what the cloud acknowledged in bounded chunks while the
	// filesystem is below the watermark, so wait for that first.
	waitUntil(t, 60*time.Second, "the forwarded backlog deleted and the disk no longer full", func() bool {
		st := g.Status()
		for _, s := range st.Streams {
			if s.Events > 0 {
				return false
			}
		}
		return !st.DiskFull
	})
	if a, r := publish(acked, 50, 2000); a != 50 {
		t.Fatalf("after the drain: %d acknowledged, %d refused; want all 50", a, r)
	}
	stop()
	start()
	if a, r := publish(acked+50, 50, 2000); a != 50 {
		t.Fatalf("after a restart: %d acknowledged, %d refused; want all 50", a, r)
	}
	waitUntil(t, 60*time.Second, "the readings after the drain at the cloud", func() bool { return sub.has(reading{P: 7, S: acked + 99}) })
}
