// -B/--bitmap: the persistent dirty bitmaps an export offers as qemu:dirty-bitmap:NAME
// contexts, checked as qemu-nbd 7.2 checks them when it creates the export (docs/bitmaps.md).
package main

import (
	"errors"
	"fmt"

	"github.com/qnbd/qnbd/internal/qcow2export"
	"github.com/qnbd/qnbd/server"
)

// checkBitmaps refuses an export whose -B bitmaps cannot be served, with qemu-nbd's messages:
// one not in the image nor its backing chain (a raw image has none) is "not found", one left
// in-use by a writer that did not store it is "inconsistent". Bitmaps are checked in the
// export's order, which is the reverse of the command line's, as in qemu-nbd.
func checkBitmaps(e exportConfig, b server.Backend) error {
	if len(e.bitmaps) == 0 {
		return nil
	}
	if e.offset != 0 {
		return errors.New("-B/--bitmap cannot be combined with -o/--offset in qnbd")
	}
	qb, isQcow2 := b.(*qcow2export.Backend)
	for _, name := range e.bitmaps {
		if !isQcow2 {
			return bitmapNotFound(name)
		}
		info, ok := qb.Image().FindBitmap(name)
		if !ok {
			return bitmapNotFound(name)
		}
		if !info.Loaded {
			return qemuMessage(fmt.Sprintf("Bitmap '%s' is inconsistent and cannot be used", name))
		}
	}
	return nil
}

// qemuMessage is an error whose text is qemu-nbd's, capital letter included.
type qemuMessage string

func (m qemuMessage) Error() string { return string(m) }

func bitmapNotFound(name string) error {
	return qemuMessage(fmt.Sprintf("Bitmap '%s' is not found", name))
}
