// Opening an --image-opts export: its settings become a plain export's, then the raw window
// and -o stack above the format as in qemu-nbd (docs/image-opts.md).
package main

import (
	"io"
	"strings"

	"github.com/qnbd/qnbd/internal/offsetexport"
	"github.com/qnbd/qnbd/server"
)

// imageOptsExport is what an --image-opts string adds to an export.
type imageOptsExport struct {
	src       string     // the option string, quoted in qemu-nbd's messages
	window    *rawWindow // raw's offset= and size=
	noBacking bool       // backing=""
	cache     qcow2Cache // qcow2's metadata cache options
}

// applyImageOpts reads e's --image-opts string and returns e as a plain export (file and
// format from the string) with a copy of cfg whose cache mode the string may change. QEMU's
// checks, in its order: -f, the string, read-only=on on a writable export, aio=native
// without O_DIRECT.
func applyImageOpts(e exportConfig, cfg *config, warn io.Writer) (exportConfig, *config, error) {
	if e.format != "" {
		return e, cfg, messageError("--image-opts and -f are mutually exclusive")
	}
	if warn == nil {
		warn = io.Discard
	}
	s, err := parseImageSettings(e.file, warn)
	if err != nil {
		return e, cfg, err
	}
	if s.readOnly != nil && *s.readOnly && !e.readOnly {
		return e, cfg, blkOpenError(s.src, "Block node is read-only")
	}
	mode, err := s.cacheMode(cfg.cache)
	if err != nil {
		return e, cfg, err
	}
	aio := cfg.aio
	if s.aio != "" {
		aio = s.aio
	}
	if aio == "native" && mode != cacheNone && mode != cacheDirectsync {
		return e, cfg, blkOpenError(s.src, "%s.", msgAioNative)
	}
	if e.snapshot && (s.window != nil || s.noBack) {
		// The -s overlay would see the whole file, or the image with its backing file.
		return e, cfg, blkOpenError(s.src, "-s with offset=, size= or backing= is not supported by qnbd")
	}
	c := *cfg
	c.cache = mode
	e.file, e.format = s.filename, s.driver
	e.opts = &imageOptsExport{src: s.src, window: s.window, noBacking: s.noBack, cache: s.cache}
	return e, &c, nil
}

// cacheMode combines --cache (base) with cache.direct= and cache.no-flush= into the mode
// whose flags they are, as QEMU's options override the flags --cache sets.
func (s *imageSettings) cacheMode(base cacheMode) (cacheMode, error) {
	direct := base == cacheNone || base == cacheDirectsync
	noFlush := base == cacheUnsafe
	writethrough := base == cacheWritethrough || base == cacheDirectsync
	if s.direct != nil {
		direct = *s.direct
	}
	if s.noFlush != nil {
		noFlush = *s.noFlush
	}
	switch {
	case direct && noFlush:
		return "", blkOpenError(s.src, "cache.direct=on with cache.no-flush=on is not supported by qnbd")
	case noFlush:
		return cacheUnsafe, nil
	case direct && writethrough:
		return cacheDirectsync, nil
	case direct:
		return cacheNone, nil
	case writethrough:
		return cacheWritethrough, nil
	}
	return cacheWriteback, nil
}

// openImageOptsExport opens e, an --image-opts export already applied, and puts raw's window
// above it; failures are worded as qemu-nbd words them where qnbd knows QEMU's words.
func openImageOptsExport(e exportConfig, cfg *config, env openEnv) (server.Backend, io.Closer, error) {
	b, c, err := openBackend(e, cfg, env)
	if err != nil {
		if _, msg, ok := strings.Cut(err.Error(), "invalid cache option: "); ok {
			err = blkOpenError(e.opts.src, "%s", msg)
		} else if strings.Contains(err.Error(), "not a qcow2 image") {
			err = blkOpenError(e.opts.src, "Image is not in qcow2 format")
		}
		return nil, nil, err
	}
	w := e.opts.window
	if w == nil {
		return b, c, nil
	}
	var wb server.Backend
	if w.hasSize {
		wb, err = offsetexport.NewWindow(b, w.offset, w.size)
	} else {
		wb, err = offsetexport.New(b, w.offset)
	}
	if err != nil {
		c.Close()
		return nil, nil, blkOpenError(e.opts.src, "%v", err)
	}
	return wb, c, nil
}
