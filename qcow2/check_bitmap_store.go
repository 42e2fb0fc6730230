// The bitmaps' part of a repair: qemu-img check -r opens the image read-write, so its bitmaps
// are loaded, marked in-use and stored again at close, which drops what was damaged in their
// tables (docs/bitmaps.md, "Damaged bitmaps: open and check").
package qcow2

import "fmt"

// keepOpenStorage lends a Storage to an Image without giving it away: the Image's Close
// leaves it open for its owner.
type keepOpenStorage struct{ Storage }

func (keepOpenStorage) Close() error { return nil }

// restoreBitmapsAfterRepair does, after a repair check that completed, what the read-write
// open and close of qemu-img check -r do to the bitmaps of the image in s: a bitmaps extension
// the autoclear bit disowns is dropped from the header; each consistent bitmap is loaded,
// marked in-use, and stored at close in new clusters, its old table and data clusters freed
// (bitmap_open.go, bitmap_store.go: the crash-safe order of every clean close). It returns
// QEMU's "qcow2_free_clusters failed: ..." lines for clusters that could not be freed.
//
// QEMU loads and marks before the check, and stores at close whatever the check found; the
// engine does it after the check, and only when the check completed (no error, no check
// error): storing allocates clusters, and refcounts the check could not vouch for may hand out
// a cluster that is still in use. An image marked corrupt, or dirty (lazy refcounts, which a
// read-write open of the engine would rebuild), is left as the check left it.
func restoreBitmapsAfterRepair(s Storage, dir string) ([]string, error) {
	h, err := ReadHeader(s)
	if err != nil {
		return nil, fmt.Errorf("qcow2: check: read the repaired header: %w", err)
	}
	if h.Extensions.Bitmaps == nil || h.Corrupt() || h.Dirty() {
		return nil, nil
	}
	// QEMU has no cap on the bitmaps' memory: neither does its check.
	img, err := OpenStorage(keepOpenStorage{s}, dir, OpenOptions{NoBacking: true, BitmapMemoryLimit: -1})
	if err != nil {
		return nil, fmt.Errorf("qcow2: check: open the image to store its bitmaps: %w", err)
	}
	cerr := img.Close()
	img.mu.Lock()
	msgs := img.bitmapFreeFailures
	img.mu.Unlock()
	if cerr != nil {
		return msgs, fmt.Errorf("qcow2: check: store the bitmaps: %w", cerr)
	}
	return msgs, nil
}
