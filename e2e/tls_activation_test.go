// TLS under systemd socket activation (LISTEN_FDS): libnbd starts qnbd with a listening
// socket and connects over TLS.
package e2e

import (
	"bytes"
	"testing"

	"github.com/qnbd/qnbd/e2e/libnbd"
)

func TestTLSUnderSocketActivation(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	img := newRaw(t, shortTempDir(t), 1<<20)
	h, err := libnbd.Create()
	must(t, err)
	defer h.Close()
	must(t, h.SetTLS(libnbd.TLSRequire))
	must(t, h.SetTLSCertificates(p.good))
	argv := append([]string{qnbdBin}, tlsArgs(p.server, true)...)
	must(t, h.ConnectSystemdSocketActivation(append(argv, "-f", "raw", img)))
	if on, err := h.GetTLSNegotiated(); err != nil || !on {
		t.Fatalf("TLS negotiated %v, %v", on, err)
	}
	pattern := bytes.Repeat([]byte("activated"), 455)
	must(t, h.Pwrite(pattern, 8192, 0))
	got := make([]byte, len(pattern))
	must(t, h.Pread(got, 8192, 0))
	if !bytes.Equal(got, pattern) {
		t.Fatal("read back differs")
	}
	must(t, h.Shutdown(0))
}
