// Image locks as qemu-img takes them: the requests of convert's source and target, and
// QEMU's two-line message when another process holds the image.
package main

import (
	"errors"

	"github.com/qnbd/qnbd/internal/imagelock"
	"github.com/qnbd/qnbd/internal/imgfmt"
)

// convertSourceLock is what qemu-img convert asks of a source: consistent read, and nobody
// may write or resize it meanwhile (-U lifts that).
var convertSourceLock = imagelock.Request{
	Perm:   imagelock.ConsistentRead,
	Shared: imagelock.All &^ (imagelock.Write | imagelock.Resize),
}

// convertTargetLock is what qemu-img convert asks of its target once created: consistent
// read and write, sharing everything (a qcow2 target still refuses other writers, for its
// metadata).
var convertTargetLock = imagelock.Request{
	Perm:   imagelock.ConsistentRead | imagelock.Write,
	Shared: imagelock.All,
}

// noLock takes no lock at all: qemu-img create reads a backing file's size without locking it.
var noLock = imagelock.Request{Shared: imagelock.All, ForceShare: true}

// msgForceShareWritable is QEMU's refusal of -U on an image opened for writing.
const msgForceShareWritable = "force-share=on can only be used with read-only images"

// lockText is QEMU's text for an image lock conflict inside err: the message (with QEMU's
// "Could not open backing file: " for each backing level, when imgfmt knows it), and on a
// second line the hint ("Is another process using the image [NAME]?"); ok is false for
// other errors.
func lockText(err error) (text string, ok bool) {
	var le *imagelock.Error
	if !errors.As(err, &le) {
		return "", false
	}
	text = le.Error()
	var named *imgfmt.LockError
	if errors.As(err, &named) {
		text, le = named.Text, named.Lock
	}
	if h := le.Hint(); h != "" {
		text += "\n" + h
	}
	return text, true
}
