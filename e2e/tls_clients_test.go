// TLS with real clients against the built binary (and qemu-nbd, the reference, with the same
// test): libnbd over nbds:// and nbds+unix://, nbdinfo, nbdcopy, qemu-img, qemu-io and
// nbd-client's list mode, on TCP and on a Unix socket, with two exports and multi-conn.
package e2e

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/qnbd/qnbd/e2e/libnbd"
)

// tlsArgs are the server options for TLS with the credentials in dir, and --tls-authz
// allowing only the good client's DN when authz is set.
func tlsArgs(dir string, authz bool) []string {
	args := []string{"--object", "tls-creds-x509,id=tls0,endpoint=server,dir=" + dir, "--tls-creds", "tls0"}
	if authz {
		args = append(args, "--object", "authz-simple,id=auth0,identity="+strings.ReplaceAll(goodDN, ",", ",,"),
			"--tls-authz", "auth0")
	}
	return args
}

// tlsURI is the nbds:// URI of export name on s for a client using the certificates in dir.
func tlsURI(s *server, name, dir string) string {
	q := "tls-certificates=" + url.QueryEscape(dir)
	if s.Sock != "" {
		return "nbds+unix:///" + url.PathEscape(name) + "?socket=" + s.Sock + "&" + q
	}
	return fmt.Sprintf("nbds://127.0.0.1:%d/%s?%s", s.Port, url.PathEscape(name), q)
}

// qemuTLSOpts is qemu-img/qemu-io's --object and --image-opts for export name on s.
func qemuTLSOpts(s *server, name, dir string) (object, opts string) {
	object = "tls-creds-x509,id=c0,endpoint=client,dir=" + dir
	if s.Sock != "" {
		opts = "driver=nbd,server.type=unix,server.path=" + s.Sock + ",tls-hostname=localhost"
	} else {
		opts = "driver=nbd,host=127.0.0.1,port=" + strconv.Itoa(s.Port)
	}
	return object, opts + ",export=" + name + ",tls-creds=c0"
}

func TestTLSRealClients(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	for _, srv := range []struct {
		name  string
		start func(*testing.T, serverConfig) *server
	}{{"qnbd", startQnbd}, {"qemu-nbd", startQemuNBD}} {
		for _, tcp := range []bool{true, false} {
			name := srv.name + "/unix"
			if tcp {
				name = srv.name + "/tcp"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				dir := shortTempDir(t)
				img := newRaw(t, dir, 4<<20)
				args := append(tlsArgs(p.server, true), "-f", "raw", "-e", "4", "-x", "disk", img)
				if srv.name == "qnbd" {
					second := newRaw(t, shortTempDir(t), 1<<20)
					args = append(args, "--export", "second="+second+",format=raw")
				}
				s := srv.start(t, serverConfig{Args: args, TCP: tcp})
				tlsClientsOn(t, s, p, dir)
				if srv.name == "qnbd" {
					if got := strings.TrimSpace(run(t, "nbdinfo", "--size", tlsURI(s, "second", p.good))); got != "1048576" {
						t.Errorf("second export over TLS: size %q", got)
					}
				}
			})
		}
	}
}

// tlsClientsOn runs every client against export "disk" of s.
func tlsClientsOn(t *testing.T, s *server, p *testPKI, dir string) {
	uri := tlsURI(s, "disk", p.good)
	pattern := bytes.Repeat([]byte("qnbd-tls"), 8192) // 64 KiB

	// libnbd, two connections (multi-conn): write on one, flush, read on the other.
	var hs [2]*libnbd.Handle
	for i := range hs {
		h, err := libnbd.Create()
		must(t, err)
		defer h.Close()
		must(t, h.SetURIAllowLocalFile(true))
		must(t, h.ConnectURI(uri))
		if on, err := h.GetTLSNegotiated(); err != nil || !on {
			t.Fatalf("libnbd: TLS negotiated %v, %v", on, err)
		}
		if mc, err := h.CanMultiConn(); err != nil || !mc {
			t.Fatalf("libnbd: multi-conn %v, %v", mc, err)
		}
		hs[i] = h
	}
	must(t, hs[0].Pwrite(pattern, 1<<20, 0))
	must(t, hs[0].Flush(0))
	got := make([]byte, len(pattern))
	must(t, hs[1].Pread(got, 1<<20, 0))
	if !bytes.Equal(got, pattern) {
		t.Fatal("libnbd: second connection does not read what the first wrote")
	}
	for _, h := range hs {
		must(t, h.Shutdown(0))
	}

	if got := strings.TrimSpace(run(t, "nbdinfo", "--size", uri)); got != strconv.Itoa(4<<20) {
		t.Errorf("nbdinfo --size: %q", got)
	}

	// nbdcopy out over TLS, then qemu-img compare with the export, also over TLS.
	copyTo := filepath.Join(dir, "copy.raw")
	run(t, "nbdcopy", uri, copyTo)
	b, err := os.ReadFile(copyTo)
	must(t, err)
	if len(b) != 4<<20 || !bytes.Equal(b[1<<20:1<<20+len(pattern)], pattern) {
		t.Fatal("nbdcopy: the copy differs from what was written")
	}
	obj, opts := qemuTLSOpts(s, "disk", p.good)
	run(t, "qemu-img", "compare", "--object", obj, "--image-opts", opts, "driver=raw,file.filename="+copyTo)

	// qemu-io writes over TLS; qemu-img info reads the size.
	run(t, "qemu-io", "--object", obj, "--image-opts", opts, "-c", "write -P 0x5a 0 64k", "-c", "read -P 0x5a 0 64k")
	if out := run(t, "qemu-img", "info", "--object", obj, "--image-opts", opts); !strings.Contains(out, "virtual size: 4 MiB") {
		t.Errorf("qemu-img info:\n%s", out)
	}

	// nbd-client's list mode (TCP only: it has no Unix socket list mode).
	if s.Port != 0 {
		out := run(t, "nbd-client", "-l", "127.0.0.1", strconv.Itoa(s.Port), "-enable-tls",
			"-cacertfile", filepath.Join(p.good, "ca-cert.pem"), "-certfile", filepath.Join(p.good, "client-cert.pem"),
			"-keyfile", filepath.Join(p.good, "client-key.pem"), "-tlshostname", "localhost")
		if !strings.Contains(out, "\ndisk\n") {
			t.Errorf("nbd-client -l: %q", out)
		}
	}
}
