// Sector accounting: raw images are sized in 512-byte sectors, and a probed one is changed in
// whole sectors, as QEMU's block layer does (docs/probing.md).
package rawfile

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// SectorSize is the unit QEMU sizes raw images in: the export is the file's length rounded up
// to it, the tail past the end of the file reading as zeros.
const SectorSize = 512

func roundUp(n uint64) uint64 { return (n + SectorSize - 1) / SectorSize * SectorSize }

func roundDown(n uint64) uint64 { return n / SectorSize * SectorSize }

// sectorEnd is where a change of [off, end) leaves the end of a probed file at least. QEMU
// restricts a probed raw image to whole sectors: a write is widened to the sectors it touches
// (read-modify-write), and a write-zeroes rewrites its partial first and last sectors whole,
// so either one that touches the partial last sector of the file extends the file to the end
// of that sector. Without probing nothing is widened: 0.
func (r *File) sectorEnd(off, end uint64, write bool) uint64 {
	if !r.opts.Probed {
		return 0
	}
	if write {
		return roundUp(end)
	}
	var t uint64
	if off%SectorSize != 0 {
		t = roundDown(off) + SectorSize
	}
	if end%SectorSize != 0 {
		t = max(t, roundUp(end))
	}
	return t
}

// grown records that the file now reaches at least written bytes, then extends it to target
// when it is shorter (a probed file's partial last sector, now written whole).
func (r *File) grown(written, target uint64) error {
	r.noteEOF(int64(written))
	if target == 0 || int64(target) <= r.eof.Load() {
		return nil
	}
	// fallocate mode 0 extends the length without touching bytes already there, whatever
	// another request wrote meanwhile.
	err := r.h.Allocate(int64(target-1), 1)
	if unsupported(err) || errors.Is(err, syscall.EINVAL) {
		var st unix.Stat_t
		if err = unix.Fstat(int(r.f.Fd()), &st); err == nil && st.Size < int64(target) {
			_, err = r.f.WriteAt([]byte{0}, int64(target-1))
		}
	}
	if err != nil {
		return err
	}
	r.noteEOF(int64(target))
	return nil
}

// noteEOF raises the known length of the file to n.
func (r *File) noteEOF(n int64) {
	for {
		cur := r.eof.Load()
		if n <= cur || r.eof.CompareAndSwap(cur, n) {
			return
		}
	}
}
