// The --image-opts keys qnbd honours, one at a time (docs/image-opts.md).
package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/qnbd/qnbd/internal/qemunum"
	"github.com/qnbd/qnbd/qcow2"
)

// set applies key k with value v; known is false for a key the image's driver does not take.
func (s *imageSettings) set(k, v string, warn io.Writer) (known bool, err error) {
	switch k {
	case "driver", "file.driver", "file.filename", "node-name", "file.node-name":
		return true, nil // checked already, or a name qnbd has no use for
	case "file.aio":
		if v != "threads" && v != "native" && v != "io_uring" {
			return true, blkOpenError(s.src, "invalid parameter value: %s", v)
		}
		s.aio = v
		return true, nil
	case "cache.direct", "cache.no-flush", "read-only":
		b, ok := qapiBool(v)
		if !ok {
			return true, blkOpenError(s.src, "Parameter '%s' expects 'on' or 'off'", k)
		}
		switch k {
		case "cache.direct":
			s.direct = &b
		case "cache.no-flush":
			s.noFlush = &b
		default:
			s.readOnly = &b
		}
		return true, nil
	case "backing":
		if v != "" {
			return true, blkOpenError(s.src, "Could not open backing file: Cannot find device='%s' nor node-name='%s'", v, v)
		}
		fmt.Fprintf(warn, "%s: warning: Use of \"backing\": \"\" is deprecated; use \"backing\": null instead\n", progName)
		s.noBack = true
		return true, nil
	}
	switch s.format {
	case "raw":
		return s.setRaw(k, v, warn)
	case "qcow2":
		return s.setQcow2(k, v, warn)
	}
	return false, nil
}

// setRaw applies raw's own keys, offset= and size=.
func (s *imageSettings) setRaw(k, v string, warn io.Writer) (bool, error) {
	if k != "offset" && k != "size" {
		return false, nil
	}
	n, err := s.optionSize(k, v, warn)
	if err != nil {
		return true, err
	}
	if s.window == nil {
		s.window = &rawWindow{}
	}
	if k == "offset" {
		s.window.offset = n
	} else {
		s.window.size, s.window.hasSize = n, true
	}
	return true, nil
}

// setQcow2 applies qcow2's metadata cache keys; qcow2.OpenOptions resolves them with QEMU's
// rules when the image is opened (qcow2/cachesize.go).
func (s *imageSettings) setQcow2(k, v string, warn io.Writer) (bool, error) {
	var dst *int64
	switch k {
	case "l2-cache-size":
		dst = &s.cache.l2
	case "refcount-cache-size":
		dst = &s.cache.refcount
	case "cache-size":
		dst = &s.cache.combined
	case "l2-cache-entry-size":
		dst = &s.cache.entry
	case "cache-clean-interval":
		return true, s.setCleanInterval(v)
	default:
		return false, nil
	}
	n, err := s.optionSize(k, v, warn)
	*dst = cacheBytes(n)
	return true, err
}

// setCleanInterval reads cache-clean-interval, a number of seconds (0: never clean).
func (s *imageSettings) setCleanInterval(v string) error {
	n, err := qemunum.ParseUint64(v, 0)
	switch {
	case errors.Is(err, qemunum.ErrRange):
		return blkOpenError(s.src, "Value '%s' out of range for parameter 'cache-clean-interval'", v)
	case err != nil:
		return blkOpenError(s.src, "Parameter 'cache-clean-interval' expects a number")
	case n > math.MaxUint32:
		return blkOpenError(s.src, "Cache clean interval too big")
	case n == 0:
		s.cache.clean = qcow2.NoCacheClean
	default:
		s.cache.clean = time.Duration(n) * time.Second
	}
	return nil
}
