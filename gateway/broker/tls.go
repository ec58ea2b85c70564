package broker

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// TLSConfig configures the broker's TLS listener.
//
// TLS 1.2 is the minimum, never lower; TLS 1.3 is preferred whenever the
// client offers it. TLS 1.2 is limited to ECDHE key exchange with AEAD
// ciphers (AES-GCM, ChaCha20-Poly1305): Go 1.26's defaults already drop RSA
// key exchange, 3DES and RC4, but still offer the ECDHE CBC-SHA suites, so
// the list is set explicitly (which also keeps a GODEBUG=tlsrsakex=1 from
// bringing RSA key exchange back).
type TLSConfig struct {
	Listen            string // address, e.g. ":8883"
	CertFile, KeyFile string // PEM server certificate (chain) and key
	// ClientCAFile holds the PEM CAs that client certificates must chain
	// to; "": clients are not asked for a certificate. A client that
	// presents one that does not verify is refused during the handshake.
	ClientCAFile string
	// RequireClientCert refuses clients without a valid certificate
	// (needs ClientCAFile).
	RequireClientCert bool
	// UsernameFrom says where a verified client certificate's user name
	// comes from: "cn" (default), the subject common name, or "san", the
	// first DNS name, else the first email address, else the first URI.
	UsernameFrom string
	// MinVersion is tls.VersionTLS12 (0 means that) or tls.VersionTLS13.
	MinVersion uint16
}

// tls12Suites are the TLS 1.2 cipher suites offered: ECDHE key exchange
// (forward secrecy) and AEAD encryption only. Go picks the order (AES-GCM
// first where the CPU has AES instructions, ChaCha20 on a Raspberry Pi
// without them). TLS 1.3 suites are not configurable and are all AEAD.
var tls12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// check validates c and fills in its defaults.
func (c *TLSConfig) check() error {
	switch {
	case c.Listen == "":
		return errors.New("broker: tls: no listen address")
	case c.CertFile == "" || c.KeyFile == "":
		return errors.New("broker: tls: a certificate file and a key file are needed")
	case c.RequireClientCert && c.ClientCAFile == "":
		return errors.New("broker: tls: requiring client certificates needs a client CA file")
	}
	switch c.UsernameFrom {
	case "":
		c.UsernameFrom = "cn"
	case "cn", "san":
	default:
		return fmt.Errorf("broker: tls: user name from %q: want cn or san", c.UsernameFrom)
	}
	switch c.MinVersion {
	case 0:
		c.MinVersion = tls.VersionTLS12
	case tls.VersionTLS12, tls.VersionTLS13:
	default:
		return fmt.Errorf("broker: tls: minimum version %#04x: want TLS 1.2 (%#04x) or 1.3 (%#04x)",
			c.MinVersion, tls.VersionTLS12, tls.VersionTLS13)
	}
	return nil
}

// tlsReloader serves the TLS listener's certificate, key and client CAs,
// re-reading the files when they change so a renewed certificate needs no
// restart. Handshakes look at the files' size, modification time and
// identity (inode) at most once a second; ReloadTLS loads them at once, and
// Reconfigure can point it at other files (install). A load that fails (bad
// PEM, key not matching the certificate, a file missing mid-replacement)
// keeps the previous configuration in service.
//
// Connections keep the certificate they were made with; only new
// handshakes get the new one.
type tlsReloader struct {
	log  *slog.Logger
	base *tls.Config // the listener's: hands out cur per handshake

	cur       atomic.Pointer[tls.Config]
	nextCheck atomic.Int64 // unix nanoseconds; handshakes before it do not stat

	mu     sync.Mutex    // one load at a time; guards cfg and stamps
	cfg    TLSConfig     // the files served
	stamps []os.FileInfo // of the files at the last load attempt; nil entry: missing
}

// tlsLoad is a configuration read from the files of cfg, not yet served.
type tlsLoad struct {
	cfg    TLSConfig
	conf   *tls.Config
	stamps []os.FileInfo // taken before reading: a change during the read shows next time
}

// newTLSReloader loads the files (an error names the file at fault) and
// returns the reloader whose base config the listener serves.
func newTLSReloader(cfg TLSConfig, log *slog.Logger) (*tlsReloader, error) {
	r := &tlsReloader{log: log}
	r.base = &tls.Config{
		MinVersion:         cfg.MinVersion,
		CipherSuites:       tls12Suites,
		GetConfigForClient: r.configForClient,
	}
	ld, err := loadTLS(cfg)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	r.cfg, r.stamps = ld.cfg, ld.stamps
	r.cur.Store(ld.conf)
	r.nextCheck.Store(time.Now().Add(time.Second).UnixNano())
	return r, nil
}

func tlsFiles(cfg TLSConfig) []string {
	f := []string{cfg.CertFile, cfg.KeyFile}
	if cfg.ClientCAFile != "" {
		f = append(f, cfg.ClientCAFile)
	}
	return f
}

func statFiles(cfg TLSConfig) []os.FileInfo {
	files := tlsFiles(cfg)
	out := make([]os.FileInfo, len(files))
	for i, f := range files {
		out[i], _ = os.Stat(f) // a missing file counts as a change, and fails the load
	}
	return out
}

func changed(a, b []os.FileInfo) bool {
	if len(a) != len(b) {
		return true
	}
	for i := range a {
		x, y := a[i], b[i]
		if (x == nil) != (y == nil) {
			return true
		}
		if x != nil && (!os.SameFile(x, y) || x.Size() != y.Size() || !x.ModTime().Equal(y.ModTime())) {
			return true
		}
	}
	return false
}

// loadTLS reads the files of cfg into a configuration for new connections.
func loadTLS(cfg TLSConfig) (*tlsLoad, error) {
	ld := &tlsLoad{cfg: cfg, stamps: statFiles(cfg)}
	certPEM, err := os.ReadFile(cfg.CertFile)
	if err != nil {
		return nil, fmt.Errorf("tls certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls certificate %s, key %s: %w", cfg.CertFile, cfg.KeyFile, err)
	}
	ld.conf = &tls.Config{
		MinVersion:   cfg.MinVersion,
		CipherSuites: tls12Suites,
		Certificates: []tls.Certificate{pair},
	}
	if cfg.ClientCAFile != "" {
		caPEM, err := os.ReadFile(cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls client CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("tls client CA file %s: no PEM certificate in it", cfg.ClientCAFile)
		}
		ld.conf.ClientCAs = pool
		ld.conf.ClientAuth = tls.VerifyClientCertIfGiven
		if cfg.RequireClientCert {
			ld.conf.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return ld, nil
}

// reload loads the files if force is set or they changed since the last
// attempt. On failure the current configuration stays in service; the
// failed files are not retried until they change again.
func (r *tlsReloader) reload(force bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := statFiles(r.cfg)
	if !force && !changed(r.stamps, st) {
		return nil
	}
	r.stamps = st // a failed load is not retried until the files change again
	ld, err := loadTLS(r.cfg)
	if err != nil {
		return fmt.Errorf("broker: %w (still serving the previous certificate)", err)
	}
	r.serve(ld)
	return nil
}

// install serves ld, loaded from other files than those served so far
// (Reconfigure); from now on those files are watched.
func (r *tlsReloader) install(ld *tlsLoad) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.serve(ld)
}

// serve makes ld the configuration of new handshakes. r.mu is held.
func (r *tlsReloader) serve(ld *tlsLoad) {
	r.cfg, r.stamps = ld.cfg, ld.stamps
	r.cur.Store(ld.conf)
	if leaf := ld.conf.Certificates[0].Leaf; leaf != nil {
		r.log.Info("tls certificate loaded", "file", ld.cfg.CertFile, "subject", leaf.Subject.String(),
			"serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter)
	}
}

// configForClient runs in every handshake: at most once a second it checks
// the files (a few stat calls) and reloads them if they changed. A failed
// reload is logged once per change of the files (they are not retried
// until they change again); the logger rate-limits beyond that.
func (r *tlsReloader) configForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	now := time.Now().UnixNano()
	if next := r.nextCheck.Load(); now >= next && r.nextCheck.CompareAndSwap(next, now+int64(time.Second)) {
		if err := r.reload(false); err != nil {
			r.log.Warn("tls reload failed", "error", err)
		}
	}
	return r.cur.Load(), nil
}

// ReloadTLS re-reads the TLS certificate, key and client CA files now.
// On error the previous ones stay in service. Without a TLS listener it
// does nothing.
func (b *Broker) ReloadTLS() error {
	if b.tls == nil {
		return nil
	}
	return b.tls.reload(true)
}

// TLSAddr returns the TLS listener's address (useful with port 0), or ""
// without one.
func (b *Broker) TLSAddr() string {
	if l, ok := b.server.Listeners.Get("tls"); ok {
		return l.Address()
	}
	return ""
}

// certIdentity is the user name a verified client certificate stands for;
// "" when the certificate has none of the kind asked for.
func certIdentity(leaf *x509.Certificate, from string) string {
	if from != "san" {
		return leaf.Subject.CommonName
	}
	switch {
	case len(leaf.DNSNames) > 0:
		return leaf.DNSNames[0]
	case len(leaf.EmailAddresses) > 0:
		return leaf.EmailAddresses[0]
	case len(leaf.URIs) > 0:
		return leaf.URIs[0].String()
	}
	return ""
}

// tlsIdentity returns the identity of cl's verified client certificate;
// ok is false when cl did not present one (or is not on TLS). The listener
// completed the handshake before mochi read CONNECT, so the connection
// state is final here.
func tlsIdentity(cl *mqtt.Client, from string) (id string, ok bool) {
	tc, isTLS := cl.Net.Conn.(*tls.Conn)
	if !isTLS {
		return "", false
	}
	cs := tc.ConnectionState()
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", false
	}
	return certIdentity(cs.VerifiedChains[0][0], from), true
}
