// What an --image-opts string sets, checked key by key with qemu-nbd 7.2's messages
// (docs/image-opts.md): the driver and file, the cache and aio modes, read-only, raw's
// offset= and size=, backing=, and qcow2's metadata cache options.
package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/qnbd/qnbd/internal/qemunum"
)

// imageSettings is what one --image-opts string asks for.
type imageSettings struct {
	src      string // the string itself, which QEMU's messages quote
	driver   string // "qcow2", "raw", or "" to probe
	format   string // driver, or the probed format when driver is ""
	filename string
	aio      string // file.aio; "" leaves --aio's
	direct   *bool  // cache.direct; nil leaves --cache's
	noFlush  *bool  // cache.no-flush
	readOnly *bool
	window   *rawWindow // raw's offset= and size=
	noBack   bool       // backing="": no backing file
	cache    qcow2Cache
}

// rawWindow is raw's offset= and size= (hasSize false: to the end of the file).
type rawWindow struct {
	offset, size uint64
	hasSize      bool
}

// qcow2Cache is qcow2's metadata cache options, as qcow2.OpenOptions takes them.
type qcow2Cache struct {
	l2, refcount, combined, entry int64
	clean                         time.Duration
}

// blkOpenError is how qemu-nbd words a failure to open its image: src quoted, then why.
func blkOpenError(src, format string, args ...any) error {
	return messageError(fmt.Sprintf("Failed to blk_new_open '%s': ", src) + fmt.Sprintf(format, args...))
}

// otherQemuFormats are format drivers QEMU has and qnbd does not serve.
var otherQemuFormats = map[string]bool{
	"vmdk": true, "vdi": true, "vhdx": true, "vpc": true, "qed": true, "qcow": true, "luks": true,
	"parallels": true, "bochs": true, "cloop": true, "dmg": true, "vvfat": true, "file": true,
	"host_device": true, "host_cdrom": true, "nbd": true, "blkdebug": true, "copy-on-read": true,
	"null-co": true, "null-aio": true, "nfs": true, "ssh": true, "http": true, "https": true,
}

// parseImageSettings checks an --image-opts string and returns its settings; warnings that
// QEMU prints and goes on after are written to warn.
func parseImageSettings(src string, warn io.Writer) (*imageSettings, error) {
	if src == "" {
		return nil, blkOpenError(src, "Must specify either driver or file")
	}
	vals, order := lastValues(splitImageOpts(src, warn))
	s := &imageSettings{src: src, driver: vals["driver"], filename: vals["file.filename"]}
	if err := s.checkDriverAndFile(vals); err != nil {
		return nil, err
	}
	if _, err := os.Stat(s.filename); err != nil {
		return nil, blkOpenError(src, "Could not open '%s': %s", s.filename, strerror(err))
	}
	s.format = s.driver
	if s.format == "" {
		f, err := detectFormat(s.filename)
		if err != nil {
			return nil, err
		}
		s.format = f
	}
	var unknown error
	for _, k := range order {
		known, err := s.set(k, vals[k], warn)
		if err != nil {
			return nil, err
		}
		if !known && unknown == nil {
			unknown = s.unknownKey(k)
		}
	}
	return s, unknown
}

// checkDriverAndFile checks driver=, file=, file.driver= and file.filename=.
func (s *imageSettings) checkDriverAndFile(vals map[string]string) error {
	switch d := s.driver; {
	case d == "", d == "qcow2", d == "raw":
	case otherQemuFormats[d]:
		return blkOpenError(s.src, "driver '%s' is not supported by qnbd (raw and qcow2 only)", d)
	default:
		return blkOpenError(s.src, "Unknown driver '%s'", d)
	}
	if f, ok := vals["file"]; ok {
		// A node name or a JSON object in QEMU; qnbd has neither.
		return blkOpenError(s.src, "Cannot find device='%s' nor node-name='%s'", f, f)
	}
	if d, ok := vals["file.driver"]; ok && d != "file" {
		if otherQemuFormats[d] {
			return blkOpenError(s.src, "file.driver '%s' is not supported by qnbd (only 'file')", d)
		}
		return blkOpenError(s.src, "Unknown driver '%s'", d)
	}
	if _, ok := vals["file.filename"]; ok {
		return nil
	}
	for k := range vals {
		if strings.HasPrefix(k, "file.") {
			return blkOpenError(s.src, "The 'file' block driver requires a file name")
		}
	}
	return blkOpenError(s.src, "A block device must be specified for \"file\"")
}

// strerror is C's strerror text of an error's errno, else Go's text.
func strerror(err error) string {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return err.Error()
	}
	t := errno.Error()
	return strings.ToUpper(t[:1]) + t[1:]
}

// qemuKeysNotServed are options QEMU's qcow2, raw or file drivers take that qnbd does not
// implement; each is refused by name rather than called unknown. A trailing dot is a prefix.
var qemuKeysNotServed = []string{"lazy-refcounts", "pass-discard-request", "pass-discard-snapshot",
	"pass-discard-other", "overlap-check", "overlap-check.", "data-file", "data-file.", "encrypt.",
	"discard", "detect-zeroes", "force-share", "auto-read-only", "backing.", "discard-no-unref",
	"file.locking", "file.aio-max-batch", "file.pr-manager", "file.drop-cache",
	"file.x-check-cache-dropped", "file.cache.", "file.discard", "file.detect-zeroes"}

// unknownKey is the refusal of key k: qnbd's when QEMU knows k, QEMU's when it does not.
func (s *imageSettings) unknownKey(k string) error {
	for _, q := range qemuKeysNotServed {
		if k == q || strings.HasSuffix(q, ".") && strings.HasPrefix(k, q) {
			return blkOpenError(s.src, "option '%s' is not supported by qnbd", k)
		}
	}
	if p, ok := strings.CutPrefix(k, "file."); ok {
		return blkOpenError(s.src, "Block protocol 'file' doesn't support the option '%s'", p)
	}
	return blkOpenError(s.src, "Block format '%s' does not support the option '%s'", s.format, k)
}

// qapiBool is qapi_bool_parse, which QEMU's boolean options use.
func qapiBool(v string) (b, ok bool) {
	switch v {
	case "on", "yes", "true", "y":
		return true, true
	case "off", "no", "false", "n":
		return false, true
	}
	return false, false
}

// optionSize reads a size option as QemuOpts does.
func (s *imageSettings) optionSize(k, v string, warn io.Writer) (uint64, error) {
	n, warnHex, err := qemunum.Strtosz(v)
	switch {
	case errors.Is(err, qemunum.ErrRange):
		return 0, blkOpenError(s.src, "Value '%s' is out of range for parameter '%s'", v, k)
	case err != nil:
		return 0, blkOpenError(s.src, "Parameter '%s' expects a non-negative number below 2^64\n"+
			"Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"+
			"and exabytes, respectively.", k)
	case warnHex:
		fmt.Fprintf(warn, "%s: warning: Using a multiplier suffix on hex numbers is deprecated: %s\n", progName, v)
	}
	return n, nil
}

// cacheBytes turns a cache size into qcow2.OpenOptions' form: 0 is "not set" there, so an
// explicit 0 becomes 1 byte, which resolves to the same sizes.
func cacheBytes(n uint64) int64 {
	return int64(min(max(n, 1), math.MaxInt64))
}
