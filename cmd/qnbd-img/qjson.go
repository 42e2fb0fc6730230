// JSON output byte for byte as QEMU prints it: QDict key order and qobject_to_json_pretty's
// layout and string escaping.
package main

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// qdictBuckets is QDICT_BUCKET_MAX: QEMU's QDict is a fixed 512-bucket hash table, and
// iterating it (which is how QEMU prints JSON) visits buckets in order and, within a bucket,
// the most recently inserted key first. Reproducing that order makes our output identical to
// qemu-img's for the same keys.
const qdictBuckets = 512

// qdictHash is QDict's tdb_hash.
func qdictHash(key string) uint32 {
	value := 0x238F13AF * uint32(len(key))
	for i := 0; i < len(key); i++ {
		value += uint32(key[i]) << (uint(i) * 5 % 24)
	}
	return 1103515243*value + 12345
}

// qdict is an insertion-ordered map that iterates in QDict order.
type qdict struct {
	keys []string
	vals map[string]any
}

func newQdict() *qdict { return &qdict{vals: map[string]any{}} }

// put adds or replaces key. Values: string, bool, int64, uint64, int, *qdict, []any.
func (d *qdict) put(key string, v any) *qdict {
	if _, ok := d.vals[key]; !ok {
		d.keys = append(d.keys, key)
	}
	d.vals[key] = v
	return d
}

// order returns the keys in QDict iteration order.
func (d *qdict) order() []string {
	out := make([]string, 0, len(d.keys))
	for b := uint32(0); b < qdictBuckets; b++ {
		for i := len(d.keys) - 1; i >= 0; i-- {
			if qdictHash(d.keys[i])%qdictBuckets == b {
				out = append(out, d.keys[i])
			}
		}
	}
	return out
}

// prettyJSON is qobject_to_json_pretty: four-space indentation, "key": value.
func prettyJSON(v any) string {
	var b strings.Builder
	writeJSON(&b, v, 0)
	return b.String()
}

func newline(b *strings.Builder, indent int) {
	b.WriteByte('\n')
	b.WriteString(strings.Repeat("    ", indent))
}

func writeJSON(b *strings.Builder, v any, indent int) {
	switch v := v.(type) {
	case *qdict:
		b.WriteByte('{')
		for i, k := range v.order() {
			if i > 0 {
				b.WriteByte(',')
			}
			newline(b, indent+1)
			writeJSONString(b, k)
			b.WriteString(": ")
			writeJSON(b, v.vals[k], indent+1)
		}
		newline(b, indent)
		b.WriteByte('}')
	case []any:
		b.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			newline(b, indent+1)
			writeJSON(b, e, indent+1)
		}
		newline(b, indent)
		b.WriteByte(']')
	case string:
		writeJSONString(b, v)
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case int:
		b.WriteString(strconv.Itoa(v))
	case int64:
		b.WriteString(strconv.FormatInt(v, 10))
	case uint64:
		// QAPI integers are int64 on the wire.
		b.WriteString(strconv.FormatInt(int64(v), 10))
	default:
		panic(fmt.Sprintf("qjson: unsupported type %T", v))
	}
}

// writeJSONString escapes as QEMU's to_json does: the usual backslash escapes, every other
// control character and everything outside printable ASCII as \uXXXX (upper-case hex,
// surrogate pairs beyond the BMP), invalid UTF-8 as \uFFFD.
func writeJSONString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		s = s[size:]
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			switch {
			case r > 0xFFFF:
				r -= 0x10000
				fmt.Fprintf(b, `\u%04X\u%04X`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
			case r < 0x20 || r >= 0x7F:
				fmt.Fprintf(b, `\u%04X`, r)
			default:
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
}
