// Block status against QEMU: MapStatus vs qemu-img map, BlockStatus vs qemu-nbd's
// base:allocation and qemu:allocation-depth, on images made by qemu-img and qemu-io.
package qcow2

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// qemuMapEntry is one entry of qemu-img map --output=json, all fields.
type qemuMapEntry struct {
	Start   uint64  `json:"start"`
	Length  uint64  `json:"length"`
	Depth   int     `json:"depth"`
	Present bool    `json:"present"`
	Zero    bool    `json:"zero"`
	Data    bool    `json:"data"`
	Offset  *uint64 `json:"offset,omitempty"`
	// Filename is not in the JSON output; the human output prints it.
	Filename string `json:"-"`
}

func (e qemuMapEntry) String() string {
	off := "-"
	if e.Offset != nil {
		off = fmt.Sprint(*e.Offset)
	}
	return fmt.Sprintf("{%d+%d d%d p%v z%v D%v @%s %s}", e.Start, e.Length, e.Depth, e.Present, e.Zero, e.Data, off, filepath.Base(e.Filename))
}

// mapEntries turns MapStatus runs into what qemu-img map prints, merged as it merges them
// (entry_mergeable).
func mapEntries(st []Status) []qemuMapEntry {
	var out []qemuMapEntry
	for _, s := range st {
		e := qemuMapEntry{Start: s.Start, Length: s.Length, Depth: s.Depth, Present: s.Allocated, Zero: s.Zero, Data: s.Data}
		if s.HasOffset {
			o := uint64(s.Offset)
			e.Offset, e.Filename = &o, s.File
		}
		if k := len(out) - 1; k >= 0 {
			p := &out[k]
			if p.Zero == e.Zero && p.Data == e.Data && p.Depth == e.Depth && p.Present == e.Present &&
				(p.Offset == nil) == (e.Offset == nil) &&
				(p.Offset == nil || (p.Filename == e.Filename && *p.Offset+p.Length == *e.Offset)) {
				p.Length += e.Length
				continue
			}
		}
		out = append(out, e)
	}
	return out
}

// cutEntries is entries restricted to [a, b): the runs cut at both ends, offsets moved with
// their starts.
func cutEntries(entries []qemuMapEntry, a, b uint64) []qemuMapEntry {
	var out []qemuMapEntry
	for _, e := range entries {
		s, end := max(e.Start, a), min(e.Start+e.Length, b)
		if s >= end {
			continue
		}
		c := e
		if e.Offset != nil {
			o := *e.Offset + (s - e.Start)
			c.Offset = &o
		}
		c.Start, c.Length = s, end-s
		out = append(out, c)
	}
	return out
}

// humanMap renders entries as qemu-img map's human output does (only data that is not known
// zero, with its offset and file), or "" when it refuses (data without an offset).
func humanMap(entries []qemuMapEntry) string {
	var b strings.Builder
	b.WriteString("Offset          Length          Mapped to       File\n")
	hex := func(v uint64) string {
		if v == 0 {
			return fmt.Sprintf("%-16s", "0")
		}
		return fmt.Sprintf("%-16s", fmt.Sprintf("%#x", v))
	}
	for _, e := range entries {
		if e.Data && e.Offset == nil {
			return ""
		}
		if e.Data && !e.Zero {
			fmt.Fprintf(&b, "%s%s%s%s\n", hex(e.Start), hex(e.Length), hex(*e.Offset), e.Filename)
		}
	}
	return b.String()
}

// nbdExtent is one entry of nbdinfo --map --json.
type nbdExtent struct {
	Offset uint64 `json:"offset"`
	Length uint64 `json:"length"`
	Type   uint32 `json:"type"`
}

// qemuNBDMaps serves img read-only with qemu-nbd -A and returns its base:allocation and
// qemu:allocation-depth maps.
func qemuNBDMaps(t *testing.T, img string) (alloc, depth []nbdExtent) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	cmd := exec.Command("qemu-nbd", "-r", "-t", "-A", "-k", sock, "-f", "qcow2", img)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	uri := "nbd+unix:///?socket=" + sock
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	get := func(context string) []nbdExtent {
		for {
			out, err := exec.CommandContext(ctx, "nbdinfo", "--map="+context, "--json", uri).Output()
			if err == nil {
				var ext []nbdExtent
				if err := json.Unmarshal(out, &ext); err != nil {
					t.Fatalf("nbdinfo: %v\n%s", err, out)
				}
				return ext
			}
			if ctx.Err() != nil {
				t.Fatalf("qemu-nbd did not serve %s: %s", img, stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return get("base:allocation"), get("qemu:allocation-depth")
}

// nbdMaps turns BlockStatus runs into qemu-nbd's two contexts, merged by flags.
func nbdMaps(st []Status) (alloc, depth []nbdExtent) {
	add := func(l *[]nbdExtent, s Status, flags uint32) {
		if k := len(*l) - 1; k >= 0 && (*l)[k].Type == flags {
			(*l)[k].Length += s.Length
			return
		}
		*l = append(*l, nbdExtent{Offset: s.Start, Length: s.Length, Type: flags})
	}
	for _, s := range st {
		var f uint32
		if !s.Data {
			f |= 1 // NBD_STATE_HOLE
		}
		if s.Zero {
			f |= 2 // NBD_STATE_ZERO
		}
		add(&alloc, s, f)
		var d uint32
		if s.Allocated {
			d = uint32(s.Depth) + 1
		}
		add(&depth, s, d)
	}
	return alloc, depth
}

// statusCases are the images compared: the read tests' qemu-made images, and a few more shapes
// block status treats specially.
func statusCases() []engQemuCase {
	cases := engQemuCases()
	return append(cases,
		engQemuCase{name: "extl2-nobacking-partial", opts: "extended_l2=on", size: "4M",
			io: []string{"write -P 1 10k 3k", "write -z 100k 2k", "write -P 2 1M 64k", "write -z 1M 32k"}},
		engQemuCase{name: "backing-qcow2-shorter-chain", opts: "cluster_size=4096", size: "4M",
			io: []string{"write -P 3 100k 8k", "write -z 2M 64k"}, backingFmt: "qcow2", backingSz: "1M",
			backingIO: []string{"write -P 4 0 512k", "write -z 600k 64k"}},
		engQemuCase{name: "backing-raw-unaligned", size: "2M", io: []string{"write -P 5 64k 4k"},
			backingFmt: "raw", backingSz: "1000000", backingIO: []string{"write -P 6 0 300000", "write -P 6 900000 100000"}},
		engQemuCase{name: "zero-alloc", size: "4M",
			io: []string{"write -P 7 0 1M", "write -z 0 256k", "write -z -u 512k 128k", "discard 768k 64k"}},
		engQemuCase{name: "prealloc-metadata-64k", opts: "preallocation=metadata", size: "8M",
			io: []string{"write -P 8 1M 100k", "write -z 4M 64k"}},
		engQemuCase{name: "prealloc-falloc", opts: "preallocation=falloc,cluster_size=4096", size: "1M",
			io: []string{"write -P 8 8k 4k"}},
	)
}

// TestStatusMatchesQemu: for every case, MapStatus gives exactly qemu-img map's entries
// (offsets and file names included), and BlockStatus exactly qemu-nbd's base:allocation and
// qemu:allocation-depth; both on a read-only and a read-write open.
func TestStatusMatchesQemu(t *testing.T) {
	for _, c := range statusCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			compareStatusWithQemu(t, engBuild(t, t.TempDir(), c))
		})
	}
}

// compareStatusWithQemu opens the image at p read-only and read-write and compares MapStatus
// with qemu-img map (JSON, all fields, and the human output with its file names) and
// BlockStatus with qemu-nbd's base:allocation and qemu:allocation-depth.
func compareStatusWithQemu(t *testing.T, p string) {
	t.Helper()
	var want []qemuMapEntry
	if err := json.Unmarshal([]byte(engQemu(t, "qemu-img", "map", "--output=json", p)), &want); err != nil {
		t.Fatal(err)
	}
	wantAlloc, wantDepth := qemuNBDMaps(t, p)
	human, herr := exec.Command("qemu-img", "map", p).Output()
	if herr != nil {
		human = nil // qemu-img refuses compressed clusters in its human output
	}
	for _, ro := range []bool{true, false} {
		img, err := Open(p, OpenOptions{ReadOnly: ro})
		if err != nil {
			t.Fatal(err)
		}
		ms, err := img.MapStatus(0, img.Size())
		if err != nil {
			t.Fatal(err)
		}
		got := mapEntries(ms)
		if h := humanMap(got); h != string(human) {
			t.Errorf("read-only %v: human map\n ours:\n%s qemu:\n%s", ro, h, human)
		}
		for i := range got {
			got[i].Filename = ""
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("read-only %v: MapStatus\n ours: %v\n qemu: %v", ro, got, want)
		}
		bs, err := img.BlockStatus(0, img.Size())
		if err != nil {
			t.Fatal(err)
		}
		gotAlloc, gotDepth := nbdMaps(bs)
		if !reflect.DeepEqual(gotAlloc, wantAlloc) {
			t.Errorf("read-only %v: base:allocation\n ours: %v\n qemu: %v", ro, gotAlloc, wantAlloc)
		}
		if !reflect.DeepEqual(gotDepth, wantDepth) {
			t.Errorf("read-only %v: qemu:allocation-depth\n ours: %v\n qemu: %v", ro, gotDepth, wantDepth)
		}
		// A query of a part answers the same as the whole, cut to the part.
		if sz := img.Size(); sz > 3*65536 {
			a, b := uint64(65536+512), 65536+512+sz/2
			part, err := img.MapStatus(GuestOffset(a), b-a)
			if err != nil {
				t.Fatal(err)
			}
			gotPart := mapEntries(part)
			for i := range gotPart {
				gotPart[i].Filename = ""
			}
			if wantPart := cutEntries(want, a, b); !reflect.DeepEqual(gotPart, wantPart) {
				t.Errorf("read-only %v: MapStatus of %d..%d\n ours: %v\n qemu: %v", ro, a, b, gotPart, wantPart)
			}
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDetectMetadataPrealloc: QEMU's heuristic on qemu-img-made images, read-only and
// read-write: a metadata-preallocated sparse image is detected, a plain one and a fully
// preallocated one are not. (Its effect on block status is in TestStatusMatchesQemu.)
func TestDetectMetadataPrealloc(t *testing.T) {
	dir := t.TempDir()
	for name, want := range map[string]bool{"off": false, "metadata": true, "full": false} {
		p := engCreate(t, dir, name+".qcow2", "preallocation="+name, "64M")
		for _, ro := range []bool{true, false} {
			img, err := Open(p, OpenOptions{ReadOnly: ro})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := img.BlockStatus(0, 65536); err != nil {
				t.Fatal(err)
			}
			img.mu.Lock()
			got, checked := img.prealloc, img.preallocChecked
			img.mu.Unlock()
			if !checked || got != want {
				t.Errorf("preallocation=%s, read-only %v: detected %v (checked %v), want %v", name, ro, got, checked, want)
			}
			img.Close()
		}
	}
}
