// Allocated size of a host file, as qemu-img info's "actual-size" / "disk size".
package imgfmt

import (
	"os"
	"syscall"
)

// allocatedBytes is the space a file occupies on disk (st_blocks * 512), or its length when
// the platform does not report blocks.
func allocatedBytes(st os.FileInfo) int64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Blocks * 512
	}
	return st.Size()
}

// AllocatedSize returns the space the file at path occupies on disk.
func AllocatedSize(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return allocatedBytes(st), nil
}
