// --export NAME=FILE[,...]: qnbd's own option for serving more than one image.
package main

import (
	"errors"
	"strings"

	"github.com/qnbd/qnbd/server"
)

// extraExport is a parsed --export value.
type extraExport struct {
	exportConfig
	roSet bool
}

// parseExportSpec parses NAME=FILE[,format=raw|qcow2][,readonly=on|off][,description=TEXT]
// [,bitmap=B]... (each bitmap= offers one qemu:dirty-bitmap context, in the order given);
// a literal comma in FILE or TEXT is written ",," as in QEMU option strings.
func parseExportSpec(s string) (extraExport, error) {
	var e extraExport
	name, rest, ok := strings.Cut(s, "=")
	if !ok || rest == "" {
		return e, usagef("--export '%s': expected NAME=FILE[,format=...,readonly=on,description=...]", s)
	}
	if len(name) > server.MaxStringLen {
		return e, usagef("export name '%s' too long", name)
	}
	e.name = name
	fields := splitCommas(rest)
	e.file = fields[0]
	if e.file == "" {
		return e, usagef("--export '%s': missing FILE", s)
	}
	for _, f := range fields[1:] {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "format":
			if v != "raw" && v != "qcow2" {
				return e, usagef("--export '%s': unknown format '%s'", s, v)
			}
			e.format = v
		case "readonly", "read-only":
			b, err := parseOnOff(v)
			if err != nil {
				return e, usagef("--export '%s': readonly=%s: %v", s, v, err)
			}
			e.readOnly, e.roSet = b, true
		case "bitmap":
			if v == "" {
				return e, usagef("--export '%s': empty bitmap name", s)
			}
			e.bitmaps = append(e.bitmaps, v)
		case "description":
			if len(v) > server.MaxStringLen {
				return e, usagef("--export '%s': description too long", s)
			}
			e.description = v
		default:
			return e, usagef("--export '%s': unknown option '%s'", s, k)
		}
	}
	return e, nil
}

// splitCommas splits on single commas; ",," stands for a literal comma.
func splitCommas(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			out = append(out, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	return append(out, cur.String())
}

func parseOnOff(v string) (bool, error) {
	switch v {
	case "on", "yes", "true", "1":
		return true, nil
	case "off", "no", "false", "0":
		return false, nil
	}
	return false, errors.New("expected on or off")
}
