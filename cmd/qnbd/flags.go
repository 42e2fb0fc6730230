// The command line: qemu-nbd's options (same letters, long names and checks, so that a
// qemu-nbd script runs unchanged) plus qnbd's own, parsed into a config.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/qnbd/qnbd/internal/tlscreds"
	"github.com/qnbd/qnbd/server"
)

// specs are qemu-nbd's options (its getopt string "hVb:o:p:rsnc:dvk:e:f:tl:x:T:D:AB:L" and
// long table) followed by qnbd's own.
var specs = []optSpec{
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
	// qnbd's own.
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
	snapshot     bool     // -s: writes go to a temporary overlay (qcow2 wiring pending)
	loadSnapshot string   // -l: internal snapshot to export read-only (qcow2 wiring pending)
	forceShare   bool     // -U: take image locks that share everything (read-only exports)
	offset       uint64   // -o: the export starts this far into the image (above the format)
	bitmaps      []string // -B (reversed, as qemu-nbd keeps them) or bitmap= of --export
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

// parseArgs turns the command line into a config, applying qemu-nbd's checks.
func parseArgs(args []string) (*config, error) {
	opts, operands, err := getopt(specs, args)
	if err != nil {
		return nil, &usageError{msg: err.Error(), hint: hintGetopt}
	}
	cfg := &config{shared: 1, cache: cacheWriteback, aio: "threads",
		handshakeLimit: server.DefaultHandshakeLimit, log: logConfig{level: slog.LevelError},
		tls: &tlsSetup{}}
	top := exportConfig{}
	var exportName *string
	var extra []extraExport
	seen := map[string]bool{}
	once := func(key, msg string) error {
		if seen[key] {
			return usagef("%s", msg)
		}
		seen[key] = true
		return nil
	}
	for _, o := range opts {
		v := o.val
		switch o.spec.name() {
		case "help":
			cfg.help = true
		case "version":
			cfg.version = true
		case "bind":
			cfg.bind = v
		case "port":
			cfg.port = v
		case "socket":
			if !filepath.IsAbs(v) {
				return nil, usagef("socket path must be absolute")
			}
			cfg.socket = v
		case "offset":
			n, ok, err := parseOffset(v)
			if !ok {
				return nil, invalidOffset(v)
			}
			if err != nil {
				return nil, err
			}
			top.offset = n
		case "read-only":
			top.readOnly = true
		case "allocation-depth":
			cfg.allocDepth = true
		case "bitmap":
			// qemu-nbd prepends each -B to its list: the contexts come out in reverse order.
			top.bitmaps = append([]string{v}, top.bitmaps...)
		case "connect", "disconnect":
			return nil, usagef("-c/--connect and -d/--disconnect (the kernel /dev/nbd client) are not supported by qnbd; use nbd-client")
		case "list":
			cfg.list = true
		case "snapshot":
			top.snapshot = true
		case "load-snapshot":
			// "-l ... export it as an read-only device"
			top.loadSnapshot = v
			top.readOnly = true
		case "nocache", "cache":
			if err := once("cache", "-n and --cache can only be specified once"); err != nil {
				return nil, err
			}
			if o.spec.long == "nocache" {
				v = "none"
			}
			m, err := parseCache(v)
			if err != nil {
				return nil, err
			}
			cfg.cache = m
		case "aio":
			if err := once("aio", "--aio can only be specified once"); err != nil {
				return nil, err
			}
			switch v {
			case "threads", "native", "io_uring":
				cfg.aio = v
			default:
				return nil, usagef("Invalid aio mode '%s'", v)
			}
		case "discard":
			if err := once("discard", "--discard can only be specified once"); err != nil {
				return nil, err
			}
			switch v {
			case "ignore", "off":
				cfg.discard = false
			case "unmap", "on":
				cfg.discard = true
			default:
				return nil, usagef("Invalid discard mode `%s'", v)
			}
		case "detect-zeroes":
			switch v {
			case "off":
				cfg.detectZeroes = server.DetectZeroesOff
			case "on":
				cfg.detectZeroes = server.DetectZeroesOn
			case "unmap":
				// Checked here, as qemu-nbd checks it: --discard=unmap must come first.
				if !cfg.discard {
					return nil, usagef("setting detect-zeroes to unmap is not allowed without setting discard operation to unmap")
				}
				cfg.detectZeroes = server.DetectZeroesUnmap
			default:
				return nil, usagef("Failed to parse detect_zeroes mode: Parameter 'detect-zeroes' does not accept value '%s'", v)
			}
		case "shared":
			n, err := strconv.ParseInt(v, 0, 32)
			if err != nil || n < 0 {
				return nil, usagef("Invalid shared device number '%s'", v)
			}
			cfg.shared = int(n)
		case "format":
			switch v {
			case "raw", "qcow2":
				top.format = v
			default:
				return nil, usagef("Unknown format '%s' (qnbd supports raw and qcow2)", v)
			}
		case "persistent":
			cfg.persistent = true
		case "verbose":
			cfg.verbose = true
		case "object":
			if err := cfg.tls.addObject(v); err != nil {
				cfg.tls.close()
				return nil, err
			}
		case "tls-creds":
			cfg.tls.credsID = v
		case "tls-authz":
			cfg.tls.authzID = v
		case "tls-hostname":
			cfg.tls.hostname = v
		case "image-opts":
			return nil, usagef("--image-opts is not supported by qnbd")
		case "selinux-label":
			return nil, usagef("SELinux support not enabled in this binary")
		case "trace":
			// Accepted and ignored: qnbd has no QEMU trace points.
		case "export-name":
			if len(v) > server.MaxStringLen {
				return nil, usagef("export name '%s' too long", v)
			}
			exportName = &v
		case "description":
			if len(v) > server.MaxStringLen {
				return nil, usagef("export description '%s' too long", v)
			}
			top.description = v
		case "fork":
			cfg.fork = true
		case "pid-file":
			cfg.pidFile = v
		case "metrics-addr":
			cfg.metricsAddr = v
		case "metrics-web-config":
			cfg.metricsWeb = v
		case "handshake-limit":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return nil, usagef("Invalid handshake limit '%s' (seconds, 0 for none)", v)
			}
			cfg.handshakeLimit = time.Duration(n) * time.Second
		case "log-level":
			l, err := parseLogLevel(v)
			if err != nil {
				return nil, err
			}
			cfg.log.level, cfg.log.chosen = l, true
		case "log-format":
			j, err := parseLogFormat(v)
			if err != nil {
				return nil, err
			}
			if !cfg.log.chosen {
				cfg.log.level = slog.LevelInfo // asking for a format is asking for a log
			}
			cfg.log.json, cfg.log.chosen = j, true
		case "force-share":
			top.forceShare = true
		case "export":
			e, err := parseExportSpec(v)
			if err != nil {
				return nil, err
			}
			extra = append(extra, e)
		}
	}
	if cfg.help || cfg.version {
		return cfg, nil
	}
	if cfg.metricsWeb != "" && cfg.metricsAddr == "" {
		return nil, usagef("--metrics-web-config needs --metrics-addr")
	}
	if cfg.list {
		perDevice := exportName != nil || top.description != "" || top.offset != 0 || top.format != "" ||
			top.loadSnapshot != "" || cfg.allocDepth || seen["aio"] || seen["discard"] || seen["cache"] ||
			len(extra) > 0 || top.forceShare
		if err := listChecks(cfg, len(operands), perDevice); err != nil {
			return nil, err
		}
		spec, err := cfg.tls.checkList()
		if err != nil {
			cfg.tls.close()
			return nil, err
		}
		cfg.listTLS = spec
		return cfg, nil
	}
	if cfg.aio == "native" && cfg.cache != cacheNone && cfg.cache != cacheDirectsync {
		// Not a usage error in qemu-nbd either: its block layer refuses the open.
		return nil, errors.New("aio=native was specified, but it requires cache.direct=on, which was not specified")
	}
	switch {
	case len(operands) > 1, len(operands) == 0 && len(extra) == 0:
		return nil, &usageError{msg: "Invalid number of arguments", hint: hintArgs}
	case len(operands) == 1:
		top.file = operands[0]
		if exportName != nil {
			top.name = *exportName
		}
		cfg.exports = append(cfg.exports, top)
	case exportName != nil || top.description != "" || top.snapshot || top.loadSnapshot != "":
		return nil, usagef("-x, -D, -s and -l apply to the FILE operand, which is missing")
	}
	for _, e := range extra {
		// -r and -f are defaults for --export images; their own options override them.
		if e.format == "" {
			e.format = top.format
		}
		if !e.roSet {
			e.readOnly = top.readOnly
		}
		e.forceShare = top.forceShare
		cfg.exports = append(cfg.exports, e.exportConfig)
	}
	for _, e := range cfg.exports {
		// QEMU refuses force-share on a writable image; with -s the image is only read.
		if e.forceShare && !e.readOnly && e.loadSnapshot == "" && !e.snapshot {
			return nil, usagef("'%s': %s", e.file, msgForceShareWritable)
		}
	}
	names := map[string]bool{}
	for _, e := range cfg.exports {
		if names[e.name] {
			return nil, usagef("two exports named '%s'", e.name)
		}
		names[e.name] = true
	}
	if err := cfg.tls.check(); err != nil {
		cfg.tls.close()
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

// extraExport is a parsed --export value.
type extraExport struct {
	exportConfig
	roSet bool
}

// parseExportSpec parses NAME=FILE[,format=raw|qcow2][,readonly=on|off][,description=TEXT]
// [,bitmap=B]... (each bitmap= offers one qemu:dirty-bitmap context, in the order given);
// a literal comma in FILE or TEXT is written ",," as in QEMU option strings.
func parseExportSpec(s string) (extraExport, error) {
	var e extraExport
	name, rest, ok := strings.Cut(s, "=")
	if !ok || rest == "" {
		return e, usagef("--export '%s': expected NAME=FILE[,format=...,readonly=on,description=...]", s)
	}
	if len(name) > server.MaxStringLen {
		return e, usagef("export name '%s' too long", name)
	}
	e.name = name
	fields := splitCommas(rest)
	e.file = fields[0]
	if e.file == "" {
		return e, usagef("--export '%s': missing FILE", s)
	}
	for _, f := range fields[1:] {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "format":
			if v != "raw" && v != "qcow2" {
				return e, usagef("--export '%s': unknown format '%s'", s, v)
			}
			e.format = v
		case "readonly", "read-only":
			b, err := parseOnOff(v)
			if err != nil {
				return e, usagef("--export '%s': readonly=%s: %v", s, v, err)
			}
			e.readOnly, e.roSet = b, true
		case "bitmap":
			if v == "" {
				return e, usagef("--export '%s': empty bitmap name", s)
			}
			e.bitmaps = append(e.bitmaps, v)
		case "description":
			if len(v) > server.MaxStringLen {
				return e, usagef("--export '%s': description too long", s)
			}
			e.description = v
		default:
			return e, usagef("--export '%s': unknown option '%s'", s, k)
		}
	}
	return e, nil
}

// splitCommas splits on single commas; ",," stands for a literal comma.
func splitCommas(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			out = append(out, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	return append(out, cur.String())
}

func parseOnOff(v string) (bool, error) {
	switch v {
	case "on", "yes", "true", "1":
		return true, nil
	case "off", "no", "false", "0":
		return false, nil
	}
	return false, errors.New("expected on or off")
}
