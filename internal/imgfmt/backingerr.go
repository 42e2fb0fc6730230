package imgfmt

import (
	"errors"

	"github.com/qnbd/qnbd/qcow2"
)

// BackingFailure peels the backing-file levels off an error of an image open: depth is how
// many backing files down the chain the failure lies (0: not in a backing file), path the
// file that failed to open there and inner its own error. QEMU words such a failure as
// "Could not open backing file: " once per level, then the failing file's own message.
func BackingFailure(err error) (depth int, path string, inner error) {
	inner = err
	for {
		var be *qcow2.BackingOpenError
		if !errors.As(inner, &be) {
			return depth, path, inner
		}
		depth++
		path, inner = be.Path, be.Err
	}
}
