// Package deploy_test checks the Debian package that deploy/deb/build.sh
// makes, as a board would receive it: its layout, modes and control
// fields, the binary and config it installs, the systemd unit, and the
// maintainer scripts run by dpkg itself into a scratch root.
//
// It tests the package in $FERRY_DEB (make test-deb passes the one make
// deb built) or else builds one for this machine from the working tree.
// The tools it needs (dpkg-deb, dpkg, systemd-analyze, root for the
// maintainer scripts) skip a check locally when missing and fail it under
// CI=true, where .ci/run provides them.
package deploy_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/md5"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The version the package built here is stamped with: a tag, commits since
// and a hash, the form whose Debian translation is least trivial.
const (
	testVersion    = "v1.2.3-4-gabcdef1"
	testDebVersion = "1.2.3+4.gabcdef1"
)

// debArch is dpkg's name for this machine's architecture.
func debArch() string {
	switch runtime.GOARCH {
	case "amd64", "arm64":
		return runtime.GOARCH
	case "arm":
		return "armhf"
	}
	return ""
}

// need returns the path of tool, or skips the test when it is missing;
// under CI=true a missing tool fails it instead.
func need(t *testing.T, tool, why string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} { // not always in PATH
		if p := filepath.Join(dir, tool); isExecutable(p) {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing (%s); .ci/run must install it", tool, why)
	}
	t.Skipf("%s is missing (%s)", tool, why)
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// run runs a command and returns its standard output; it fails the test
// with the output when the command fails.
func run(t *testing.T, env []string, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes()
}

// buildDeb builds the package for this machine from the working tree: a
// static binary as make cross builds it, then deploy/deb/build.sh.
func buildDeb(t *testing.T) string {
	t.Helper()
	goTool := need(t, "go", "to build the binary")
	dir := t.TempDir()
	bin := filepath.Join(dir, "ferry")
	run(t, []string{"CGO_ENABLED=0"}, goTool, "build", "-trimpath",
		"-ldflags", "-s -w -X main.version="+testVersion+" -X main.commit=abcdef123456",
		"-o", bin, "../cmd/ferry")
	out := run(t, []string{"DEB_COMPRESS=gzip"}, "sh", "deb/build.sh", dir, testVersion, debArch()+"="+bin)
	deb := strings.TrimSpace(string(out))
	if want := filepath.Join(dir, "ferry_"+testDebVersion+"_"+debArch()+".deb"); deb != want {
		t.Fatalf("build.sh made %q, want %q", deb, want)
	}
	return deb
}

type entry struct {
	hdr  *tar.Header
	data []byte
}

// members lists one of the package's tar members (--fsys-tarfile or
// --ctrl-tarfile) by name.
func members(t *testing.T, deb, which string) map[string]entry {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(run(t, nil, "dpkg-deb", which, deb)))
	m := map[string]entry{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return m
		}
		if err != nil {
			t.Fatalf("dpkg-deb %s: %v", which, err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		m[h.Name] = entry{h, data}
	}
}

// controlFields parses DEBIAN/control; a continued field keeps its first
// line only.
func controlFields(t *testing.T, control []byte) map[string]string {
	t.Helper()
	f := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(control))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("control: bad line %q", line)
		}
		f[k] = strings.TrimSpace(v)
	}
	return f
}

func TestDeb(t *testing.T) {
	if runtime.GOOS != "linux" || debArch() == "" {
		t.Skipf("Debian packages are built for linux/{amd64,arm64,arm}, not %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	need(t, "dpkg-deb", "apt-get install dpkg")
	deb := os.Getenv("FERRY_DEB")
	if deb == "" {
		deb = buildDeb(t)
	} else if _, err := os.Stat(deb); err != nil {
		t.Fatalf("FERRY_DEB: %v", err)
	}
	t.Logf("package %s", deb)
	data := members(t, deb, "--fsys-tarfile")
	ctrl := members(t, deb, "--ctrl-tarfile")
	fields := controlFields(t, ctrl["./control"].data)

	// Extract as dpkg-deb -x does, for the checks that run the files.
	root := t.TempDir()
	run(t, nil, "dpkg-deb", "-x", deb, root)
	ferry := filepath.Join(root, "usr/bin/ferry")
	version := strings.Fields(string(run(t, nil, ferry, "version")))

	t.Run("control", func(t *testing.T) {
		if len(version) < 2 || version[0] != "ferry" {
			t.Fatalf("ferry version: %q", version)
		}
		wantVersion := strings.TrimSpace(string(run(t, nil, "sh", "deb/build.sh", "--debian-version", version[1])))
		if os.Getenv("FERRY_DEB") == "" && wantVersion != testDebVersion {
			t.Errorf("build.sh --debian-version %s = %q, want %q", version[1], wantVersion, testDebVersion)
		}
		want := map[string]string{
			"Package":      "ferry",
			"Version":      wantVersion,
			"Architecture": debArch(),
			"Depends":      "passwd",
			"Section":      "net",
			"Priority":     "optional",
		}
		for k, v := range want {
			if fields[k] != v {
				t.Errorf("control %s: %q, want %q", k, fields[k], v)
			}
		}
		if !regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`).MatchString(fields["Version"]) {
			t.Errorf("Version %q is not a Debian upstream version", fields["Version"])
		}
		if !regexp.MustCompile(`^[^<>]+ <[^<>@ ]+@[^<> ]+>$`).MatchString(fields["Maintainer"]) {
			t.Errorf("Maintainer %q: want Name <address>", fields["Maintainer"])
		}
		if fields["Description"] == "" {
			t.Error("no Description")
		}
		var total int64
		for _, e := range data {
			total += e.hdr.Size
		}
		if kb, err := strconv.ParseInt(fields["Installed-Size"], 10, 64); err != nil || kb < total/1024 || kb > total/1024+64 {
			t.Errorf("Installed-Size %q KiB, files take %d bytes", fields["Installed-Size"], total)
		}
	})

	t.Run("layout", func(t *testing.T) {
		want := map[string]fs.FileMode{
			"./usr/bin/ferry":                    0o755,
			"./etc/ferry/ferry.yaml":             0o640, // may hold secrets: group ferry (postinst), not world
			"./etc/ferry/users":                  0o640,
			"./lib/systemd/system/ferry.service": 0o644,
			"./usr/share/doc/ferry/copyright":    0o644,
			"./":                                 fs.ModeDir | 0o755,
			"./etc/":                             fs.ModeDir | 0o755,
			"./etc/ferry/":                       fs.ModeDir | 0o755,
			"./lib/":                             fs.ModeDir | 0o755,
			"./lib/systemd/":                     fs.ModeDir | 0o755,
			"./lib/systemd/system/":              fs.ModeDir | 0o755,
			"./usr/":                             fs.ModeDir | 0o755,
			"./usr/bin/":                         fs.ModeDir | 0o755,
			"./usr/share/":                       fs.ModeDir | 0o755,
			"./usr/share/doc/":                   fs.ModeDir | 0o755,
			"./usr/share/doc/ferry/":             fs.ModeDir | 0o755,
		}
		for name, e := range data {
			mode, ok := want[name]
			if !ok {
				t.Errorf("unexpected %s in the package", name)
				continue
			}
			if got := e.hdr.FileInfo().Mode(); got != mode {
				t.Errorf("%s: mode %v, want %v", name, got, mode)
			}
			if e.hdr.Uid != 0 || e.hdr.Gid != 0 || e.hdr.Uname != "root" || e.hdr.Gname != "root" {
				t.Errorf("%s: owner %s:%s (%d:%d), want root:root", name, e.hdr.Uname, e.hdr.Gname, e.hdr.Uid, e.hdr.Gid)
			}
		}
		for name := range want {
			if _, ok := data[name]; !ok {
				t.Errorf("%s missing from the package", name)
			}
		}
		// The shipped files are the ones in the tree.
		for pkgPath, src := range map[string]string{
			"./etc/ferry/ferry.yaml":             "deb/ferry.yaml",
			"./etc/ferry/users":                  "deb/users",
			"./lib/systemd/system/ferry.service": "ferry.service",
		} {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data[pkgPath].data, b) {
				t.Errorf("%s differs from deploy/%s: rebuild the package", pkgPath, src)
			}
		}
	})

	t.Run("binary", func(t *testing.T) {
		f, err := elf.Open(ferry)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("/usr/bin/ferry is dynamically linked; want CGO_ENABLED=0")
			}
		}
		if syms, _ := f.Symbols(); len(syms) > 0 {
			t.Errorf("/usr/bin/ferry has %d symbols; want it stripped (-s -w)", len(syms))
		}
		if len(version) < 3 || !regexp.MustCompile(`^\([0-9a-f]{7,}\)$`).MatchString(version[2]) {
			t.Errorf("ferry version %q: want the commit stamped", version)
		}
	})

	t.Run("copyright", func(t *testing.T) {
		c := string(data["./usr/share/doc/ferry/copyright"].data)
		// Every module linked in is listed, with its license text.
		mods := 0
		for _, line := range strings.Split(string(run(t, nil, need(t, "go", "go version -m"), "version", "-m", ferry)), "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && f[0] == "dep" {
				mods++
				if !strings.Contains(c, "-------- "+f[1]+" "+f[2]+": ") {
					t.Errorf("copyright lacks the license of %s %s", f[1], f[2])
				}
			}
		}
		if mods == 0 || !strings.Contains(c, "-------- Go: ") {
			t.Errorf("copyright lists %d modules and no Go license", mods)
		}
	})

	t.Run("conffiles", func(t *testing.T) {
		got := string(ctrl["./conffiles"].data)
		if want := "/etc/ferry/ferry.yaml\n/etc/ferry/users\n"; got != want {
			t.Fatalf("conffiles %q, want %q", got, want)
		}
		for _, f := range strings.Fields(got) {
			if e, ok := data["."+f]; !ok || !e.hdr.FileInfo().Mode().IsRegular() {
				t.Errorf("conffile %s is not a file in the package", f)
			}
		}
	})

	t.Run("md5sums", func(t *testing.T) {
		listed := map[string]bool{}
		for _, line := range strings.Split(strings.TrimSpace(string(ctrl["./md5sums"].data)), "\n") {
			sum, name, ok := strings.Cut(line, "  ")
			e, found := data["./"+name]
			if !ok || !found {
				t.Errorf("md5sums: bad line %q", line)
				continue
			}
			h := md5.Sum(e.data)
			if hex.EncodeToString(h[:]) != sum {
				t.Errorf("md5sums: %s does not match", name)
			}
			listed[name] = true
		}
		for name, e := range data {
			if e.hdr.Typeflag == tar.TypeReg && !strings.HasPrefix(name, "./etc/") && !listed[name[2:]] {
				t.Errorf("md5sums does not list %s", name)
			}
		}
	})

	t.Run("scripts", func(t *testing.T) {
		for _, s := range []string{"postinst", "prerm", "postrm"} {
			e, ok := ctrl["./"+s]
			if !ok {
				t.Errorf("no %s", s)
				continue
			}
			if e.hdr.FileInfo().Mode() != 0o755 || !bytes.HasPrefix(e.data, []byte("#!/bin/sh\n")) {
				t.Errorf("%s: mode %v, want 0755 and #!/bin/sh", s, e.hdr.FileInfo().Mode())
			}
			p := filepath.Join(t.TempDir(), s)
			if err := os.WriteFile(p, e.data, 0o755); err != nil {
				t.Fatal(err)
			}
			run(t, nil, "sh", "-n", p)
			if sc, err := exec.LookPath("shellcheck"); err == nil {
				run(t, nil, sc, "-s", "sh", p)
			}
		}
	})

	t.Run("config", func(t *testing.T) {
		// The shipped config passes the shipped binary's check, with the
		// files it names (/etc/ferry/users) as the package installs them.
		out := run(t, nil, ferry, "check", "-root", root, "-c", filepath.Join(root, "etc/ferry/ferry.yaml"))
		if !bytes.Contains(out, []byte(": ok")) {
			t.Fatalf("ferry check: %s", out)
		}
	})

	t.Run("unit", func(t *testing.T) { testUnit(t, root) })
	t.Run("maintainer scripts", func(t *testing.T) { testMaintainerScripts(t, deb) })
}

// testUnit checks the unit the package installs: what the gateway relies
// on, then systemd-analyze verify (syntax, directives, executables) and
// security (the exposure score must not regress).
func testUnit(t *testing.T, root string) {
	unit, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/ferry.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"Type=notify", "NotifyAccess=main", "WatchdogSec=30s",
		"ExecStartPre=/usr/bin/ferry check -c /etc/ferry/ferry.yaml",
		"ExecStart=/usr/bin/ferry run -c /etc/ferry/ferry.yaml",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"User=ferry", "Group=ferry", "StateDirectory=ferry", "ConfigurationDirectory=ferry",
		"ProtectSystem=strict", "NoNewPrivileges=yes", "CapabilityBoundingSet=",
	} {
		if !bytes.Contains(unit, []byte("\n"+line+"\n")) {
			t.Errorf("unit lacks %q", line)
		}
	}
	if bytes.Contains(unit, []byte("\nSupplementaryGroups=")) {
		t.Error("SupplementaryGroups= fails the unit where a group is missing; postinst adds the groups instead")
	}
	analyze := need(t, "systemd-analyze", "apt-get install systemd")
	// verify checks that the executables exist: point them at the
	// extracted binary. The file keeps its name, ferry.service.
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.service")
	if err := os.WriteFile(path, bytes.ReplaceAll(unit, []byte("/usr/bin/ferry"), []byte(filepath.Join(root, "usr/bin/ferry"))), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(analyze, "verify", path)
	out, err := cmd.CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("ferry.service")) {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command(analyze, "security", "--offline=true", path).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for ferry.service: ([0-9.]+)`).FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security: exposure %.1f", score)
	if score > 2.0 {
		t.Errorf("exposure %.1f, was 1.6: a hardening directive was lost\n%s", score, out)
	}
}

// testMaintainerScripts installs, upgrades, removes and purges the package
// with dpkg into a scratch root (--root with --force-script-chrootless, so
// the scripts run with DPKG_ROOT set and no chroot), and checks what the
// scripts did there: the user and groups, ownership, the unit's enablement
// and what each step keeps or deletes. The root has an i2c group and no
// gpio group, as on a Debian box with i2c-tools.
func testMaintainerScripts(t *testing.T, deb string) {
	dpkg := need(t, "dpkg", "apt-get install dpkg")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the maintainer scripts' test needs root (useradd, chown) and CI runs as root")
		}
		t.Skip("needs root: useradd and chown into the scratch root")
	}
	if !bytes.Contains(run(t, nil, need(t, "useradd", "apt-get install passwd"), "--help"), []byte("--prefix")) {
		if os.Getenv("CI") == "true" {
			t.Fatal("useradd has no --prefix (shadow < 4.9); CI's Debian 12 has it")
		}
		t.Skip("useradd has no --prefix (shadow < 4.9): the scripts cannot work on a scratch root")
	}
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range map[string]string{
		"var/lib/dpkg/status":    "",
		"var/lib/dpkg/available": "",
		"etc/passwd":             "root:x:0:0:root:/root:/bin/bash\n",
		"etc/shadow":             "root:*:19000:0:99999:7:::\n",
		"etc/group":              "root:x:0:\ni2c:x:998:\n",
		"etc/gshadow":            "root:*::\ni2c:!::\n",
	} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The scratch root has no passwd package to satisfy Depends. The log
	// goes into the scratch root, not the host's /var/log/dpkg.log.
	dpkgIn := func(args ...string) {
		t.Helper()
		run(t, []string{"PATH=" + os.Getenv("PATH") + ":/usr/sbin:/sbin"}, dpkg,
			append([]string{"--root=" + root, "--log=" + filepath.Join(root, "dpkg.log"),
				"--force-script-chrootless", "--force-depends"}, args...)...)
	}
	at := func(p string) string { return filepath.Join(root, p) }
	read := func(p string) string {
		b, err := os.ReadFile(at(p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	exists := func(p string) bool {
		_, err := os.Lstat(at(p))
		return err == nil
	}
	// entry returns the fields of name's line in an /etc/passwd-like file.
	entry := func(file, name string) []string {
		for _, line := range strings.Split(read(file), "\n") {
			if f := strings.Split(line, ":"); f[0] == name {
				return f
			}
		}
		return nil
	}
	owner := func(p string) (fs.FileMode, string) {
		fi, err := os.Stat(at(p))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		return fi.Mode(), fmt.Sprintf("%d:%d", st.Uid, st.Gid)
	}

	// Install.
	dpkgIn("--install", deb)
	u := entry("etc/passwd", "ferry")
	g := entry("etc/group", "ferry")
	if len(u) != 7 || len(g) != 4 {
		t.Fatalf("no ferry user and group: passwd %q group %q", read("etc/passwd"), read("etc/group"))
	}
	if uid, _ := strconv.Atoi(u[2]); uid == 0 || uid >= 1000 || u[3] != g[2] || u[5] != "/var/lib/ferry" || u[6] != "/usr/sbin/nologin" {
		t.Errorf("ferry user %q: want a system user, group ferry, home /var/lib/ferry, no shell", u)
	}
	if i2c := entry("etc/group", "i2c"); len(i2c) != 4 || i2c[3] != "ferry" {
		t.Errorf("group i2c %q: want ferry added", i2c)
	}
	if entry("etc/group", "gpio") != nil {
		t.Error("postinst created group gpio; it should only join groups that exist")
	}
	ids := u[2] + ":" + g[2]
	for _, f := range []string{"etc/ferry/ferry.yaml", "etc/ferry/users"} {
		if mode, own := owner(f); mode != 0o640 || own != "0:"+g[2] {
			t.Errorf("%s: %v %s, want -rw-r----- 0:%s (root, group ferry)", f, mode, own, g[2])
		}
	}
	if mode, own := owner("var/lib/ferry"); mode != fs.ModeDir|0o750 || own != ids {
		t.Errorf("/var/lib/ferry: %v %s, want drwxr-x--- %s", mode, own, ids)
	}
	if l, err := os.Readlink(at("etc/systemd/system/multi-user.target.wants/ferry.service")); err != nil || l != "/lib/systemd/system/ferry.service" {
		t.Errorf("ferry.service not enabled: %q %v", l, err)
	}

	// Upgrade (the same version again): an edited conffile and the
	// buffer are kept, and so is the user.
	cfg := read("etc/ferry/ferry.yaml") + "# edited on the board\n"
	if err := os.WriteFile(at("etc/ferry/ferry.yaml"), []byte(cfg), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(at("var/lib/ferry/buffer.db"), []byte("events"), 0o600); err != nil {
		t.Fatal(err)
	}
	dpkgIn("--install", deb)
	if read("etc/ferry/ferry.yaml") != cfg {
		t.Error("upgrade replaced the edited /etc/ferry/ferry.yaml")
	}
	if !exists("var/lib/ferry/buffer.db") || strings.Join(entry("etc/passwd", "ferry"), ":") != strings.Join(u, ":") {
		t.Error("upgrade lost the buffer or changed the user")
	}

	// Remove: the program goes; config, data and user stay; the unit is
	// masked, as dh_installsystemd does, until a purge or reinstall.
	dpkgIn("--remove", "ferry")
	for _, p := range []string{"usr/bin/ferry", "lib/systemd/system/ferry.service"} {
		if exists(p) {
			t.Errorf("remove left /%s", p)
		}
	}
	if read("etc/ferry/ferry.yaml") != cfg || !exists("var/lib/ferry/buffer.db") || entry("etc/passwd", "ferry") == nil {
		t.Error("remove deleted the config, the buffer or the user")
	}
	if l, _ := os.Readlink(at("etc/systemd/system/ferry.service")); l != "/dev/null" {
		t.Errorf("remove did not mask ferry.service: %q", l)
	}

	// Purge: nothing of ferry is left.
	dpkgIn("--purge", "ferry")
	for _, p := range []string{"etc/ferry/ferry.yaml", "etc/ferry/users", "var/lib/ferry",
		"etc/systemd/system/ferry.service", "etc/systemd/system/multi-user.target.wants/ferry.service"} {
		if exists(p) {
			t.Errorf("purge left /%s", p)
		}
	}
	if entry("etc/passwd", "ferry") != nil || entry("etc/group", "ferry") != nil {
		t.Error("purge left user or group ferry")
	}
	if i2c := entry("etc/group", "i2c"); len(i2c) != 4 || i2c[3] != "" {
		t.Errorf("purge left ferry in group i2c: %q", i2c)
	}
	if st := read("var/lib/dpkg/status"); strings.Contains(st, "Package: ferry\n") && !strings.Contains(st, "Status: purge ok not-installed") {
		t.Errorf("dpkg status after purge:\n%s", st)
	}
}
