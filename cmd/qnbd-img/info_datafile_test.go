// qnbd-img info against qemu-img info on images with an external data file: named or not,
// raw or not.
package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// dropDataFileName turns the external data file name extension of the qcow2 image at path
// into an unknown extension, leaving the incompatible bit set: an image whose data file must
// be named when it is opened.
func dropDataFileName(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const extDataFile, extUnknown = 0x44415441, 0x7a7a7a7a
	if binary.BigEndian.Uint64(b[72:])&4 == 0 {
		t.Fatalf("%s: the external data file bit is clear", path)
	}
	pos := uint64(binary.BigEndian.Uint32(b[100:])) // header_length
	for pos+8 <= uint64(len(b)) {
		typ, n := binary.BigEndian.Uint32(b[pos:]), uint64(binary.BigEndian.Uint32(b[pos+4:]))
		if typ == 0 {
			break
		}
		if typ == extDataFile {
			binary.BigEndian.PutUint32(b[pos:], extUnknown)
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		pos += 8 + (n+7)&^7
	}
	t.Fatalf("%s: no data file name extension", path)
}

// TestOracleInfoDataFile: "data file raw" (data-file-raw) is shown whenever the image has the
// external data file bit, "data file" (data-file) only when the header names it.
func TestOracleInfoDataFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, raw := range []string{"off", "on"} {
		named := "named-raw-" + raw + ".qcow2"
		sh(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=d-"+raw+".data,data_file_raw="+raw, named, "1M")
		sh(t, dir, "qemu-io", "-f", "qcow2", "-c", "write -P 7 0 64k", named)
		unnamed := "unnamed-raw-" + raw + ".qcow2"
		sh(t, dir, "cp", named, unnamed)
		dropDataFileName(t, filepath.Join(dir, unnamed))
		for _, img := range []string{named, unnamed} {
			for _, args := range [][]string{
				{"info", img},
				{"info", "--output=json", img},
				{"info", "-U", img},
				{"info", "-U", "--output=json", img},
			} {
				r := same(t, dir, args...)
				if r.code != 0 {
					t.Errorf("%q: exit %d", args, r.code)
				}
			}
		}
	}
}
