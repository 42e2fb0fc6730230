// Block-0 contents for the probe tests: one header per format QEMU probes for, and ordinary
// first sectors that must stay raw.
package probe

import (
	"encoding/binary"
	"math/rand/v2"
)

// sector returns a 512-byte block 0 built by fill.
func sector(fill func(b []byte)) []byte {
	b := make([]byte, Block0)
	fill(b)
	return b
}

// foreignHeaders are minimal first sectors that QEMU probes as the named format.
func foreignHeaders() map[string][]byte {
	be32 := binary.BigEndian.PutUint32
	le32 := binary.LittleEndian.PutUint32
	return map[string][]byte{
		"qcow2":                    sector(func(b []byte) { copy(b, "QFI\xfb"); be32(b[4:], 3) }),
		"qcow2 version 2":          sector(func(b []byte) { copy(b, "QFI\xfb"); be32(b[4:], 2) }),
		"qcow2 version 0x01000002": sector(func(b []byte) { copy(b, "QFI\xfb"); be32(b[4:], 0x01000002) }),
		"qcow":                     sector(func(b []byte) { copy(b, "QFI\xfb"); be32(b[4:], 1) }),
		"qed":                      sector(func(b []byte) { copy(b, "QED\x00") }),
		"vmdk":                     sector(func(b []byte) { copy(b, "KDMV") }),
		"vmdk COWD":                sector(func(b []byte) { copy(b, "COWD") }),
		"vmdk descriptor": sector(func(b []byte) {
			copy(b, "# Disk DescriptorFile\n   \n  \r\nversion=1\nCID=fffffffe\n")
		}),
		"vmdk descriptor crlf": sector(func(b []byte) { copy(b, "#x\r\nversion=3\r\n") }),
		"vdi":                  sector(func(b []byte) { le32(b[0x40:], 0xbeda107f) }),
		"vhdx":                 sector(func(b []byte) { copy(b, "vhdxfile") }),
		"vpc":                  sector(func(b []byte) { copy(b, "conectix") }),
		"luks":                 sector(func(b []byte) { copy(b, "LUKS\xba\xbe\x00\x01") }),
		"parallels":            sector(func(b []byte) { copy(b, "WithoutFreeSpace"); le32(b[16:], 2) }),
		"parallels ext":        sector(func(b []byte) { copy(b, "WithouFreSpacExt"); le32(b[16:], 2) }),
		"bochs": sector(func(b []byte) {
			copy(b, "Bochs Virtual HD Image")
			copy(b[32:], "Redolog")
			copy(b[48:], "Growing")
			le32(b[64:], 0x20000)
		}),
		"bochs v1": sector(func(b []byte) {
			copy(b, "Bochs Virtual HD Image")
			copy(b[32:], "Redolog")
			copy(b[48:], "Growing")
			le32(b[64:], 0x10000)
		}),
		"cloop": sector(func(b []byte) { copy(b, cloopMagic+"#!more script\n") }),
	}
}

// rawHeaders are first sectors that QEMU probes as raw: ordinary disk contents and near
// misses of every format.
func rawHeaders() map[string][]byte {
	be32 := binary.BigEndian.PutUint32
	le32 := binary.LittleEndian.PutUint32
	rng := rand.New(rand.NewPCG(1, 2))
	return map[string][]byte{
		"zeros": sector(func([]byte) {}),
		"mbr": sector(func(b []byte) {
			copy(b, "\xeb\x63\x90")
			copy(b[446:], "\x80\x20\x21\x00\x83\xfe\xff\xff\x00\x08\x00\x00\x00\xf8\x3f\x00")
			b[510], b[511] = 0x55, 0xaa
		}),
		"random": sector(func(b []byte) {
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			b[0] = 'x' // not a magic's first byte
		}),
		"qcow2 version 0":       sector(func(b []byte) { copy(b, "QFI\xfb") }),
		"qcow2 magic truncated": sector(func(b []byte) { copy(b, "QFI\xfa"); be32(b[4:], 3) }),
		"vmdk empty line":       sector(func(b []byte) { copy(b, "\nversion=1\n") }),
		"vmdk version 4":        sector(func(b []byte) { copy(b, "version=4\n") }),
		"vmdk tab line":         sector(func(b []byte) { copy(b, " \t\nversion=1\n") }),
		"vdi wrong offset":      sector(func(b []byte) { le32(b[0x44:], 0xbeda107f) }),
		"luks version 2":        sector(func(b []byte) { copy(b, "LUKS\xba\xbe\x00\x02") }),
		"parallels version 3":   sector(func(b []byte) { copy(b, "WithoutFreeSpace"); le32(b[16:], 3) }),
		"bochs unterminated": sector(func(b []byte) {
			copy(b, "Bochs Virtual HD Imagex")
			copy(b[32:], "Redolog")
			copy(b[48:], "Growing")
			le32(b[64:], 0x20000)
		}),
		"bochs undoable": sector(func(b []byte) {
			copy(b, "Bochs Virtual HD Image")
			copy(b[32:], "Redolog")
			copy(b[48:], "Undoable")
			le32(b[64:], 0x20000)
		}),
		"cloop one byte off": sector(func(b []byte) { copy(b, cloopMagic); b[20] = 'X' }),
		"qed lower case":     sector(func(b []byte) { copy(b, "qed\x00") }),
	}
}
