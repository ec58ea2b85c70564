package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/ferrygw/ferry/internal/durable"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// The session store (mochi's bbolt hook) is written without fsync: it is
// not the durability contract, and syncing it would cost fsyncs for
// every QoS 1 publish mochi records in flight. A killed process leaves it
// intact (the page cache survives), but a power cut or an OS crash can
// leave it damaged, and bbolt then panics on open or in a later write: a
// gateway that crashes at every boot (found by gateway.TestPowerCut).
//
// So the store has a state file beside it (<path>.state): "running
// <boot id>" while ferry runs, "clean" after a clean stop (the store
// fsynced first). At start, a store whose state names another boot was
// open when the machine went down: it is moved aside unread
// (<path>.corrupt-<unix time>), losing sessions, subscriptions and
// retained messages, never buffered events. Any other store is opened
// and checked page by page before mochi gets it, and moved aside if that
// fails.

const (
	stateClean   = "clean"
	stateRunning = "running "
)

// sessionGuard keeps the session store's state file.
type sessionGuard struct {
	path, state string
	log         *slog.Logger
}

// guardSessions decides, before mochi opens the store at path, whether it
// can be trusted (see above), moves it aside if not, and marks it running
// in boot.
func guardSessions(path, boot string, now time.Time, log *slog.Logger) *sessionGuard {
	g := &sessionGuard{path: path, state: path + ".state", log: log}
	prev, _ := os.ReadFile(g.state)
	st := strings.TrimSpace(string(prev))
	if _, err := os.Stat(path); err == nil {
		switch {
		case strings.HasPrefix(st, stateRunning) && boot != "" && strings.TrimPrefix(st, stateRunning) != boot:
			g.quarantine(now, errors.New("the machine went down (power cut or OS crash) while the store was open, and it is written without fsync"))
		default:
			if err := checkSessions(path); err != nil {
				g.quarantine(now, err)
			}
		}
	}
	if boot == "" {
		boot = "unknown"
	}
	if err := durable.WriteFile(g.state, stateRunning+boot+"\n"); err != nil {
		log.Warn("session store state not written", "path", g.state, "err", err)
	}
	return g
}

// closed marks the store clean after mochi closed it: the store is
// fsynced first, so the state never claims more than the disk has.
func (g *sessionGuard) closed() {
	if g == nil {
		return
	}
	f, err := os.OpenFile(g.path, os.O_RDWR, 0)
	if err == nil {
		err = f.Sync()
		_ = f.Close()
	}
	if errors.Is(err, os.ErrNotExist) {
		err = nil // nothing written: nothing to distrust
	}
	if err == nil {
		err = durable.WriteFile(g.state, stateClean+"\n")
	}
	if err != nil {
		g.log.Warn("session store not marked clean", "path", g.path, "err", err)
	}
}

func (g *sessionGuard) quarantine(now time.Time, why error) {
	q := fmt.Sprintf("%s.corrupt-%d", g.path, now.Unix())
	if err := os.Rename(g.path, q); err != nil {
		g.log.Error("broker session store untrusted and cannot be moved aside", "path", g.path, "why", why, "err", err)
		return
	}
	g.log.Error("broker session store untrusted: moved aside, starting with no sessions (buffered events are not affected)",
		"path", g.path, "quarantined_to", q, "why", why)
}

// checkSessions opens the store and checks every page. bbolt panics on
// some damage; that is an error here.
func checkSessions(path string) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("bbolt: %v", p)
		}
	}()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		if errors.Is(err, os.ErrPermission) || errors.Is(err, berrors.ErrTimeout) {
			return nil // not ours to judge: mochi's open reports it
		}
		return err
	}
	defer db.Close()
	return durable.CheckBolt(db)
}
