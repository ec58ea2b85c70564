package remoteconfig

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ferrygw/ferry/gateway/config"
	"github.com/ferrygw/ferry/gateway/config/signed"
	"github.com/ferrygw/ferry/internal/durable"
)

// The files in Dir.
const (
	appliedFile   = "applied.conf"   // the envelope in force; absent: the local file
	goodFile      = "good.conf"      // the last envelope the uplink connected with; absent: the local file
	candidateFile = "candidate.conf" // offered, not yet applied or refused
	stateFile     = "state.json"
)

// maxStateSize bounds state.json: versions, times and one status payload,
// whose errors are bounded by the config loader's maximum.
const maxStateSize = 4 << 20

// Dir returns where the remote configuration's state of the gateway
// configured by cfg lives: <data_dir>/remote-config.
func Dir(cfg *config.Config) string { return filepath.Join(cfg.DataDir, "remote-config") }

// state is state.json.
type state struct {
	// Applied is the version in force (0: the local file); AppliedSHA the
	// SHA-256 of its envelope, in hex.
	Applied    uint64 `json:"applied"`
	AppliedSHA string `json:"applied_sha256,omitempty"`
	// Good is the last version the uplink connected with (0: the local
	// file); good.conf holds it.
	Good uint64 `json:"good"`
	// Pending: Applied has not seen the uplink connect yet; AppliedAt is
	// when it was applied and Boots how many times the gateway started
	// with it pending.
	Pending   bool      `json:"pending"`
	AppliedAt time.Time `json:"applied_at"`
	Boots     int       `json:"boots_pending,omitempty"`
	// Tried is the highest version ever taken to apply (or refused by
	// Run); no version at or below it is applied again.
	Tried uint64 `json:"tried"`
	// Applying is the version Run has taken and not finished with;
	// Attempts counts the starts of it, so one that keeps crashing the
	// gateway is refused.
	Applying uint64 `json:"applying,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
	// Status is the last status payload, published again at start.
	Status json.RawMessage `json:"status,omitempty"`
}

// store reads and writes the files of one Dir. It locks nothing.
type store struct{ dir string }

func (s store) path(name string) string { return filepath.Join(s.dir, name) }

// read returns the file name, at most signed.MaxSize bytes (an error
// wrapping os.ErrNotExist when it is absent).
func (s store) read(name string) ([]byte, error) {
	return readLimited(s.path(name), signed.MaxSize)
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: more than %d bytes", path, limit)
	}
	return b, nil
}

// write replaces the file name with b durably.
func (s store) write(name string, b []byte) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	return durable.WriteFile(s.path(name), string(b))
}

// remove deletes the file name, if it is there, durably.
func (s store) remove(name string) error {
	err := os.Remove(s.path(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if d, err := os.Open(s.dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// loadState reads state.json; absent, it is the zero state. A damaged one
// is an error: the caller rebuilds what it can from the envelopes.
func (s store) loadState() (state, error) {
	var st state
	b, err := readLimited(s.path(stateFile), maxStateSize)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return state{}, fmt.Errorf("%s: %w", s.path(stateFile), err)
	}
	return st, nil
}

// rebuild rebuilds a state from the envelopes on disk, for a state.json
// that cannot be read: nothing at or below a version found is applied
// again.
func (s store) rebuild() state {
	var st state
	version := func(name string) uint64 {
		b, err := s.read(name)
		if err != nil {
			return 0
		}
		e, err := signed.Parse(b)
		if err != nil {
			return 0
		}
		return e.Version
	}
	st.Applied = version(appliedFile)
	if b, err := s.read(appliedFile); err == nil {
		st.AppliedSHA = digest(b)
	}
	st.Good = version(goodFile)
	st.Pending = st.Applied != st.Good
	st.Tried = max(st.Applied, st.Good)
	if c := version(candidateFile); c > 0 {
		st.Tried = max(st.Tried, c-1) // the candidate was not tried yet
	}
	return st
}

func (s store) saveState(st *state) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return s.write(stateFile, b)
}

// digest is the hex SHA-256 of an envelope.
func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
