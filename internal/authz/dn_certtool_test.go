package authz

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// certtoolSubject is the subject GnuTLS's certtool prints for the certificate in path, put
// back into the certificate's own order: certtool prints RFC 4514's order (the RDNs
// reversed) where gnutls_x509_crt_get_dn, which QEMU calls, keeps the stored order; the
// two differ in nothing else (docs/authz.md, "How a DN is rendered").
func certtoolSubject(t *testing.T, path string) string {
	t.Helper()
	out, err := tool(t, "certtool", "-i", "--infile", path).CombinedOutput()
	if err != nil {
		t.Fatalf("certtool -i %s: %v\n%s", path, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "Subject: "); ok {
			rdns := splitRDNs(s)
			slices.Reverse(rdns)
			return strings.Join(rdns, ",")
		}
		if strings.TrimSpace(line) == "Subject:" {
			return ""
		}
	}
	t.Fatalf("certtool printed no Subject line:\n%s", out)
	return ""
}

// certtoolRefuses reports whether certtool could not render the subject of the
// certificate in path, with the error GnuTLS gave.
func certtoolRefuses(t *testing.T, path string) (string, bool) {
	t.Helper()
	out, err := tool(t, "certtool", "-i", "--infile", path).CombinedOutput()
	if err != nil {
		t.Fatalf("certtool -i %s: %v\n%s", path, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if msg, ok := strings.CutPrefix(line, "error: get_dn: "); ok {
			return msg, true
		}
	}
	return "", false
}

// splitRDNs cuts a GnuTLS DN at the commas that separate RDNs: those not escaped by an
// odd run of backslashes.
func splitRDNs(dn string) []string {
	var out []string
	start, backslashes := 0, 0
	for i := 0; i < len(dn); i++ {
		switch dn[i] {
		case '\\':
			backslashes++
			continue
		case ',':
			if backslashes%2 == 0 {
				out = append(out, dn[start:i])
				start = i + 1
			}
		}
		backslashes = 0
	}
	return append(out, dn[start:])
}

// TestDNAgreesWithCerttool renders every table subject with DN and with GnuTLS 3.7's
// certtool, and checks the table's expectation against both.
func TestDNAgreesWithCerttool(t *testing.T) {
	p := newTestPKI(t)
	dir := t.TempDir()
	for i, c := range subjectCases() {
		cert := p.issue(t, rawName(t, c.rdns...), false)
		path := filepath.Join(dir, "c"+string(rune('a'+i))+".pem")
		writePEM(t, path, "CERTIFICATE", cert.Raw)
		gnutls := certtoolSubject(t, path)
		if got := DN(cert); got != gnutls {
			t.Errorf("%s:\n      DN %q\ncerttool %q", c.name, got, gnutls)
		}
		if gnutls != c.want {
			t.Errorf("%s: the table expects %q, GnuTLS says %q", c.name, c.want, gnutls)
		}
	}
	_ = os.Remove(dir)
}

// unrenderableSubjects are subjects GnuTLS refuses to render at all: an empty value where
// a DirectoryString is expected, whatever its string type and wherever it stands.
func unrenderableSubjects() map[string][][]av {
	return map[string][][]av{
		"empty UTF8String CN":        {rdn1(oidCN, tUTF8, "")},
		"empty PrintableString CN":   {rdn1(oidCN, tPrintable, "")},
		"empty BMPString CN":         {rdn1(oidCN, tBMP, "")},
		"empty TeletexString CN":     {rdn1(oidCN, tT61, "")},
		"empty O after a good CN":    {rdn1(oidCN, tUTF8, "x"), rdn1(oidO, tUTF8, "")},
		"empty UID in a multi-value": {{{oidCN, tUTF8, "x"}, {oidUID, tUTF8, ""}}},
	}
}

// TestDNRefusesWhatGnuTLSRefuses checks that SubjectDN fails, with GnuTLS's words, on
// exactly the subjects certtool cannot render, and that DN gives "" for them.
func TestDNRefusesWhatGnuTLSRefuses(t *testing.T) {
	p := newTestPKI(t)
	dir := t.TempDir()
	for name, rdns := range unrenderableSubjects() {
		cert := p.issue(t, rawName(t, rdns...), false)
		path := filepath.Join(dir, "c.pem")
		writePEM(t, path, "CERTIFICATE", cert.Raw)
		gnutls, refused := certtoolRefuses(t, path)
		if !refused {
			t.Errorf("%s: certtool rendered it; the case is wrong", name)
			continue
		}
		_, err := SubjectDN(cert)
		if err == nil || err.Error() != gnutls {
			t.Errorf("%s: SubjectDN error %v, GnuTLS %q", name, err, gnutls)
		}
		if dn := DN(cert); dn != "" {
			t.Errorf("%s: DN gave %q, want \"\"", name, dn)
		}
	}
}
