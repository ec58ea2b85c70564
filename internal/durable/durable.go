// Package durable holds the small file operations that ferry's stores
// need to survive a power cut: replacing a file so that either the old or
// the new content is on disk, and checking a bbolt file page by page
// without letting bbolt's panics on damaged files crash the process.
//
// Both are safe for concurrent use on different paths; neither locks
// anything itself.
package durable

import (
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// WriteFile replaces path with data durably: a temporary file beside it,
// fsynced, renamed over path, and the directory fsynced.
func WriteFile(path, data string) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// CheckBolt runs bbolt's consistency check over every page of db and
// returns the first problem. bbolt panics on some damage; that is an
// error here.
func CheckBolt(db *bolt.DB) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("bbolt: %v", p)
		}
	}()
	return db.View(func(tx *bolt.Tx) error {
		// Read to the end: Check's goroutine walks the pages until it
		// closes the channel, and the transaction must outlive it.
		var first error
		for err := range tx.Check() {
			if first == nil {
				first = err
			}
		}
		return first
	})
}
