// Package metrics exports qnbd's Prometheus metrics. It is the only package that imports
// Prometheus: the qcow2 engine and the NBD server report events through their hook interfaces
// (qcow2.Hooks, server.ExportHooks, server.ServerHooks) and this package implements them.
//
// # Use
//
// cmd/qnbd wires it up like this. Start the endpoint first, so /healthz answers while images
// are opened (a dirty image is repaired before it is served, which can take a while), and
// report ready only once every export is open and listening:
//
//	m := metrics.New(metrics.Options{Version: version, Logger: logger})
//	var ready atomic.Bool
//	if addr != "" { // --metrics-addr HOST:PORT
//		go func() { errc <- m.Serve(ctx, addr, func() error { // returns when ctx ends
//			if !ready.Load() {
//				return errors.New("exports not open yet")
//			}
//			return nil
//		}) }()
//	}
//	for _, name := range exportNames {             // configured exports only
//		ex, err := m.Export(name)                  // every series of the export now exists at 0
//		img, err := qcow2.Open(..., qcow2.OpenOptions{Hooks: ex.Image(), ...})
//		... server export for name with Hooks: ex.NBD() ...
//	}
//	... server config with Hooks: m.Server(); listen ...
//	ready.Store(true)
//
// To fail fast on a busy metrics port, net.Listen first and call ServeListener. Handler returns
// the bare http.Handler (/metrics, /healthz, /readyz) for embedding elsewhere.
//
// # Hot-path contract
//
// Export resolves every label child of an export once, when it is called, into fixed arrays
// indexed by the hook's enum arguments (AllocKind, CacheKind, Op, errno class). A hook call is
// therefore a bounds check and one or a few atomic adds or stores: no lock, no allocation, no
// map lookup, no label hashing, and it never blocks, so it is safe to call with engine locks
// held. Tests check zero allocations per call for every hook, and benchmarks measure each.
// Unknown enum values (from a newer engine) are ignored rather than panicking. Export itself
// takes a mutex and allocates; call it at startup, not per request.
//
// Label cardinality is bounded: export takes only the values passed to Export (the empty
// export name is labelled "(default)"); every other label has a fixed value set listed below.
// All combinations are created at zero by Export, so rate() and absent-series alerts work
// before the first event. The export a client names in a handshake is never a label.
//
// # Catalogue
//
// Durations are histograms with buckets from 10µs to 10s in 1-2.5-5 steps. Catalogue returns
// the same list as data; a test checks that every family is described here.
//
//	name                                    type       labels               meaning
//	qnbd_qcow2_clusters_allocated_total     counter    export, kind         host clusters newly given refcount 1; kind is data, l2, l1, refblock, reftable or bitmap
//	qnbd_qcow2_bitmap_dirty_bytes           gauge      export, bitmap       bytes a persistent bitmap marks dirty, as of the last flush
//	qnbd_qcow2_bitmap_store_duration_seconds histogram export               storing the bitmaps at a clean close
//	qnbd_qcow2_bitmaps_inconsistent         gauge      export               bitmaps found in-use at a read-write open (a writer crashed)
//	qnbd_qcow2_clusters_freed_total         counter    export               host clusters whose refcount dropped to 0
//	qnbd_qcow2_reftable_grows_total         counter    export               times the refcount table moved to a larger copy
//	qnbd_qcow2_reftable_clusters            gauge      export               refcount table size in clusters
//	qnbd_qcow2_l1_entries                   gauge      export               entries in the active L1 table
//	qnbd_qcow2_host_bytes                   gauge      export               host file size in bytes
//	qnbd_qcow2_allocation_duration_seconds  histogram  export               wall time of one allocation call
//	qnbd_qcow2_cache_requests_total         counter    export, cache, result  metadata cache lookups; cache is l2 or refblock, result hit or miss
//	qnbd_qcow2_cache_evictions_total        counter    export, cache        entries evicted from a metadata cache
//	qnbd_qcow2_flushes_total                counter    export               image flushes
//	qnbd_qcow2_flush_duration_seconds       histogram  export               wall time of one image flush
//	qnbd_qcow2_image_dirty                  gauge      export               1 while the dirty bit (lazy refcounts) is set
//	qnbd_qcow2_image_corrupt                gauge      export               1 once the image is marked corrupt
//	qnbd_nbd_requests_total                 counter    export, op, result   finished requests; result is ok, EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN or other
//	qnbd_nbd_request_duration_seconds       histogram  export, op           request off the wire to reply ready
//	qnbd_nbd_bytes_total                    counter    export, op           payload bytes (the range length for trim, write_zeroes, cache)
//	qnbd_nbd_inflight_requests              gauge      export               requests started and not yet done
//	qnbd_nbd_connections                    gauge      export               connections in the transmission phase
//	qnbd_nbd_handshakes_total               counter    result               finished handshakes; result is ok, aborted, timeout, rejected, error, tls_required, tls_failed or authz_denied
//	qnbd_build_info                         gauge      version, goversion   always 1
//
// The TLS refusals are results rather than a separate reason label, so that one bounded label
// answers "why did handshakes fail": tls_required (a plaintext client refused because TLS is
// required), tls_failed (the TLS handshake failed: no, untrusted, expired or revoked client
// certificate, or not TLS at all) and authz_denied (TLS succeeded, the --tls-authz check
// refused the client's DN). A TLS handshake that stalls until --handshake-limit counts as
// timeout. docs/hostile-clients.md lists which client behaviour moves which result.
//
// op is one of read, write, flush, trim, cache, write_zeroes, block_status, disc (server.Op's
// names). The registry also holds the Go runtime collector (go_*) and the process collector
// (process_*).
//
// # HTTP
//
// Serve and ServeListener run an http.Server with read-header, read, write and idle timeouts
// and a header size limit; /metrics allows a few concurrent scrapes and a gather timeout, and
// keeps serving the other families if one collector fails. Shutdown on ctx end waits a few
// seconds for open requests.
//
// Options.WebConfig names a Prometheus exporter-toolkit web configuration file (TLS, client
// certificates, basic auth with bcrypt hashes); Serve and ServeListener then serve through
// the exporter-toolkit, which re-reads the file on every TLS handshake and request and puts
// every path, the probes included, behind it. WebConfigFile.Validate reads the file and what
// it names as the server would and returns a one-line error; call it before serving
// (docs/metrics-web-config.md).
package metrics
