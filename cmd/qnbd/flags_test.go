// Table tests of the command line: qemu-nbd's spellings, defaults, checks and refusals.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/qnbd/qnbd/server"
)

func TestGetopt(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		opts     string // name=val;...
		operands string
		err      string
	}{
		{args: []string{"-rt", "img"}, opts: "read-only=;persistent=", operands: "img"},
		{args: []string{"-p10809", "-p", "123"}, opts: "port=10809;port=123"},
		{args: []string{"-tp", "7", "f"}, opts: "persistent=;port=7", operands: "f"},
		{args: []string{"--port=1", "--port", "2"}, opts: "port=1;port=2"},
		{args: []string{"--port", "-5"}, opts: "port=-5"}, // a required argument may start with '-'
		{args: []string{"img", "-r", "--", "-x"}, opts: "read-only=", operands: "img,-x"},
		{args: []string{"-"}, operands: "-"},
		{args: []string{"--pers", "--read"}, opts: "persistent=;read-only="},
		{args: []string{"--export=a=b"}, opts: "export=a=b"},         // exact match wins over --export-name
		{args: []string{"--export-n", "x"}, opts: "export-name=x"},   // unique prefix
		{args: []string{"--de", "x"}, err: "is ambiguous"},           // description, detect-zeroes
		{args: []string{"-q"}, err: "invalid option -- 'q'"},         // unknown short
		{args: []string{"--frobnicate"}, err: "unrecognized option"}, // unknown long
		{args: []string{"-p"}, err: "option requires an argument -- 'p'"},
		{args: []string{"--port"}, err: "option '--port' requires an argument"},
		{args: []string{"--read-only=yes"}, err: "doesn't allow an argument"},
	} {
		opts, operands, err := parseOptions(specs, tc.args)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		var got []string
		for _, o := range opts {
			got = append(got, o.spec.name()+"="+o.val)
		}
		if g := strings.Join(got, ";"); g != tc.opts {
			t.Errorf("%q: options %q, want %q", tc.args, g, tc.opts)
		}
		if g := strings.Join(operands, ","); g != tc.operands {
			t.Errorf("%q: operands %q, want %q", tc.args, g, tc.operands)
		}
	}
}

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		check func(*config) string // returns a complaint, or ""
	}{
		{[]string{"img"}, func(c *config) string {
			e := c.exports[0]
			return want(len(c.exports) == 1 && e.name == "" && e.file == "img" && !e.readOnly && e.format == "" &&
				c.shared == 1 && !c.persistent && c.cache == cacheWriteback && !c.discard &&
				c.detectZeroes == server.DetectZeroesOff && c.handshakeLimit == 10*time.Second &&
				c.bind == "" && c.port == "" && c.socket == "", "defaults")
		}},
		{[]string{"-f", "raw", "-r", "-x", "disk", "-D", "my disk", "-e", "0", "-t", "-A", "img"}, func(c *config) string {
			e := c.exports[0]
			return want(e.format == "raw" && e.readOnly && e.name == "disk" && e.description == "my disk" &&
				c.shared == 0 && c.persistent && c.allocDepth, "flags")
		}},
		{[]string{"--shared=0x10", "img"}, func(c *config) string { return want(c.shared == 16, "hex -e") }},
		{[]string{"-n", "img"}, func(c *config) string { return want(c.cache == cacheNone, "-n") }},
		{[]string{"--cache=none", "--aio=native", "img"}, func(c *config) string {
			return want(c.cache == cacheNone && c.aio == "native", "cache/aio")
		}},
		{[]string{"--cache=unsafe", "--aio=io_uring", "img"}, func(c *config) string {
			return want(c.cache == cacheUnsafe && c.aio == "io_uring", "cache/aio")
		}},
		{[]string{"--discard=unmap", "--detect-zeroes=unmap", "img"}, func(c *config) string {
			return want(c.discard && c.detectZeroes == server.DetectZeroesUnmap, "discard/detect-zeroes")
		}},
		{[]string{"-l", "snap1", "img"}, func(c *config) string {
			e := c.exports[0]
			return want(e.loadSnapshot == "snap1" && e.readOnly, "-l implies -r")
		}},
		{[]string{"-s", "img"}, func(c *config) string { return want(c.exports[0].snapshot, "-s") }},
		{[]string{"-k", "/run/x.sock", "img"}, func(c *config) string { return want(c.socket == "/run/x.sock", "-k") }},
		{[]string{"-b", "::", "-p", "10810", "img"}, func(c *config) string {
			return want(c.bind == "::" && c.port == "10810", "-b/-p")
		}},
		{[]string{"--fork", "--pid-file=/tmp/p", "-v", "img"}, func(c *config) string {
			return want(c.fork && c.pidFile == "/tmp/p" && c.verbose, "fork/pid/verbose")
		}},
		{[]string{"img"}, func(c *config) string {
			return want(c.log == logConfig{level: slog.LevelError}, "default log: errors, text")
		}},
		{[]string{"--log-format=json", "img"}, func(c *config) string {
			return want(c.log == logConfig{level: slog.LevelInfo, json: true, chosen: true}, "--log-format alone")
		}},
		{[]string{"--log-level=debug", "--log-format=text", "img"}, func(c *config) string {
			return want(c.log == logConfig{level: slog.LevelDebug, chosen: true}, "--log-level with --log-format")
		}},
		{[]string{"--metrics-addr", "127.0.0.1:9100", "--handshake-limit", "0", "img"}, func(c *config) string {
			return want(c.metricsAddr == "127.0.0.1:9100" && c.handshakeLimit == 0, "qnbd's own")
		}},
		{[]string{"--metrics-addr=:9810", "--metrics-web-config", "/etc/qnbd/web.yml", "img"}, func(c *config) string {
			return want(c.metricsWeb == "/etc/qnbd/web.yml", "--metrics-web-config")
		}},
		{[]string{"-T", "nbd_*", "-o", "0", "img"}, func(c *config) string { return want(true, "-T and -o 0 accepted") }},
		{[]string{"-r", "-f", "raw", "a.img", "--export", "b=b.img", "--export", "c=c,,x.img,format=qcow2,readonly=off,description=C,, disk"},
			func(c *config) string {
				if len(c.exports) != 3 {
					return fmt.Sprintf("%d exports", len(c.exports))
				}
				b, cc := c.exports[1], c.exports[2]
				return want(b.name == "b" && b.file == "b.img" && b.readOnly && b.format == "raw" &&
					cc.name == "c" && cc.file == "c,x.img" && !cc.readOnly && cc.format == "qcow2" &&
					cc.description == "C, disk", fmt.Sprintf("--export %+v %+v", b, cc))
			}},
		{[]string{"--export", "only=x.img"}, func(c *config) string {
			return want(len(c.exports) == 1 && c.exports[0].name == "only", "--export alone")
		}},
		{[]string{"--image-opts", "driver=raw,file.filename=x"}, func(c *config) string {
			e := c.exports[0]
			return want(e.imageOpts && e.file == "driver=raw,file.filename=x", "--image-opts keeps the string for the open")
		}},
		{[]string{"--help"}, func(c *config) string { return want(c.help, "help") }},
		{[]string{"-V", "--bogus-but-after"}, nil}, // getopt errors come first
	} {
		c, err := parseArgs(tc.args)
		if tc.check == nil {
			if err == nil {
				t.Errorf("%q: no error", tc.args)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if msg := tc.check(c); msg != "" {
			t.Errorf("%q: %s: %+v", tc.args, msg, c)
		}
	}
}

func want(ok bool, what string) string {
	if ok {
		return ""
	}
	return what + " not as expected"
}

func TestParseArgsErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{nil, "Invalid number of arguments"},
		{[]string{"a", "b"}, "Invalid number of arguments"},
		{[]string{"-k", "rel.sock", "img"}, "socket path must be absolute"},
		{[]string{"-e", "-1", "img"}, "Invalid shared device number '-1'"},
		{[]string{"-e", "x", "img"}, "Invalid shared device number 'x'"},
		{[]string{"--cache=sometimes", "img"}, "Invalid cache mode"},
		{[]string{"-n", "--cache=none", "img"}, "-n and --cache can only be specified once"},
		{[]string{"--aio=x", "img"}, "Invalid aio mode"},
		{[]string{"--aio=native", "--aio=threads", "img"}, "--aio can only be specified once"},
		{[]string{"--aio=native", "img"}, "requires cache.direct=on"},
		{[]string{"--aio=native", "--cache=writethrough", "img"}, "requires cache.direct=on"},
		{[]string{"--discard=x", "img"}, "Invalid discard mode"},
		{[]string{"--discard=unmap", "--discard=unmap", "img"}, "--discard can only be specified once"},
		{[]string{"--detect-zeroes=x", "img"}, "detect_zeroes"},
		{[]string{"--detect-zeroes=unmap", "img"}, "not allowed without setting discard operation to unmap"},
		// qemu-nbd checks it in command-line order.
		{[]string{"--detect-zeroes=unmap", "--discard=unmap", "img"}, "not allowed without setting discard operation to unmap"},
		{[]string{"-f", "vmdk", "img"}, "Unknown format 'vmdk'"},
		{[]string{"--log-level=loud", "img"}, "Invalid log level 'loud'"},
		{[]string{"--log-format=xml", "img"}, "Invalid log format 'xml'"},
		{[]string{"-x", strings.Repeat("n", 4097), "img"}, "too long"},
		{[]string{"-D", strings.Repeat("d", 4097), "img"}, "too long"},
		{[]string{"-c", "/dev/nbd0", "img"}, "not supported"},
		{[]string{"-d", "/dev/nbd0"}, "not supported"},
		{[]string{"-L", "img"}, "List mode is incompatible with a file name"},
		{[]string{"-L", "-x", "a"}, "List mode is incompatible with per-device settings"},
		{[]string{"-L", "--aio=threads"}, "List mode is incompatible with per-device settings"},
		{[]string{"-L", "--fork"}, "List mode is incompatible with forking"},
		{[]string{"-o", "x", "img"}, "Invalid offset"},
		{[]string{"--object", "tls-creds-x509,id=t", "img"}, "Missing 'dir' property value"},
		{[]string{"--tls-creds=t", "img"}, "No TLS credentials with id 't'"},
		{[]string{"--tls-authz=a", "img"}, "--tls-authz is not permitted without --tls-creds"},
		{[]string{"--object", "tls-creds-psk,id=p,dir=/x", "img"}, "TLS-PSK is not supported"},
		{[]string{"--object", "tls-creds-anon,id=p", "img"}, "anonymous TLS"},
		{[]string{"--object", "secret,id=p,data=x", "img"}, "not supported by qnbd"},
		{[]string{"--object", "tls-creds-x509,id=t,dir=/x,priority=NORMAL", "img"}, "priority="},
		{[]string{"--object", "tls-creds-x509,id=t,dir=/x,passwordid=s", "img"}, "passwordid="},
		{[]string{"--selinux-label=x", "img"}, "SELinux"},
		{[]string{"--handshake-limit=-1", "img"}, "Invalid handshake limit"},
		{[]string{"--metrics-web-config=w.yml", "img"}, "--metrics-web-config needs --metrics-addr"},
		{[]string{"--metrics=:9810", "img"}, "ambiguous"},
		{[]string{"--export", "noequals"}, "expected NAME=FILE"},
		{[]string{"--export", "a=x,format=vmdk"}, "unknown format"},
		{[]string{"--export", "a=x,readonly=maybe"}, "readonly"},
		{[]string{"--export", "a=x,colour=red"}, "unknown option"},
		{[]string{"--export", "a="}, "expected NAME=FILE"},
		{[]string{"-x", "a", "img", "--export", "a=other"}, "two exports named 'a'"},
		{[]string{"-x", "a", "--export", "b=other"}, "missing"},
	} {
		_, err := parseArgs(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: error %v, want %q", tc.args, err, tc.err)
		}
	}
}

func TestSplitCommas(t *testing.T) {
	for in, want := range map[string]string{
		"a":        "a",
		"a,b":      "a|b",
		"a,,b":     "a,b",
		"a,,,b":    "a,|b",
		"a,,,,b,c": "a,,b|c",
		"":         "",
	} {
		if got := strings.Join(splitCommas(in), "|"); got != want {
			t.Errorf("splitCommas(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEveryOptionHasAHandler(t *testing.T) {
	for _, s := range specs {
		if err := newCmdline().apply(s.name(), "x"); errors.Is(err, errNoHandler) {
			t.Errorf("%v", err)
		}
	}
	if err := newCmdline().apply("no-such-option", ""); !errors.Is(err, errNoHandler) {
		t.Errorf("an option outside the table: %v", err)
	}
}
