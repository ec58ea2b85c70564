package durable_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ferrygw/ferry/internal/durable"
	bolt "go.etcd.io/bbolt"
)

func TestWriteFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state")
	for _, want := range []string{"one\n", "two\n"} {
		if err := durable.WriteFile(path, want); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(path); string(got) != want {
			t.Fatalf("read %q, want %q", got, want)
		}
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("temporary file left: %v", err)
	}
}

func TestCheckBolt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("b"))
		if err != nil {
			return err
		}
		for i := range 500 {
			if err := b.Put([]byte{byte(i >> 8), byte(i)}, make([]byte, 100)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := durable.CheckBolt(db); err != nil {
		t.Fatalf("intact file: %v", err)
	}
	db.Close()

	// Zero the leaves: the meta pages still open, the check must not.
	raw, _ := os.ReadFile(path)
	for off := 2 * 4096; off+4096 <= len(raw); off += 4096 {
		if raw[off+8] == 0x02 {
			clear(raw[off : off+4096])
		}
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err = bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := durable.CheckBolt(db); err == nil {
		t.Fatal("damaged file passed the check")
	}
}
