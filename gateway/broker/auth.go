package broker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"unicode"

	"github.com/ferrygw/ferry/gateway/topic"
	"github.com/ferrygw/ferry/internal/audit"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"
)

// Users maps a user name to its bcrypt password hash.
//
// A users file holds one "user:bcrypt-hash" per line, like an htpasswd
// file limited to bcrypt; blank lines and lines starting with '#' are
// ignored. "ferry passwd -f FILE USER" writes entries.
type Users map[string][]byte

// PasswordCost is the bcrypt cost HashPassword uses.
const PasswordCost = 10

// LoadUsers reads a users file. An error names the file and, for a bad
// entry, its line; a hash that is not bcrypt is an error.
func LoadUsers(path string) (Users, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	users := Users{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		user, hash, ok, err := parseUserLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("users file %s line %d: %w", path, n, err)
		}
		if !ok {
			continue
		}
		if _, dup := users[user]; dup {
			return nil, fmt.Errorf("users file %s line %d: user %q is listed twice", path, n, user)
		}
		users[user] = hash
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	return users, nil
}

// parseUserLine parses one line of a users file; ok is false for blank
// lines and comments.
func parseUserLine(line string) (user string, hash []byte, ok bool, err error) {
	line = strings.TrimRight(line, "\r")
	if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "#") {
		return "", nil, false, nil
	}
	user, h, found := strings.Cut(line, ":")
	if !found {
		return "", nil, false, errors.New(`want "user:bcrypt-hash"`)
	}
	if err := checkUserName(user); err != nil {
		return "", nil, false, err
	}
	hash = []byte(strings.TrimSpace(h))
	if _, err := bcrypt.Cost(hash); err != nil {
		return "", nil, false, fmt.Errorf("user %q: the password hash is not bcrypt (%v)", user, err)
	}
	return user, hash, true, nil
}

// CheckUserName returns why user cannot be a user name (see SetUser), or
// nil: "ferry passwd" asks it before asking for a password.
func CheckUserName(user string) error { return checkUserName(user) }

// checkUserName checks a user name can be written to a users file and
// used in the ACL: a name with an ACL pattern character ('%', or the
// topic characters '+', '#', '/') or a control character could, put in
// place of %u, widen a rule or become another pattern.
func checkUserName(user string) error {
	switch {
	case user == "":
		return errors.New("user name must not be empty")
	case strings.ContainsRune(user, ':'):
		return fmt.Errorf("user name %q must not contain ':'", user)
	case strings.IndexFunc(user, unicode.IsSpace) >= 0:
		return fmt.Errorf("user name %q must not contain whitespace", user)
	case strings.IndexFunc(user, unicode.IsControl) >= 0:
		return fmt.Errorf("user name %q must not contain control characters", user)
	case strings.ContainsAny(user, aclPatternChars):
		return fmt.Errorf("user name %q must not contain any of %s (ACL pattern characters)", user, aclPatternChars)
	}
	return nil
}

// aclPatternChars may not appear in user names: '%' starts an ACL
// substitution, '+', '#' and '/' are topic filter syntax.
const aclPatternChars = "%+#/"

// HashPassword returns the bcrypt hash of pw at PasswordCost.
func HashPassword(pw []byte) ([]byte, error) {
	h, err := bcrypt.GenerateFromPassword(pw, PasswordCost)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	return h, nil
}

// SetUser creates or updates user's entry in the users file at path,
// creating the file if needed. The file is replaced atomically (a temporary
// file in the same directory, synced, then renamed) and has mode 0600;
// other lines, comments included, are kept.
func SetUser(path, user string, pw []byte) error {
	if err := checkUserName(user); err != nil {
		return err
	}
	if len(pw) == 0 {
		return errors.New("password must not be empty")
	}
	hash, err := HashPassword(pw)
	if err != nil {
		return err
	}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("users file: %w", err)
	}
	entry := user + ":" + string(hash)
	var out []string
	replaced := false
	if len(old) > 0 {
		for n, line := range strings.Split(strings.TrimSuffix(string(old), "\n"), "\n") {
			u, _, ok, perr := parseUserLine(line)
			if perr != nil {
				return fmt.Errorf("users file %s line %d: %w", path, n+1, perr)
			}
			if ok && u == user {
				if !replaced {
					out = append(out, entry)
					replaced = true
				}
				continue
			}
			out = append(out, line)
		}
	}
	if !replaced {
		out = append(out, entry)
	}
	// An existing file keeps its owner and mode (less any access for
	// others): a packaged gateway runs as user ferry and reads a
	// root:ferry 0640 file that root edits.
	mode, owner := os.FileMode(0o600), (*syscall.Stat_t)(nil)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm() &^ 0o007 // hashes are never for everyone
		owner, _ = fi.Sys().(*syscall.Stat_t)
	}
	return writeFileAtomic(path, []byte(strings.Join(out, "\n")+"\n"), mode, owner)
}

// writeFileAtomic replaces path with data: temporary file in the same
// directory, fsync, rename, fsync of the directory.
func writeFileAtomic(path string, data []byte, mode os.FileMode, owner *syscall.Stat_t) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(mode); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	if owner != nil && (int(owner.Uid) != os.Geteuid() || int(owner.Gid) != os.Getegid()) {
		if err = f.Chown(int(owner.Uid), int(owner.Gid)); err != nil {
			return fmt.Errorf("users file: keep the owner: %w", err)
		}
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync() // best effort: the rename is done either way
		d.Close()
	}
	return nil
}

// ACLRule says what the users it applies to may publish and subscribe to.
//
// The FIRST rule whose User matches the client's user name applies; later
// rules are not consulted. When any rule is configured, whatever that rule
// does not allow is denied, and a client no rule matches may do nothing.
// With no rules at all, every authenticated client may do anything.
type ACLRule struct {
	// User is a user name, or "*" for any client (anonymous ones included).
	User string
	// Publish lists MQTT topic filters the client may publish to.
	// Subscribe lists filters the client may subscribe within: a
	// subscription is allowed only if one of them covers it entirely, so
	// "sensors/+" allows "sensors/a" and "sensors/+" but not "sensors/#".
	// In both, %u stands for the user name and %c for the client ID,
	// substituted in one pass (a value is never itself substituted). A
	// filter using %u grants nothing to an anonymous client, and a filter
	// is skipped (grants nothing) when the value it would take contains
	// '+', '#', '/', NUL or starts with '$' (substituting it would widen
	// the filter or reach system topics). A shared subscription
	// "$share/group/filter" is checked as its filter.
	Publish, Subscribe []string
	// ClientIDs, when set, are the client IDs the rule's users may
	// connect with: patterns in which '*' stands for any characters and %u
	// for the user name, such as "%u" or "%u-*"; a CONNECT with any other
	// is refused (0x87). Empty: any client ID. A session belongs to the
	// user who created it whatever the rules; ClientIDs also keeps a user
	// from claiming the IDs other users' clients use while they have no
	// session (before their first connect, or between clean sessions).
	ClientIDs []string
}

// authHook authenticates CONNECTs against the users and checks the ACL,
// limits failed logins per address, and records what it decides in the
// audit log.
type authHook struct {
	mqtt.HookBase
	policy atomic.Pointer[authPolicy] // replaced by Broker.Reconfigure
	audit  Auditor
	stats  *authStats
}

// authPolicy is who may connect and what they may do; immutable once made.
type authPolicy struct {
	allowAnonymous bool
	usernameFrom   string // TLSConfig.UsernameFrom; "" without TLS
	users          Users
	acl            []ACLRule
	dummy          []byte // hash compared for unknown users, to take as long
	limit          LoginLimit
	limiter        *loginLimiter // nil: no limit
}

// authStats counts authentication outcomes for Stats.
type authStats struct {
	failures atomic.Uint64 // refused logins whose credentials were checked
	blocked  atomic.Uint64 // logins refused unchecked: address blocked
	denied   atomic.Uint64 // ACL denials
}

// newAuthPolicy builds the policy of cfg, keeping old's login limiter (and
// the addresses it blocks) when the limits did not change.
func newAuthPolicy(cfg Config, old *authPolicy) (*authPolicy, error) {
	p := &authPolicy{allowAnonymous: cfg.AllowAnonymous, users: cfg.Users, acl: cfg.ACL, limit: cfg.LoginLimit}
	if cfg.TLS != nil {
		p.usernameFrom = cfg.TLS.UsernameFrom
	}
	if len(cfg.Users) > 0 {
		if old != nil && old.dummy != nil {
			p.dummy = old.dummy
		} else {
			var err error
			if p.dummy, err = bcrypt.GenerateFromPassword([]byte("ferry-no-such-user"), PasswordCost); err != nil {
				return nil, fmt.Errorf("broker: auth: %w", err)
			}
		}
	}
	if old != nil && old.limit == cfg.LoginLimit {
		p.limiter = old.limiter
	} else {
		p.limiter = newLoginLimiter(cfg.LoginLimit, cfg.Now)
	}
	return p, nil
}

func newAuthHook(cfg Config, stats *authStats) (*authHook, error) {
	h := &authHook{audit: cfg.Audit, stats: stats}
	if h.audit == nil {
		h.audit = nopAuditor{}
	}
	p, err := newAuthPolicy(cfg, nil)
	if err != nil {
		return nil, err
	}
	h.policy.Store(p)
	return h, nil
}

// entry starts an audit entry about cl.
func entry(event string, cl *mqtt.Client) audit.Entry {
	return audit.Entry{Event: event, ClientID: cl.ID, Username: string(cl.Properties.Username),
		Remote: cl.Net.Remote, Listener: cl.Net.Listener}
}

func (h *authHook) ID() string { return "ferry-auth" }

func (h *authHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck ||
		b == mqtt.OnSessionEstablished || b == mqtt.OnDisconnect ||
		b == mqtt.OnConnectAuthorize || b == mqtt.OnWill
}

var _ mqtt.ConnectAuthorizer = (*authHook)(nil)

// OnConnectAuthorize refuses, with CONNACK 0x87 (MQTT 3.1.1: 0x05), an
// authenticated CONNECT
//   - whose client ID is held by a session (connected, or offline and
//     persisted) that another user created: a session belongs to its
//     user, anonymous ones to the empty user, so nobody else can kick its
//     client, resume it or read what is queued for it; the owner's
//     connection and session are left alone;
//   - whose client ID is the broker's own inline client's;
//   - whose will goes to a topic the user may not publish to.
//
// Mochi calls it (ferry patch 6) after OnConnectAuthenticate, before any
// session is taken over. A session's user is stored with it, so this
// holds across restarts.
func (h *authHook) OnConnectAuthorize(cl *mqtt.Client, pk packets.Packet, session *mqtt.Client) error {
	if cl.Net.Inline {
		return nil
	}
	deny := func(action, topic, reason string) error {
		h.stats.denied.Add(1)
		e := entry("acl_deny", cl)
		e.Action, e.Topic, e.Reason = action, topic, reason
		h.audit.Record(e)
		return packets.ErrNotAuthorized
	}
	if session != nil && session.Net.Inline {
		return deny("session", "", "the client ID is the broker's own")
	}
	if session != nil && !bytes.Equal(session.Properties.Username, cl.Properties.Username) {
		return deny("session", "", "the client ID's session belongs to another user")
	}
	acl := h.policy.Load().acl
	if !clientIDAllowed(acl, cl) {
		return deny("client_id", "", "the client ID matches none of the client_ids of the user's ACL rule")
	}
	if w := &cl.Properties.Will; w.Flag != 0 && !h.allowed(acl, cl, w.TopicName, true) {
		return deny("will", w.TopicName, "the user may not publish to the will topic")
	}
	return nil
}

// OnWill checks the will again as it is about to be sent (the ACL may have
// changed by a reload since the CONNECT): one whose topic the user may no
// longer publish to is dropped (its Flag cleared, ferry patch 6), counted
// and audited.
func (h *authHook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if will.Flag == 0 || h.allowed(h.policy.Load().acl, cl, will.TopicName, true) {
		return will, nil
	}
	h.stats.denied.Add(1)
	e := entry("acl_deny", cl)
	e.Action, e.Topic, e.Reason = "will", will.TopicName, "will dropped: the user may no longer publish to its topic"
	h.audit.Record(e)
	will.Flag = 0
	return will, nil
}

// OnSessionEstablished records the connect (authenticated, CONNACK sent).
func (h *authHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	h.audit.Record(entry("connect", cl))
}

// OnDisconnect records the disconnect and why.
func (h *authHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if cl.Net.Inline {
		return
	}
	e := entry("disconnect", cl)
	if err != nil {
		e.Reason = err.Error()
	}
	h.audit.Record(e)
}

// OnConnectAuthenticate first looks for a client certificate: one the TLS
// handshake verified against the client CAs authenticates the client as
// its identity (TLSConfig.UsernameFrom), which becomes the client's user
// name for the ACL and everything else, without a password. A certificate
// without an identity is refused, and so is a CONNECT whose user name
// differs from the certificate's (a client cannot claim a second identity).
//
// Without a certificate, it allows an anonymous client (empty user name)
// only when AllowAnonymous is set, and otherwise needs a listed user with
// the right password. Unknown users and wrong passwords are refused alike.
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	p := h.policy.Load()
	user := string(pk.Connect.Username)
	refuse := func(event, reason string) bool {
		e := entry(event, cl)
		e.Username, e.Reason = user, reason
		h.audit.Record(e)
		return false
	}
	if id, ok := tlsIdentity(cl, p.usernameFrom); ok {
		switch {
		case id == "":
			h.stats.failures.Add(1)
			return refuse("auth_failure", "client certificate has no identity")
		case user != "" && user != id:
			h.stats.failures.Add(1)
			return refuse("auth_failure", fmt.Sprintf("user name differs from the client certificate's identity %q", id))
		}
		cl.Properties.Username = []byte(id)
		return true
	}
	if user == "" {
		if p.allowAnonymous && len(pk.Connect.Password) == 0 {
			return true
		}
		h.stats.failures.Add(1)
		return refuse("auth_failure", "anonymous access is off")
	}
	// A blocked address costs no bcrypt: that is what keeps a guessing
	// run from taking CPU from the sensors.
	ip := remoteIP(cl.Net.Remote)
	if !p.limiter.begin(ip) {
		h.stats.blocked.Add(1)
		return refuse("login_blocked", "too many failed logins from this address")
	}
	hash, ok := p.users[user]
	if !ok {
		if p.dummy != nil {
			_ = bcrypt.CompareHashAndPassword(p.dummy, pk.Connect.Password)
		}
	} else if bcrypt.CompareHashAndPassword(hash, pk.Connect.Password) == nil {
		p.limiter.end(ip, true)
		return true
	}
	blocks := p.limiter.end(ip, false)
	h.stats.failures.Add(1)
	if blocks {
		refuse("login_blocked", fmt.Sprintf("%d failed logins within %s: blocked for %s", p.limit.Failures, p.limit.Window, p.limit.Block))
	}
	return refuse("auth_failure", "unknown user or wrong password")
}

// OnACLCheck applies the first matching ACL rule: write checks a topic
// name being published; otherwise name is a filter being subscribed to, or
// a topic name being delivered, and must be covered by a Subscribe filter.
func (h *authHook) OnACLCheck(cl *mqtt.Client, name string, write bool) bool {
	if h.allowed(h.policy.Load().acl, cl, name, write) {
		return true
	}
	h.stats.denied.Add(1)
	e := entry("acl_deny", cl)
	e.Topic, e.Action = name, "subscribe"
	if write {
		e.Action = "publish"
	}
	h.audit.Record(e)
	return false
}

func (h *authHook) allowed(acl []ACLRule, cl *mqtt.Client, name string, write bool) bool {
	if len(acl) == 0 {
		return true
	}
	user := string(cl.Properties.Username)
	shared := ""
	if !write {
		shared = sharedFilter(name)
	}
	for _, r := range acl {
		if r.User != "*" && r.User != user {
			continue
		}
		filters := r.Subscribe
		if write {
			filters = r.Publish
		}
		for _, f := range filters {
			f, ok := substitute(f, user, cl.ID)
			if !ok {
				continue
			}
			if write && topic.Match(f, name) || !write && (covers(f, name) || shared != "" && covers(f, shared)) {
				return true
			}
		}
		return false // the first matching rule decides
	}
	return false
}

// clientIDAllowed reports whether the first rule matching cl's user allows
// its client ID (see ACLRule.ClientIDs).
func clientIDAllowed(acl []ACLRule, cl *mqtt.Client) bool {
	user := string(cl.Properties.Username)
	for _, r := range acl {
		if r.User != "*" && r.User != user {
			continue
		}
		if len(r.ClientIDs) == 0 {
			return true
		}
		for _, p := range r.ClientIDs {
			if p, ok := substitute(p, user, ""); ok && globMatch(p, cl.ID) {
				return true
			}
		}
		return false
	}
	return true // no rule: the ACL allows the client nothing anyway
}

// globMatch reports whether s matches pattern, in which '*' matches any
// run of characters (none included) and every other character itself.
func globMatch(pattern, s string) bool {
	star, from := -1, 0 // the last '*' seen, and where its match ends in s
	for p, i := 0, 0; i < len(s) || p < len(pattern); {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, from = p, i
			p++
		case p < len(pattern) && i < len(s) && pattern[p] == s[i]:
			p++
			i++
		case star >= 0 && from < len(s):
			from++ // the last '*' takes one more character
			p, i = star+1, from
		default:
			return false
		}
	}
	return true
}

// sharedFilter returns the filter of a shared subscription
// "$share/group/filter", or "" when name is not one.
func sharedFilter(name string) string {
	rest, ok := strings.CutPrefix(name, "$share/")
	if !ok {
		return ""
	}
	_, f, ok := strings.Cut(rest, "/")
	if !ok {
		return ""
	}
	return f
}

// substitute replaces %u with user and %c with clientID in filter, in one
// pass, so that a value containing "%c" or "%u" is not substituted again;
// ok is false when the filter uses a value that is not usable: empty, or
// one that would widen the filter or change its meaning (see
// usableValue).
func substitute(filter, user, clientID string) (string, bool) {
	if !strings.Contains(filter, "%") {
		return filter, true
	}
	if strings.Contains(filter, "%u") && !usableValue(user) || strings.Contains(filter, "%c") && !usableValue(clientID) {
		return "", false
	}
	return strings.NewReplacer("%u", user, "%c", clientID).Replace(filter), true
}

// usableValue reports whether a user name or client ID may stand in a
// filter: not empty, no level separator or wildcard (which would widen
// the filter), no NUL (not allowed in topics), and no leading '$' (which
// would make a filter starting with %u or %c reach system topics).
func usableValue(v string) bool {
	return v != "" && !strings.ContainsAny(v, "+#/\x00") && !strings.HasPrefix(v, "$")
}

// covers reports whether every topic the requested filter can match is
// also matched by the allowed filter, conservatively: level by level, an
// allowed '#' covers the rest, an allowed '+' covers one level that is not
// '#', and a literal covers only the same literal. A wildcard first level
// never covers a '$' topic, as in MQTT matching.
func covers(allowed, requested string) bool {
	if allowed == "" || requested == "" {
		return false
	}
	al := strings.Split(allowed, "/")
	rl := strings.Split(requested, "/")
	for i, a := range al {
		if a == "#" {
			if i == 0 && strings.HasPrefix(rl[0], "$") {
				return false
			}
			return true
		}
		if i >= len(rl) {
			return false
		}
		r := rl[i]
		switch {
		case a == "+":
			if r == "#" || i == 0 && strings.HasPrefix(r, "$") {
				return false
			}
		case a != r:
			return false
		}
	}
	return len(al) == len(rl)
}
