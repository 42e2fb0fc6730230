// The commands that copy with several goroutines (convert, convert -c, commit, rebase), run
// in-process so that the race detector sees them: the oracle tests run qnbd-img as a child
// process, which a race build makes without -race (selfexec_test.go).
package main

import (
	"fmt"
	"path/filepath"
	"testing"
)

// racePattern writes 64 KiB runs of distinct bytes at every other MiB of img through qemu-io,
// so that a copy has many pieces, data and holes, for its workers to share out.
func racePattern(t *testing.T, dir, img string, seed int) {
	t.Helper()
	var cmds []string
	for i := 0; i < 16; i += 2 {
		cmds = append(cmds, fmt.Sprintf("write -P %d %dM 64k", seed+i, i))
	}
	qemuIO(t, dir, img, cmds...)
}

// sameGuestData requires qemu-img compare to find a and b equal and qemu-img check to find
// b clean.
func sameGuestData(t *testing.T, dir, a, b string) {
	t.Helper()
	if r := qemu(t, dir, "compare", "-U", a, b); r.code != 0 {
		t.Errorf("qemu-img compare %s %s: %+v", a, b, r)
	}
	if r := qemu(t, dir, "check", "-U", b); r.code != 0 {
		t.Errorf("qemu-img check %s: %+v", b, r)
	}
}

func TestConcurrentCommandsAreRaceFree(t *testing.T) {
	dir := t.TempDir()
	at := func(name string) string { return filepath.Join(dir, name) }
	mustOK := func(r result, what string) {
		t.Helper()
		if r.code != 0 {
			t.Fatalf("%s: %+v", what, r)
		}
	}
	mustOK(qemu(t, dir, "create", "-q", "-f", "qcow2", at("base.qcow2"), "16M"), "create base")
	racePattern(t, dir, at("base.qcow2"), 1)

	t.Run("convert", func(t *testing.T) {
		mustOK(oursAt("convert", "-m", "8", "-W", "-O", "qcow2", at("base.qcow2"), at("conv.qcow2")), "convert")
		sameGuestData(t, dir, at("base.qcow2"), at("conv.qcow2"))
	})
	t.Run("convert-c", func(t *testing.T) {
		mustOK(oursAt("convert", "-c", "-O", "qcow2", at("base.qcow2"), at("comp.qcow2")), "convert -c")
		sameGuestData(t, dir, at("base.qcow2"), at("comp.qcow2"))
	})
	t.Run("commit", func(t *testing.T) {
		mustOK(qemu(t, dir, "convert", "-O", "qcow2", at("base.qcow2"), at("cbase.qcow2")), "copy base")
		mustOK(qemu(t, dir, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", at("cbase.qcow2"), at("top.qcow2")), "create top")
		racePattern(t, dir, at("top.qcow2"), 101)
		mustOK(qemu(t, dir, "convert", "-O", "qcow2", at("top.qcow2"), at("want.qcow2")), "flatten top")
		mustOK(oursAt("commit", "-d", at("top.qcow2")), "commit")
		sameGuestData(t, dir, at("want.qcow2"), at("cbase.qcow2"))
	})
	t.Run("rebase", func(t *testing.T) {
		mustOK(qemu(t, dir, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", at("base.qcow2"), at("over.qcow2")), "create overlay")
		racePattern(t, dir, at("over.qcow2"), 201)
		mustOK(qemu(t, dir, "convert", "-O", "qcow2", at("over.qcow2"), at("owant.qcow2")), "flatten overlay")
		mustOK(qemu(t, dir, "create", "-q", "-f", "qcow2", at("other.qcow2"), "16M"), "create new backing")
		racePattern(t, dir, at("other.qcow2"), 51)
		mustOK(oursAt("rebase", "-F", "qcow2", "-b", at("other.qcow2"), at("over.qcow2")), "rebase")
		sameGuestData(t, dir, at("owant.qcow2"), at("over.qcow2"))
	})
}
