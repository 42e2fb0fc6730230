// One option at a time: what each of qemu-nbd's options (and qnbd's own) sets, with the
// checks qemu-nbd makes as it reads them.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"time"

	"github.com/qnbd/qnbd/server"
)

// cmdline is parseArgs's work in progress: the config, and what only the whole command line
// settles.
type cmdline struct {
	cfg        *config
	top        exportConfig    // the FILE operand's export
	exportName *string         // -x; nil when not given
	extra      []extraExport   // --export
	seen       map[string]bool // options qemu-nbd takes only once
	imageOpts  bool            // --image-opts
}

func newCmdline() *cmdline {
	return &cmdline{
		cfg: &config{shared: 1, cache: cacheWriteback, aio: "threads",
			handshakeLimit: server.DefaultHandshakeLimit, log: logConfig{level: slog.LevelError},
			tls: &tlsSetup{}},
		seen: map[string]bool{},
	}
}

// once refuses an option's second appearance with msg, as qemu-nbd refuses some.
func (c *cmdline) once(key, msg string) error {
	if c.seen[key] {
		return usagef("%s", msg)
	}
	c.seen[key] = true
	return nil
}

// optionGroup applies the options of one kind; handled is false for an option of another.
type optionGroup func(c *cmdline, name, v string) (handled bool, err error)

// errNoHandler is a programming error: an option in specs that no group applies.
var errNoHandler = errors.New("qnbd: internal error: an option has no handler")

// apply applies the option called name (its long name, or its letter) with argument v. A new
// option goes into specs (flags.go) and into the group of its kind here.
func (c *cmdline) apply(name, v string) error {
	for _, g := range []optionGroup{(*cmdline).serverOption, (*cmdline).exportOption,
		(*cmdline).ioOption, (*cmdline).tlsOption, (*cmdline).ownOption} {
		if handled, err := g(c, name, v); handled || err != nil {
			return err
		}
	}
	return fmt.Errorf("%w: --%s", errNoHandler, name)
}

// serverOption: where and how long to serve, and the modes qnbd refuses.
func (c *cmdline) serverOption(name, v string) (bool, error) {
	cfg := c.cfg
	switch name {
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
			return true, usagef("socket path must be absolute")
		}
		cfg.socket = v
	case "shared":
		n, err := strconv.ParseInt(v, 0, 32)
		if err != nil || n < 0 {
			return true, usagef("Invalid shared device number '%s'", v)
		}
		cfg.shared = int(n)
	case "persistent":
		cfg.persistent = true
	case "verbose":
		cfg.verbose = true
	case "fork":
		cfg.fork = true
	case "pid-file":
		cfg.pidFile = v
	case "list":
		cfg.list = true
	case "trace":
		// Accepted and ignored: qnbd has no QEMU trace points.
	case "connect", "disconnect":
		return true, usagef("-c/--connect and -d/--disconnect (the kernel /dev/nbd client) are not supported by qnbd; use nbd-client")
	case "selinux-label":
		return true, usagef("SELinux support not enabled in this binary")
	default:
		return false, nil
	}
	return true, nil
}

// exportOption: the FILE operand's export.
func (c *cmdline) exportOption(name, v string) (bool, error) {
	switch name {
	case "offset":
		n, ok, err := parseOffset(v)
		if !ok {
			return true, invalidOffset(v)
		}
		c.top.offset = n
		return true, err
	case "read-only":
		c.top.readOnly = true
	case "snapshot":
		c.top.snapshot = true
	case "load-snapshot":
		// "-l ... export it as an read-only device"
		c.top.loadSnapshot, c.top.readOnly = v, true
	case "format":
		if v != "raw" && v != "qcow2" {
			return true, usagef("Unknown format '%s' (qnbd supports raw and qcow2)", v)
		}
		c.top.format = v
	case "export-name":
		if len(v) > server.MaxStringLen {
			return true, usagef("export name '%s' too long", v)
		}
		c.exportName = &v
	case "description":
		if len(v) > server.MaxStringLen {
			return true, usagef("export description '%s' too long", v)
		}
		c.top.description = v
	case "allocation-depth":
		c.cfg.allocDepth = true
	case "bitmap":
		// qemu-nbd prepends each -B to its list: the contexts come out in reverse order.
		c.top.bitmaps = append([]string{v}, c.top.bitmaps...)
	case "image-opts":
		c.imageOpts = true
	default:
		return false, nil
	}
	return true, nil
}

// ioOption: the block layer's settings, --cache, --aio, --discard, --detect-zeroes.
func (c *cmdline) ioOption(name, v string) (bool, error) {
	cfg := c.cfg
	switch name {
	case "nocache", "cache":
		if err := c.once("cache", "-n and --cache can only be specified once"); err != nil {
			return true, err
		}
		if name == "nocache" {
			v = "none"
		}
		m, err := parseCache(v)
		cfg.cache = m
		return true, err
	case "aio":
		if err := c.once("aio", "--aio can only be specified once"); err != nil {
			return true, err
		}
		if v != "threads" && v != "native" && v != "io_uring" {
			return true, usagef("Invalid aio mode '%s'", v)
		}
		cfg.aio = v
	case "discard":
		if err := c.once("discard", "--discard can only be specified once"); err != nil {
			return true, err
		}
		d, err := parseDiscard(v)
		cfg.discard = d
		return true, err
	case "detect-zeroes":
		dz, err := parseDetectZeroes(v, cfg.discard)
		cfg.detectZeroes = dz
		return true, err
	default:
		return false, nil
	}
	return true, nil
}

// tlsOption: --object and the TLS options (tls.go).
func (c *cmdline) tlsOption(name, v string) (bool, error) {
	ts := c.cfg.tls
	switch name {
	case "object":
		return true, ts.addObject(v)
	case "tls-creds":
		ts.credsID = v
	case "tls-authz":
		ts.authzID = v
	case "tls-hostname":
		ts.hostname = v
	default:
		return false, nil
	}
	return true, nil
}

// ownOption: qnbd's own options.
func (c *cmdline) ownOption(name, v string) (bool, error) {
	cfg := c.cfg
	switch name {
	case "metrics-addr":
		cfg.metricsAddr = v
	case "metrics-web-config":
		cfg.metricsWeb = v
	case "handshake-limit":
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return true, usagef("Invalid handshake limit '%s' (seconds, 0 for none)", v)
		}
		cfg.handshakeLimit = time.Duration(n) * time.Second
	case "log-level":
		l, err := parseLogLevel(v)
		cfg.log.level, cfg.log.chosen = l, true
		return true, err
	case "log-format":
		j, err := parseLogFormat(v)
		if !cfg.log.chosen {
			cfg.log.level = slog.LevelInfo // asking for a format is asking for a log
		}
		cfg.log.json, cfg.log.chosen = j, true
		return true, err
	case "force-share":
		c.top.forceShare = true
	case "export":
		e, err := parseExportSpec(v)
		c.extra = append(c.extra, e)
		return true, err
	default:
		return false, nil
	}
	return true, nil
}

// parseDiscard reads --discard as QEMU's bdrv_parse_discard_flags.
func parseDiscard(v string) (bool, error) {
	switch v {
	case "ignore", "off":
		return false, nil
	case "unmap", "on":
		return true, nil
	}
	return false, usagef("Invalid discard mode `%s'", v)
}

// parseDetectZeroes reads --detect-zeroes; unmap needs --discard=unmap given before it, as
// qemu-nbd checks it when it reads the option.
func parseDetectZeroes(v string, discard bool) (server.DetectZeroes, error) {
	switch v {
	case "off":
		return server.DetectZeroesOff, nil
	case "on":
		return server.DetectZeroesOn, nil
	case "unmap":
		if !discard {
			return 0, usagef("setting detect-zeroes to unmap is not allowed without setting discard operation to unmap")
		}
		return server.DetectZeroesUnmap, nil
	}
	return 0, usagef("Failed to parse detect_zeroes mode: Parameter 'detect-zeroes' does not accept value '%s'", v)
}
