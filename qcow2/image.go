// The Image: opening (header, data file, backing chain, L1, allocator), accessors, closing.
package qcow2

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// OpenOptions select how an image is opened.
type OpenOptions struct {
	// ReadOnly opens the image (and always its backing files) read-only.
	ReadOnly bool
	// Snapshot is the ID or name of an internal snapshot to expose instead of the active
	// state (read-only; findSnapshot's syntax), at the image's current virtual size, as
	// qemu-nbd -l does.
	Snapshot string
	// DataFile overrides the external data file name stored in the header.
	DataFile string
	// NoBacking does not open the backing file: unallocated ranges read as zeros.
	NoBacking bool
	// File says how host files are opened (image, data file and backing files).
	File FileOptions
	// WriteThrough flushes after every write (cache=writethrough, directsync).
	WriteThrough bool
	// The metadata cache options are QEMU's qcow2 options (--image-opts), with QEMU 7.2's
	// defaults and limits (cachesize.go, docs/allocation.md). Sizes are in bytes; 0 means the
	// option is not set (an explicit 0 on a command line can be passed as 1, which resolves
	// to the same sizes).
	//
	// L2CacheBytes is l2-cache-size: the L2 cache is the smaller of it (default 32 MiB, which
	// maps 256 GiB with 64 KiB clusters) and what maps the whole image.
	L2CacheBytes int64
	// RefcountCacheBytes is refcount-cache-size (default: 4 clusters).
	RefcountCacheBytes int64
	// CacheBytes is cache-size, the two caches together.
	CacheBytes int64
	// L2CacheEntrySize is l2-cache-entry-size (default: the cluster size when the L2 cache
	// maps the whole image, else 4 KiB).
	L2CacheEntrySize int64
	// CacheCleanInterval is cache-clean-interval: metadata cache entries unused for this long
	// are dropped. 0 means QEMU's default (defaultCacheCleanInterval); NoCacheClean disables.
	CacheCleanInterval time.Duration
	// Hooks receives engine events; nil means NopHooks.
	Hooks Hooks
	// Logger receives warnings (leaked clusters, corruption); nil discards.
	Logger *slog.Logger
	// BitmapMemoryLimit caps the memory the bits of the persistent bitmaps loaded at a
	// read-write open take (bitmap_open.go): 0 means defaultBitmapMemoryLimit, negative no
	// limit. An open that would exceed it fails with errBitmapMemory.
	BitmapMemoryLimit int64
	// ReadBitmaps loads the consistent persistent bitmaps of a read-only open too (and of
	// every qcow2 image in the backing chain), for serving them (qemu-nbd -B); a read-write
	// open always loads its own.
	ReadBitmaps bool
	// Opener opens host files; nil means OpenFile. It is used for data and backing files too.
	Opener func(path string, o FileOptions) (Storage, error)
	// Warn receives QEMU's open-time warnings about the image and every qcow2 image of its
	// backing chain (bitmap_warn.go): the warning, then a hint line; nil discards them.
	Warn func(warning, hint string)
}

// maxChainDepth bounds the backing chain (the image itself is depth 0).
const maxChainDepth = 16

// minL2Cache: "at least 2 to cover COW" (QEMU's MIN_L2_CACHE_SIZE).
const minL2Cache = 2

// Image is an open qcow2 image. Its methods are safe for concurrent use: see doc.go for the
// concurrency contract and the lock order.
type Image struct {
	// Set by open, then immutable.
	path      string
	dir       string
	file      Storage
	data      Storage // == file without an external data file
	dataPath  string
	geo       Geometry
	readOnly  bool
	opts      OpenOptions
	hooks     Hooks
	log       *slog.Logger
	backing   layer // nil: no backing file, or NoBacking
	depth     int
	fileSize  uint64 // image file size at open
	dataSize  uint64 // data file size at open
	snapshot  *Snapshot
	ctype     uint8 // compression type
	dataRaw   bool  // the external data file is a consistent raw image (data_file_raw)
	closeOnce sync.Once
	closeErr  error

	// size is the virtual size; it changes only under gate held exclusively (Resize).
	size atomic.Uint64

	// gate is held shared by every guest request for its whole duration, and exclusively by
	// Resize and Close, which so wait for requests in flight.
	gate sync.RWMutex

	// mu is the metadata lock: it guards everything below. See doc.go.
	mu           sync.Mutex
	hdr          Header
	l1           *l1Table
	snapshotL1   bool // l1 is a snapshot's table
	l2           *lru[hostCluster, *l2Table]
	l2pool       l2Pool
	occupancy    [2]cacheReport
	alloc        *allocator // nil when read-only
	busy         map[guestCluster]chan struct{}
	pins         pinSet
	deferred     []deferredFree
	corrupt      error
	broken       error // a header switch failed half way: writes are refused until reopened
	closed       bool
	prepared     bool // the first-write header updates are done
	snapshots    []Snapshot
	snapL1Bad    []bool // per snapshot: its L1 table fails checkSnapshotL1 (see overlapsFixed)
	snapTableLen uint64
	lastHost     uint64
	linkGen      uint64     // counts links of new data that must be durable first (publishData)
	cbyte        HostOffset // next free byte for compressed data (compress_write.go)
	dataSynced   uint64     // every link up to this linkGen has its data durable (see Flush)

	// Persistent bitmaps (bitmap_open.go): set by open, stored by Close; markBitmaps is
	// read without a lock by requests, changed only with none in flight.
	bitmaps      []*dirtyBitmap
	markBitmaps  []*dirtyBitmap
	bitmapsOpen  bool   // loaded ones are marked in-use on disk and must be stored
	bitmapExtOff uint64 // file offset of the bitmaps extension's data
	// bitmapsEdited: an operation of bitmap_ops.go changed the bitmaps, which the close
	// stores even when none was loaded; removedBitmaps are freed once it has.
	bitmapsEdited  bool
	removedBitmaps []*dirtyBitmap
	bitmapsIgnored bool // the header had an ignored bitmaps extension at open
	// bitmapFreeFailures are QEMU's messages for bitmap clusters a store could not free, and
	// bitmapPhantomBlocks the refcount blocks QEMU would have made on the way (bitmap_free.go).
	bitmapFreeFailures  []string
	bitmapPhantomBlocks map[refTableIndex]bool

	caches    cacheSizes    // resolved from the cache options at open
	cleanStop chan struct{} // closed by Close: stops cleanCaches

	// QEMU's metadata-preallocation heuristic, decided at the first block status query
	// (metaprealloc.go).
	preallocChecked, prealloc bool
}

// Open opens the image at path.
func Open(path string, o OpenOptions) (*Image, error) {
	return openChain(path, o, &chainState{})
}

// OpenStorage opens the image stored in s; dir resolves relative backing and data file names.
// The image takes ownership of s and closes it.
func OpenStorage(s Storage, dir string, o OpenOptions) (*Image, error) {
	return openImage(s, "", dir, o, &chainState{})
}

func openChain(path string, o OpenOptions, cs *chainState) (*Image, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if err := cs.enter(abs); err != nil {
		return nil, err
	}
	fo := o.File
	fo.ReadOnly = o.ReadOnly || o.Snapshot != ""
	s, err := openHostFile(o, path, fo)
	if err != nil {
		return nil, err
	}
	img, err := openImage(s, path, filepath.Dir(abs), o, cs)
	if err != nil {
		return nil, err
	}
	return img, nil
}

func openHostFile(o OpenOptions, path string, fo FileOptions) (Storage, error) {
	if o.Opener != nil {
		return o.Opener(path, fo)
	}
	s, err := OpenFile(path, fo)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func openImage(s Storage, path, dir string, o OpenOptions, cs *chainState) (img *Image, err error) {
	img = &Image{path: path, dir: dir, file: s, data: s, opts: o, depth: cs.depth, busy: map[guestCluster]chan struct{}{}}
	opening := img // "return nil, err" sets img to nil before this deferred cleanup runs
	defer func() {
		if err != nil {
			opening.closeFiles()
			img = nil
		}
	}()
	img.hooks = o.Hooks
	if img.hooks == nil {
		img.hooks = NopHooks{}
	}
	img.log = o.Logger
	if img.log == nil {
		img.log = slog.New(slog.DiscardHandler)
	}
	img.readOnly = o.ReadOnly || o.Snapshot != ""
	hdr, err := ReadHeader(s)
	if err != nil {
		return nil, err
	}
	warnInconsistentBitmaps(hdr, o.Warn)
	if hdr.Corrupt() && !img.readOnly {
		return nil, fmt.Errorf("%w: %s is marked corrupt (incompatible bit 1): open it read-only, or repair it with 'qemu-img check -r all' first", ErrCorrupt, img.name())
	}
	if hdr.Dirty() && !img.readOnly {
		// Refcounts may be stale (lazy refcounts, unclean close): rebuild them before use.
		nh, err := repairDirty(s, hdr)
		if err != nil {
			return nil, err
		}
		hdr = nh
	}
	img.hdr = *hdr
	img.geo = hdr.Geometry()
	img.ctype = hdr.CompressionType
	img.dataRaw = hdr.DataFileRaw()
	img.size.Store(hdr.Size)
	fsz, err := s.Size()
	if err != nil {
		return nil, fmt.Errorf("qcow2: size of %s: %w", img.name(), err)
	}
	img.fileSize = uint64(fsz)

	if hdr.SnapshotCount > 0 || o.Snapshot != "" {
		// As QEMU at open: only what qcow2_read_snapshots refuses fails the open; a snapshot's
		// L1 table is checked when it is used (and guarded against overwrites in any case).
		snaps, err := LoadSnapshots(s, hdr)
		if err != nil {
			return nil, err
		}
		img.snapshots = snaps
		img.snapL1Bad = make([]bool, len(snaps))
		for i, sn := range snaps {
			img.snapL1Bad[i] = checkSnapshotL1(hdr, sn) != nil
		}
		img.snapTableLen = snapshotTableSize(hdr, snaps)
	}
	if err := img.openDataFile(); err != nil {
		return nil, err
	}
	if !o.NoBacking && hdr.BackingFile != "" {
		b, err := openBacking(img, cs)
		if err != nil {
			return nil, err
		}
		img.backing = b
	}

	if o.Snapshot != "" {
		sn, err := findSnapshot(img.snapshots, o.Snapshot)
		if err != nil {
			// QEMU only says it cannot find the snapshot; a table read past the end of the
			// file (as zeros) or otherwise damaged is the likely reason: say so.
			if _, serr := ReadSnapshots(s, hdr); serr != nil {
				err = fmt.Errorf("%w (the snapshot table is damaged: %v)", err, serr)
			}
			return nil, err
		}
		img.snapshot = &sn
		// QEMU (qcow2_snapshot_load_tmp) keeps the image's current virtual size, whatever the
		// snapshot's disk size; guest clusters past the snapshot's L1 table are unallocated.
		if err := checkSnapshotL1(hdr, sn); err != nil {
			return nil, err
		}
		if img.l1, err = loadL1(s, sn.L1Offset, sn.L1Size); err != nil {
			return nil, err
		}
		img.snapshotL1 = true
	} else if img.l1, err = loadL1(s, hdr.L1TableOffset, hdr.L1Size); err != nil {
		return nil, err
	}

	if !img.readOnly {
		// A failed fsync fails every later one (synclatch.go).
		shared := img.data == img.file
		img.file = latchSync(img.file)
		if shared {
			img.data = img.file
		} else {
			img.data = latchSync(img.data)
		}
	}
	img.caches, err = resolveCacheSizes(&o, img.geo, img.size.Load())
	if err != nil {
		return nil, err
	}
	img.l2pool.init(img.geo, img.caches.sliceBytes)
	img.l2 = newLRU(CacheL2, img.l2CacheEntries(), cacheBackend[hostCluster, *l2Table](l2Backend{img}), img.hooks, img.file.Sync)
	img.l2.beforeWrite = img.beforeL2Write
	img.l2.evicted = img.l2pool.put
	img.l2.weigh = (*l2Table).weight
	img.l2.countsOwnAccess = true
	if !img.readOnly {
		img.alloc, err = newAllocator(img, img.fileSize, img.caches.refcountEntries(img.geo))
		if err != nil {
			return nil, err
		}
	}
	// Every open judges the bitmaps as QEMU's does (docs/bitmaps.md, "Damaged bitmaps").
	if err := validateBitmapsAtOpen(img.file, &img.hdr, img.fileSize, img.size.Load()); err != nil {
		return nil, err
	}
	if !img.readOnly || (o.ReadBitmaps && o.Snapshot == "") {
		if err := img.openBitmaps(); err != nil {
			return nil, err
		}
	}
	img.lastHost = img.fileSize
	img.stateChanged()
	if img.caches.clean > 0 {
		img.cleanStop = make(chan struct{})
		go img.cleanCaches(img.caches.clean, img.cleanStop)
	}
	return img, nil
}

// cleanCaches drops, every interval, the clean metadata cache entries nothing used during the
// last interval (cache-clean-interval), until stop is closed.
func (img *Image) cleanCaches(every time.Duration, stop chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		img.mu.Lock()
		if !img.closed {
			img.l2.cleanUnused()
			if img.alloc != nil {
				img.alloc.cache.cleanUnused()
			}
		}
		img.mu.Unlock()
	}
}

// l2CacheEntries is the L2 cache's capacity in slices (l2slice.go): the resolved size over the
// slice size, at least minL2Cache.
func (img *Image) l2CacheEntries() int {
	return int(max(img.caches.l2Bytes/img.caches.sliceBytes, minL2Cache))
}

func (img *Image) name() string {
	if img.path != "" {
		return img.path
	}
	return "image"
}

// fileEnd is the length of the image file as the engine knows it: at least its size at open,
// and past every cluster allocated since.
func (img *Image) fileEnd() uint64 {
	if img.alloc != nil {
		return max(img.fileSize, uint64(img.alloc.end))
	}
	return img.fileSize
}

// dataEnd is the length of the external data file (the image file without one).
func (img *Image) dataEnd() uint64 {
	if img.data == img.file {
		return img.fileEnd()
	}
	// Data clusters sit at their guest offset; the data file grows as they are written.
	return max(img.dataSize, img.size.Load())
}

// Header returns a copy of the current header.
func (img *Image) Header() Header {
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.hdr
}

// Size returns the virtual disk size in bytes.
func (img *Image) Size() uint64 { return img.size.Load() }

// ReadOnly reports whether the image was opened read-only.
func (img *Image) ReadOnly() bool { return img.readOnly }

// Snapshots returns the image's internal snapshots.
func (img *Image) Snapshots() []Snapshot {
	img.mu.Lock()
	defer img.mu.Unlock()
	return append([]Snapshot(nil), img.snapshots...)
}

// Close flushes everything, clears the dirty bit if the engine set it, and closes the image,
// its data file and its backing chain. It waits for requests in flight. Closing twice is
// harmless.
func (img *Image) Close() error {
	img.closeOnce.Do(func() {
		img.gate.Lock()
		defer img.gate.Unlock()
		var errs []error
		img.mu.Lock()
		if !img.readOnly && img.corrupt == nil {
			// Bitmaps first (they allocate). Then the unused rest of the reserved batch goes
			// back: a clean close leaks nothing, and the file ends where its last cluster does.
			if err := img.storeBitmaps(); err != nil {
				img.log.Error("qcow2: could not store the persistent bitmaps; they stay in-use", "image", img.name(), "err", err)
				errs = append(errs, err)
			}
			img.alloc.releaseReservation()
			if err := img.flushLocked(); err != nil {
				errs = append(errs, err)
			} else if err := img.trimFile(); err != nil {
				errs = append(errs, err)
			} else if err := img.markClean(); err != nil {
				errs = append(errs, err)
			}
		}
		img.closed = true
		img.mu.Unlock()
		if img.cleanStop != nil {
			close(img.cleanStop)
		}
		errs = append(errs, img.closeFiles())
		img.closeErr = errors.Join(errs...)
	})
	return img.closeErr
}

func (img *Image) closeFiles() error {
	var errs []error
	if img.backing != nil {
		errs = append(errs, img.backing.Close())
	}
	if img.data != nil && img.data != img.file {
		errs = append(errs, img.data.Close())
	}
	if img.file != nil {
		errs = append(errs, img.file.Close())
	}
	return errors.Join(errs...)
}

// checkRequest validates a guest range and the image state for a request.
func (img *Image) checkRequest(off, n uint64, write bool) error {
	size := img.size.Load()
	if off > size || n > size-off {
		return fmt.Errorf("%w: %d bytes at %d, image size %d", ErrOutOfRange, n, off, size)
	}
	if write && img.readOnly {
		return ErrReadOnly
	}
	return nil
}

// zeroBuf is a shared buffer of zeros, never written.
var zeroBuf = make([]byte, 1<<20)

// putU64 stores v big-endian.
func putU64(b []byte, v uint64) {
	_ = b[7]
	b[0], b[1], b[2], b[3] = byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32)
	b[4], b[5], b[6], b[7] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}

var _ io.ReaderAt = (*Image)(nil)
var _ io.WriterAt = (*Image)(nil)
