package authz

import (
	"strings"
	"testing"
	"unicode/utf16"
)

// bmp encodes s as a BMPString's content (UTF-16, big-endian).
func bmp(s string) string {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u>>8), byte(u))
	}
	return string(b)
}

// subjectCase is a client subject and the DN QEMU is expected to report for it. The
// expectations were read from GnuTLS (certtool, and qemu-nbd's own denial line); the tests
// check them against both, so a wrong one fails rather than passes.
type subjectCase struct {
	name string
	rdns [][]av
	want string
}

// subjectCases covers attribute order, multi-valued RDNs, escaping, UTF-8 and the other
// string types, GnuTLS's names for the usual attributes, unknown OIDs, and values GnuTLS
// shows as hex.
func subjectCases() []subjectCase {
	return []subjectCase{
		{"usual order", [][]av{
			rdn1(oidC, tPrintable, "GB"), rdn1(oidO, tUTF8, "Example"),
			rdn1(oidCN, tUTF8, "client1"), rdn1(oidEmail, tIA5, "c1@example.com"),
		}, "C=GB,O=Example,CN=client1,EMAIL=c1@example.com"},
		{"reversed order kept", [][]av{
			rdn1(oidCN, tUTF8, "client1"), rdn1(oidO, tUTF8, "Example"), rdn1(oidC, tPrintable, "GB"),
		}, "CN=client1,O=Example,C=GB"},
		{"multi-valued RDN", [][]av{
			rdn1(oidO, tUTF8, "Example"),
			{{oidOU, tUTF8, "a"}, {oidOU, tUTF8, "b"}},
			{{oidCN, tUTF8, "c"}, {oidUID, tUTF8, "u1"}},
		}, "O=Example,OU=a+OU=b,CN=c+UID=u1"},
		{"repeated attribute in separate RDNs", [][]av{
			rdn1(oidDC, tIA5, "example"), rdn1(oidDC, tIA5, "com"),
			rdn1(oidOU, tUTF8, "x"), rdn1(oidOU, tUTF8, "y"), rdn1(oidUID, tUTF8, "jdoe"),
		}, "DC=example,DC=com,OU=x,OU=y,UID=jdoe"},
		{"specials escaped anywhere", [][]av{
			rdn1(oidCN, tUTF8, `a,b+c"d\e<f>g;h=i`),
		}, `CN=a\,b\+c\"d\\e\<f\>g\;h=i`},
		{"leading hash escaped, inner not", [][]av{
			rdn1(oidCN, tUTF8, "#hash"), rdn1(oidOU, tUTF8, "a#b"),
		}, `CN=\#hash,OU=a#b`},
		{"leading and trailing spaces", [][]av{
			rdn1(oidCN, tUTF8, " lead"), rdn1(oidOU, tUTF8, "trail "),
			rdn1(oidO, tUTF8, "  both  "), rdn1(oidL, tUTF8, " "),
		}, `CN=\ lead,OU=trail\ ,O=\  both \ ,L=\ `},
		{"UTF-8 as is", [][]av{
			rdn1(oidCN, tUTF8, "Ünïcødé 雪 🙂"), rdn1(oidL, tUTF8, "Zürich"),
		}, "CN=Ünïcødé 雪 🙂,L=Zürich"},
		{"control character not escaped", [][]av{
			rdn1(oidCN, tUTF8, "tab\there"),
		}, "CN=tab\there"},
		{"GnuTLS names", [][]av{
			rdn1(oidSerial, tPrintable, "1234"), rdn1(oidST, tUTF8, "Scotland"),
			rdn1("2.5.4.9", tUTF8, "1 Road"), rdn1("2.5.4.12", tUTF8, "Dr"),
			rdn1("2.5.4.13", tUTF8, "desc"), rdn1("2.5.4.42", tUTF8, "Given"),
			rdn1("2.5.4.4", tUTF8, "Sur"), rdn1("2.5.4.17", tUTF8, "AB1 2CD"),
			rdn1("2.5.4.65", tUTF8, "nick"), rdn1("2.5.4.46", tPrintable, "q"),
			rdn1("2.5.4.20", tPrintable, "+44 1"), rdn1("2.5.4.43", tUTF8, "JD"),
			rdn1("2.5.4.44", tUTF8, "III"), rdn1("2.5.4.41", tUTF8, "nm"),
			rdn1("2.5.4.15", tUTF8, "biz"), rdn1("1.2.840.113556.1.4.656", tUTF8, "u@r"),
			rdn1("1.3.6.1.4.1.311.60.2.1.3", tPrintable, "GB"),
		}, `serialNumber=1234,ST=Scotland,street=1 Road,title=Dr,description=desc,givenName=Given,` +
			`surName=Sur,postalCode=AB1 2CD,pseudonym=nick,dnQualifier=q,telephoneNumber=\+44 1,` +
			`initials=JD,generationQualifier=III,name=nm,businessCategory=biz,userPrincipalName=u@r,` +
			`jurisdictionOfIncorporationCountryName=GB`},
		{"unknown OIDs as hex of the DER", [][]av{
			rdn1("1.2.3.4", tUTF8, "x"), rdn1("1.2.840.113549.1.9.2", tIA5, "unstructured"),
			rdn1("2.5.4.97", tUTF8, "VATGB-1"),
		}, "1.2.3.4=#0c0178,1.2.840.113549.1.9.2=#160c756e73747275637475726564," +
			"2.5.4.97=#0c0756415447422d31"},
		{"wrong string type as hex", [][]av{
			rdn1(oidC, tUTF8, "GB"), rdn1(oidEmail, tUTF8, "a@b"), rdn1(oidCN, tNumeric, "12"),
		}, "C=#0c024742,EMAIL=#0c03614062,CN=#12023132"},
		{"other DirectoryString types", [][]av{
			rdn1(oidCN, tPrintable, "printable a*b&c"), rdn1(oidOU, tT61, "teletex"),
			rdn1(oidL, tBMP, bmp("bmp é 雪")), rdn1(oidST, tBMP, bmp("nul")+"\x00\x00"),
		}, "CN=printable a*b&c,OU=teletex,L=bmp é 雪,ST=nul"},
		{"IA5String is no DirectoryString", [][]av{
			rdn1(oidO, tIA5, "ia5"),
		}, "O=#1603696135"},
		{"BMP NULs as hex", [][]av{
			rdn1(oidCN, tBMP, "\x00\x00"), rdn1(oidO, tBMP, "\x00a\x00\x00\x00\x00"),
			rdn1(oidOU, tBMP, "\x00a\x00\x00\x00b"),
		}, "CN=#1e020000,O=#1e06006100000000,OU=#1e06006100000062"},
		{"non-printable teletex as escaped hex of the content", [][]av{
			rdn1(oidCN, tT61, "caf\xe9"), rdn1(oidO, tT61, "a\x00b"), rdn1(oidOU, tT61, "a\x7fb"),
		}, `CN=\#636166e9,O=\#610062,OU=\#617f62`},
		{"empty values of fixed types as hex", [][]av{
			rdn1(oidC, tPrintable, ""), rdn1(oidEmail, tIA5, ""), rdn1("1.2.3.4", tUTF8, ""),
		}, "C=#1300,EMAIL=#1600,1.2.3.4=#0c00"},
		{"NUL inside a value as hex", [][]av{
			rdn1(oidCN, tUTF8, "a\x00b"), rdn1(oidO, tUTF8, "a\x00"),
		}, "CN=#0c03610062,O=#0c026100"},
		{"empty subject", nil, ""},
		{"PKCS#9 friendlyName decoded, named by OID", [][]av{
			rdn1("1.2.840.113549.1.9.20", tBMP, bmp("friend")), rdn1(oidCN, tUTF8, "x"),
		}, "1.2.840.113549.1.9.20=friend,CN=x"},
		{"Russian numbers", [][]av{
			rdn1("1.2.643.100.1", tNumeric, "1027700132195"), rdn1("1.2.643.3.131.1.1", tNumeric, "7707083893"),
		}, "OGRN=1027700132195,INN=7707083893"},
		{"multi-valued RDN with unknown OID and EMAIL", [][]av{
			{{oidCN, tUTF8, "a"}, {"1.2.3.4", tUTF8, "b"}, {oidEmail, tIA5, "e@x"}},
		}, "CN=a+1.2.3.4=#0c0162+EMAIL=e@x"},
		{"long values", [][]av{
			rdn1(oidCN, tUTF8, strings.Repeat("x,", 600)), rdn1("1.2.3.4", tUTF8, strings.Repeat("y", 300)),
		}, "CN=" + strings.Repeat(`x\,`, 600) + ",1.2.3.4=#0c82012c" + strings.Repeat("79", 300)},
		{"unsorted SET kept in stored order", [][]av{
			{{oidOU, tUTF8, "b"}, {oidOU, tUTF8, "a"}},
		}, "OU=b+OU=a"},
	}
}

// TestDNMatchesExpectations checks RawDN and DN against the table alone (the oracle tests
// check the table against GnuTLS).
func TestDNMatchesExpectations(t *testing.T) {
	p := newTestPKI(t)
	for _, c := range subjectCases() {
		raw := rawName(t, c.rdns...)
		got, err := RawDN(raw)
		if err != nil {
			t.Errorf("%s: RawDN: %v", c.name, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
		if dn := DN(p.issue(t, raw, false)); dn != got {
			t.Errorf("%s: DN(cert) %q differs from RawDN %q", c.name, dn, got)
		}
	}
}
