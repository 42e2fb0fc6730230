// Help and version text.
package main

import (
	"fmt"
	"io"
)

func printVersion(w io.Writer) {
	fmt.Fprintf(w, "qnbd %s (qemu-nbd compatible NBD server for raw and qcow2 images)\n", qnbdVersion())
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: qnbd [OPTIONS] FILE
       qnbd [OPTIONS] [FILE] --export NAME=FILE[,format=raw|qcow2][,readonly=on][,description=TEXT]...
Serve a disk image over NBD. The options are qemu-nbd's.

  -h, --help                display this help and exit
  -V, --version             output version information and exit
  -L, --list                list the exports of the server at -k or -b/-p, then exit
                            (over TLS with an endpoint=client tls-creds-x509 object,
                            --tls-creds and --tls-hostname)

Connection properties:
  -p, --port=PORT           port to listen on (default '10809')
  -b, --bind=IFACE          interface to bind to (default '0.0.0.0'; '::' for IPv6)
  -k, --socket=PATH         path to the unix socket (absolute)
  -e, --shared=NUM          device can be shared by NUM clients (default '1', 0 = unlimited)
  -t, --persistent          don't exit on the last connection
  -v, --verbose             accepted for qemu-nbd compatibility; prints nothing more
                            (use --log-level)
  -x, --export-name=NAME    expose export by name (default is empty string)
  -D, --description=TEXT    export a human-readable description
      --handshake-limit=N   drop clients that have not finished the handshake after N
                            seconds (default 10, 0 = no limit)

Exposing part of the image:
  -o, --offset=OFFSET       offset into the image (above its format)
  -A, --allocation-depth    expose the allocation depth (qemu:allocation-depth)
  -B, --bitmap=NAME         expose a persistent dirty bitmap (qemu:dirty-bitmap:NAME);
                            repeatable; --export takes bitmap=NAME

TLS (qemu-nbd's; see docs/tls.md):
      --object tls-creds-x509,id=ID,endpoint=server,dir=DIR[,verify-peer=on|off]
                            TLS credentials: DIR holds ca-cert.pem, server-cert.pem,
                            server-key.pem and optionally ca-crl.pem; verify-peer
                            (default on) requires a client certificate from the CA
      --object authz-simple,id=ID,identity=DN
      --object authz-list,id=ID,policy=deny|allow,rules.N.match=DN,
                            rules.N.policy=allow|deny[,rules.N.format=exact|glob]
      --object authz-list-file,id=ID,filename=ABS[,refresh=on|off]
                            who may connect (also as JSON: --object '{"qom-type":...}')
      --tls-creds=ID        require TLS with the credentials object ID
      --tls-authz=ID        allow only clients whose certificate DN object ID allows
  With TLS, SIGHUP reloads the credentials, the CRL and authz list files (a set that
  fails to load keeps the previous one). TLS 1.3 is preferred, 1.2 the minimum.

General purpose options:
      --fork                fork off the server process and exit the parent
                            once the server is running
      --pid-file=PATH       store the server's process ID in the given file
      --metrics-addr=HOST:PORT  serve Prometheus metrics there
      --metrics-web-config=FILE secure --metrics-addr with TLS, client certificates
                            and basic auth (Prometheus exporter-toolkit web config)
      --log-level=LEVEL     qnbd's own log on stderr: error (default), warn, info
                            or debug; qemu-nbd's messages are printed regardless
      --log-format=FORMAT   text (default) or json; alone it means --log-level=info
      --export NAME=FILE[,format=raw|qcow2][,readonly=on][,description=TEXT]
                            serve another image under NAME (repeatable; -r and -f
                            are its defaults; a literal comma is written ',,')

Block device options:
  -f, --format=FORMAT       set image format (raw, qcow2); probed when absent
  -r, --read-only           export read-only
  -s, --snapshot            serve with writes going to a temporary overlay (qcow2)
  -l, --load-snapshot=SNAPSHOT_PARAM
                            export an internal snapshot read-only (qcow2)
  -U, --force-share         with -r, -l or -s: lock the image without refusing
                            writers (qnbd's own, like qemu-img -U: the data may
                            change while served)
  -n, --nocache             disable host cache (same as --cache=none)
      --cache=MODE          none, writeback (default), writethrough, directsync, unsafe
      --aio=MODE            threads, native or io_uring (accepted; I/O uses threads)
      --discard=MODE        ignore (default) or unmap: pass TRIM to the image
      --detect-zeroes=MODE  off (default), on, or unmap: turn zero writes into
                            write-zeroes
      --image-opts          treat FILE as a full set of image options:
                            driver=qcow2|raw,file.filename=PATH[,file.driver=file]
                            [,file.aio=MODE][,cache.direct=on|off][,cache.no-flush=on|off]
                            [,read-only=on|off][,backing=][,offset=N,size=N (raw)]
                            [,l2-cache-size=S,refcount-cache-size=S,cache-size=S,
                            l2-cache-entry-size=S,cache-clean-interval=SECS (qcow2)]
                            (docs/image-opts.md)

Not supported (refused with a message): -c/--connect, -d/--disconnect,
--selinux-label,
tls-creds-psk, tls-creds-anon, priority=, passwordid=, and objects other than TLS
credentials and authz. -T/--trace is accepted and ignored.

Systemd socket activation (LISTEN_PID/LISTEN_FDS, fd 3) is used when present.
`)
}
