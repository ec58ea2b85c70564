package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	firmwareconfig "github.com/ferrygw/ferry/firmware-config"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/gateway/topic"
)

// readRepoFile reads a file at the repository root.
func readRepoFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestREADMEIsTrue checks the README's facts that drift when the code
// changes: a new user follows them literally.
func TestREADMEIsTrue(t *testing.T) {
	readme := readRepoFile(t, "README.md")

	t.Run("go version", func(t *testing.T) {
		m := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(readRepoFile(t, "go.mod"))
		if m == nil {
			t.Fatal("go.mod has no go directive")
		}
		if want := "with Go " + m[1] + " or later"; !strings.Contains(readme, want) {
			t.Errorf("README's two commands do not say %q (go.mod: go %s)", want, m[1])
		}
	})

	t.Run("test prerequisites", func(t *testing.T) {
		// Every package .ci/run installs is needed by make test, except the
		// ones only make test-arm (qemu) and make deb (dpkg) use.
		onlyCI := map[string]bool{"qemu-user-static": true, "dpkg": true}
		m := regexp.MustCompile(`make test +# .*apt-get install ([^)]+)\)`).FindStringSubmatch(readme)
		if m == nil {
			t.Fatal("README's make test line names no apt-get install")
		}
		listed := map[string]bool{}
		for _, p := range strings.Fields(m[1]) {
			listed[p] = true
		}
		for _, c := range regexp.MustCompile(`(?m)^check (\S+) `).FindAllStringSubmatch(readRepoFile(t, ".ci/run"), -1) {
			if !onlyCI[c[1]] && !listed[c[1]] {
				t.Errorf("make test needs %s (.ci/run installs it), the README's apt-get line lacks it", c[1])
			}
		}
	})

	t.Run("demo outage", func(t *testing.T) {
		cfg, err := config.LoadBytes(firmwareconfig.Default(), "default.yaml")
		if err != nil {
			t.Fatal(err)
		}
		up, down := cfg.Demo.Cloud.UpFor, cfg.Demo.Cloud.DownFor
		want := fmt.Sprintf("down for %s every %s", secs(down), secs(up+down))
		if !strings.Contains(readme, want) {
			t.Errorf("README does not say %q (firmware-config/default.yaml: up_for %v, down_for %v)", want, up, down)
		}
		want = fmt.Sprintf("up for %s then down for %s", secs(up), secs(down))
		if mk := readRepoFile(t, "Makefile"); !strings.Contains(mk, want) {
			t.Errorf("Makefile's run comment does not say %q", want)
		}
	})

	t.Run("demo cloud message", func(t *testing.T) {
		// The example is a demo sensor's reading: its content type is
		// what the demo's route gives (demo sensors publish MQTT 3.1.1,
		// which carries none).
		cfg, err := config.LoadBytes(firmwareconfig.Default(), "default.yaml")
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`"topic":"(demo/[^"]+)".*"content_type":"([^"]*)"`).FindStringSubmatch(readme)
		if m == nil {
			t.Fatal("README has no demo cloud message example")
		}
		for _, r := range cfg.Ingest.Routes {
			for _, f := range r.Topics {
				if topic.Match(f, m[1]) && r.ContentType != m[2] {
					t.Errorf("README's example has content_type %q; the demo's route for %s gives %q", m[2], m[1], r.ContentType)
				}
			}
		}
	})

	t.Run("check example", func(t *testing.T) {
		i := strings.Index(readme, "`ferry check` output looks like:\n\n```\n")
		if i < 0 {
			t.Fatal("README has no ferry check example")
		}
		block := readme[i:]
		block = block[strings.Index(block, "```\n")+4:]
		block = block[:strings.Index(block, "```")]
		path := filepath.Join(t.TempDir(), "ferry.yaml")
		cfg := "gateway_id: g\n\nbroker:\n  bogus: 1\n  listen: 127.0.0.1:1883\nuplink:\n  endpoints: [{url: \"tcp://127.0.0.1:1\"}]\n  qos: 2\n"
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		run([]string{"check", "-c", path}, nil, &out, &errb)
		for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
			_, msg, ok := strings.Cut(line, ": ") // drop "ferry.yaml:N"
			if !ok || !strings.Contains(errb.String(), msg) {
				t.Errorf("README example line %q is not what ferry check prints:\n%s", line, errb.String())
			}
		}
	})

	t.Run("layout lists every package", func(t *testing.T) {
		out, err := exec.Command("go", "list", "-f", "{{.Dir}}", "github.com/ferrygw/ferry/...").Output()
		if err != nil {
			t.Fatal(err)
		}
		root, _ := filepath.Abs(filepath.Join("..", ".."))
		i := strings.Index(readme, "## Layout")
		if i < 0 {
			t.Fatal("README has no Layout section")
		}
		layout := readme[i:]
		for _, dir := range strings.Fields(string(out)) {
			rel, _ := filepath.Rel(root, dir)
			if !strings.Contains(layout, "| `"+filepath.ToSlash(rel)+"` |") {
				t.Errorf("README's Layout table lacks `%s`", rel)
			}
		}
	})

	t.Run("no dangling lead-in", func(t *testing.T) {
		// A paragraph that ends in ":" introduces a block; a stray one is
		// text left behind by an edit.
		lines := strings.Split(readme, "\n")
		fenced := false
		for n, l := range lines {
			if strings.HasPrefix(l, "```") {
				fenced = !fenced
			}
			if fenced || !strings.HasSuffix(l, ":") || n+2 >= len(lines) || lines[n+1] != "" {
				continue
			}
			next := strings.TrimLeft(lines[n+2], " ")
			if !strings.HasPrefix(next, "```") && !strings.HasPrefix(next, "|") && !strings.HasPrefix(next, "- ") && !regexp.MustCompile(`^\d+\. `).MatchString(next) {
				t.Errorf("README line %d %q introduces %q", n+1, l, lines[n+2])
			}
		}
	})
}

// secs formats a whole number of seconds as the README writes it: "10 s".
func secs(d time.Duration) string { return fmt.Sprintf("%d s", int(d/time.Second)) }
