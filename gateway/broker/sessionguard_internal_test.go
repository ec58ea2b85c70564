package broker

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/internal/durable"
	"go.etcd.io/bbolt"
)

// TestGuardSessions: which session stores are trusted at start. A store
// left open by another boot (a power cut: it is written without fsync) is
// moved aside unread; one that does not check is moved aside; others are
// kept; the state file then says running in this boot.
func TestGuardSessions(t *testing.T) {
	now := time.Unix(1700000000, 0)
	good := func(t *testing.T, path string) {
		db, err := bbolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(tx *bbolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("sessions"))
			if err != nil {
				return err
			}
			return b.Put([]byte("k"), []byte("v"))
		}); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
	garbage := func(t *testing.T, path string) {
		good(t, path)
		b, _ := os.ReadFile(path)
		for i := 2 * 4096; i < len(b); i++ { // keep the meta pages: Open succeeds
			b[i] = byte(i * 13)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name  string
		store func(*testing.T, string)
		state string // "" : no state file (an older ferry)
		boot  string
		kept  bool
	}{
		{"clean stop", good, "clean", "b2", true},
		{"killed in this boot", good, "running b2", "b2", true},
		{"open when the machine went down", good, "running b1", "b2", false},
		{"boot unknown", good, "running b1", "", true},
		{"older ferry, no state", good, "", "b2", true},
		{"damaged, clean state", garbage, "clean", "b2", false},
		{"damaged, killed in this boot", garbage, "running b2", "b2", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "sessions.db")
			tc.store(t, path)
			if tc.state != "" {
				if err := durable.WriteFile(path+".state", tc.state+"\n"); err != nil {
					t.Fatal(err)
				}
			}
			g := guardSessions(path, tc.boot, now, slog.New(slog.DiscardHandler))
			_, err := os.Stat(path)
			if kept := err == nil; kept != tc.kept {
				t.Fatalf("store kept %v, want %v", kept, tc.kept)
			}
			aside, _ := filepath.Glob(path + ".corrupt-*")
			if len(aside) != map[bool]int{true: 0, false: 1}[tc.kept] {
				t.Fatalf("moved aside: %v", aside)
			}
			st, _ := os.ReadFile(path + ".state")
			boot := tc.boot
			if boot == "" {
				boot = "unknown"
			}
			if got := strings.TrimSpace(string(st)); got != "running "+boot {
				t.Fatalf("state %q, want running %s", got, boot)
			}
			if tc.kept {
				good(t, path) // mochi would open it now
			}
			g.closed()
			if st, _ := os.ReadFile(path + ".state"); strings.TrimSpace(string(st)) != "clean" {
				t.Fatalf("state after a clean stop %q", st)
			}
		})
	}
}
