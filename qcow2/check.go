// Check: the offline consistency check of a closed image, with qemu-img check's classes, counters
// and messages, and the repair driver on top of it.
package qcow2

import (
	"fmt"
	"path/filepath"
)

// RepairMode selects what CheckStorage may change, as qemu-img check -r does.
type RepairMode int

const (
	// RepairNone only reports (qemu-img check).
	RepairNone RepairMode = iota
	// RepairLeaks lowers the refcounts of leaked clusters (qemu-img check -r leaks). It refuses,
	// with errNeedRebuild, an image whose refcount structures must be rebuilt.
	RepairLeaks
	// RepairAll also fixes corruptions: refcounts that are too low, wrong COPIED flags, and
	// broken refcount structures, which it rebuilds from scratch (qemu-img check -r all).
	RepairAll
)

func (m RepairMode) String() string {
	switch m {
	case RepairNone:
		return "none"
	case RepairLeaks:
		return "leaks"
	case RepairAll:
		return "all"
	}
	return fmt.Sprintf("RepairMode(%d)", int(m))
}

// CheckResult is the outcome of a check, with the fields of qemu-img check --output=json.
// After a repair that fixed something, the counters describe the image after the repair (the
// "Double checking the fixed image now..." pass) and CorruptionsFixed/LeaksFixed what the repair
// did, as qemu-img reports them.
type CheckResult struct {
	// Corruptions counts inconsistencies that may lose or damage data (a refcount lower than
	// the number of references, a wrong COPIED flag, misaligned or out-of-file offsets, ...).
	Corruptions int
	// Leaks counts clusters whose refcount is higher than the number of references.
	Leaks int
	// CheckErrors counts metadata the check could not read or evaluate.
	CheckErrors      int
	CorruptionsFixed int
	LeaksFixed       int
	// ImageEndOffset is the end of the highest cluster that is referenced or has a refcount.
	ImageEndOffset uint64
	// TotalClusters is the number of guest clusters of the virtual disk.
	TotalClusters uint64
	// AllocatedClusters, FragmentedClusters and CompressedClusters count the guest clusters of
	// the active L1 table that are allocated in this image, that are not contiguous with the
	// previous allocated cluster of their L2 table, and that are compressed.
	AllocatedClusters, FragmentedClusters, CompressedClusters uint64
	// Messages are the findings in the order they were made, worded as qemu-img words them
	// ("Leaked cluster 9 refcount=1 reference=0", "ERROR cluster 6 refcount=0 reference=1").
	// At most maxCheckMessages are kept; the last one then says how many were dropped.
	Messages []string
	// CloseMessages are what closing a repaired image printed after the check, as qemu-img
	// prints them last: "qcow2_free_clusters failed: ..." for each run of clusters the bitmaps'
	// store could not free (check_bitmap_store.go).
	CloseMessages []string

	dropped int // messages not kept
}

// maxCheckMessages bounds Messages, so that a badly broken image cannot make the check use
// memory in proportion to its size for text alone.
const maxCheckMessages = 2000

// ExitCode is qemu-img check's exit status for this result: 1 when the check could not read
// everything (check errors), 2 when corruptions remain, 3 when only leaks remain, 0 when the
// image is clean. A check that returned an error exits with 1 as well.
func (r *CheckResult) ExitCode() int {
	switch {
	case r.CheckErrors > 0:
		return 1
	case r.Corruptions > 0:
		return 2
	case r.Leaks > 0:
		return 3
	}
	return 0
}

// Clean reports whether the check found nothing wrong.
func (r *CheckResult) Clean() bool {
	return r.CheckErrors == 0 && r.Corruptions == 0 && r.Leaks == 0
}

func (r *CheckResult) msg(format string, args ...any) {
	if len(r.Messages) >= maxCheckMessages {
		r.dropped++
		return
	}
	r.Messages = append(r.Messages, fmt.Sprintf(format, args...))
}

// finishMessages appends the note about dropped messages, if any.
func (r *CheckResult) finishMessages() {
	if r.dropped > 0 {
		r.Messages = append(r.Messages, fmt.Sprintf("(%d more messages not shown)", r.dropped))
		r.dropped = 0
	}
}

// add merges the counters and messages of a sub-result, as qcow2_add_check_result does.
func (r *CheckResult) add(o *CheckResult, allocation bool) {
	r.Corruptions += o.Corruptions
	r.Leaks += o.Leaks
	r.CheckErrors += o.CheckErrors
	r.CorruptionsFixed += o.CorruptionsFixed
	r.LeaksFixed += o.LeaksFixed
	if allocation {
		r.ImageEndOffset = o.ImageEndOffset
		r.TotalClusters = o.TotalClusters
		r.AllocatedClusters = o.AllocatedClusters
		r.FragmentedClusters = o.FragmentedClusters
		r.CompressedClusters = o.CompressedClusters
	}
	for _, m := range o.Messages {
		r.msg("%s", m)
	}
	r.dropped += o.dropped
}

// Check opens the image at path (read-only for RepairNone, read-write otherwise) and checks it
// with CheckStorage.
func Check(path string, mode RepairMode) (*CheckResult, error) {
	s, err := OpenFile(path, FileOptions{ReadOnly: mode == RepairNone})
	if err != nil {
		return nil, err
	}
	res, err := CheckStorageIn(s, filepath.Dir(path), mode)
	if cerr := s.Close(); cerr != nil && err == nil && mode != RepairNone {
		err = fmt.Errorf("qcow2: close %s: %w", path, cerr)
	}
	return res, err
}

// CheckStorage checks the consistency of the closed qcow2 image in s, as qemu-img check does:
// it counts the references to every host cluster from the image's metadata (header, active and
// snapshot L1 tables, their L2 tables and data clusters, the reftable and refcount blocks, the
// snapshot table, bitmaps), compares them with the stored refcounts, and checks the COPIED
// flags and entry alignment. With a repair mode it fixes what that mode allows, then checks
// the image again.
//
// The error is non-nil when the check could not complete (the header is invalid, metadata
// could not be read, a repair failed, or RepairLeaks met an image that needs a rebuild:
// errNeedRebuild). The result is then still returned, as far as it got, when there is one.
// The image must not be open (as an Image, here or in another process) while it is checked:
// the check reads, and a repair writes, the file directly.
// Memory use is bounded by the file size: in-memory counts are sparse, and tables are read
// only where they lie inside the file.
//
// A repair that completed stores the persistent bitmaps again, as qemu-img check -r's
// read-write open and close do (restoreBitmapsAfterRepair); relative data file names resolve
// from the working directory (CheckStorageIn names another).
func CheckStorage(s Storage, mode RepairMode) (*CheckResult, error) {
	return CheckStorageIn(s, "", mode)
}

// CheckStorageIn is CheckStorage for an image whose relative data file name resolves from dir.
func CheckStorageIn(s Storage, dir string, mode RepairMode) (*CheckResult, error) {
	if err := checkOpenBitmaps(s); err != nil {
		return nil, err
	}
	res, err := checkWithHeader(s, nil, mode)
	if err != nil || mode == RepairNone || res.CheckErrors != 0 {
		return res, err
	}
	res.CloseMessages, err = restoreBitmapsAfterRepair(s, dir)
	return res, err
}

func checkWithHeader(s Storage, h *Header, mode RepairMode) (*CheckResult, error) {
	out := &CheckResult{}
	first, err := checkPass(s, h, mode)
	if first != nil {
		out.add(first, true)
	}
	if err != nil {
		out.finishMessages()
		return out, err
	}
	if mode == RepairNone || (first.CorruptionsFixed == 0 && first.LeaksFixed == 0) {
		out.finishMessages()
		return out, nil
	}
	// As qemu-img does: report what was repaired, then check the repaired image again; the
	// counters then describe the image as it is now.
	out.msg("The following inconsistencies were found and repaired:")
	out.msg("    %d leaked clusters", first.LeaksFixed)
	out.msg("    %d corruptions", first.CorruptionsFixed)
	out.msg("Double checking the fixed image now...")
	second, err := checkPass(s, nil, RepairNone)
	final := &CheckResult{Messages: out.Messages, dropped: out.dropped}
	if second != nil {
		final.add(second, true)
	}
	final.CorruptionsFixed = first.CorruptionsFixed
	final.LeaksFixed = first.LeaksFixed
	final.finishMessages()
	return final, err
}

// checkPass is one run of qcow2_co_check_locked: the refcount check with its repairs, the
// COPIED flags, then marking the image clean when a repair left it consistent.
func checkPass(s Storage, h *Header, mode RepairMode) (*CheckResult, error) {
	c, err := newChecker(s, h, mode)
	if err != nil {
		return nil, err
	}
	err = c.run()
	if err == nil && mode == RepairAll && c.snapCorruptions > 0 {
		// qcow2_check_fix_snapshot_table.
		if err = c.rewriteSnapshotTable(); err != nil {
			c.res.CheckErrors++
			c.res.msg("ERROR failed to update snapshot table: %v", err)
		} else {
			c.res.CorruptionsFixed += c.snapCorruptions
			c.snapCorruptions = 0
		}
	}
	c.res.Corruptions += c.snapCorruptions
	if err != nil {
		return c.res, err
	}
	if mode != RepairNone && c.res.CheckErrors == 0 && c.res.Corruptions == 0 {
		if err := c.markClean(); err != nil {
			c.res.CheckErrors++
			return c.res, err
		}
	}
	return c.res, nil
}

// repairDirty makes the refcounts of an image with the dirty bit (lazy refcounts, not closed
// cleanly) consistent again and clears the dirty bit, as QEMU does when it opens such an image
// read-write: a RepairAll check, which rebuilds the refcount structures if needed. h is the
// image's header as the caller read it from s. It returns the header as it is afterwards.
//
// It fails, leaving the dirty bit set, if the check could not complete or if corruptions remain
// that a repair cannot fix (references past the end of the file, for example); the error then
// matches ErrCorrupt and the image should only be used read-only.
func repairDirty(s Storage, h *Header) (*Header, error) {
	res, err := checkWithHeader(s, h, RepairAll)
	if err != nil {
		return nil, fmt.Errorf("qcow2: could not repair dirty image: %w", err)
	}
	if res.CheckErrors > 0 || res.Corruptions > 0 {
		return nil, corruptf("could not repair dirty image: %d corruptions and %d check errors remain", res.Corruptions, res.CheckErrors)
	}
	nh, err := ReadHeader(s)
	if err != nil {
		return nil, fmt.Errorf("qcow2: re-read header after repair: %w", err)
	}
	if nh.Dirty() {
		return nil, corruptf("dirty bit still set after repair")
	}
	return nh, nil
}
