package buffer

import (
	"errors"
	bolt "go.etcd.io/bbolt"
	"math"
	"strings"
	"syscall"
)

// Disk bound. bbolt never shrinks its file: a drained backlog leaves free
// pages inside it, which later commits reuse without taking anything from
// the filesystem. So the room a commit's appends have is the file's free
// pages plus what the filesystem holds above MinFreeDisk, less one growth
// step (bbolt grows the file by AllocSize at a time, and a filesystem
// without sparse files, such as FAT on an SD card, pays for it at once)
// and the pages every commit rewrites. Appends beyond that room are
// refused with ErrDiskFull, checked in the commit itself, so no commit can
// take the filesystem below the watermark. The reserve below the watermark
// is what acks, deletions and pipeline state use, so the backlog can
// always drain.
//
// An event larger than a quarter page may need a node of several
// contiguous pages, which bbolt takes from the end of the file when its
// free pages hold no such run. Free pages left by deleted events come in
// long runs; those left by copy-on-write are scattered. So a large event
// counts on the file's free pages only while they are plentiful
// (runBytes), else on the filesystem above the watermark alone.
//
// All of it counts in bytes of 4 KiB filesystem blocks, not in bbolt
// pages: with pages smaller than a block, a rewritten page that lands in
// a block not used before takes the whole block (measured: counted in
// 1 KiB pages, TestDiskFull ran the filesystem dry before the watermark
// refused).
//
// Deleting events grows bbolt's freelist, which a commit writes out in one
// piece while it fits in a page (freelistOff). When the filesystem is below the watermark (someone else
// took the reserve), that piece should come from the file's own free
// pages, so such commits delete at most deleteChunkBytes of events each
// and leave the rest to the next commit: the pages one commit frees are
// free for the next one, so a drain takes next to nothing from the
// filesystem. (With 0 bytes free it can still fail where bbolt needs
// contiguous pages; the acks are kept and the drain goes on once some
// space is freed.)

const (
	// unlimited is the room of a commit when no disk bound applies.
	unlimited = math.MaxInt64
	// maxGrowStep bounds bbolt's AllocSize (default 16 MiB, too coarse for
	// a watermark of a few MiB on an SD card).
	maxGrowStep = 1 << 20
	minGrowStep = 64 << 10
	// fsBlock is the filesystem block the bounds count in: a page
	// smaller than it (Options.PageSize 1024) that lands in a block not
	// yet used still takes the whole block from the filesystem.
	fsBlock = 4096
	// commitPages are the pages any commit may rewrite besides those of
	// the streams it touches (root bucket, state bucket).
	commitPages = 4
	// streamPages are the pages a commit rewrites for each stream it
	// touches: the path from the root to the last leaf of its events and
	// its metadata, drops and consumers.
	streamPages = 8
	// leafOverhead is bbolt's per-element header plus our 8-byte key.
	leafOverhead = 16 + 8
	// runBytes is how much free space the file's free pages must hold
	// for a large event to count on a contiguous run among them.
	runBytes = 256 * fsBlock
	// resumeBytes is how much room must be free again before a disk-full
	// log accepts events: enough for large events, and more than a commit
	// frees by copy-on-write, so that refusals do not flap per commit.
	resumeBytes = runBytes + 64*fsBlock
	// deleteChunkBytes bounds the events a commit deletes while the
	// filesystem is below the watermark: their page ids add 8 bytes each
	// to the freelist, at most 4 KiB per commit with 1 KiB pages.
	deleteChunkBytes = 128 * fsBlock
)

// room is what a commit's appends may take, in bytes: from the file's own
// free pages, and from the filesystem above the watermark (unlimited
// without a bound).
type room struct {
	file, fs int64
	// noRuns: the file's free pages are known not to hold a run long
	// enough for a large event (learnRuns), whatever their number.
	noRuns bool
}

func (r room) total() int64 {
	if r.fs == unlimited {
		return unlimited
	}
	return r.file + r.fs
}

// take takes cost bytes for an append, large if it may need contiguous
// pages, and reports whether they were there.
func (r *room) take(cost int64, large bool, pageSize int) bool {
	switch {
	case r.fs == unlimited:
		return true
	case large && (r.file < runBytes || r.noRuns):
		if r.fs < cost {
			return false
		}
		r.fs -= cost
		return true
	case r.file+r.fs < cost:
		return false
	}
	r.charge(cost)
	return true
}

// charge takes n bytes without refusing: for writes that must go through
// (stream metadata, state). bbolt reuses free pages first.
func (r *room) charge(n int64) {
	if r.fs == unlimited {
		return
	}
	fromFile := min(n, r.file)
	r.file -= fromFile
	r.fs = max(r.fs-(n-fromFile), 0)
}

// limits are what the next commit may do on disk.
type limits struct {
	room
	delBudget int64 // bytes of events it may delete
}

var noLimits = limits{room: room{fs: unlimited}, delBudget: unlimited}

// growStep is the bbolt AllocSize for a watermark: a quarter of it, within
// [64 KiB, 1 MiB] (1 MiB without one), so one growth step never eats much
// of the reserve.
func growStep(minFree uint64) int {
	step := min(minFree/4, maxGrowStep) &^ (minGrowStep - 1)
	if step < minGrowStep {
		step = minGrowStep
	}
	if minFree == 0 {
		step = maxGrowStep
	}
	return int(step)
}

// appendCost is what storing a value of n bytes may take from the room:
// its leaf element, the pages' fill factor and, for a large value (more
// than a quarter page: bbolt does not split a node of four elements or
// fewer, so it may span several pages), rounding up to whole pages.
func (l *Log) appendCost(n int) (cost int64, large bool) {
	c := int64(n) + leafOverhead
	large = c > int64(l.pageSize)/4
	c += c / 10 // FillPercent 0.95 plus split slack
	if large {
		c += int64(l.pageSize)
	}
	return c, large
}

// learnRuns keeps the room estimate honest about contiguity. A large
// event needs a run of free pages, and bbolt's free pages may all be
// short runs (a rewritten leaf frees one page, a leaf of large values a
// few): their number alone overstated the room, and with the file's
// freelist kept in memory TestFullDisk ran the filesystem dry on events
// counted against free pages that bbolt could not use. So a commit that
// had no room on the filesystem yet raised the file's high-water mark
// shows the runs are gone: large events then count on the filesystem
// alone (room.noRuns) until deletions have freed runBytes again. The
// growth that taught it is within the reserve (measure keeps one growth
// step). Called by the commit loop only.
func (l *Log) learnRuns(ts *txState, lim limits) {
	if ts.freed > 0 && l.noRuns {
		if l.freedSince += ts.freed; l.freedSince >= runBytes {
			l.noRuns, l.freedSince = false, 0
		}
	}
	if lim.fs == unlimited || lim.fs > 0 || ts.appended == 0 {
		return // filesystem room (or no bound): growing is expected
	}
	var hwm int64
	_ = l.db.View(func(tx *bolt.Tx) error { hwm = tx.Size(); return nil })
	if hwm > ts.hwm0 && !l.noRuns {
		l.noRuns, l.freedSince = true, 0
		l.logger.Info("buffer: the file's free pages hold no run for large events; they count on the filesystem's room alone", "path", l.path)
	}
}

// measure returns the next commit's limits from the free space and the
// file's free pages.
func (l *Log) measure() (limits, error) {
	free, err := l.freeDisk()
	if err != nil {
		return noLimits, err
	}
	st := l.db.Stats()
	ps := int64(l.pageSize)
	// Pending pages are released to the freelist when the next write
	// transaction starts (no reader holds them for long). A commit
	// writes a few pages besides its events, and the freelist when it
	// is short (FreelistInuse is then its size).
	inFile := int64(st.FreePageN+st.PendingPageN)*ps - int64(st.FreelistInuse) - (commitPages+1)*l.unit()
	fs := clampInt64(free) - clampInt64(l.opts.MinFreeDisk) - int64(l.growStep)
	lim := limits{room: room{file: max(inFile, 0), fs: max(fs, 0), noRuns: l.noRuns}, delBudget: unlimited}
	if inFile < 0 { // the commit's own pages come from the filesystem
		lim.fs = max(lim.fs+inFile, 0)
	}
	if fs < 0 {
		lim.delBudget = deleteChunkBytes
	}
	return lim, nil
}

func clampInt64(u uint64) int64 {
	if u > math.MaxInt64/4 {
		return math.MaxInt64 / 4 // sums of a few stay in range
	}
	return int64(u)
}

func (l *Log) freeDisk() (uint64, error) {
	if l.opts.FreeDisk != nil {
		return l.opts.FreeDisk(l.path)
	}
	return fileFreeDisk(l.statFile)
}

// commitLimits returns the limits of the next commit: none without a
// watermark (unless a commit already ran out of space); no room for
// appends while the log is disk-full and less than resumeBytes are free.
func (l *Log) commitLimits() limits {
	if l.opts.MinFreeDisk == 0 && !l.diskFull.Load() {
		return noLimits
	}
	lim, err := l.measure()
	if err != nil {
		return noLimits // checkDisk logs it; an ENOSPC commit still refuses
	}
	if l.diskFull.Load() {
		if lim.total() < resumeBytes {
			lim.room = room{}
		} else {
			l.setDiskFull(false, lim.total())
		}
	}
	return lim
}

// checkDisk updates the disk-full state between commits (sweep ticker),
// so it shows while no events arrive and clears once the backlog drained.
func (l *Log) checkDisk() {
	if l.opts.MinFreeDisk == 0 && !l.diskFull.Load() {
		return
	}
	lim, err := l.measure()
	if err != nil {
		l.logger.Warn("free disk check failed", "path", l.path, "err", err)
		return
	}
	switch full, r := l.diskFull.Load(), lim.total(); {
	case !full && r < int64(l.pageSize):
		l.setDiskFull(true, r)
	case full && r >= resumeBytes:
		l.setDiskFull(false, r)
	}
}

// setDiskFull records the disk-full state, logging a change.
func (l *Log) setDiskFull(full bool, room int64) {
	if l.diskFull.Swap(full) == full {
		return
	}
	free, _ := l.freeDisk()
	if full {
		l.logger.Error("no room for events above the free disk watermark: refusing new events until the backlog drains",
			"path", l.path, "free_bytes", free, "room_bytes", max(room, 0), "min_free_disk", l.opts.MinFreeDisk)
	} else {
		l.logger.Info("room for events again: accepting events", "path", l.path, "free_bytes", free, "room_bytes", room)
	}
}

// noSpace reports whether err is the filesystem running out of space.
// bbolt formats a failed file resize with %s, which drops the wrapped
// error, hence the text match.
func noSpace(err error) bool {
	if err == nil {
		return false
	}
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		strings.Contains(err.Error(), syscall.ENOSPC.Error()) || strings.Contains(err.Error(), syscall.EDQUOT.Error())
}

// unit is what one rewritten page may take from the filesystem: the page,
// or the block it lands in when pages are smaller than blocks.
func (l *Log) unit() int64 { return max(int64(l.pageSize), fsBlock) }
