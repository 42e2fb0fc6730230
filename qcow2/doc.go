// Package qcow2 is qnbd's qcow2 engine: it opens qcow2 images (version 2 and 3, every feature
// qemu-img creates except encryption), reads and writes them concurrently, and keeps them
// consistent across crashes. The format is qemu's docs/interop/qcow2.txt; the allocator design
// is imago's (allocation.rs), the flush rules QEMU's (qcow2-cache.c).
//
// # Usage
//
//	img, err := qcow2.Open("disk.qcow2", qcow2.OpenOptions{})
//	if err != nil { ... }
//	defer img.Close()
//	_, err = img.WriteAt(buf, 1<<20)
//	err = img.Flush()
//
// # Layout
//
//	guest offset --L1 index--> L1 entry --L2 index--> L2 entry --> host cluster (data)
//	                                                  |           compressed bytes
//	                                                  |           zero flag / unallocated
//	                                                  +-- (extended L2) 32 subcluster bits
//	host cluster --reftable index--> reftable entry --> refcount block --> refcount
//
// # Layers
//
// A request goes through two layers. The metadata layer (mapping.go, write.go) turns a guest
// range into a plan of host extents, under the metadata lock: mapRead returns where each byte
// is (data, compressed, zero, backing); mapWrite finds or creates the mapping, allocating
// clusters (alloc.go) and L2 tables. The data layer (read.go, write.go execWrite, cow.go)
// then does pread/pwrite outside every lock, one call per contiguous host extent; a write
// finally takes the lock again to link its new L2 entries. Metadata tables live in two LRU
// caches (cache.go) written back at Flush or eviction, in the order flush.go states.
//
// # QEMU's semantics
//
// What a client can observe follows QEMU 7.2's qcow2 driver and block layer, tested against
// qemu-img, qemu-io and qemu-nbd (*_qemu_test.go): Zero and Discard change the L2 entries as
// qcow2_co_pwrite_zeroes / qcow2_co_pdiscard do (zero.go, discard.go), Resize as
// qcow2_co_truncate (resize.go), BlockStatus and MapStatus answer as bdrv_block_status_above
// and qemu-img map (status.go, metaprealloc.go), and the host file gets the same holes
// (ZERO_RANGE for zero copy-on-write, punching when a request frees clusters). Open reads the
// snapshot table as QEMU does at open (snapshot.go LoadSnapshots); persistent bitmaps are
// loaded and marked in-use at a read-write open and stored at a clean close (bitmap_open.go, bitmap_store.go).
//
// # Which query: Map, MapStatus or BlockStatus
//
// Three methods describe a guest range; they differ in whose view they give.
//
//   - BlockStatus is what a client of the whole chain sees: bdrv_block_status_above(image,
//     NULL), going down the backing chain for every run this image does not allocate. Use it
//     for NBD block status (base:allocation, qemu:allocation-depth) and to ask whether a range
//     reads as zeros.
//   - MapStatus is qemu-img map's view: it goes down the chain only while a layer says
//     neither data nor zero, so a range past the end of a shorter backing file stays at the
//     layer above. Use it for qemu-img map, compare and convert output (internal/imgfmt).
//   - Map is the metadata as it stands: each run's kind (data, compressed, zero,
//     unallocated), the layer that holds it and its host offset, without the file-system
//     holes or the metadata-preallocation heuristic the two status queries apply. Use it to
//     look at the mapping itself (tests, debugging, the backing-chain walk).
//
// Zero (with ZeroFlags) is the one zeroing entry point; the boolean WriteZeroes it replaced is
// gone.
//
// # Concurrency
//
// Every exported method of Image is safe for concurrent use. Four things coordinate:
//
//   - gate (sync.RWMutex): held shared by every request for its duration, exclusively by
//     Resize and Close, which thereby wait for requests in flight.
//   - mu (sync.Mutex), the metadata lock: guards the header, the L1 table, both caches, the
//     allocator, the in-flight table, pins. Held only while planning, linking, zeroing or
//     discarding in the metadata, and flushing; never while waiting for another request.
//   - the in-flight table (busy): a guest cluster whose L2 entry a write is about to change
//     is marked busy from planning until linking. A second writer (or zero/discard) that
//     needs it waits on its channel with mu released, then plans again and finds the first
//     writer's cluster (QEMU's L2Meta dependencies, imago's range blockers). Readers never
//     wait on it: until the link, the cluster reads as before.
//   - pins: host ranges that data I/O outside the lock is using. A cluster freed while pinned
//     is freed (and becomes allocatable) only when the last pin goes, so a cluster can never
//     be handed to another guest cluster while a request still reads or writes it.
//
// Lock order: gate, then mu, then, on O_DIRECT storage only, the edge-block stripe locks of
// storage_direct.go: leaves, held across one read-modify-write (or fallocate) of at most two
// blocks taken in ascending order, with no other lock taken under them. Nothing else is
// ever locked inside mu (hooks must not call back). The allocator has no mutex of its own: it is folded under mu, because every
// allocation happens while a mapping is being built and every free while an L2 entry changes,
// both under mu already; a nested allocator mutex would always be taken with mu held and so
// never be contended, only add a lock order to get wrong.
//
// # Consistency
//
// Anything read from disk is untrusted: table sizes are bounded before allocation, every L2
// entry is validated when its table is loaded, every L1 and reftable entry when used. A
// metadata inconsistency found at run time marks the image corrupt (incompatible bit 1) and
// fails the request with an error matching ErrCorrupt and syscall.EIO; writes are refused from
// then on. Before every metadata write, and for every guest data write into the image file,
// the target is checked against the metadata the engine knows of (header, L1, reftable,
// snapshot table and L1s, bitmap directory, every L2 table the active L1 names and every
// refcount block the reftable names, cached or not: sets kept in step with both tables,
// overlap.go): the allocator must never hand out a cluster that is in use. See flush.go for
// the write order that makes a crash at any point leak clusters at worst; refcount
// decrements are batched behind an L2 and L1 flush (mapping.go), and a failed fsync fails
// every later one until the image is reopened (synclatch.go), as in QEMU.
//
// # Errors
//
// An I/O error fails the request and leaves the image consistent (a write that failed may
// leak the clusters it allocated). A half-done header switch (growing the reftable or the L1
// table) makes the image refuse writes until reopened. Corruption marks the image, as above.
package qcow2
