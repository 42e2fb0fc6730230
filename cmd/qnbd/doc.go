// Command qnbd serves raw and qcow2 disk images over NBD. Its command line is qemu-nbd's, so a
// script written for qemu-nbd runs unchanged: the same short and long options (getopt_long
// rules: grouped short flags, --opt=val and --opt val, unique prefixes, operands anywhere),
// the same defaults (port 10809 on 0.0.0.0, export name "", one shared connection, exit when
// the last client leaves unless -t), the same checks and, where they matter, the same
// messages, and on stderr the same lines for failed clients (logging.go prints what the
// server reports through server.Config.ClientErrors, under argv[0]'s basename as QEMU does;
// qnbd's own slog log is --log-level/--log-format, errors only by default). Options qnbd
// cannot honour (-c/-d, -B, TLS-PSK) are refused with one line. qnbd adds --export
// NAME=FILE[,...] for more images, --metrics-addr, --metrics-web-config, --handshake-limit,
// --log-level, --log-format and -U/--force-share. Images are locked as qemu-nbd locks them
// (lock.go, internal/imagelock),
// so qnbd, qemu-nbd, qemu-img and QEMU refuse to write an image another of them writes.
//
// Layout: flags.go, options.go and finish.go turn arguments into a config (getopt.go parses
// with internal/getopt); imageopts.go, imagesettings.go, imagekeys.go and imageopen.go read
// an --image-opts string at open time (docs/image-opts.md); setup.go opens what serve needs
// and tears it down on one path; backend.go's openBackend picks
// the backend by format (raw through internal/rawfile; qcow2, and -s overlays of either, in
// qcow2.go through internal/qcow2export); offset.go applies -o above the format
// (internal/offsetexport); list.go and listtls.go are -L, qemu-nbd's client mode
// (internal/nbdclient); metrics.go runs --metrics-addr and hands out the
// per-export hooks; version.go holds the -ldflags version; listen.go opens TCP, Unix or
// systemd-activated sockets; fork.go implements --fork with a readiness pipe; tls.go creates
// the --object objects (internal/qemuobj, internal/tlscreds, internal/authz) and wires
// --tls-creds and --tls-authz (docs/tls.md); run.go wires config to server.Server and stops
// cleanly on SIGTERM/SIGINT, and on SIGHUP unless TLS is on, when SIGHUP reloads the
// credentials instead (stop accepting, finish requests in flight, flush, close the images,
// which clears a qcow2 dirty bit, exit 0).
package main
