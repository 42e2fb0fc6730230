// The command line: qemu-nbd's options (same letters, long names and checks, so that a
// qemu-nbd script runs unchanged) plus qnbd's own, parsed into a config.
package main

import (
	"fmt"
	"time"

	"github.com/qnbd/qnbd/internal/tlscreds"
	"github.com/qnbd/qnbd/server"
)

// specs are qemu-nbd's options (its getopt string "hVb:o:p:rsnc:dvk:e:f:tl:x:T:D:AB:L" and
// long table, in its order) followed by qnbd's own.
var specs = append(qemuSpecs, ownSpecs...)

// qemuSpecs are qemu-nbd 7.2's options.
var qemuSpecs = []optSpec{
	{'h', "help", false},
	{'V', "version", false},
	{'b', "bind", true},
	{'p', "port", true},
	{'k', "socket", true},
	{'o', "offset", true},
	{'r', "read-only", false},
	{'A', "allocation-depth", false},
	{'B', "bitmap", true},
	{'c', "connect", true},
	{'d', "disconnect", false},
	{'L', "list", false},
	{'s', "snapshot", false},
	{'l', "load-snapshot", true},
	{'n', "nocache", false},
	{0, "cache", true},
	{0, "aio", true},
	{0, "discard", true},
	{0, "detect-zeroes", true},
	{'e', "shared", true},
	{'f', "format", true},
	{'t', "persistent", false},
	{'v', "verbose", false},
	{0, "object", true},
	{'x', "export-name", true},
	{'D', "description", true},
	{0, "tls-creds", true},
	{0, "tls-hostname", true},
	{0, "tls-authz", true},
	{0, "image-opts", false},
	{'T', "trace", true},
	{0, "fork", false},
	{0, "pid-file", true},
	{0, "selinux-label", true},
}

// ownSpecs are qnbd's additions. An abbreviation matches them only when it matches none of
// qemu-nbd's, so that "--h" is still --help and "--e" still --export-name.
var ownSpecs = []optSpec{
	{0, "metrics-addr", true},
	{0, "metrics-web-config", true},
	{0, "handshake-limit", true},
	{0, "log-level", true},
	{0, "log-format", true},
	{0, "export", true},
	{'U', "force-share", false},
}

// cacheMode is qemu's --cache setting.
type cacheMode string

const (
	cacheWriteback    cacheMode = "writeback"
	cacheWritethrough cacheMode = "writethrough"
	cacheNone         cacheMode = "none"
	cacheDirectsync   cacheMode = "directsync"
	cacheUnsafe       cacheMode = "unsafe"
)

// exportConfig is one image to serve.
type exportConfig struct {
	name         string
	file         string
	format       string // "", "raw" or "qcow2"; "" probes
	description  string
	readOnly     bool
	snapshot     bool             // -s: writes go to a temporary overlay (qcow2 wiring pending)
	loadSnapshot string           // -l: internal snapshot to export read-only (qcow2 wiring pending)
	forceShare   bool             // -U: take image locks that share everything (read-only exports)
	offset       uint64           // -o: the export starts this far into the image (above the format)
	imageOpts    bool             // --image-opts: file is a QEMU option string (imageopts.go)
	opts         *imageOptsExport // what the option string set, once applied (imageopen.go)
	bitmaps      []string         // -B (reversed, as qemu-nbd keeps them) or bitmap= of --export
}

// config is everything the command line asks for.
type config struct {
	help, version bool

	exports []exportConfig

	socket     string // -k
	bind, port string // -b, -p ("" when not given)
	persistent bool   // -t
	shared     int    // -e: max connections, 0 = unlimited

	cache        cacheMode
	aio          string
	discard      bool // --discard=unmap
	detectZeroes server.DetectZeroes
	allocDepth   bool // -A

	fork    bool
	pidFile string
	verbose bool
	log     logConfig
	list    bool           // -L: list a server's exports instead of serving
	listTLS *tlscreds.Spec // -L with --tls-creds: the client credentials

	metricsAddr    string
	metricsWeb     string
	handshakeLimit time.Duration // 0 = none

	tls *tlsSetup // --object, --tls-creds, --tls-authz, --tls-hostname
}

// usageError is a command-line mistake. qemu-nbd prints most as one line; hint says when it
// adds its "Try `qemu-nbd --help'" line.
type usageError struct {
	msg  string
	hint usageHint
}

// usageHint is how qemu-nbd points at --help after a usage error.
type usageHint uint8

const (
	hintNone   usageHint = iota
	hintArgs             // "Try `ARGV0 --help' for more information." (wrong operand count)
	hintGetopt           // the same line with the program prefix, after a getopt error
)

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// parseArgs turns the command line into a config, applying qemu-nbd's checks in its order:
// each option as it comes (options.go), then the checks that need the whole line
// (finish.go).
func parseArgs(args []string) (*config, error) {
	opts, operands, err := parseOptions(specs, args)
	if err != nil {
		return nil, &usageError{msg: err.Error(), hint: hintGetopt}
	}
	c := newCmdline()
	for _, o := range opts {
		if err = c.apply(o.spec.name(), o.val); err != nil {
			break
		}
	}
	var cfg *config
	if err == nil {
		cfg, err = c.finish(operands)
	}
	if err != nil {
		c.cfg.tls.close()
		return nil, err
	}
	return cfg, nil
}

func parseCache(v string) (cacheMode, error) {
	switch v {
	case "none", "off":
		return cacheNone, nil
	case "writeback":
		return cacheWriteback, nil
	case "writethrough":
		return cacheWritethrough, nil
	case "directsync":
		return cacheDirectsync, nil
	case "unsafe":
		return cacheUnsafe, nil
	}
	return "", usagef("Invalid cache mode `%s'", v)
}
