// The format checks: one function per QEMU block driver that has a probe, each returning
// QEMU's score for the bytes (0: not this format). See docs/probing.md.
package probe

import (
	"bytes"
	"encoding/binary"
	"strings"
)

// check is one driver's probe: its name and how it scores a buffer (and a file name).
type check struct {
	name  string
	score func(b []byte, filename string) int
}

// checks lists the drivers in the order a tie is broken in (the first of equal scores wins).
// Only cloop and dmg share a score (2); raw scores 1 and so wins only when nothing else does.
var checks = []check{
	{"qcow2", qcow2Score},
	{"qcow", qcowScore},
	{"qed", qedScore},
	{"vmdk", vmdkScore},
	{"vdi", vdiScore},
	{"vhdx", prefixScore("vhdxfile", 100)},
	{"vpc", prefixScore("conectix", 100)},
	{"luks", luksScore},
	{"parallels", parallelsScore},
	{"bochs", bochsScore},
	{"cloop", cloopScore},
	{"dmg", dmgScore},
	{Raw, func([]byte, string) int { return 1 }},
}

// qcowMagic starts qcow (version 1) and qcow2 images: "QFI\xfb", big endian.
const qcowMagic = 0x514649fb

// qcow2Score: the magic and a version of 2 or more, given a whole version 3 header
// (112 bytes, QEMU's sizeof(QCowHeader)).
func qcow2Score(b []byte, _ string) int {
	if len(b) >= 112 && binary.BigEndian.Uint32(b) == qcowMagic && binary.BigEndian.Uint32(b[4:]) >= 2 {
		return 100
	}
	return 0
}

// qcowScore: the magic and version exactly 1, given the 48-byte version 1 header.
func qcowScore(b []byte, _ string) int {
	if len(b) >= 48 && binary.BigEndian.Uint32(b) == qcowMagic && binary.BigEndian.Uint32(b[4:]) == 1 {
		return 100
	}
	return 0
}

// qedScore: "QED\0" (little-endian magic), given the 64-byte header.
func qedScore(b []byte, _ string) int {
	if len(b) >= 64 && bytes.HasPrefix(b, []byte("QED\x00")) {
		return 100
	}
	return 0
}

// vdiScore: the signature 0xbeda107f (little endian) at 0x40, given the 512-byte header.
func vdiScore(b []byte, _ string) int {
	if len(b) >= 512 && binary.LittleEndian.Uint32(b[0x40:]) == 0xbeda107f {
		return 100
	}
	return 0
}

// prefixScore matches a fixed magic at offset 0 (vhdx, vpc).
func prefixScore(magic string, score int) func([]byte, string) int {
	return func(b []byte, _ string) int {
		if bytes.HasPrefix(b, []byte(magic)) {
			return score
		}
		return 0
	}
}

// luksScore: "LUKS\xba\xbe" and version 1 (big endian u16 at 6), given the header up to the
// cipher name (8 bytes).
func luksScore(b []byte, _ string) int {
	if len(b) >= 8 && bytes.HasPrefix(b, []byte("LUKS\xba\xbe")) && binary.BigEndian.Uint16(b[6:]) == 1 {
		return 100
	}
	return 0
}

// parallelsScore: either 16-byte magic and version 2 (little endian u32 at 16), given the
// 64-byte header.
func parallelsScore(b []byte, _ string) int {
	if len(b) < 64 {
		return 0
	}
	m := string(b[:16])
	if (m == "WithoutFreeSpace" || m == "WithouFreSpacExt") && binary.LittleEndian.Uint32(b[16:]) == 2 {
		return 100
	}
	return 0
}

// bochsScore: three NUL-terminated strings in fixed fields (magic at 0, type at 32, subtype
// at 48) and version 0x00020000 or 0x00010000 (little endian u32 at 64), given 512 bytes.
func bochsScore(b []byte, _ string) int {
	if len(b) < 512 {
		return 0
	}
	cstr := func(off int, want string) bool {
		return string(b[off:off+len(want)]) == want && b[off+len(want)] == 0
	}
	v := binary.LittleEndian.Uint32(b[64:])
	if cstr(0, "Bochs Virtual HD Image") && cstr(32, "Redolog") && cstr(48, "Growing") &&
		(v == 0x00020000 || v == 0x00010000) {
		return 100
	}
	return 0
}

// cloopMagic is the shell script that starts a cloop 2.0 image.
const cloopMagic = "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"

// cloopScore: the script header (compared over at most the buffer's length), score 2.
func cloopScore(b []byte, _ string) int {
	n := min(len(cloopMagic), len(b))
	if string(b[:n]) == cloopMagic[:n] {
		return 2
	}
	return 0
}

// dmgScore: a file name ending in ".dmg" (with something before it), score 2; the content
// is not looked at.
func dmgScore(_ []byte, filename string) int {
	if len(filename) > 4 && strings.HasSuffix(filename, ".dmg") {
		return 2
	}
	return 0
}

// vmdkScore: the sparse magics "KDMV" or "COWD", or a text descriptor whose first line that
// is neither a comment ('#') nor blank (spaces, optionally "\r") is "version=1", 2 or 3
// ending in "\n" or "\r\n".
func vmdkScore(b []byte, _ string) int {
	if len(b) < 4 {
		return 0
	}
	if m := string(b[:4]); m == "KDMV" || m == "COWD" {
		return 100
	}
	for p := 0; p < len(b); {
		switch b[p] {
		case '#': // a comment line
			for p < len(b) && b[p] != '\n' {
				p++
			}
			p++
			continue
		case ' ': // only a blank line of spaces may come before the version
			for p < len(b) && b[p] == ' ' {
				p++
			}
			if p < len(b) && b[p] == '\r' {
				p++
			}
			if p == len(b) || b[p] != '\n' {
				return 0
			}
			p++
			continue
		}
		rest := b[p:]
		for _, v := range []string{"1", "2", "3"} {
			if bytes.HasPrefix(rest, []byte("version="+v+"\n")) || bytes.HasPrefix(rest, []byte("version="+v+"\r\n")) {
				return 100
			}
		}
		return 0
	}
	return 0
}
