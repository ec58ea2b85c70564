package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"time"
)

// This file reads bbolt's on-disk format (version 2) directly, to judge a
// file before bbolt walks it: bbolt's own walk at open (freelist left out
// of the file, see openBolt) runs in a goroutine where a damaged page
// crashes the process. The reads here use pread, not the mapping, so a
// truncated file is an error rather than SIGBUS, and every page is visited
// at most once, so a damaged tree whose pages point back up ends the walk
// rather than looping.

// bbolt's page header (16 bytes): id, flags, count, overflow; and its flags.
const (
	pageHeader     = 16
	elemSize       = 16 // branch and leaf elements alike
	branchPageFlag = 0x01
	leafPageFlag   = 0x02
	bucketLeafFlag = 0x01
	boltMagic      = 0xED0CDAED
	noFreelist     = ^uint64(0)
	maxWalkDepth   = 64 // tree levels plus nested buckets; bbolt's are a handful
)

// boltMeta is what walkFile and freelistInFile need of a meta page.
type boltMeta struct {
	pageSize       uint32
	root, freelist uint64
	hwm, txid      uint64 // high-water mark in pages; transaction id
}

// readMeta returns the file's current meta page: of the two, the valid one
// with the higher transaction id, as bbolt picks. A meta page is magic,
// version, page size, flags, root bucket (root page, sequence), freelist,
// high-water mark, txid and an FNV-64a checksum of what precedes it, after
// the page header.
func readMeta(f *os.File) (boltMeta, bool) {
	var best boltMeta
	ok := false
	buf := make([]byte, pageHeader+64)
	le := binary.LittleEndian
	for i, off := 0, int64(0); i < 2; i++ {
		if _, err := f.ReadAt(buf, off); err != nil {
			break
		}
		m := buf[pageHeader:]
		h := fnv.New64a()
		h.Write(m[:56])
		valid := le.Uint32(m[0:]) == boltMagic && le.Uint32(m[4:]) == 2 && h.Sum64() == le.Uint64(m[56:])
		if valid {
			got := boltMeta{pageSize: le.Uint32(m[8:]), root: le.Uint64(m[16:]), freelist: le.Uint64(m[32:]),
				hwm: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}
			if !ok || got.txid > best.txid {
				best, ok = got, true
			}
		}
		switch {
		case i == 0 && valid:
			off = int64(le.Uint32(m[8:]))
		case i == 0: // bbolt then looks where the OS page size puts the second
			off = int64(os.Getpagesize())
		}
	}
	return best, ok && best.pageSize >= 512 && best.pageSize <= 1<<16
}

// freelistInFile reports whether the file's current meta page points at a
// freelist written by the last commit. A file it cannot read is reported
// as without one, so that walkFile judges it.
func freelistInFile(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	m, ok := readMeta(f)
	return ok && m.freelist != noFreelist
}

// walkFile visits every page reachable from the file's root, as bbolt's
// free-page walk will, and returns the first problem: no valid meta page,
// a file shorter than its meta page says (a truncated copy, a card that
// lost its tail), a page outside the file or reached twice, a page that is
// not what its parent says, or elements that run past their page. It
// takes a shared lock first, as bbolt does, so that a file another
// process has open reports bbolt's timeout (ErrLocked), not damage.
func walkFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // created by the read-write open
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := lockShared(f, time.Second); err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	m, ok := readMeta(f)
	if !ok {
		return errors.New("no valid meta page")
	}
	if need := int64(m.hwm) * int64(m.pageSize); need > fi.Size() || m.hwm < 2 {
		return fmt.Errorf("file is %d bytes but its metadata needs %d (truncated)", fi.Size(), need)
	}
	w := &walker{f: f, ps: int64(m.pageSize), hwm: m.hwm, seen: make([]bool, m.hwm)}
	return w.page(m.root, 0)
}

// walker is one walkFile's state.
type walker struct {
	f    *os.File
	ps   int64
	hwm  uint64
	seen []bool
	hdr  [pageHeader]byte
}

func (w *walker) page(id uint64, depth int) error {
	if depth > maxWalkDepth {
		return fmt.Errorf("page %d: more than %d levels deep", id, maxWalkDepth)
	}
	if id < 2 || id >= w.hwm {
		return fmt.Errorf("page %d: outside the file's %d pages", id, w.hwm)
	}
	if _, err := w.f.ReadAt(w.hdr[:], int64(id)*w.ps); err != nil {
		return fmt.Errorf("page %d: %w", id, err)
	}
	le := binary.LittleEndian
	pid, flags, count, overflow := le.Uint64(w.hdr[0:]), le.Uint16(w.hdr[8:]), le.Uint16(w.hdr[10:]), uint64(le.Uint32(w.hdr[12:]))
	if pid != id {
		return fmt.Errorf("page %d: says it is page %d", id, pid)
	}
	if id+overflow >= w.hwm {
		return fmt.Errorf("page %d: %d overflow pages run past the file's %d", id, overflow, w.hwm)
	}
	for i := id; i <= id+overflow; i++ {
		if w.seen[i] {
			return fmt.Errorf("page %d: reached twice", i)
		}
		w.seen[i] = true
	}
	p := make([]byte, int64(overflow+1)*w.ps)
	if _, err := w.f.ReadAt(p, int64(id)*w.ps); err != nil {
		return fmt.Errorf("page %d: %w", id, err)
	}
	if err := w.elements(p, flags, count, depth); err != nil {
		return fmt.Errorf("page %d: %w", id, err)
	}
	return nil
}

// elements checks the elements of page p (a page of the file, or a
// bucket's inline page) and walks the pages they point to.
func (w *walker) elements(p []byte, flags, count uint16, depth int) error {
	le := binary.LittleEndian
	if flags&(branchPageFlag|leafPageFlag) == 0 {
		return fmt.Errorf("neither a branch nor a leaf (flags %#x)", flags)
	}
	for i := range int(count) {
		e := pageHeader + i*elemSize
		if e+elemSize > len(p) {
			return fmt.Errorf("element %d of %d past the page", i, count)
		}
		if flags&branchPageFlag != 0 {
			pos, ksize, child := uint64(le.Uint32(p[e:])), uint64(le.Uint32(p[e+4:])), le.Uint64(p[e+8:])
			if uint64(e)+pos+ksize > uint64(len(p)) {
				return fmt.Errorf("branch element %d past the page", i)
			}
			if err := w.page(child, depth+1); err != nil {
				return err
			}
			continue
		}
		fl, pos, ksize, vsize := le.Uint32(p[e:]), uint64(le.Uint32(p[e+4:])), uint64(le.Uint32(p[e+8:])), uint64(le.Uint32(p[e+12:]))
		start := uint64(e) + pos
		if start+ksize+vsize > uint64(len(p)) {
			return fmt.Errorf("leaf element %d past the page", i)
		}
		if fl&bucketLeafFlag == 0 {
			continue
		}
		v := p[start+ksize : start+ksize+vsize]
		if len(v) < 16 {
			return fmt.Errorf("bucket element %d: %d bytes", i, len(v))
		}
		if root := le.Uint64(v); root != 0 {
			if err := w.page(root, depth+1); err != nil {
				return err
			}
			continue
		}
		inline := v[16:] // an inline bucket: a leaf page of its own
		if len(inline) < pageHeader {
			return fmt.Errorf("inline bucket %d: %d bytes", i, len(inline))
		}
		ifl, icount := le.Uint16(inline[8:]), le.Uint16(inline[10:])
		if ifl&leafPageFlag == 0 || depth+1 > maxWalkDepth {
			return fmt.Errorf("inline bucket %d: not a leaf", i)
		}
		if err := w.elements(inline, ifl, icount, depth+1); err != nil {
			return fmt.Errorf("inline bucket %d: %w", i, err)
		}
	}
	return nil
}
