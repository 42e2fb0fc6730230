// Backing file names: which ones qnbd follows, and how a relative one is resolved.
package qcow2

import (
	"strings"
)

// resolveBackingName returns the path of the backing file (or external data file) called name
// in the header of an image that lives in directory imageDir.
//
// QEMU treats a name with a ':' before its first '/' as a protocol ("nbd://host/x", "ssh:...",
// "gluster:...", "file:...") and a name starting with "json:" as a whole block graph, and opens
// them as such (path_has_protocol in block.c). qnbd serves local files only, and a header is
// untrusted input that must not make the server connect anywhere or open devices it was not
// given, so such names are refused with ErrUnsupported. Names with a ':' after a '/'
// ("./a:b", "/images/a:b.qcow2") are ordinary paths and are allowed, as in QEMU; a relative
// name containing a ':' therefore needs a "./" prefix, exactly as QEMU requires.
//
// An absolute name is returned unchanged. A relative one is resolved against imageDir, the
// directory of the image that names it, not the process's working directory
// (path_combine in QEMU): imageDir + "/" + name, without lexical cleaning, so that ".." is
// resolved by the file system through any symlinks, as QEMU's string concatenation leaves it.
// An empty imageDir (the image was opened by a bare file name) leaves name relative to the
// working directory, as QEMU does.
//
// Empty names and names containing a NUL byte are refused with ErrFormat.
func resolveBackingName(imageDir, name string) (string, error) {
	const field = "backing file name"
	if name == "" {
		return "", formatErr(-1, field, name, "is empty")
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", formatErr(-1, field, name, "contains a NUL byte")
	}
	if strings.HasPrefix(name, "json:") {
		return "", &FormatError{Off: -1, Field: field, Val: name, Class: ErrUnsupported,
			Msg: "json: block graph descriptions are not supported; name a local file"}
	}
	if i := strings.IndexAny(name, ":/"); i >= 0 && name[i] == ':' {
		return "", &FormatError{Off: -1, Field: field, Val: name, Class: ErrUnsupported,
			Msg: "protocol " + name[:i] + ": is not supported, only local files (write ./" + name + " for a relative file name containing ':')"}
	}
	if strings.HasPrefix(name, "/") || imageDir == "" {
		return name, nil
	}
	if strings.HasSuffix(imageDir, "/") {
		return imageDir + name, nil
	}
	return imageDir + "/" + name, nil
}
