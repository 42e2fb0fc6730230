// Choosing and opening an export's backend by format: the one place where image formats
// meet the server.
package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"syscall"

	"github.com/qnbd/qnbd/internal/imgfmt"
	"github.com/qnbd/qnbd/internal/probe"
	"github.com/qnbd/qnbd/internal/rawfile"
	"github.com/qnbd/qnbd/qcow2"
	"github.com/qnbd/qnbd/server"
)

// detectFormat probes the image at path as qemu-nbd does without -f (internal/probe, the one
// probing path of both binaries and the engine). A format qnbd does not implement is refused
// with one line where qemu-nbd would serve it.
func detectFormat(path string) (string, error) {
	format, err := probe.File(path)
	if err != nil {
		return "", openError(path, err)
	}
	if format != "raw" && format != "qcow2" {
		return "", fmt.Errorf("'%s': the image probes as %s, a format qnbd does not serve (raw and qcow2 only); give -f raw to serve its bytes as they are", path, format)
	}
	return format, nil
}

// probedRawWarning is what qemu-nbd prints when it opens a probed raw image read-write
// (QEMU's raw driver, docs/probing.md).
const probedRawWarning = `WARNING: Image format was not specified for '%s' and probing guessed raw.
         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.
         Specify the 'raw' format explicitly to remove the restrictions.
`

// minBlockSize is the minimum block size an export's backend asks to advertise (512 for a
// probed raw image), or 0.
func minBlockSize(b server.Backend) uint32 {
	if m, ok := b.(interface{ MinBlockSize() uint32 }); ok {
		return m.MinBlockSize()
	}
	return 0
}

// openBackend opens one export's image as its format says and returns the backend and what
// closes it. With -s every format is served through a temporary qcow2 overlay.
func openBackend(e exportConfig, cfg *config, env openEnv) (server.Backend, io.Closer, error) {
	format, probed := e.format, false
	if format == "" {
		f, err := detectFormat(e.file)
		if err != nil {
			return nil, nil, err
		}
		format, probed = f, true
	}
	if e.snapshot && (format == "raw" || format == "qcow2") {
		return openSnapshotOverlay(e, format, cfg, env)
	}
	switch format {
	case "raw":
		if e.loadSnapshot != "" {
			return nil, nil, fmt.Errorf("'%s': -l/--load-snapshot needs a qcow2 image (this one is served as raw)", e.file)
		}
		f, err := rawfile.Open(e.file, rawfile.Options{
			ReadOnly:     e.readOnly,
			WriteThrough: cfg.cache == cacheWritethrough || cfg.cache == cacheDirectsync,
			IgnoreFlush:  cfg.cache == cacheUnsafe,
			Probed:       probed,
		})
		if err != nil {
			return nil, nil, openError(e.file, err)
		}
		if err := lockRaw(e, f); err != nil {
			return nil, nil, openError(e.file, err)
		}
		if probed && !e.readOnly && env.stderr != nil {
			fmt.Fprintf(env.stderr, probedRawWarning, e.file)
		}
		return f, f, nil
	case "qcow2":
		return openQcow2(e, e.file, false, cfg, env)
	}
	return nil, nil, fmt.Errorf("'%s': unknown format '%s'", e.file, format)
}

// backingFailureText is qemu-nbd's text for a backing file of the chain that failed to
// open: "Could not open backing file: " once per level down the chain, then the file's own
// failure.
func backingFailureText(err error) (string, bool) {
	depth, name, inner := imgfmt.BackingFailure(err)
	if depth == 0 {
		return "", false
	}
	msg := strings.Repeat("Could not open backing file: ", depth)
	var pe *fs.PathError
	if errors.As(inner, &pe) {
		return msg + fmt.Sprintf("Could not open '%s': %s", name, strerror(pe.Err)), true
	}
	return msg + inner.Error(), true
}

// openError words a failure to open an image as one short line.
func openError(path string, err error) error {
	if text, ok := lockErrorText(path, err); ok {
		return errors.New(text)
	}
	var be *qcow2.BitmapOpenError
	if errors.As(err, &be) {
		return blkOpenError(path, "%s", be.Error()) // bitmaps QEMU refuses to load
	}
	if msg, ok := backingFailureText(err); ok {
		return blkOpenError(path, "%s", msg)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		if pe.Path != path {
			// Another file of the image (a data file): name it.
			return fmt.Errorf("cannot open '%s': %v", path, err)
		}
		return blkOpenError(path, "Could not open '%s': %s", path, strerror(pe.Err))
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return fmt.Errorf("cannot open '%s': %s", path, errno.Error())
	}
	return fmt.Errorf("cannot open '%s': %v", path, err)
}
