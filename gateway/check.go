package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ferrygw/ferry/gateway/broker"
	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/internal/keyring"
)

// HostCheck says where CheckHost looks.
type HostCheck struct {
	// Root is where the target machine's root file system is mounted, to
	// check a config for another machine (a board's SD card on a laptop):
	// absolute paths in the config are looked up under it. Empty: this
	// machine. Relative paths are relative to the current directory, as
	// for ferry run.
	Root string
	// StatFS reports on the file system holding an existing path; nil:
	// statfs(2).
	StatFS func(path string) (FSUsage, error)
}

// FSUsage is what the checks need to know of a file system.
type FSUsage struct {
	// Size is what an unprivileged process could ever have: the file
	// system's size less the blocks reserved for root.
	Size uint64
	// Free is what an unprivileged process may still write now.
	Free uint64
}

// minUsable is how much room above buffer.min_free_disk the buffer's file
// system needs before its first events fit: the bbolt file's first pages,
// the broker's session file and a batch of events.
const minUsable = 1 << 20

// CheckHost checks cfg against the machine it is to run on, as ferry run
// would find it: every file the config names is read and parsed as the
// gateway does when it starts (users file, TLS certificates, keys and CAs,
// password and secret files, the encryption key file), and the places it
// writes (data_dir, buffer.path, audit.file) can be created. It returns
// the problems as config.Errors, each at its key's line, and as warnings
// what makes the gateway refuse events: a buffer file system too small for
// buffer.min_free_disk, or below it now.
func CheckHost(cfg *config.Config, h HostCheck) (warnings []*config.Error, err error) {
	c := &hostChecker{cfg: cfg, h: h}
	c.checkFiles()
	c.checkDirs()
	if d := c.diskCheck(); d != nil {
		warnings = append(warnings, d.warnings(cfg)...)
	}
	if len(c.errs) > 0 {
		return warnings, c.errs
	}
	return warnings, nil
}

// hostChecker collects CheckHost's problems.
type hostChecker struct {
	cfg  *config.Config
	h    HostCheck
	errs config.Errors
}

// path returns where the file the config names as p is on this machine.
func (c *hostChecker) path(p string) string {
	if c.h.Root != "" && filepath.IsAbs(p) {
		return filepath.Join(c.h.Root, p)
	}
	return p
}

func (c *hostChecker) add(key, format string, args ...any) {
	c.errs = append(c.errs, c.cfg.ErrorAt(key, format, args...))
}

// read reads the file of key, reporting it when it cannot be read.
func (c *hostChecker) read(key, p string) ([]byte, bool) {
	b, err := os.ReadFile(c.path(p))
	if err != nil {
		c.add(key, "cannot read %s: %s", c.describe(p), fileProblem(err))
		return nil, false
	}
	return b, true
}

// describe names the file p for a message: as the config names it, and
// where it was looked for under Root.
func (c *hostChecker) describe(p string) string {
	if q := c.path(p); q != p {
		return fmt.Sprintf("%s (looked for at %s)", p, q)
	}
	return p
}

// fileProblem says why a file could not be used, without repeating its
// path, with a hint where one helps.
func fileProblem(err error) string {
	var pe *fs.PathError
	msg := err.Error()
	if errors.As(err, &pe) {
		msg = pe.Err.Error()
	}
	if errors.Is(err, fs.ErrPermission) {
		msg += fmt.Sprintf(" (checked as uid %d: run ferry check as the user the gateway runs as, e.g. sudo -u ferry)", os.Getuid())
	}
	return msg
}

func (c *hostChecker) checkFiles() {
	cfg := c.cfg
	b := &cfg.Broker
	if b.UsersFile != "" {
		if _, ok := c.read("broker.users_file", b.UsersFile); ok {
			if _, err := broker.LoadUsers(c.path(b.UsersFile)); err != nil {
				c.add("broker.users_file", "%v", err)
			}
		}
	}
	if t := &b.TLS; t.Listen != "" {
		c.keyPair("broker.tls", t.CertFile, t.KeyFile)
		if t.ClientCAFile != "" {
			c.caFile("broker.tls.client_ca_file", t.ClientCAFile)
		}
	}
	u := &cfg.Uplink
	if u.Enabled != nil && *u.Enabled {
		if u.PasswordFile != "" {
			c.read("uplink.password_file", u.PasswordFile)
		}
		sharedDone := false
		for i, ep := range u.Endpoints {
			if !isTLSURL(ep.URL) {
				continue
			}
			key, t := fmt.Sprintf("uplink.endpoints[%d].tls", i), ep.TLS
			if t == nil {
				if sharedDone {
					continue // one report for the block they share
				}
				key, t, sharedDone = "uplink.tls", &u.TLS, true
			}
			c.clientTLS(key, t)
		}
	}
	if f := cfg.Buffer.Encryption.KeyFile; f != "" {
		if _, ok := c.read("buffer.encryption.key_file", f); ok {
			if _, err := keyring.Load(c.path(f)); err != nil {
				c.add("buffer.encryption.key_file", "%v", err)
			}
		}
	}
	for i, p := range cfg.Pipelines {
		for j, o := range p.Outputs {
			if o.Webhook != nil && o.Webhook.SecretFile != "" {
				c.read(fmt.Sprintf("pipelines[%d].outputs[%d].webhook.secret_file", i, j), o.Webhook.SecretFile)
			}
		}
	}
}

// clientTLS checks the files of an uplink TLS block at key.
func (c *hostChecker) clientTLS(key string, t *config.TLS) {
	if t.CAFile != "" {
		c.caFile(key+".ca_file", t.CAFile)
	}
	if t.CertFile != "" && t.KeyFile != "" {
		c.keyPair(key, t.CertFile, t.KeyFile)
	}
}

// caFile checks a file of PEM CA certificates.
func (c *hostChecker) caFile(key, p string) {
	b, ok := c.read(key, p)
	if ok && !x509.NewCertPool().AppendCertsFromPEM(b) {
		c.add(key, "%s holds no PEM certificate", c.describe(p))
	}
}

// keyPair checks the cert_file and key_file of the TLS block at key: both
// readable, a certificate, and a private key that belongs to it.
func (c *hostChecker) keyPair(key, certFile, keyFile string) {
	if certFile == "" || keyFile == "" {
		return // Validate reports the missing half
	}
	certPEM, okC := c.read(key+".cert_file", certFile)
	keyPEM, okK := c.read(key+".key_file", keyFile)
	if !okC || !okK {
		return
	}
	if blk, _ := pem.Decode(certPEM); blk == nil || blk.Type != "CERTIFICATE" {
		c.add(key+".cert_file", "%s holds no PEM certificate", c.describe(certFile))
		return
	} else if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
		c.add(key+".cert_file", "%s: %v", c.describe(certFile), err)
		return
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		c.add(key+".key_file", "%s is not the private key of %s: %v", c.describe(keyFile), certFile, err)
	}
}

// checkDirs checks that the files the gateway writes can be created: the
// gateway creates data_dir (and its parents), the buffer and audit files
// only in a directory that exists or is data_dir.
func (c *hostChecker) checkDirs() {
	cfg := c.cfg
	dataDir := c.path(cfg.DataDir)
	dataDirBad := true
	if fi, err := os.Stat(dataDir); err == nil && !fi.IsDir() {
		c.add("data_dir", "%s is not a directory", c.describe(cfg.DataDir))
	} else if p, ok := nearestDir(dataDir); err != nil && !ok {
		c.add("data_dir", "cannot be created: %s is not a directory", p)
	} else {
		dataDirBad = false
	}
	file := func(key, p string) {
		q := c.path(p)
		if rel, err := filepath.Rel(dataDir, q); dataDirBad && err == nil && filepath.IsLocal(rel) {
			return // in data_dir, reported above
		}
		if fi, err := os.Stat(q); err == nil {
			if fi.IsDir() {
				c.add(key, "%s is a directory, not a file", c.describe(p))
			}
			return
		}
		dir := filepath.Dir(q)
		if fi, err := os.Stat(dir); err == nil {
			if !fi.IsDir() {
				c.add(key, "cannot be created: %s is not a directory", dir)
			}
			return
		}
		if filepath.Clean(dir) != filepath.Clean(dataDir) {
			c.add(key, "cannot be created: directory %s does not exist (only data_dir is created)", dir)
		}
	}
	file("buffer.path", cfg.Buffer.Path)
	if a := &cfg.Audit; a.Enabled == nil || *a.Enabled {
		file("audit.file", a.File)
	}
}

// nearestDir returns the nearest existing ancestor of p (p itself if it
// exists) and whether it is a directory.
func nearestDir(p string) (string, bool) {
	p = filepath.Clean(p)
	for {
		fi, err := os.Stat(p)
		if err == nil {
			return p, fi.IsDir()
		}
		parent := filepath.Dir(p)
		if parent == p {
			return p, false
		}
		p = parent
	}
}

// diskFit is how buffer.min_free_disk fits the buffer's file system.
type diskFit struct {
	dir     string // the existing directory measured
	fs      FSUsage
	min     uint64
	tooBig  bool // min_free_disk leaves less than minUsable of the file system
	lowNow  bool // free space is below min_free_disk already
	suggest config.ByteSize
}

// diskCheck measures the file system that will hold the buffer file; nil
// when min_free_disk is off or the file system cannot be measured.
func (c *hostChecker) diskCheck() *diskFit {
	return checkDisk(c.cfg, c.path(c.cfg.Buffer.Path), c.h.StatFS)
}

// checkDisk measures the file system of bufPath (the buffer file, as found
// on this machine) against cfg's buffer.min_free_disk.
func checkDisk(cfg *config.Config, bufPath string, statFS func(string) (FSUsage, error)) *diskFit {
	mark := uint64(cfg.Buffer.MinFreeDisk)
	if mark == 0 {
		return nil
	}
	if statFS == nil {
		statFS = statFileSystem
	}
	dir, ok := nearestDir(filepath.Dir(bufPath))
	if !ok {
		return nil // checkDirs reports it
	}
	u, err := statFS(dir)
	if err != nil {
		return nil
	}
	d := &diskFit{dir: dir, fs: u, min: mark}
	d.tooBig = u.Size < mark+minUsable
	d.lowNow = !d.tooBig && u.Free < mark
	// A tenth of the file system keeps the watermark's purpose (room for
	// the system) while leaving the rest to the buffer.
	d.suggest = config.ByteSize(u.Size / 10)
	if !d.tooBig && !d.lowNow {
		return nil
	}
	return d
}

// warnings phrases d for ferry check, at buffer.min_free_disk.
func (d *diskFit) warnings(cfg *config.Config) []*config.Error {
	const key = "buffer.min_free_disk"
	size, mark, free := config.ByteSize(d.fs.Size), config.ByteSize(d.min), config.ByteSize(d.fs.Free)
	switch {
	case d.fs.Size <= d.min:
		return []*config.Error{cfg.ErrorAt(key, "%s is more than the whole file system of %s (%s): every event would be refused; lower it, e.g. to %s",
			mark, d.dir, size, d.suggest)}
	case d.tooBig:
		return []*config.Error{cfg.ErrorAt(key, "%s leaves less than %s of the file system of %s (%s) to the buffer: almost every event would be refused; lower it, e.g. to %s",
			mark, config.ByteSize(minUsable), d.dir, size, d.suggest)}
	default:
		return []*config.Error{cfg.ErrorAt(key, "only %s is free on %s now, less than %s: events are refused until space is freed",
			free, d.dir, mark)}
	}
}

// WithStatFS replaces statfs(2) in the disk check the gateway makes when
// it starts (see CheckHost).
func WithStatFS(f func(path string) (FSUsage, error)) Option {
	return func(g *Gateway) { g.statFS = f }
}

// logDiskFit logs, as New opens the gateway, what warnings tells ferry
// check when the buffer's file system can never hold events above
// min_free_disk. (Free space below it now the buffer logs itself.)
func (g *Gateway) logDiskFit() {
	d := checkDisk(g.cfg, g.cfg.Buffer.Path, g.statFS)
	if d == nil || !d.tooBig {
		return
	}
	g.log.Warn("buffer.min_free_disk leaves no room for events on this file system: events will be refused",
		"component", "buffer", "dir", d.dir, "fs_size_bytes", d.fs.Size, "min_free_disk", d.min,
		"suggested_min_free_disk", d.suggest.String())
}
