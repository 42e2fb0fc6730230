// Tests and benchmarks of the hot-path contract: no allocation per hook call.
package metrics

import (
	"testing"
	"time"

	"github.com/qnbd/qnbd/qcow2"
	"github.com/qnbd/qnbd/server"
)

// hookCalls is one call of every hook method, through the interfaces the engine and server
// hold, so the measurement includes the interface dispatch they pay.
func hookCalls(img qcow2.Hooks, nbd server.ExportHooks, srv server.ServerHooks) []struct {
	name string
	call func()
} {
	return []struct {
		name string
		call func()
	}{
		{"ClustersAllocated", func() { img.ClustersAllocated(qcow2.AllocL2, 3) }},
		{"ClustersFreed", func() { img.ClustersFreed(2) }},
		{"AllocationDone", func() { img.AllocationDone(40 * time.Microsecond) }},
		{"RefTableGrown", func() { img.RefTableGrown(4) }},
		{"CacheAccess", func() { img.CacheAccess(qcow2.CacheRefBlock, true) }},
		{"CacheEviction", func() { img.CacheEviction(qcow2.CacheL2) }},
		{"Flushed", func() { img.Flushed(3 * time.Millisecond) }},
		{"StateChanged", func() {
			img.StateChanged(qcow2.State{Dirty: true, L1Entries: 8, RefTableClusters: 1, HostBytes: 1 << 20})
		}},
		{"ConnOpened", func() { nbd.ConnOpened() }},
		{"ConnClosed", func() { nbd.ConnClosed() }},
		{"RequestStarted", func() { nbd.RequestStarted(server.OpRead) }},
		{"RequestDone", func() { nbd.RequestDone(server.OpWrite, 4096, 120*time.Microsecond, 0) }},
		{"RequestDoneError", func() { nbd.RequestDone(server.OpTrim, 0, 80*time.Microsecond, 28) }},
		{"Handshake", func() { srv.Handshake("disk", server.HandshakeOK) }},
	}
}

func TestHooksDoNotAllocate(t *testing.T) {
	f := newFixture(t)
	calls := hookCalls(f.a.Image(), f.a.NBD(), f.server)
	if len(calls) < 14 {
		t.Fatalf("only %d hook calls measured", len(calls))
	}
	for _, c := range calls {
		if n := testing.AllocsPerRun(1000, c.call); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", c.name, n)
		}
	}
}

func BenchmarkHooks(b *testing.B) {
	f := newFixture(b)
	for _, c := range hookCalls(f.a.Image(), f.a.NBD(), f.server) {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.call()
			}
		})
	}
}

// BenchmarkHooksParallel runs the per-request pair from every P at once, the contention an
// export with many connections sees.
func BenchmarkHooksParallel(b *testing.B) {
	f := newFixture(b)
	nbd := server.ExportHooks(f.a.NBD())
	img := qcow2.Hooks(f.a.Image())
	b.Run("RequestStarted+RequestDone", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				nbd.RequestStarted(server.OpRead)
				nbd.RequestDone(server.OpRead, 65536, 150*time.Microsecond, 0)
			}
		})
	})
	b.Run("CacheAccess", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				img.CacheAccess(qcow2.CacheL2, true)
			}
		})
	})
}
