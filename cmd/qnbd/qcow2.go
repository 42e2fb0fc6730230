// Opening a qcow2 export: engine options from the command line (-r, -l, --cache,
// --discard), -s overlays, and the notice that a dirty image is being repaired.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/qnbd/qnbd/internal/qcow2export"
	"github.com/qnbd/qnbd/internal/qcow2lock"
	"github.com/qnbd/qnbd/qcow2"
	"github.com/qnbd/qnbd/server"
)

// openEnv is what opening an export needs besides its own settings.
type openEnv struct {
	// hooks receives the engine's events (the export's metrics); nil means none.
	hooks qcow2.Hooks
	log   *slog.Logger
	// stderr receives the lines qemu-nbd prints itself (the probed-raw warning); nil drops them.
	stderr io.Writer
}

// qcow2OpenOptions maps the command line to the engine's options, as qemu-nbd maps them to
// its block layer: --cache=none and directsync open the files with O_DIRECT, writethrough and
// directsync flush after every write, unsafe never syncs; -l exposes an internal snapshot,
// read-only.
func qcow2OpenOptions(e exportConfig, cfg *config, env openEnv) qcow2.OpenOptions {
	o := qcow2.OpenOptions{
		ReadOnly: e.readOnly || e.loadSnapshot != "",
		Snapshot: e.loadSnapshot,
		Hooks:    env.hooks,
		Logger:   env.log,
		// -B serves bitmaps of a read-only image too, and of its backing chain.
		ReadBitmaps: len(e.bitmaps) > 0,
	}
	if w := env.stderr; w != nil {
		// QEMU's open-time warnings (bitmaps it must ignore), hint line without a newline.
		o.Warn = func(warning, hint string) { fmt.Fprintf(w, "%s: warning: %s\n%s", progName, warning, hint) }
	}
	switch cfg.cache {
	case cacheNone:
		o.File.Direct = true
	case cacheDirectsync:
		o.File.Direct = true
		o.WriteThrough = true
	case cacheWritethrough:
		o.WriteThrough = true
	case cacheUnsafe:
		o.File.NoSync = true
	}
	if ie := e.opts; ie != nil {
		o.NoBacking = ie.noBacking
		o.L2CacheBytes, o.RefcountCacheBytes, o.CacheBytes = ie.cache.l2, ie.cache.refcount, ie.cache.combined
		o.L2CacheEntrySize, o.CacheCleanInterval = ie.cache.entry, ie.cache.clean
	}
	// Every host file (image, backing, data file) is locked as qemu-nbd locks it.
	o.Opener = qcow2lock.Opener(lockRequest(e), o.Opener)
	return o
}

// openQcow2 opens the qcow2 image at path and puts it behind a server.Backend. overlay names
// a temporary overlay (-s) that is path itself; it is unlinked once open.
func openQcow2(e exportConfig, path string, overlay bool, cfg *config, env openEnv) (server.Backend, io.Closer, error) {
	o := qcow2OpenOptions(e, cfg, env)
	if !o.ReadOnly && !overlay {
		noteDirty(path, env.log)
	}
	img, err := qcow2.Open(path, o)
	if overlay {
		// The open file keeps the overlay alive; nothing is left behind, even after a crash.
		os.Remove(path)
	}
	if err != nil {
		return nil, nil, openError(e.file, err)
	}
	b := qcow2export.New(img, qcow2export.Options{Discard: cfg.discard})
	return b, qcow2Closer{b: b, img: img}, nil
}

// noteDirty logs one line when a writable open is about to repair the image: the engine
// rebuilds the refcounts of an image whose dirty bit is set before serving it, which takes a
// while on a large image. An image that cannot be read is left for the open to report.
func noteDirty(path string, log *slog.Logger) {
	s, err := qcow2.OpenFile(path, qcow2.FileOptions{ReadOnly: true})
	if err != nil {
		return
	}
	defer s.Close()
	if h, err := qcow2.ReadHeader(s); err == nil && h.Dirty() {
		log.Warn("qnbd: image was not closed cleanly (dirty bit set); rebuilding its refcounts before serving", "image", path)
	}
}

// openSnapshotOverlay implements -s: a new qcow2 image in $TMPDIR whose backing file is the
// export's image (of the given format), served read-write while the image itself is only
// read. The overlay disappears when qnbd exits.
func openSnapshotOverlay(e exportConfig, format string, cfg *config, env openEnv) (server.Backend, io.Closer, error) {
	if e.loadSnapshot != "" {
		return nil, nil, fmt.Errorf("'%s': -s/--snapshot and -l/--load-snapshot cannot be combined", e.file)
	}
	abs, err := filepath.Abs(e.file)
	if err != nil {
		return nil, nil, openError(e.file, err)
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, nil, openError(e.file, err)
	}
	f, err := os.CreateTemp("", "qnbd-snapshot-*.qcow2")
	if err != nil {
		return nil, nil, fmt.Errorf("'%s': cannot create the -s overlay: %v", e.file, err)
	}
	name := f.Name()
	f.Close()
	if err := qcow2.Create(name, qcow2.CreateOptions{BackingFile: abs, BackingFormat: format}); err != nil {
		os.Remove(name)
		return nil, nil, openError(e.file, err)
	}
	return openQcow2(e, name, true, cfg, env)
}

// qcow2Closer closes an export's Backend, then its image (flush, clear the dirty bit, close
// the backing chain).
type qcow2Closer struct {
	b   *qcow2export.Backend
	img *qcow2.Image
}

func (c qcow2Closer) Close() error {
	return errors.Join(c.b.Close(), c.img.Close())
}
