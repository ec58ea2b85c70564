package config

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"github.com/ferrygw/ferry/gateway/config/signed"
)

var testKey = signed.EncodePublicKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32)).Public().(ed25519.PublicKey))

// wantProblems checks that err holds exactly the problems want, as
// "line path" strings, each with its message containing msg[i].
func wantProblems(t *testing.T, err error, want []problem, msgs ...string) {
	t.Helper()
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error %v, want Errors", err)
	}
	if len(es) != len(want) {
		t.Fatalf("problems:\n%v\nwant %v", err, want)
	}
	for i, w := range want {
		if es[i].Line != w.line || es[i].Path != w.path {
			t.Errorf("problem %d: %d %s, want %d %s (%v)", i, es[i].Line, es[i].Path, w.line, w.path, es[i])
		}
		if i < len(msgs) && !strings.Contains(es[i].Msg, msgs[i]) {
			t.Errorf("problem %d: %q does not say %q", i, es[i].Msg, msgs[i])
		}
	}
}

func TestRemoteConfigSection(t *testing.T) {
	const uplink = "uplink:\n  endpoints: [{url: \"tcp://127.0.0.1:1883\"}]\n"
	c := load(t, "gateway_id: gw-7\n"+uplink+"remote_config:\n  enabled: true\n  trusted_keys: ["+testKey+"]\n  rollback_after: 30s\n")
	topic, status := c.RemoteConfigTopics()
	if topic != "gw-7/config" || status != "gw-7/config/status" || c.RemoteConfig.RollbackAfter.Seconds() != 30 {
		t.Fatalf("topics %q %q, rollback_after %s", topic, status, c.RemoteConfig.RollbackAfter)
	}
	if keys, err := c.RemoteConfig.PublicKeys(); err != nil || len(keys) != 1 {
		t.Fatalf("PublicKeys: %v %v", keys, err)
	}

	for _, tc := range []struct {
		name, yml string
		want      []problem
		msg       string
	}{
		{"no key", uplink + "remote_config:\n  enabled: true\n",
			[]problem{{3, "remote_config.trusted_keys"}}, "at least one key"},
		{"bad key", uplink + "remote_config:\n  trusted_keys:\n    - bm90IGEga2V5\n",
			[]problem{{5, "remote_config.trusted_keys[0]"}}, "not an Ed25519 key"},
		{"no uplink", "remote_config:\n  enabled: true\n  trusted_keys: [" + testKey + "]\n",
			[]problem{{0, "uplink.enabled"}}, "when remote_config.enabled"},
		{"placeholder", uplink + "remote_config:\n  topic: \"{stream}/config\"\n",
			[]problem{{4, "remote_config.topic"}}, "only placeholder is {gateway_id}"},
		{"wildcard", uplink + "remote_config:\n  status_topic: \"cfg/#\"\n",
			[]problem{{4, "remote_config.status_topic"}}, "wildcard"},
		{"same topics", uplink + "remote_config:\n  topic: a/b\n  status_topic: a/b\n",
			[]problem{{5, "remote_config.status_topic"}}, "must differ"},
		{"negative rollback", uplink + "remote_config:\n  rollback_after: -1s\n",
			[]problem{{4, "remote_config.rollback_after"}}, "positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadBytes([]byte(tc.yml), "ferry.yaml")
			wantProblems(t, err, tc.want, tc.msg)
		})
	}
}

func TestLoadRemote(t *testing.T) {
	const uplink = "uplink:\n  endpoints: [{url: \"tcp://127.0.0.1:1883\"}]\n"
	local := load(t, "gateway_id: gw-7\n"+uplink+"remote_config:\n  enabled: true\n  trusted_keys: ["+testKey+"]\n")

	// gateway_id and remote_config come from the local file.
	c, err := LoadRemote([]byte(uplink+"  topic: new/{stream}\n"), "pushed", local)
	if err != nil {
		t.Fatal(err)
	}
	if c.GatewayID != "gw-7" || c.Uplink.ClientID != "gw-7" || !c.RemoteConfig.Enabled || c.RemoteConfig.TrustedKeys[0] != testKey || c.Uplink.Topic != "new/{stream}" {
		t.Fatalf("loaded %+v", c)
	}
	if c.File() != "pushed" {
		t.Fatalf("File = %q", c.File())
	}

	for _, tc := range []struct {
		name  string
		yml   string
		local *Config
		want  []problem
		msg   string
	}{
		{"sets remote_config", uplink + "remote_config:\n  enabled: false\n", local,
			[]problem{{3, "remote_config"}}, "must not set remote_config"},
		{"renames", "gateway_id: gw-8\n" + uplink, local,
			[]problem{{1, "gateway_id"}}, `is "gw-8" but this gateway is "gw-7"`},
		{"uplink off", "uplink:\n  enabled: false\n", local,
			[]problem{{2, "uplink.enabled"}}, "when remote_config.enabled"},
		{"uplink off, no local", "log: {level: info}\n", nil,
			[]problem{{0, "uplink.enabled"}}, "pushed configuration"},
		{"other problems too", "broker:\n  bogus: 1\n" + uplink + "remote_config: {}\n", local,
			[]problem{{2, "broker.bogus"}, {5, "remote_config"}}, "unknown key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadRemote([]byte(tc.yml), "pushed", tc.local)
			wantProblems(t, err, tc.want, tc.msg)
		})
	}
	if _, err := LoadRemote(make([]byte, MaxFileSize+1), "pushed", local); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
}
