// What the server prints on stderr: qemu-nbd's own lines ("qemu-nbd: option negotiation
// failed: ..."), always, under the program's name as QEMU does (its basename of argv[0]), and
// qnbd's structured log (log/slog), chosen with --log-level and --log-format.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/qnbd/qnbd/server"
)

// progName prefixes qemu-style messages. QEMU uses the basename of argv[0], so qnbd
// installed as qemu-nbd prints "qemu-nbd:" as qemu-nbd does.
var progName = func() string {
	if len(os.Args) > 0 && os.Args[0] != "" {
		return filepath.Base(os.Args[0])
	}
	return "qnbd"
}()

// argv0 is the program as invoked, which qemu-nbd's pointer to --help names.
func argv0() string {
	if len(os.Args) > 0 && os.Args[0] != "" {
		return os.Args[0]
	}
	return "qnbd"
}

// logConfig is --log-level and --log-format.
type logConfig struct {
	level  slog.Level
	json   bool
	chosen bool // either flag was given
}

// parseLogLevel reads --log-level.
func parseLogLevel(v string) (slog.Level, error) {
	switch v {
	case "error":
		return slog.LevelError, nil
	case "warn":
		return slog.LevelWarn, nil
	case "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	}
	return 0, usagef("Invalid log level '%s' (error, warn, info or debug)", v)
}

// parseLogFormat reads --log-format: true for JSON.
func parseLogFormat(v string) (bool, error) {
	switch v {
	case "text":
		return false, nil
	case "json":
		return true, nil
	}
	return false, usagef("Invalid log format '%s' (text or json)", v)
}

// newLogger is qnbd's structured log on w. By default only errors (a panic recovered while
// serving a client) are logged, so that a healthy server prints what qemu-nbd prints.
func newLogger(c logConfig, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.level}
	if c.json {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// clientErrorPrinter prints each server.ClientError as qemu-nbd does, one line each.
func clientErrorPrinter(w io.Writer) func(*server.ClientError) {
	var mu sync.Mutex
	return func(e *server.ClientError) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, "%s: %s\n", progName, e.Error())
	}
}
