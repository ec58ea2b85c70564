package gateway_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"github.com/ferrygw/ferry/buffer/buffertest"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/internal/keyring"
	"golang.org/x/crypto/bcrypt"
)

// hostFiles are valid files of every kind a config can name, made in dir.
type hostFiles struct {
	dir                          string
	ca, cert, key, otherKey      string // a CA, a cert it signed and its key, a key of another cert
	users, keyFile, secret, pass string
}

func newHostFiles(t *testing.T) *hostFiles {
	t.Helper()
	dir := t.TempDir()
	p := newPKI(t, dir, "ca")
	f := &hostFiles{dir: dir, ca: filepath.Join(dir, "ca.crt")}
	f.cert, f.key = p.issue(t, "device", false)
	_, f.otherKey = p.issue(t, "other", false)
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	f.users = write("users", "sensor:"+string(hash)+"\n")
	f.secret = write("hook.key", "s3cret\n")
	f.pass = write("password", "pw\n")
	f.keyFile = filepath.Join(dir, "buffer.key")
	if _, err := keyring.Generate(f.keyFile, rand.Reader); err != nil {
		t.Fatal(err)
	}
	return f
}

// config returns a config naming every file of f; edit changes it.
func (f *hostFiles) config(dataDir string) string {
	return fmt.Sprintf(`data_dir: %s
broker:
  listen: 127.0.0.1:1883
  users_file: %s
  tls:
    listen: 127.0.0.1:8883
    cert_file: %s
    key_file: %s
    client_ca_file: %s
buffer:
  encryption:
    key_file: %s
uplink:
  endpoints:
    - url: ssl://cloud.example.com:8883
    - url: ssl://backup.example.com:8883
      tls:
        ca_file: %s
  password_file: %s
  tls:
    ca_file: %s
    cert_file: %s
    key_file: %s
pipelines:
  - name: p
    stages:
      - filter: "true"
    outputs:
      - webhook: {url: "https://hooks.example.com/x", secret_file: %s}
`, dataDir, f.users, f.cert, f.key, f.ca, f.keyFile, f.ca, f.pass, f.ca, f.cert, f.key, f.secret)
}

// TestCheckHost: every file a config names is read and parsed as the
// gateway will, and a problem is reported at its key's line.
func TestCheckHost(t *testing.T) {
	f := newHostFiles(t)
	garbage := filepath.Join(f.dir, "garbage")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(f.dir, "missing")
	notDir := filepath.Join(f.dir, "not-a-dir")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		from, to string // replace from by to in the config
		line     string // the line (its text) the problem is at
		key      string // "": no problem
		msg      string
	}{
		{"all good", "", "", "", "", ""},
		{"users file missing", "users_file: " + f.users, "users_file: " + missing, "users_file:", "broker.users_file", "cannot read " + missing + ": no such file or directory"},
		{"users file bad", "users_file: " + f.users, "users_file: " + garbage, "users_file:", "broker.users_file", "users file"},
		{"broker cert missing", "    cert_file: " + f.cert + "\n    key_file: " + f.key + "\n    client_ca", "    cert_file: " + missing + "\n    key_file: " + f.key + "\n    client_ca", "    cert_file: " + missing, "broker.tls.cert_file", "cannot read"},
		{"broker key not the cert's", "    key_file: " + f.key + "\n    client_ca", "    key_file: " + f.otherKey + "\n    client_ca", "    key_file: " + f.otherKey, "broker.tls.key_file", "is not the private key of"},
		{"broker cert garbage", "    cert_file: " + f.cert + "\n    key_file: " + f.key + "\n    client_ca", "    cert_file: " + garbage + "\n    key_file: " + f.key + "\n    client_ca", "    cert_file: " + garbage, "broker.tls.cert_file", "holds no PEM certificate"},
		{"client CA garbage", "client_ca_file: " + f.ca, "client_ca_file: " + garbage, "client_ca_file:", "broker.tls.client_ca_file", "holds no PEM certificate"},
		{"encryption key missing", "    key_file: " + f.keyFile, "    key_file: " + missing, "    key_file: " + missing, "buffer.encryption.key_file", "cannot read"},
		{"encryption key garbage", "    key_file: " + f.keyFile, "    key_file: " + garbage, "    key_file: " + garbage, "buffer.encryption.key_file", "key"},
		{"endpoint CA missing", "      tls:\n        ca_file: " + f.ca, "      tls:\n        ca_file: " + missing, "        ca_file: " + missing, "uplink.endpoints[1].tls.ca_file", "cannot read"},
		{"uplink CA missing", "  tls:\n    ca_file: " + f.ca, "  tls:\n    ca_file: " + missing, "    ca_file: " + missing, "uplink.tls.ca_file", "cannot read"},
		{"uplink key missing", "    key_file: " + f.key + "\npipelines", "    key_file: " + missing + "\npipelines", "    key_file: " + missing, "uplink.tls.key_file", "cannot read"},
		{"uplink password missing", "password_file: " + f.pass, "password_file: " + missing, "password_file:", "uplink.password_file", "cannot read"},
		{"webhook secret missing", "secret_file: " + f.secret, "secret_file: " + missing, "webhook:", "pipelines[0].outputs[0].webhook.secret_file", "cannot read"},
		{"data_dir a file", "data_dir: DATA", "data_dir: " + notDir, "data_dir:", "data_dir", "is not a directory"},
		{"data_dir under a file", "data_dir: DATA", "data_dir: " + filepath.Join(notDir, "data"), "data_dir:", "data_dir", "cannot be created"},
		{"buffer dir missing", "buffer:\n", "buffer:\n  path: " + filepath.Join(missing, "buffer.db") + "\n", "  path:", "buffer.path", "does not exist"},
		{"audit file a directory", "buffer:\n", "audit: {file: " + f.dir + "}\nbuffer:\n", "audit:", "audit.file", "is a directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			yaml := strings.Replace(f.config("DATA"), tc.from, tc.to, 1)
			yaml = strings.Replace(yaml, "DATA", filepath.Join(t.TempDir(), "data"), 1)
			if tc.from != "" && !strings.Contains(yaml, tc.to) {
				t.Fatalf("the case did not apply:\n%s", yaml)
			}
			cfg, err := config.LoadBytes([]byte(yaml), "ferry.yaml")
			if err != nil {
				t.Fatalf("config: %v\n%s", err, yaml)
			}
			_, err = gateway.CheckHost(cfg, gateway.HostCheck{})
			if tc.key == "" {
				if err != nil {
					t.Fatalf("CheckHost: %v", err)
				}
				return
			}
			var es config.Errors
			if !errors.As(err, &es) || len(es) != 1 {
				t.Fatalf("CheckHost = %v, want one problem at %s", err, tc.key)
			}
			want := fmt.Sprintf("ferry.yaml:%d: %s: ", lineOf(t, yaml, tc.line), tc.key)
			if got := es[0].Error(); !strings.HasPrefix(got, want) || !strings.Contains(got, tc.msg) {
				t.Fatalf("problem %q, want %q…%q", got, want, tc.msg)
			}
		})
	}
}

// lineOf returns the 1-based line of yaml that starts with text.
func lineOf(t *testing.T, yaml, text string) int {
	t.Helper()
	for i, l := range strings.Split(yaml, "\n") {
		if strings.HasPrefix(strings.TrimLeft(l, " -"), strings.TrimLeft(text, " ")) {
			return i + 1
		}
	}
	t.Fatalf("no line %q in\n%s", text, yaml)
	return 0
}

// TestCheckHostRoot looks the absolute paths a config names up under a
// root directory (a board's file system mounted elsewhere).
func TestCheckHostRoot(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc/ferry"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := loadConfig(t, "data_dir: /var/lib/ferry\nuplink:\n  password_file: /etc/ferry/pw\n  endpoints: [{url: tcp://cloud:1883}]\n")
	_, err := gateway.CheckHost(cfg, gateway.HostCheck{Root: root})
	if err == nil || !strings.Contains(err.Error(), "cannot read /etc/ferry/pw (looked for at "+filepath.Join(root, "etc/ferry/pw")+")") {
		t.Fatalf("CheckHost = %v, want the password file reported under the root", err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/ferry/pw"), []byte("pw"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := gateway.CheckHost(cfg, gateway.HostCheck{Root: root}); err != nil {
		t.Fatalf("CheckHost with the file under the root: %v", err)
	}
}

// TestMinFreeDiskFit: a buffer.min_free_disk the buffer's file system
// cannot satisfy (it refuses every event then) is a warning of ferry check
// at the key's line, and the gateway logs it when it starts.
func TestMinFreeDiskFit(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name  string
		mount int64 // a tmpfs of this size holds data_dir; 0: fs below
		fs    gateway.FSUsage
		yaml  string // buffer section
		want  string // the warning ("": none)
		start bool   // the gateway logs diskFitMsg at start
	}{
		{"default on a tmpfs", 20 * mib, gateway.FSUsage{}, "", "64MiB is more than the whole file system", true},
		{"larger than the disk", 0, gateway.FSUsage{Size: 20 * mib, Free: 20 * mib}, "buffer:\n  min_free_disk: 64MiB\n", "64MiB is more than the whole file system", true},
		{"nothing fits above it", 0, gateway.FSUsage{Size: 64*mib + mib/2, Free: 64*mib + mib/2}, "buffer:\n  min_free_disk: 64MiB\n", "leaves less than 1MiB", true},
		{"below it now", 0, gateway.FSUsage{Size: 1024 * mib, Free: 10 * mib}, "buffer:\n  min_free_disk: 64MiB\n", "only 10MiB is free", false},
		{"fits", 0, gateway.FSUsage{Size: 1024 * mib, Free: 512 * mib}, "buffer:\n  min_free_disk: 64MiB\n", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			var statFS func(string) (gateway.FSUsage, error)
			if tc.mount != 0 {
				dataDir = buffertest.MustMountTmpfs(t, tc.mount)
			} else {
				statFS = func(string) (gateway.FSUsage, error) { return tc.fs, nil }
			}
			yaml, _ := testConfig(t, dataDir, "tcp://127.0.0.1:1", tc.yaml)
			cfg := loadConfig(t, yaml)
			warnings, err := gateway.CheckHost(cfg, gateway.HostCheck{StatFS: statFS})
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.want == "" && len(warnings) > 0:
				t.Fatalf("warnings %v, want none", warnings)
			case tc.want != "":
				wantKey := "test.yaml: buffer.min_free_disk: " // defaulted: no line
				if tc.yaml != "" {
					wantKey = fmt.Sprintf("test.yaml:%d: buffer.min_free_disk: ", lineOf(t, yaml, "min_free_disk:"))
				}
				if len(warnings) != 1 || !strings.HasPrefix(warnings[0].Error(), wantKey) || !strings.Contains(warnings[0].Error(), tc.want) {
					t.Fatalf("warnings %v, want one: %s…%s", warnings, wantKey, tc.want)
				}
			}

			logs := newLogWatch()
			g, err := gateway.New(cfg, logs.logger(), gateway.WithStatFS(statFS))
			if err != nil {
				t.Fatal(err)
			}
			runGatewayInstance(t, g)
			if got := logs.find(diskFitMsg); tc.start != (len(got) == 1) { // logged by New
				t.Fatalf("start-up lines %q: %d, want it %v:\n%s", diskFitMsg, len(got), tc.start, logs)
			}
		})
	}
}

// diskFitMsg is what the gateway logs at start when the buffer's file
// system cannot hold events above buffer.min_free_disk.
const diskFitMsg = "buffer.min_free_disk leaves no room for events"

// TestMinFreeDiskLoggedAtStart: a gateway whose buffer is on a file system
// smaller than buffer.min_free_disk (the default 64MiB on a 20MiB tmpfs)
// says so when it starts, with the numbers.
func TestMinFreeDiskLoggedAtStart(t *testing.T) {
	dataDir := buffertest.MustMountTmpfs(t, 20<<20)
	yaml, _ := testConfig(t, dataDir, "tcp://127.0.0.1:1", "")
	logs := newLogWatch()
	g, err := gateway.New(loadConfig(t, yaml), logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	runGatewayInstance(t, g)
	l := logs.waitLine(t, 30*time.Second, diskFitMsg)
	if l.level != slog.LevelWarn || l.attrs["min_free_disk"] != "67108864" || l.attrs["fs_size_bytes"] != "20971520" || l.attrs["dir"] != dataDir {
		t.Fatalf("logged %s", l)
	}
}
