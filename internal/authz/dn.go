package authz

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// DN renders the certificate's subject as QEMU names a TLS client to its authorizer: the
// string GnuTLS's gnutls_x509_crt_get_dn returns (docs/authz.md, "How a DN is rendered").
// That is RFC 4514's syntax in the certificate's own RDN order (not RFC 4514's reversed
// order, and not Go's pkix.Name.String()), with GnuTLS's attribute names
// (C=GB,O=Example,CN=client1,EMAIL=c1@example.com). A subject GnuTLS cannot render (see
// SubjectDN) gives "".
func DN(cert *x509.Certificate) string {
	s, err := SubjectDN(cert)
	if err != nil {
		return ""
	}
	return s
}

// SubjectDN is DN with GnuTLS's refusal kept: for a subject gnutls_x509_crt_get_dn fails on
// (an empty value where a DirectoryString is expected), the error is GnuTLS's text, and
// QEMU refuses the client with "Cannot get client distinguished name: " and that text
// before any authorizer is asked. A TLS server should do the same rather than authorise "".
func SubjectDN(cert *x509.Certificate) (string, error) {
	return RawDN(cert.RawSubject)
}

// ErrValueNotValid is GnuTLS's error for a subject it cannot render, in its words.
var ErrValueNotValid = Error("ASN1 parser: Value is not valid.")

// attributeTypeAndValue keeps the value's DER as it is: its tag decides the rendering.
type attributeTypeAndValue struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue
}

// rdnSET is one RelativeDistinguishedName; encoding/asn1 reads a slice type whose name
// ends in SET as a SET OF.
type rdnSET []attributeTypeAndValue

// RawDN renders a DER Name (an RDNSequence, such as x509.Certificate.RawSubject) as DN
// does.
func RawDN(der []byte) (string, error) {
	var rdns []rdnSET
	rest, err := asn1.Unmarshal(der, &rdns)
	if err != nil {
		return "", err
	}
	if len(rest) != 0 {
		return "", errors.New("authz: trailing data after the subject name")
	}
	var b strings.Builder
	for i, rdn := range rdns {
		for j, atv := range rdn {
			switch {
			case j > 0:
				b.WriteByte('+')
			case i > 0:
				b.WriteByte(',')
			}
			oid := atv.Type.String()
			a, known := attributes[oid]
			if known && a.name != "" {
				b.WriteString(a.name)
			} else {
				b.WriteString(oid)
			}
			b.WriteByte('=')
			v, err := renderValue(a, known, atv.Value)
			if err != nil {
				return "", err
			}
			b.WriteString(v)
		}
	}
	return b.String(), nil
}

// renderValue is GnuTLS's _gnutls_x509_dn_to_string: decode the value as the attribute's
// table entry says, escape it; when the OID is unknown or the value does not decode (wrong
// string type, empty, a NUL inside), give '#' and the hex of the whole DER (tag and length
// included), unescaped. An empty DirectoryString is the one value that fails the whole DN.
func renderValue(a attribute, known bool, v asn1.RawValue) (string, error) {
	whole := "#" + hex.EncodeToString(v.FullBytes)
	if !known || v.Class != asn1.ClassUniversal || v.IsCompound {
		return whole, nil
	}
	if a.directoryString {
		if !directoryStringTags[v.Tag] {
			return whole, nil
		}
		if len(v.Bytes) == 0 {
			return "", ErrValueNotValid
		}
	} else if v.Tag != a.tag || len(v.Bytes) == 0 {
		return whole, nil
	}
	s := printable(v.Tag, v.Bytes)
	if strings.IndexByte(s, 0) >= 0 {
		return whole, nil
	}
	return escape(s), nil
}

// printable is GnuTLS's make_printable_string: BMPString becomes UTF-8, a TeletexString
// stays as it is when every byte is printable ASCII, and what cannot be shown (a
// TeletexString with other bytes, a UniversalString, a BMPString that is not UTF-16) becomes
// '#' and the hex of its content. Other string types are taken byte for byte.
func printable(tag int, content []byte) string {
	if len(content) == 0 {
		return ""
	}
	switch tag {
	case asn1.TagBMPString:
		if s, ok := ucs2ToUTF8(content); ok {
			return s
		}
		return "#" + hex.EncodeToString(content)
	case asn1.TagT61String:
		for _, c := range content {
			if c < 0x20 || c > 0x7e {
				return "#" + hex.EncodeToString(content)
			}
		}
	case tagUniversalString:
		return "#" + hex.EncodeToString(content)
	}
	return string(content)
}

// ucs2ToUTF8 converts big-endian UTF-16 as GnuTLS's converter does: one trailing U+0000
// is dropped when something precedes it, and an odd length or an unpaired surrogate is
// refused (crypto/x509 refuses both before we see them).
func ucs2ToUTF8(b []byte) (string, bool) {
	if len(b)%2 != 0 {
		return "", false
	}
	if n := len(b); n > 2 && b[n-1] == 0 && b[n-2] == 0 {
		b = b[:n-2]
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
	}
	var sb strings.Builder
	for i := 0; i < len(u); i++ {
		r := rune(u[i])
		if utf16.IsSurrogate(r) {
			if i+1 >= len(u) {
				return "", false
			}
			r = utf16.DecodeRune(r, rune(u[i+1]))
			if r == utf8.RuneError {
				return "", false
			}
			i++
		}
		sb.WriteRune(r)
	}
	return sb.String(), true
}

// escape is GnuTLS's str_escape: a backslash before , + " \ < > ; anywhere, before '#' or
// ' ' at the start, and before ' ' at the end. Nothing else is escaped: not '=', not
// control characters, not non-ASCII.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case strings.IndexByte(`,+"\<>;`, c) >= 0,
			i == 0 && (c == '#' || c == ' '),
			i == len(s)-1 && c == ' ':
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}
