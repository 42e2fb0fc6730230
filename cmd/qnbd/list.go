// -L/--list: qemu-nbd's client mode. Connect to a server, list its exports with
// internal/nbdclient, print them as qemu-nbd 7.2 prints them (docs/qemu-nbd-fidelity.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/qnbd/qnbd/internal/nbdclient"
	"github.com/qnbd/qnbd/server"
)

// listTimeout bounds the whole listing: qemu-nbd has none, but a client that hangs forever
// on a silent server helps no one.
const listTimeout = 60 * time.Second

// flagNames are the transmission flags by bit, as qemu-nbd names them.
var flagNames = [...]string{
	1: "readonly", 2: "flush", 3: "fua", 4: "rotational", 5: "trim", 6: "zeroes",
	7: "df", 8: "multi", 9: "resize", 10: "cache", 11: "fast-zero",
}

// listChecks refuses what qemu-nbd refuses in list mode; perDevice says whether an option
// that configures the served image was given.
func listChecks(cfg *config, operands int, perDevice bool) error {
	switch {
	case operands > 0:
		return messageError("List mode is incompatible with a file name")
	case perDevice:
		return messageError("List mode is incompatible with per-device settings")
	case cfg.fork:
		return messageError("List mode is incompatible with forking")
	}
	return nil
}

// runList lists the exports of the server -k or -b/-p names and returns the exit status.
func runList(cfg *config, stdout, stderr io.Writer) int {
	var opts nbdclient.Options
	if cfg.listTLS != nil {
		// qemu-nbd checks the server's name against --tls-hostname, else -b (none with -k).
		host := cfg.tls.hostname
		if host == "" && cfg.socket == "" {
			host = cfg.bind
			if host == "" {
				host = "0.0.0.0"
			}
		}
		tc, err := clientTLS(cfg.listTLS, host)
		if err != nil {
			return fail(stderr, err)
		}
		opts.TLS = tc
	}
	conn, err := dialList(cfg)
	if err != nil {
		return fail(stderr, err)
	}
	defer conn.Close()
	if opts.TLS != nil && cfg.listTLS.VerifyPeer && opts.TLS.ServerName == "" {
		// What QEMU's certificate check says once the TLS handshake is done (measured over a
		// Unix socket without --tls-hostname).
		return fail(stderr, messageError("No hostname for certificate validation"))
	}
	conn.SetDeadline(time.Now().Add(listTimeout))
	exports, err := nbdclient.List(conn, opts)
	if err != nil {
		return fail(stderr, err)
	}
	printExports(stdout, exports)
	return 0
}

// printExports prints the list in qemu-nbd's format.
func printExports(w io.Writer, exports []nbdclient.Export) {
	fmt.Fprintf(w, "exports available: %d\n", len(exports))
	for _, x := range exports {
		fmt.Fprintf(w, " export: '%s'\n", x.Name)
		if x.Description != "" {
			fmt.Fprintf(w, "  description: %s\n", x.Description)
		}
		if x.HasInfo && x.Flags&server.FlagHasFlags != 0 {
			fmt.Fprintf(w, "  size:  %d\n", x.Size)
			fmt.Fprintf(w, "  flags: 0x%x (", uint16(x.Flags))
			for bit, name := range flagNames {
				if name != "" && x.Flags&(1<<bit) != 0 {
					fmt.Fprintf(w, " %s", name)
				}
			}
			fmt.Fprintf(w, " )\n")
		}
		if x.MinBlock != 0 {
			fmt.Fprintf(w, "  min block: %d\n  opt block: %d\n  max block: %d\n", x.MinBlock, x.OptBlock, x.MaxBlock)
		}
		if len(x.Contexts) > 0 {
			fmt.Fprintf(w, "  available meta contexts: %d\n", len(x.Contexts))
			for _, c := range x.Contexts {
				fmt.Fprintf(w, "   %s\n", c)
			}
		}
	}
}

// dialList connects as qemu-nbd does: to the Unix socket of -k, else to -b (default
// 0.0.0.0) port -p (default 10809), trying each address the name resolves to.
func dialList(cfg *config) (net.Conn, error) {
	if cfg.socket != "" {
		c, err := net.DialTimeout("unix", cfg.socket, listTimeout)
		if err != nil {
			return nil, messageError(fmt.Sprintf("Failed to connect to '%s': %s", cfg.socket, errnoText(err)))
		}
		return c, nil
	}
	host, port := cfg.bind, cfg.port
	if host == "" {
		host = "0.0.0.0"
	}
	if port == "" {
		port = "10809"
	}
	p, err := servicePort(port)
	if err != nil {
		return nil, messageError(fmt.Sprintf("address resolution failed for %s:%s: %s", host, port, "Servname not supported for ai_socktype"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), listTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		msg := "Temporary failure in name resolution"
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			msg = "Name or service not known"
		}
		return nil, messageError(fmt.Sprintf("address resolution failed for %s:%s: %s", host, port, msg))
	}
	for _, ip := range ips {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(p)), listTimeout); err == nil {
			return c, nil
		}
	}
	return nil, messageError(fmt.Sprintf("Failed to connect to '%s:%s': %s", host, port, errnoText(err)))
}

// servicePort reads a port as getaddrinfo does: a number (taken modulo 65536) or a service
// name.
func servicePort(port string) (int, error) {
	if n, err := strconv.ParseUint(port, 10, 64); err == nil {
		return int(uint16(n)), nil
	}
	return net.LookupPort("tcp", port)
}

// errnoText is C's strerror of the errno inside err (Go's text, capitalised), or err's own
// text.
func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		s := errno.Error()
		return strings.ToUpper(s[:1]) + s[1:]
	}
	return err.Error()
}
