// Block status through libnbd on a backing chain: base:allocation and qemu:allocation-depth
// (0 unallocated, 1 the image itself, 2 its backing file...) as QEMU documents them
// (docs/interop/nbd.txt), and identical to what qemu-nbd -A reports for the same chain.
package e2e

import (
	"path/filepath"
	"reflect"
	"testing"

	"github.com/qnbd/qnbd/e2e/libnbd"
)

// TestLibnbdAllocationDepth builds base.qcow2 <- top.qcow2 with qemu-io, serves top with
// qnbd -A, writes through NBD, and checks both contexts at chosen offsets and against
// qemu-nbd -r -A on the final chain.
func TestLibnbdAllocationDepth(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const mib = 1 << 20
	base := filepath.Join(dir, "base.qcow2")
	top := filepath.Join(dir, "top.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "16M")
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x61 0 4M", "-c", "write -z 6M 1M", base)
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x62 1M 1M", top)

	s := startQnbd(t, serverConfig{Args: []string{"-A", "-f", "qcow2", top}})
	h := connect(t, s, "", withContexts(libnbd.ContextBaseAllocation, libnbd.ContextQemuAllocationDepth))
	must(t, h.Pwrite(stamp(3, 8*mib, mib), 8*mib, 0))  // new data in top
	must(t, h.Pwrite(stamp(4, 3*mib, 4096), 3*mib, 0)) // COW over backing data
	must(t, h.Zero(mib, 12*mib, libnbd.CmdFlagNoHole)) // zero cluster in top
	const hz = libnbd.StateHole | libnbd.StateZero
	depth := blockStatus(t, h, libnbd.ContextQemuAllocationDepth)
	alloc := blockStatus(t, h, libnbd.ContextBaseAllocation)
	for _, c := range []struct {
		off         uint64
		depth, base uint32
	}{
		{0, 2, 0},          // backing data
		{mib + 4096, 1, 0}, // written in top before serving
		{3 * mib, 1, 0},    // written through qnbd over backing data
		{6 * mib, 2, hz},   // zero cluster in the backing file: QEMU says hole|zero
		{8 * mib, 1, 0},    // written through qnbd
		{10 * mib, 0, hz},
		{12 * mib, 1, hz}, // zeroed through qnbd (a zero cluster in top)
		{15 * mib, 0, hz},
	} {
		if got := flagsAt(depth, c.off); got != c.depth {
			t.Errorf("qemu:allocation-depth at %d = %d, want %d (map %v)", c.off, got, c.depth, depth)
		}
		if got := flagsAt(alloc, c.off); got != c.base {
			t.Errorf("base:allocation at %d = %d, want %d (map %v)", c.off, got, c.base, alloc)
		}
	}
	h.Close()
	s.Stop()
	requireClean(t, top)

	// The same chain through both servers, read-only: identical maps.
	q := startQnbd(t, serverConfig{Args: []string{"-r", "-A", "-e", "2", "-f", "qcow2", top}})
	ref := startQemuNBD(t, serverConfig{Args: []string{"-r", "-A", "-e", "2", "-f", "qcow2", top}})
	for _, ctx := range []string{libnbd.ContextBaseAllocation, libnbd.ContextQemuAllocationDepth} {
		hq := connect(t, q, "", withContexts(ctx))
		hr := connect(t, ref, "", withContexts(ctx))
		if got, want := blockStatus(t, hq, ctx), blockStatus(t, hr, ctx); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: qnbd %v, qemu-nbd %v", ctx, got, want)
		}
		hq.Close()
		hr.Close()
	}
}
