// Tests that every hook moves exactly the right series by the right amount.
package metrics

import (
	"testing"
	"time"

	"github.com/qnbd/qnbd/qcow2"
	"github.com/qnbd/qnbd/server"
)

// fixture is a registry with two exports, so each test also shows the other export untouched.
type fixture struct {
	m      *Metrics
	a, b   *Export
	server *ServerHooks
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	m := New(Options{Version: "test"})
	a, err := m.Export("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Export("b")
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{m: m, a: a, b: b, server: m.Server()}
}

var allKinds = []qcow2.AllocKind{qcow2.AllocData, qcow2.AllocL2, qcow2.AllocL1, qcow2.AllocRefBlock, qcow2.AllocRefTable, qcow2.AllocBitmap}

func TestHooksMoveTheirSeries(t *testing.T) {
	type tc struct {
		name string
		call func(img *ImageHooks, nbd *NBDHooks, srv *ServerHooks)
		want func(w snapshot)
	}
	cases := []tc{
		{"ClustersFreed", func(img *ImageHooks, _ *NBDHooks, _ *ServerHooks) { img.ClustersFreed(9) },
			func(w snapshot) { w[key("qnbd_qcow2_clusters_freed_total", "export", "a")] = 9 }},
		{"AllocationDone", func(img *ImageHooks, _ *NBDHooks, _ *ServerHooks) { img.AllocationDone(3 * time.Millisecond) },
			func(w snapshot) { observed(w, "qnbd_qcow2_allocation_duration_seconds", 0.003, "export", "a") }},
		{"AllocationDone negative", func(img *ImageHooks, _ *NBDHooks, _ *ServerHooks) { img.AllocationDone(-time.Second) },
			func(w snapshot) { observed(w, "qnbd_qcow2_allocation_duration_seconds", 0, "export", "a") }},
		{"RefTableGrown", func(img *ImageHooks, _ *NBDHooks, _ *ServerHooks) { img.RefTableGrown(7) },
			func(w snapshot) {
				w[key("qnbd_qcow2_reftable_grows_total", "export", "a")] = 1
				w[key("qnbd_qcow2_reftable_clusters", "export", "a")] = 7
			}},
		{"CacheAccess", func(img *ImageHooks, _ *NBDHooks, _ *ServerHooks) {
			img.CacheAccess(qcow2.CacheL2, true)
			img.CacheAccess(qcow2.CacheL2, true)
			img.CacheAccess(qcow2.CacheL2, false)
			img.CacheAccess(qcow2.CacheRefBlock, false)
			img.CacheAccess(qcow2.CacheKind(200), true)
		}, func(w snapshot) {
			w[key("qnbd_qcow2_cache_requests_total", "export", "a", "cache", "l2", "result", "hit")] = 2
			w[key("qnbd_qcow2_cache_requests_total", "export", "a", "cache", "l2", "result", "miss")] = 1
			w[key("qnbd_qcow2_cache_requests_total", "export", "a", "cache", "refblock", "result", "miss")] = 1
		}},
		{"CacheEviction", func(img *ImageHooks, _ *NBDHooks, _ *ServerHooks) {
			img.CacheEviction(qcow2.CacheRefBlock)
			img.CacheEviction(qcow2.CacheRefBlock)
			img.CacheEviction(qcow2.CacheL2)
			img.CacheEviction(qcow2.CacheKind(2))
		}, func(w snapshot) {
			w[key("qnbd_qcow2_cache_evictions_total", "export", "a", "cache", "refblock")] = 2
			w[key("qnbd_qcow2_cache_evictions_total", "export", "a", "cache", "l2")] = 1
		}},
		{"Flushed", func(img *ImageHooks, _ *NBDHooks, _ *ServerHooks) { img.Flushed(2 * time.Second) },
			func(w snapshot) {
				w[key("qnbd_qcow2_flushes_total", "export", "a")] = 1
				observed(w, "qnbd_qcow2_flush_duration_seconds", 2, "export", "a")
			}},
		{"StateChanged", func(img *ImageHooks, _ *NBDHooks, _ *ServerHooks) {
			img.StateChanged(qcow2.State{Dirty: true, Corrupt: true, L1Entries: 12, RefTableClusters: 3, HostBytes: 1 << 30})
		}, func(w snapshot) {
			w[key("qnbd_qcow2_image_dirty", "export", "a")] = 1
			w[key("qnbd_qcow2_image_corrupt", "export", "a")] = 1
			w[key("qnbd_qcow2_l1_entries", "export", "a")] = 12
			w[key("qnbd_qcow2_reftable_clusters", "export", "a")] = 3
			w[key("qnbd_qcow2_host_bytes", "export", "a")] = 1 << 30
		}},
		{"StateChanged back to clean", func(img *ImageHooks, _ *NBDHooks, _ *ServerHooks) {
			img.StateChanged(qcow2.State{Dirty: true, L1Entries: 4})
			img.StateChanged(qcow2.State{L1Entries: 4})
		}, func(w snapshot) { w[key("qnbd_qcow2_l1_entries", "export", "a")] = 4 }},
		{"ConnOpened/ConnClosed", func(_ *ImageHooks, nbd *NBDHooks, _ *ServerHooks) {
			nbd.ConnOpened()
			nbd.ConnOpened()
			nbd.ConnOpened()
			nbd.ConnClosed()
		}, func(w snapshot) { w[key("qnbd_nbd_connections", "export", "a")] = 2 }},
		{"RequestStarted", func(_ *ImageHooks, nbd *NBDHooks, _ *ServerHooks) { nbd.RequestStarted(server.OpWrite) },
			func(w snapshot) { w[key("qnbd_nbd_inflight_requests", "export", "a")] = 1 }},
		{"RequestDone unknown op", func(_ *ImageHooks, nbd *NBDHooks, _ *ServerHooks) {
			nbd.RequestStarted(server.Op(99))
			nbd.RequestStarted(server.OpRead)
			nbd.RequestDone(server.Op(99), 4096, time.Millisecond, 0)
		}, func(w snapshot) { w[key("qnbd_nbd_inflight_requests", "export", "a")] = 1 }},
	}
	// ClustersAllocated, per kind, with a distinct count each; an unknown kind moves nothing.
	for i, k := range allKinds {
		n := uint64(10*i + 3)
		cases = append(cases, tc{"ClustersAllocated " + k.String(),
			func(img *ImageHooks, _ *NBDHooks, _ *ServerHooks) {
				img.ClustersAllocated(k, n)
				img.ClustersAllocated(qcow2.AllocKind(77), 1000)
			},
			func(w snapshot) {
				w[key("qnbd_qcow2_clusters_allocated_total", "export", "a", "kind", k.String())] = float64(n)
			}})
	}
	// RequestDone, per op and per errno.
	errnos := []struct {
		errno uint32
		name  string
	}{{0, "ok"}, {1, "EPERM"}, {5, "EIO"}, {12, "ENOMEM"}, {22, "EINVAL"}, {28, "ENOSPC"},
		{75, "EOVERFLOW"}, {95, "ENOTSUP"}, {108, "ESHUTDOWN"}, {4, "other"}, {1 << 31, "other"}}
	for o := server.Op(0); o < server.NumOps; o++ {
		for _, e := range errnos {
			cases = append(cases, tc{"RequestDone " + o.String() + " " + e.name,
				func(_ *ImageHooks, nbd *NBDHooks, _ *ServerHooks) {
					nbd.RequestStarted(o)
					nbd.RequestDone(o, 65536+uint64(o), 250*time.Microsecond, e.errno)
				},
				func(w snapshot) {
					w[key("qnbd_nbd_requests_total", "export", "a", "op", o.String(), "result", e.name)] = 1
					w[key("qnbd_nbd_bytes_total", "export", "a", "op", o.String())] = float64(65536 + uint64(o))
					observed(w, "qnbd_nbd_request_duration_seconds", 250e-6, "export", "a", "op", o.String())
				}})
		}
	}
	// Handshake, per result; neither the export name nor an unknown result adds a series.
	for r := server.HandshakeResult(0); r < server.NumHandshakeResults; r++ {
		cases = append(cases, tc{"Handshake " + r.String(),
			func(_ *ImageHooks, _ *NBDHooks, srv *ServerHooks) {
				srv.Handshake("client-chosen-name", r)
				srv.Handshake("", server.HandshakeResult(200))
			},
			func(w snapshot) { w[key("qnbd_nbd_handshakes_total", "result", r.String())] = 1 }})
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			before := takeSnapshot(t, f.m.Registry())
			c.call(f.a.Image(), f.a.NBD(), f.server)
			got := diff(before, takeSnapshot(t, f.m.Registry()))
			want := snapshot{}
			c.want(want)
			if !equalSnapshots(got, want) {
				t.Errorf("changed series:\n%swant:\n%s", got, want)
			}
		})
	}
}

// TestHooksConcurrent drives one export's hooks from many goroutines (run it with -race) and
// checks that no update is lost.
func TestHooksConcurrent(t *testing.T) {
	f := newFixture(t)
	const workers, perWorker = 8, 2000
	img, nbd := f.a.Image(), f.a.NBD()
	done := make(chan struct{})
	for w := 0; w < workers; w++ {
		go func() {
			defer func() { done <- struct{}{} }()
			nbd.ConnOpened()
			for i := 0; i < perWorker; i++ {
				nbd.RequestStarted(server.OpWrite)
				img.ClustersAllocated(qcow2.AllocData, 2)
				img.CacheAccess(qcow2.CacheL2, i%4 != 0)
				nbd.RequestDone(server.OpWrite, 4096, 100*time.Microsecond, 0)
			}
			nbd.ConnClosed()
		}()
	}
	for w := 0; w < workers; w++ {
		<-done
	}
	s := takeSnapshot(t, f.m.Registry())
	const n = workers * perWorker
	for k, want := range map[string]float64{
		key("qnbd_nbd_requests_total", "export", "a", "op", "write", "result", "ok"):           n,
		key("qnbd_nbd_bytes_total", "export", "a", "op", "write"):                              n * 4096,
		key("qnbd_nbd_request_duration_seconds_count", "export", "a", "op", "write"):           n,
		key("qnbd_nbd_inflight_requests", "export", "a"):                                       0,
		key("qnbd_nbd_connections", "export", "a"):                                             0,
		key("qnbd_qcow2_clusters_allocated_total", "export", "a", "kind", "data"):              2 * n,
		key("qnbd_qcow2_cache_requests_total", "export", "a", "cache", "l2", "result", "hit"):  n * 3 / 4,
		key("qnbd_qcow2_cache_requests_total", "export", "a", "cache", "l2", "result", "miss"): n / 4,
	} {
		if got := s[k]; got != want {
			t.Errorf("%s = %g, want %g", k, got, want)
		}
	}
}
