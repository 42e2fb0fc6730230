// Image locks: what an export takes on its files (qemu-nbd's permissions), --force-share,
// and the one-line refusal when another process uses the image.
package main

import (
	"errors"
	"fmt"

	"github.com/qnbd/qnbd/internal/imagelock"
	"github.com/qnbd/qnbd/internal/rawfile"
)

// lockRequest is what qemu-nbd's export asks of its image: consistent read, and write unless
// read-only; it shares everything but resize (the export size is fixed). With -s the image is
// only read (the temporary overlay takes the writes) and is locked as the overlay's backing
// file. --force-share shares everything.
func lockRequest(e exportConfig) imagelock.Request {
	r := imagelock.Request{
		Perm:       imagelock.ConsistentRead,
		Shared:     imagelock.All &^ imagelock.Resize,
		ForceShare: e.forceShare,
	}
	if !e.readOnly && e.loadSnapshot == "" {
		r.Perm |= imagelock.Write
	}
	return r
}

// lockRaw locks a raw export's file (on the descriptor its I/O uses, so the locks last until
// the export is closed); on failure it closes f.
func lockRaw(e exportConfig, f *rawfile.File) error {
	perm, shared := lockRequest(e).For(imagelock.RawImage)
	if err := imagelock.Lock(f.File(), perm, shared); err != nil {
		f.Close()
		return err
	}
	return nil
}

// lockErrorText words a lock conflict met while opening path as one line: QEMU's message
// (after the engine's note of which backing or data file, if it was not the image itself) and
// QEMU's hint, "Is another process using the image [NAME]?". ok is false for other errors.
func lockErrorText(path string, err error) (text string, ok bool) {
	var le *imagelock.Error
	if !errors.As(err, &le) {
		return "", false
	}
	text = fmt.Sprintf("cannot open '%s': %v", path, err)
	if h := le.Hint(); h != "" {
		text += ". " + h
	}
	return text, true
}

// msgForceShareWritable is QEMU's refusal of force-share on a writable image.
const msgForceShareWritable = "force-share=on can only be used with read-only images"
