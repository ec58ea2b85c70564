package broker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode"

	"github.com/ferrygw/ferry/gateway/topic"
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

// checkUserName checks a user name can be written to a users file.
func checkUserName(user string) error {
	switch {
	case user == "":
		return errors.New("user name must not be empty")
	case strings.ContainsRune(user, ':'):
		return fmt.Errorf("user name %q must not contain ':'", user)
	case strings.IndexFunc(user, unicode.IsSpace) >= 0:
		return fmt.Errorf("user name %q must not contain whitespace", user)
	case strings.HasPrefix(user, "#"):
		return fmt.Errorf("user name %q must not start with '#'", user)
	}
	return nil
}

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
	return writeFileAtomic(path, []byte(strings.Join(out, "\n")+"\n"), 0o600)
}

// writeFileAtomic replaces path with data: temporary file in the same
// directory, fsync, rename, fsync of the directory.
func writeFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
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
	// In both, %u stands for the user name and %c for the client ID. A
	// filter using %u grants nothing to an anonymous client, and a client
	// whose user name or client ID contains '+', '#' or '/' is allowed
	// nothing (substituting it would widen the filter).
	Publish, Subscribe []string
}

// authHook authenticates CONNECTs against the users and checks the ACL.
type authHook struct {
	mqtt.HookBase
	allowAnonymous bool
	users          Users
	acl            []ACLRule
	dummy          []byte // hash compared for unknown users, to take as long
}

func newAuthHook(cfg Config) (*authHook, error) {
	h := &authHook{allowAnonymous: cfg.AllowAnonymous, users: cfg.Users, acl: cfg.ACL}
	if len(cfg.Users) > 0 {
		var err error
		if h.dummy, err = bcrypt.GenerateFromPassword([]byte("ferry-no-such-user"), PasswordCost); err != nil {
			return nil, fmt.Errorf("broker: auth: %w", err)
		}
	}
	return h, nil
}

func (h *authHook) ID() string { return "ferry-auth" }

func (h *authHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

// OnConnectAuthenticate allows an anonymous client (empty user name) only
// when AllowAnonymous is set, and otherwise needs a listed user with the
// right password. Unknown users and wrong passwords are refused alike.
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	user := string(pk.Connect.Username)
	if user == "" {
		return h.allowAnonymous && len(pk.Connect.Password) == 0
	}
	hash, ok := h.users[user]
	if !ok {
		if h.dummy != nil {
			_ = bcrypt.CompareHashAndPassword(h.dummy, pk.Connect.Password)
		}
		return false
	}
	return bcrypt.CompareHashAndPassword(hash, pk.Connect.Password) == nil
}

// OnACLCheck applies the first matching ACL rule: write checks a topic
// name being published; otherwise name is a filter being subscribed to, or
// a topic name being delivered, and must be covered by a Subscribe filter.
func (h *authHook) OnACLCheck(cl *mqtt.Client, name string, write bool) bool {
	if len(h.acl) == 0 {
		return true
	}
	user := string(cl.Properties.Username)
	if strings.ContainsAny(user, "+#/") || strings.ContainsAny(cl.ID, "+#/") {
		return false
	}
	for _, r := range h.acl {
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
			if write && topic.Match(f, name) || !write && covers(f, name) {
				return true
			}
		}
		return false // the first matching rule decides
	}
	return false
}

// substitute replaces %u with user and %c with clientID in filter; ok is
// false when the filter uses a value that is empty.
func substitute(filter, user, clientID string) (string, bool) {
	if strings.Contains(filter, "%u") {
		if user == "" {
			return "", false
		}
		filter = strings.ReplaceAll(filter, "%u", user)
	}
	if strings.Contains(filter, "%c") {
		if clientID == "" {
			return "", false
		}
		filter = strings.ReplaceAll(filter, "%c", clientID)
	}
	return filter, true
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
