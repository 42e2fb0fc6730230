// nbdinfo against qnbd, with qemu-nbd as the reference: --json, --can exit codes, --list of
// every export with its description, and go-nbd's client.List.
package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/pojntfx/go-nbd/pkg/client"

	"github.com/qnbd/qnbd/e2e/libnbd"
)

// nbdinfoJSON is `nbdinfo --json` (and `--list --json`) output.
type nbdinfoJSON struct {
	Protocol   string         `json:"protocol"`
	TLS        bool           `json:"TLS"`
	Structured bool           `json:"structured"`
	Exports    []nbdinfoEntry `json:"exports"`
}

// nbdinfoEntry is one export of nbdinfoJSON; block sizes are kept apart because servers
// may choose them.
type nbdinfoEntry struct {
	Name         string   `json:"export-name"`
	Description  string   `json:"description"`
	Contexts     []string `json:"contexts"`
	Rotational   bool     `json:"is_rotational"`
	ReadOnly     bool     `json:"is_read_only"`
	CanCache     bool     `json:"can_cache"`
	CanDF        bool     `json:"can_df"`
	CanFastZero  bool     `json:"can_fast_zero"`
	CanFlush     bool     `json:"can_flush"`
	CanFua       bool     `json:"can_fua"`
	CanMultiConn bool     `json:"can_multi_conn"`
	CanTrim      bool     `json:"can_trim"`
	CanZero      bool     `json:"can_zero"`
	Size         int64    `json:"export-size"`

	BlockMin       int64 `json:"block_size_minimum"`
	BlockPreferred int64 `json:"block_size_preferred"`
	BlockMax       int64 `json:"block_size_maximum"`
}

func nbdinfo(t *testing.T, args ...string) nbdinfoJSON {
	t.Helper()
	out := run(t, append([]string{"nbdinfo", "--json"}, args...)...)
	var j nbdinfoJSON
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatalf("nbdinfo --json %q: %v\n%s", args, err, out)
	}
	return j
}

// withoutBlockSizes returns e with the block sizes cleared, after checking they obey the
// spec: minimum a power of two up to 64 KiB, preferred a power of two at least the minimum,
// maximum at least the preferred.
func withoutBlockSizes(t *testing.T, e nbdinfoEntry) nbdinfoEntry {
	t.Helper()
	pow2 := func(v int64) bool { return v > 0 && v&(v-1) == 0 }
	if !pow2(e.BlockMin) || e.BlockMin > 64<<10 || !pow2(e.BlockPreferred) || e.BlockPreferred < e.BlockMin || e.BlockMax < e.BlockPreferred {
		t.Errorf("export %q block sizes min %d preferred %d max %d break the spec's rules", e.Name, e.BlockMin, e.BlockPreferred, e.BlockMax)
	}
	e.BlockMin, e.BlockPreferred, e.BlockMax = 0, 0, 0
	return e
}

// canProperties are every property `nbdinfo --can` tests.
var canProperties = []string{"cache", "connect", "df", "fast-zero", "flush", "fua", "multi-conn",
	"read", "structured-reply", "trim", "write", "zero"}

// TestNbdinfoMatchesQemuNBD serves one image from qnbd and from qemu-nbd with the same
// flags, in a writable configuration that offers everything and in a read-only
// single-client one, and requires the same nbdinfo --json (apart from block sizes, which
// must still be valid) and the same exit code from every nbdinfo --can.
func TestNbdinfoMatchesQemuNBD(t *testing.T) {
	for _, format := range writableFormats {
		for name, flags := range map[string][]string{
			"writable": {"-e", "4", "--discard=unmap", "-A", "-x", "disk", "-D", "a test disk"},
			"readonly": {"-r", "-x", "disk", "-D", "read only, one client"},
			"default":  {"-x", "disk"},
		} {
			t.Run(format+"/"+name, func(t *testing.T) {
				t.Parallel()
				// Each server gets its own image: QEMU locks an image it opens for writing.
				img := newImage(t, format, 16, "")
				refImg := newImage(t, format, 16, "")
				args := append([]string{"-f", format}, flags...)
				q := startQnbd(t, serverConfig{Args: append(args, img)})
				ref := startQemuNBD(t, serverConfig{Args: append(slices.Clip(args), refImg)})

				got, want := nbdinfo(t, q.URI("disk")), nbdinfo(t, ref.URI("disk"))
				if len(got.Exports) != 1 || len(want.Exports) != 1 {
					t.Fatalf("exports: qnbd %d, qemu-nbd %d, want 1", len(got.Exports), len(want.Exports))
				}
				got.Exports[0] = withoutBlockSizes(t, got.Exports[0])
				want.Exports[0] = withoutBlockSizes(t, want.Exports[0])
				if !reflect.DeepEqual(got, want) {
					t.Errorf("nbdinfo --json differs:\nqnbd:     %+v\nqemu-nbd: %+v", got, want)
				}
				if name == "writable" {
					e := got.Exports[0]
					all := e.CanCache && e.CanDF && e.CanFastZero && e.CanFlush && e.CanFua && e.CanMultiConn && e.CanTrim && e.CanZero && got.Structured
					if !all || !slices.Contains(e.Contexts, "base:allocation") {
						t.Errorf("writable export does not offer everything: %+v", got)
					}
				}
				for _, p := range canProperties {
					g := runCode(t, "nbdinfo", "--can", p, q.URI("disk"))
					w := runCode(t, "nbdinfo", "--can", p, ref.URI("disk"))
					if g.Code != w.Code {
						t.Errorf("nbdinfo --can %s: qnbd exit %d, qemu-nbd exit %d\n%s", p, g.Code, w.Code, g.Stderr)
					}
					if name == "writable" && g.Code != 0 {
						t.Errorf("nbdinfo --can %s on the writable export: exit %d, want 0", p, g.Code)
					}
				}
				finishImage(t, q, format, img)
			})
		}
	}
}

// TestNbdinfoListExports serves a default export and three more with --export, then lists
// them with nbdinfo --list and with libnbd's opt_list: every export appears once, with its
// description, size and read-only flag, and each can be opened by name.
func TestNbdinfoListExports(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	type exp struct {
		name, desc string
		size       int64
		ro         bool
		format     string
	}
	exps := []exp{
		{"", "the default export", 1 << 20, false, "raw"},
		{"alpha", "first extra export", 2 << 20, false, "raw"},
		{"beta", "second, with a comma", 3 << 20, true, "raw"},
		{"gamma", "", 4 << 20, false, "qcow2"},
	}
	files := make([]string, len(exps))
	for i, e := range exps {
		d := dir + "/" + string(rune('a'+i))
		must(t, os.Mkdir(d, 0o755))
		if e.format == "qcow2" {
			files[i] = newQcow2(t, d, fmt.Sprint(e.size), "")
		} else {
			files[i] = newRaw(t, d, e.size)
		}
	}
	args := []string{"-e", "0", "-f", "raw", "-D", exps[0].desc}
	for i, e := range exps[1:] {
		spec := e.name + "=" + escapeComma(files[i+1]) + ",format=" + e.format
		if e.ro {
			spec += ",readonly=on"
		}
		if e.desc != "" {
			spec += ",description=" + escapeComma(e.desc)
		}
		args = append(args, "--export", spec)
	}
	args = append(args, files[0])
	s := startQnbd(t, serverConfig{Args: args})

	list := nbdinfo(t, "--list", s.URI(""))
	if len(list.Exports) != len(exps) {
		t.Fatalf("nbdinfo --list: %d exports, want %d: %+v", len(list.Exports), len(exps), list.Exports)
	}
	for _, e := range exps {
		i := slices.IndexFunc(list.Exports, func(g nbdinfoEntry) bool { return g.Name == e.name })
		if i < 0 {
			t.Errorf("export %q not listed: %+v", e.name, list.Exports)
			continue
		}
		g := list.Exports[i]
		if g.Description != e.desc || g.Size != e.size || g.ReadOnly != e.ro {
			t.Errorf("export %q listed as description %q size %d read-only %v, want %q %d %v",
				e.name, g.Description, g.Size, g.ReadOnly, e.desc, e.size, e.ro)
		}
		one := nbdinfo(t, s.URI(e.name))
		if len(one.Exports) != 1 || one.Exports[0].Size != e.size {
			t.Errorf("nbdinfo %s: %+v, want size %d", s.URI(e.name), one.Exports, e.size)
		}
	}

	// libnbd in opt mode lists them too (NBD_OPT_LIST through nbd_opt_list).
	h, err := libnbd.Create()
	must(t, err)
	defer h.Close()
	must(t, h.SetOptMode(true))
	must(t, h.ConnectURI(s.URI("")))
	entries, err := h.OptList()
	must(t, err)
	must(t, h.OptAbort())
	var got, want []string
	for _, e := range entries {
		got = append(got, e.Name+"="+e.Description)
	}
	for _, e := range exps {
		want = append(want, e.name+"="+e.desc)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("libnbd opt_list = %q, want %q", got, want)
	}
}

// TestGoNBDList lists exports with go-nbd's client.List. go-nbd v0.3.2 reads only the first
// NBD_REP_SERVER reply and takes its whole payload for names (a description would be read
// as another name's length), so it can only list a server with one export without a
// description; qnbd serves that shape here.
func TestGoNBDList(t *testing.T) {
	t.Parallel()
	img := newRaw(t, t.TempDir(), 1<<20)
	s := startQnbd(t, serverConfig{Args: []string{"-f", "raw", "-x", "only", img}})
	nc, err := net.DialTimeout("unix", s.Sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	names, err := client.List(nc)
	if err != nil {
		t.Fatalf("go-nbd client.List: %v", err)
	}
	if !slices.Equal(names, []string{"only"}) {
		t.Errorf("go-nbd client.List = %q, want [only]", names)
	}
}

// escapeComma doubles commas, as --export's option syntax (QEMU's) requires.
func escapeComma(s string) string {
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
