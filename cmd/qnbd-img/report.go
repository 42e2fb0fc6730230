// Messages to the user: QEMU's error_report / warn_report / error_exit shapes, strerror texts.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/qnbd/qnbd/internal/imgfmt"
)

// app is one run of the command: where output goes and what the program is called (the
// prefix of every message, "qnbd-img" or whatever name it was invoked by).
type app struct {
	stdout, stderr io.Writer
	prog           string
}

// errorf prints "prog: message" on stderr (error_report).
func (a *app) errorf(format string, args ...any) {
	fmt.Fprintf(a.stderr, "%s: %s\n", a.prog, fmt.Sprintf(format, args...))
}

// warnf prints "prog: warning: message" on stderr (warn_report).
func (a *app) warnf(format string, args ...any) {
	fmt.Fprintf(a.stderr, "%s: warning: %s\n", a.prog, fmt.Sprintf(format, args...))
}

// usage is error_exit: the message, a pointer to --help, and exit status 1.
func (a *app) usage(format string, args ...any) int {
	a.errorf(format, args...)
	fmt.Fprintf(a.stderr, "Try '%s --help' for more information\n", a.prog)
	return 1
}

// qemuErrorf builds an error whose text is QEMU's message, printed verbatim.
func qemuErrorf(format string, args ...any) error {
	return imgfmt.QemuError(fmt.Sprintf(format, args...))
}

// strerror is the C library's text for the errno inside err (Go's errno strings are glibc's,
// lower-cased), or the error's own text when it carries none.
func strerror(err error) string {
	if text, ok := lockText(err); ok {
		return text
	}
	var qe imgfmt.QemuError
	if errors.As(err, &qe) {
		return string(qe)
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		s := en.Error()
		if s != "" && s[0] >= 'a' && s[0] <= 'z' {
			s = string(s[0]-'a'+'A') + s[1:]
		}
		return s
	}
	return err.Error()
}

// openErrorText is what follows "Could not open 'NAME': " when opening an image failed, in
// QEMU's words where QEMU has them.
func openErrorText(name string, err error) string {
	if text, ok := lockText(err); ok {
		return text
	}
	if depth, path, inner := imgfmt.BackingFailure(err); depth > 0 {
		return strings.Repeat("Could not open backing file: ", depth) + openErrorText(path, inner)
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Sprintf("Could not open '%s': %s", name, strerror(pe.Err))
	}
	return describe(err)
}

// describe turns an error into a message: QEMU's text when it has one, else the error.
func describe(err error) string {
	if text, ok := lockText(err); ok {
		return text
	}
	var qe imgfmt.QemuError
	if errors.As(err, &qe) {
		return string(qe)
	}
	return err.Error()
}

// openWarning prints an open-time warning of the engine and its hint line, which QEMU ends
// without a newline (error_printf).
func (a *app) openWarning(warning, hint string) {
	a.warnf("%s", warning)
	fmt.Fprint(a.stderr, hint)
}
