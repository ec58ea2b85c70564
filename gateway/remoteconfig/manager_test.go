package remoteconfig_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/gateway/config/signed"
	"github.com/ferrygw/ferry/gateway/remoteconfig"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// key returns a fixed signing key.
func key(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func pub(k ed25519.PrivateKey) string {
	return signed.EncodePublicKey(k.Public().(ed25519.PublicKey))
}

// fakeApplier records what it applied; fail, when set, refuses.
type fakeApplier struct {
	mu      sync.Mutex
	applied []*config.Config
	vers    []uint64 // the version of each applied configuration
	fail    func(*config.Config) error
	block   bool // wait for ctx to end, as if the gateway stopped meanwhile
}

func (a *fakeApplier) Apply(ctx context.Context, cfg *config.Config, version uint64) error {
	a.mu.Lock()
	fail, block := a.fail, a.block
	a.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	if fail != nil {
		if err := fail(cfg); err != nil {
			return err
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.applied = append(a.applied, cfg)
	a.vers = append(a.vers, version)
	return nil
}

// last returns the uplink topic of the last configuration applied ("" if
// none) and how many were.
func (a *fakeApplier) last() (string, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.applied) == 0 {
		return "", 0
	}
	return a.applied[len(a.applied)-1].Uplink.Topic, len(a.applied)
}

type fakeUplink struct {
	mu   sync.Mutex
	up   bool
	last time.Time
}

func (u *fakeUplink) UplinkConnected() (bool, time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.up, u.last
}

func (u *fakeUplink) set(up bool, last time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.up, u.last = up, last
}

// fakeStatus records every payload per topic.
type fakeStatus struct {
	mu  sync.Mutex
	got map[string][][]byte
}

func (s *fakeStatus) SetRetained(topic string, payload []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.got == nil {
		s.got = map[string][][]byte{}
	}
	s.got[topic] = append(s.got[topic], bytes.Clone(payload))
}

// latest returns the last status on topic and how many there were.
func (s *fakeStatus) latest(t testing.TB, topic string) (remoteconfig.Status, int) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	ps := s.got[topic]
	if len(ps) == 0 {
		return remoteconfig.Status{}, 0
	}
	var st remoteconfig.Status
	if err := json.Unmarshal(ps[len(ps)-1], &st); err != nil {
		t.Fatalf("status payload %q: %v", ps[len(ps)-1], err)
	}
	return st, len(ps)
}

type clock struct {
	mu    sync.Mutex
	t     time.Time
	calls int // of Now: Run reads the clock at every poll while a version is pending
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	return c.t
}

// waitReads waits until the clock has been read n more times.
func (c *clock) waitReads(t *testing.T, n int) {
	t.Helper()
	c.mu.Lock()
	want := c.calls + n
	c.mu.Unlock()
	waitUntil(t, "the clock read", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.calls >= want
	})
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

const statusTopic = "gw1/config/status"

// base is the part of the configuration the local file and the pushed
// ones share; topic is the uplink's.
func base(dir, topic string) string {
	return fmt.Sprintf(`gateway_id: gw1
data_dir: %s
log: {level: warn}
broker:
  listen: 127.0.0.1:1
uplink:
  endpoints:
    - url: tcp://127.0.0.1:1
  topic: %q
status:
  listen: ""
  log_interval: 0s
`, dir, topic)
}

// env is the test's gateway: its local file and a Manager over it.
type env struct {
	t       testing.TB
	dir     string
	local   *config.Config                // as the test goroutine sees it
	cur     atomic.Pointer[config.Config] // as the Manager sees it (Local)
	key     ed25519.PrivateKey
	applier *fakeApplier
	uplink  *fakeUplink
	status  *fakeStatus
	clock   *clock
	m       *remoteconfig.Manager
	stop    func()
}

func newEnv(t testing.TB) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dir: dir, key: key(1), applier: &fakeApplier{}, uplink: &fakeUplink{}, status: &fakeStatus{},
		clock: &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}
	e.setLocal(e.loadLocal(pub(e.key)))
	return e
}

// setLocal changes the local file, as a reload does.
func (e *env) setLocal(c *config.Config) {
	e.local = c
	e.cur.Store(c)
}

// loadLocal loads the local file trusting keys.
func (e *env) loadLocal(keys ...string) *config.Config {
	e.t.Helper()
	y := base(e.dir, "local/{stream}") + "remote_config:\n  enabled: true\n  rollback_after: 1m\n  trusted_keys:\n"
	for _, k := range keys {
		y += "    - " + k + "\n"
	}
	cfg, err := config.LoadBytes([]byte(y), "local.yaml")
	if err != nil {
		e.t.Fatal(err)
	}
	return cfg
}

func (e *env) options() remoteconfig.Options {
	return remoteconfig.Options{Check: gateway.CheckRemote, Now: e.clock.Now}
}

// start does what the gateway does at its start: AtStart, then a Manager
// running until the test ends (or e.stop). It returns the configuration
// AtStart chose and its version.
func (e *env) start() (*config.Config, uint64) {
	e.t.Helper()
	cfg, v := remoteconfig.AtStart(e.local, e.options())
	e.newManager()
	e.run()
	return cfg, v
}

func (e *env) newManager() {
	e.t.Helper()
	m, err := remoteconfig.New(remoteconfig.Config{
		Dir: remoteconfig.Dir(e.local), Local: e.cur.Load, Check: gateway.CheckRemote,
		Applier: e.applier, Uplink: e.uplink, Status: e.status, Now: e.clock.Now, Poll: 5 * time.Millisecond,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.m = m
}

func (e *env) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.m.Run(ctx) }()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("Run: %v", err)
			}
		})
	}
	e.t.Cleanup(e.stop)
}

// sign returns doc signed at version v for gw1.
func (e *env) sign(doc string, v uint64) []byte {
	e.t.Helper()
	b, err := signed.Sign([]byte(doc), v, "gw1", e.key)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// pushed is a valid pushed configuration whose uplink topic is topic.
func (e *env) pushed(topic string) string { return base(e.dir, topic) }

func (e *env) offer(b []byte) error {
	return e.m.Offer(context.Background(), b)
}

// waitStatus waits for a status about version with status st and returns
// it with the count of statuses so far.
func (e *env) waitStatus(version uint64, st string) (remoteconfig.Status, int) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, n := e.status.latest(e.t, statusTopic)
		if s.Version == version && s.Status == st {
			return s, n
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no status %s for version %d; last: %+v", st, version, s)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestApplied(t *testing.T) {
	e := newEnv(t)
	if _, v := e.start(); v != 0 {
		t.Fatalf("fresh start at version %d", v)
	}
	env1 := e.sign(e.pushed("v1/{stream}"), 1)
	if err := e.offer(env1); err != nil {
		t.Fatalf("Offer: %v", err)
	}
	s, n := e.waitStatus(1, remoteconfig.StatusApplied)
	if s.GatewayID != "gw1" || s.Running != 1 || len(s.Errors) != 0 || !s.Time.Equal(e.clock.Now()) {
		t.Fatalf("status %+v", s)
	}
	if topic, _ := e.applier.last(); topic != "v1/{stream}" {
		t.Fatalf("applied uplink.topic %q", topic)
	}
	cfg := e.applier.applied[0]
	if !cfg.RemoteConfig.Enabled || cfg.RemoteConfig.TrustedKeys[0] != pub(e.key) || cfg.GatewayID != "gw1" {
		t.Fatalf("the pushed configuration did not get the local remote_config: %+v", cfg.RemoteConfig)
	}
	if e.m.Version() != 1 {
		t.Fatalf("Version = %d", e.m.Version())
	}

	// The version in force offered again (a retained message after a
	// reconnect): nothing happens, nothing is said.
	if err := e.offer(env1); err != nil {
		t.Fatalf("Offer again: %v", err)
	}
	// (A no-op offer stores nothing and wakes nobody: a status would have
	// come from Offer itself.)
	if _, n2 := e.status.latest(t, statusTopic); n2 != n {
		t.Fatalf("%d statuses after offering the version in force again, want %d", n2, n)
	}
	if _, calls := e.applier.last(); calls != 1 {
		t.Fatalf("applied %d times", calls)
	}
	// The same version with another document: refused, not applied.
	err := e.offer(e.sign(e.pushed("other/{stream}"), 1))
	if !errors.Is(err, remoteconfig.ErrRefused) || !errors.Is(err, signed.ErrNotNewer) {
		t.Fatalf("same version, other document: %v", err)
	}
	if _, calls := e.applier.last(); calls != 1 {
		t.Fatalf("applied %d times", calls)
	}
}

func TestRefusedWithLines(t *testing.T) {
	e := newEnv(t)
	e.start()
	// Lines of the document: base is 12 lines.
	cases := []struct {
		name string
		doc  string
		want []remoteconfig.StatusError // Message: a part of it
	}{
		{"invalid", e.pushed("v/{stream}") + "bogus: 1\nuplink_typo: 2\n", []remoteconfig.StatusError{
			{Key: "bogus", Line: 13, Message: "unknown key"}, {Key: "uplink_typo", Line: 14, Message: "unknown key"}}},
		{"bad value and expression", e.pushed("v/{stream}") +
			"pipelines:\n  - name: p\n    input: {stream: telemetry}\n    stages:\n      - filter: \"v >\"\n    outputs:\n      - stream: out\n",
			[]remoteconfig.StatusError{{Key: "pipelines[0].stages[0].filter", Line: 17, Message: "expression error"}}},
		{"sets remote_config", e.pushed("v/{stream}") + "remote_config:\n  enabled: false\n", []remoteconfig.StatusError{
			{Key: "remote_config", Line: 13, Message: "must not set remote_config"}}},
		{"another gateway_id", strings.Replace(e.pushed("v/{stream}"), "gateway_id: gw1", "gateway_id: gw2", 1), []remoteconfig.StatusError{
			{Key: "gateway_id", Line: 1, Message: "cannot rename"}}},
		{"uplink off", e.pushed("v/{stream}") + "", nil}, // replaced below
		{"restart key", strings.Replace(e.pushed("v/{stream}"), "listen: 127.0.0.1:1", "listen: 127.0.0.1:2", 1), []remoteconfig.StatusError{
			{Key: "broker.listen", Line: 5, Message: "needs a restart"}}},
		{"status default is a restart key", strings.Replace(e.pushed("v/{stream}"), "status:\n  listen: \"\"\n  log_interval: 0s\n", "", 1),
			[]remoteconfig.StatusError{{Key: "status", Line: 0, Message: "needs a restart"}}},
	}
	cases[4].doc = strings.Replace(e.pushed("v/{stream}"), "uplink:\n", "uplink:\n  enabled: false\n", 1)
	cases[4].want = []remoteconfig.StatusError{{Key: "uplink.enabled", Line: 7, Message: "must be true"}}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := uint64(10 + i)
			if err := e.offer(e.sign(tc.doc, v)); err != nil {
				t.Fatalf("Offer: %v", err) // refused by Run, after the offer was stored
			}
			s, _ := e.waitStatus(v, remoteconfig.StatusRefused)
			if len(s.Errors) != len(tc.want) {
				t.Fatalf("errors %+v, want %+v", s.Errors, tc.want)
			}
			for j, w := range tc.want {
				g := s.Errors[j]
				if g.Key != w.Key || g.Line != w.Line || !strings.Contains(g.Message, w.Message) {
					t.Errorf("error %d: %+v, want %+v", j, g, w)
				}
			}
			if s.Running != 0 {
				t.Errorf("running %d after a refusal", s.Running)
			}
		})
	}
	if _, calls := e.applier.last(); calls != 0 {
		t.Fatalf("a refused configuration was applied (%d)", calls)
	}

	// The gateway refusing it (a TLS file that does not load, say).
	e.applier.mu.Lock()
	e.applier.fail = func(*config.Config) error { return errors.New("gateway: reload refused: cert_file: no such file") }
	e.applier.mu.Unlock()
	if err := e.offer(e.sign(e.pushed("v/{stream}"), 30)); err != nil {
		t.Fatal(err)
	}
	s, _ := e.waitStatus(30, remoteconfig.StatusRefused)
	if len(s.Errors) != 1 || !strings.Contains(s.Errors[0].Message, "cert_file") {
		t.Fatalf("status %+v", s)
	}
}

// TestOfferRefused: what Offer itself refuses, each with its reason on
// the status topic.
func TestOfferRefused(t *testing.T) {
	e := newEnv(t)
	e.start()
	good := e.sign(e.pushed("v/{stream}"), 5)
	other, err := signed.Sign([]byte(e.pushed("v/{stream}")), 6, "gw1", key(2))
	if err != nil {
		t.Fatal(err)
	}
	forGW2, err := signed.Sign([]byte(e.pushed("v/{stream}")), 7, "gw2", e.key)
	if err != nil {
		t.Fatal(err)
	}
	forAll, err := signed.Sign([]byte(e.pushed("all/{stream}")), 8, signed.AnyGateway, e.key)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(good, []byte("v/{stream}"), []byte("x/{stream}"), 1)
	for _, tc := range []struct {
		name    string
		b       []byte
		version uint64
		want    error
	}{
		{"wrong key", other, 6, signed.ErrUnknownKey},
		{"wrong gateway", forGW2, 7, signed.ErrWrongGateway},
		{"tampered", tampered, 5, signed.ErrBadSignature},
		{"not an envelope", []byte("gateway_id: gw1\n"), 0, signed.ErrMalformed},
		{"too large", make([]byte, signed.MaxSize+1), 0, signed.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := e.offer(tc.b)
			if !errors.Is(err, remoteconfig.ErrRefused) || !errors.Is(err, tc.want) {
				t.Fatalf("Offer = %v, want ErrRefused and %v", err, tc.want)
			}
			s, _ := e.status.latest(t, statusTopic)
			if s.Status != remoteconfig.StatusRefused || s.Version != tc.version || len(s.Errors) != 1 {
				t.Fatalf("status %+v", s)
			}
		})
	}
	if _, calls := e.applier.last(); calls != 0 {
		t.Fatalf("applied %d", calls)
	}
	// For every gateway: applied.
	if err := e.offer(forAll); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(8, remoteconfig.StatusApplied)

	// An older version: refused once on the status topic, silently after.
	err = e.offer(good)
	if !errors.Is(err, remoteconfig.ErrRefused) || !errors.Is(err, signed.ErrNotNewer) {
		t.Fatalf("older version: %v", err)
	}
	_, n := e.waitStatus(5, remoteconfig.StatusRefused)
	if err := e.offer(good); !errors.Is(err, signed.ErrNotNewer) {
		t.Fatalf("older version again: %v", err)
	}
	if _, n2 := e.status.latest(t, statusTopic); n2 != n {
		t.Fatalf("the same refusal said again: %d statuses, want %d", n2, n)
	}
	if _, calls := e.applier.last(); calls != 1 {
		t.Fatalf("applied %d", calls)
	}
}

func TestRollback(t *testing.T) {
	e := newEnv(t)
	e.start()
	// Version 1: the uplink connects under it, so it is good.
	if err := e.offer(e.sign(e.pushed("v1/{stream}"), 1)); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(1, remoteconfig.StatusApplied)
	e.uplink.set(true, e.clock.Now())
	waitUntil(t, "version 1 kept", func() bool { return fileExists(filepath.Join(remoteconfig.Dir(e.local), "good.conf")) })

	// Version 2 cuts the uplink off.
	e.uplink.set(false, e.clock.Now().Add(-time.Second))
	e.clock.Advance(time.Second)
	if err := e.offer(e.sign(e.pushed("v2/{stream}"), 2)); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(2, remoteconfig.StatusApplied)
	e.clock.Advance(59 * time.Second)
	e.clock.waitReads(t, 3) // a poll or more since
	if s, _ := e.status.latest(t, statusTopic); s.Status != remoteconfig.StatusApplied {
		t.Fatalf("rolled back before rollback_after: %+v", s)
	}
	e.clock.Advance(time.Second)
	s, _ := e.waitStatus(2, remoteconfig.StatusRolledBack)
	if s.Running != 1 || len(s.Errors) != 1 || !strings.Contains(s.Errors[0].Message, "did not connect") {
		t.Fatalf("status %+v", s)
	}
	if topic, calls := e.applier.last(); topic != "v1/{stream}" || calls != 3 {
		t.Fatalf("after the rollback: topic %q after %d applies, want v1/{stream} after 3", topic, calls)
	}
	e.applier.mu.Lock()
	vers := slices.Clone(e.applier.vers)
	e.applier.mu.Unlock()
	if !slices.Equal(vers, []uint64{1, 2, 1}) {
		t.Fatalf("applied versions %v, want [1 2 1]: the gateway is told the version it applies", vers)
	}
	if e.m.Version() != 1 {
		t.Fatalf("Version = %d", e.m.Version())
	}

	// The retained version 2 comes again on the next connect: refused,
	// and the status stays rolled_back.
	_, n := e.status.latest(t, statusTopic)
	if err := e.offer(e.sign(e.pushed("v2/{stream}"), 2)); !errors.Is(err, signed.ErrNotNewer) {
		t.Fatalf("replay of the rolled-back version: %v", err)
	}
	if s, n2 := e.status.latest(t, statusTopic); n2 != n || s.Status != remoteconfig.StatusRolledBack {
		t.Fatalf("status after the replay %+v (%d statuses, want %d)", s, n2, n)
	}
	if _, calls := e.applier.last(); calls != 3 {
		t.Fatalf("the rolled-back version was applied again")
	}

	// A restart keeps version 1 and the status.
	e.stop()
	cfg, v := e.start()
	if v != 1 || cfg.Uplink.Topic != "v1/{stream}" {
		t.Fatalf("after a restart: version %d, topic %q", v, cfg.Uplink.Topic)
	}
	e.waitStatus(2, remoteconfig.StatusRolledBack) // published again at start
	if err := e.offer(e.sign(e.pushed("v2/{stream}"), 2)); !errors.Is(err, signed.ErrNotNewer) {
		t.Fatalf("replay after a restart: %v", err)
	}

	// Nothing good but the local file: back to it.
	e.uplink.set(false, time.Time{})
	if err := e.offer(e.sign(e.pushed("v3/{stream}"), 3)); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(3, remoteconfig.StatusApplied)
	e.uplink.set(true, e.clock.Now())
	waitUntil(t, "version 3 kept", func() bool { return readState(t, e).Good == 3 })
	e.uplink.set(false, e.clock.Now())
	e.clock.Advance(time.Second)
	if err := e.offer(e.sign(e.pushed("v4/{stream}"), 4)); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(4, remoteconfig.StatusApplied)
	e.clock.Advance(time.Minute)
	if s, _ := e.waitStatus(4, remoteconfig.StatusRolledBack); s.Running != 3 {
		t.Fatalf("status %+v", s)
	}
}

// TestRollbackToLocal: the only configuration the uplink connected with is
// the local file.
func TestRollbackToLocal(t *testing.T) {
	e := newEnv(t)
	e.start()
	if err := e.offer(e.sign(e.pushed("v1/{stream}"), 1)); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(1, remoteconfig.StatusApplied)
	e.clock.Advance(time.Minute)
	if s, _ := e.waitStatus(1, remoteconfig.StatusRolledBack); s.Running != 0 {
		t.Fatalf("status %+v", s)
	}
	if topic, _ := e.applier.last(); topic != "local/{stream}" {
		t.Fatalf("rolled back to %q", topic)
	}
	e.stop()
	if cfg, v := e.start(); v != 0 || cfg != e.local {
		t.Fatalf("after a restart: version %d", v)
	}
}

// TestPersisted: a new Manager on the same directory knows the version in
// force, the highest tried and the last status.
func TestPersisted(t *testing.T) {
	e := newEnv(t)
	e.start()
	if err := e.offer(e.sign(e.pushed("v7/{stream}"), 7)); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(7, remoteconfig.StatusApplied)
	if err := e.offer(e.sign(e.pushed("v/{stream}")+"bogus: 1\n", 8)); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(8, remoteconfig.StatusRefused)
	e.stop()

	e.status = &fakeStatus{}
	cfg, v := e.start()
	if v != 7 || cfg.Uplink.Topic != "v7/{stream}" || e.m.Version() != 7 {
		t.Fatalf("restarted at version %d (Manager: %d), topic %q", v, e.m.Version(), cfg.Uplink.Topic)
	}
	e.waitStatus(8, remoteconfig.StatusRefused)
	for _, v := range []uint64{8, 6} {
		if err := e.offer(e.sign(e.pushed("v/{stream}"), v)); !errors.Is(err, signed.ErrNotNewer) {
			t.Fatalf("version %d after a restart: %v", v, err)
		}
	}
	// Effective (a reload) gives the same; with the key no longer
	// trusted, the local file.
	if cfg, v := remoteconfig.Effective(e.local, e.options()); v != 7 || cfg.Uplink.Topic != "v7/{stream}" {
		t.Fatalf("Effective: version %d", v)
	}
	if cfg, v := remoteconfig.Effective(e.loadLocal(pub(key(2))), e.options()); v != 0 || cfg.Uplink.Topic != "local/{stream}" {
		t.Fatalf("Effective without the key: version %d", v)
	}
}

// TestCrashBeforeApply: a configuration stored by Offer (and so
// acknowledged to the cloud) but not applied before the gateway stopped
// is applied at the next start.
func TestCrashBeforeApply(t *testing.T) {
	e := newEnv(t)
	remoteconfig.AtStart(e.local, e.options())
	e.newManager() // never run: the process dies after the offer
	if err := e.offer(e.sign(e.pushed("v1/{stream}"), 1)); err != nil {
		t.Fatal(err)
	}
	if _, v := e.start(); v != 0 {
		t.Fatalf("started at version %d", v)
	}
	e.waitStatus(1, remoteconfig.StatusApplied)
	if topic, calls := e.applier.last(); topic != "v1/{stream}" || calls != 1 {
		t.Fatalf("applied %q %d times", topic, calls)
	}
}

// TestInterrupted: a version whose apply never finishes (the gateway
// stops or crashes meanwhile) is tried at two starts, then refused.
func TestInterrupted(t *testing.T) {
	e := newEnv(t)
	e.applier.block = true
	e.start()
	if err := e.offer(e.sign(e.pushed("v1/{stream}"), 1)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "apply started", func() bool { return readState(t, e).Applying == 1 })
	e.stop()
	e.start()
	waitUntil(t, "second attempt", func() bool { return readState(t, e).Attempts == 2 })
	e.stop()
	e.applier.mu.Lock()
	e.applier.block = false
	e.applier.mu.Unlock()
	e.start()
	s, _ := e.waitStatus(1, remoteconfig.StatusRefused)
	if len(s.Errors) != 1 || !strings.Contains(s.Errors[0].Message, "interrupted 2 times") {
		t.Fatalf("status %+v", s)
	}
	if _, calls := e.applier.last(); calls != 0 {
		t.Fatalf("applied %d", calls)
	}
	if err := e.offer(e.sign(e.pushed("v2/{stream}"), 2)); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(2, remoteconfig.StatusApplied)
}

// TestRestartLoop: a configuration the gateway keeps restarting under
// (before the uplink connects) is rolled back by AtStart.
func TestRestartLoop(t *testing.T) {
	e := newEnv(t)
	e.start()
	if err := e.offer(e.sign(e.pushed("v1/{stream}"), 1)); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(1, remoteconfig.StatusApplied)
	e.stop()
	for i := range 3 {
		if _, v := remoteconfig.AtStart(e.local, e.options()); v != 1 {
			t.Fatalf("start %d: version %d", i+1, v)
		}
	}
	cfg, v := remoteconfig.AtStart(e.local, e.options())
	if v != 0 || cfg != e.local {
		t.Fatalf("fourth start: version %d", v)
	}
	e.status = &fakeStatus{}
	e.newManager()
	e.run()
	if s, _ := e.waitStatus(1, remoteconfig.StatusRolledBack); s.Running != 0 || !strings.Contains(s.Errors[0].Message, "started 3 times") {
		t.Fatalf("status %+v", s)
	}
	if e.m.Version() != 0 {
		t.Fatalf("Version = %d", e.m.Version())
	}
}

// TestDisabled: with remote_config off, AtStart is the local file and
// Offer refuses.
func TestDisabled(t *testing.T) {
	e := newEnv(t)
	e.start()
	off := e.loadLocal(pub(e.key))
	off.RemoteConfig.Enabled = false
	e.setLocal(off)
	if err := e.offer(e.sign(e.pushed("v1/{stream}"), 1)); !errors.Is(err, remoteconfig.ErrDisabled) {
		t.Fatalf("Offer: %v", err)
	}
	if cfg, v := remoteconfig.AtStart(e.local, e.options()); cfg != e.local || v != 0 {
		t.Fatal("AtStart did not return the local file")
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// stateFile is what the tests read of state.json.
type stateFile struct {
	Applied  uint64 `json:"applied"`
	Good     uint64 `json:"good"`
	Applying uint64 `json:"applying"`
	Attempts int    `json:"attempts"`
}

func readState(t *testing.T, e *env) stateFile {
	t.Helper()
	var st stateFile
	b, err := os.ReadFile(filepath.Join(remoteconfig.Dir(e.local), "state.json"))
	if err != nil {
		return st
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestDamagedState: a state.json that cannot be read is rebuilt from the
// envelopes, so no version at or below the one in force is applied again.
func TestDamagedState(t *testing.T) {
	e := newEnv(t)
	e.start()
	if err := e.offer(e.sign(e.pushed("v3/{stream}"), 3)); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(3, remoteconfig.StatusApplied)
	e.stop()
	if err := os.WriteFile(filepath.Join(remoteconfig.Dir(e.local), "state.json"), []byte("{\"applied\": tru"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, v := e.start(); v != 3 {
		t.Fatalf("restarted at version %d", v)
	}
	if err := e.offer(e.sign(e.pushed("v/{stream}"), 2)); !errors.Is(err, signed.ErrNotNewer) {
		t.Fatalf("older version after the state was lost: %v", err)
	}
	if err := e.offer(e.sign(e.pushed("v4/{stream}"), 4)); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(4, remoteconfig.StatusApplied)
}
