package authz

import "encoding/asn1"

// tagUniversalString is ASN.1's UniversalString, which encoding/asn1 does not name.
const tagUniversalString = 28

// attribute is one row of GnuTLS 3.7's table of DN attribute types (lib/x509/common.c,
// _oid2str): the name it prints (empty: it prints the dotted OID) and how the value must
// be encoded for it to be decoded rather than shown as hex.
type attribute struct {
	name string
	// directoryString: the value is an X.520 DirectoryString (a CHOICE of string types);
	// otherwise it must carry exactly tag.
	directoryString bool
	tag             int
}

// directoryStringTags are the alternatives of GnuTLS's PKIX1.DirectoryString (IA5String is
// not one of them: measured, an IA5String CN prints as hex).
var directoryStringTags = map[int]bool{
	asn1.TagT61String:       true,
	asn1.TagPrintableString: true,
	tagUniversalString:      true,
	asn1.TagUTF8String:      true,
	asn1.TagBMPString:       true,
}

func dirString(name string) attribute { return attribute{name: name, directoryString: true} }
func fixed(name string, tag int) attribute {
	return attribute{name: name, tag: tag}
}

// attributes is keyed by dotted OID.
var attributes = map[string]attribute{
	"1.3.6.1.5.5.7.9.2": dirString("placeOfBirth"),
	"1.3.6.1.5.5.7.9.3": fixed("gender", asn1.TagPrintableString),
	"1.3.6.1.5.5.7.9.4": fixed("countryOfCitizenship", asn1.TagPrintableString),
	"1.3.6.1.5.5.7.9.5": fixed("countryOfResidence", asn1.TagPrintableString),

	"2.5.4.6":  fixed("C", asn1.TagPrintableString),
	"2.5.4.9":  dirString("street"),
	"2.5.4.12": dirString("title"),
	"2.5.4.10": dirString("O"),
	"2.5.4.11": dirString("OU"),
	"2.5.4.3":  dirString("CN"),
	"2.5.4.7":  dirString("L"),
	"2.5.4.8":  dirString("ST"),
	"2.5.4.13": dirString("description"),

	"2.5.4.5":  fixed("serialNumber", asn1.TagPrintableString),
	"2.5.4.20": fixed("telephoneNumber", asn1.TagPrintableString),
	"2.5.4.4":  dirString("surName"),
	"2.5.4.43": dirString("initials"),
	"2.5.4.44": dirString("generationQualifier"),
	"2.5.4.42": dirString("givenName"),
	"2.5.4.65": dirString("pseudonym"),
	"2.5.4.46": fixed("dnQualifier", asn1.TagPrintableString),
	"2.5.4.17": dirString("postalCode"),
	"2.5.4.41": dirString("name"),
	"2.5.4.15": dirString("businessCategory"),

	"0.9.2342.19200300.100.1.25": fixed("DC", asn1.TagIA5String),
	"0.9.2342.19200300.100.1.1":  dirString("UID"),
	"1.2.840.113556.1.4.656":     dirString("userPrincipalName"),

	"1.3.6.1.4.1.311.60.2.1.1": dirString("jurisdictionOfIncorporationLocalityName"),
	"1.3.6.1.4.1.311.60.2.1.2": dirString("jurisdictionOfIncorporationStateOrProvinceName"),
	"1.3.6.1.4.1.311.60.2.1.3": fixed("jurisdictionOfIncorporationCountryName", asn1.TagPrintableString),

	"1.2.840.113549.1.9.1": fixed("EMAIL", asn1.TagIA5String),
	// PKCS #9 attributes GnuTLS decodes but names by OID. challengePassword's own CHOICE
	// is approximated by DirectoryString; the OCTET STRING ones cannot occur in a subject
	// crypto/x509 accepts.
	"1.2.840.113549.1.9.7":  dirString(""),
	"1.2.840.113549.1.9.20": fixed("", asn1.TagBMPString),
	"1.2.840.113549.1.9.21": fixed("", asn1.TagOctetString),
	"1.2.840.113549.1.9.4":  fixed("", asn1.TagOctetString),

	"1.3.6.1.5.5.7.8.5": fixed("XmppAddr", asn1.TagUTF8String),

	"1.2.643.100.1":     fixed("OGRN", asn1.TagNumericString),
	"1.2.643.100.3":     fixed("SNILS", asn1.TagNumericString),
	"1.2.643.100.5":     fixed("OGRNIP", asn1.TagNumericString),
	"1.2.643.3.131.1.1": fixed("INN", asn1.TagNumericString),
}
