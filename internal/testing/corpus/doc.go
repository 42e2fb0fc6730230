// Package corpus builds a set of qcow2 test images with QEMU's own tools (qemu-img, qemu-io),
// one image per feature, and knows what every byte of each image must read as. Engine and
// end-to-end tests open these images, compare what they read with Image.Expected, and use
// qemu-img as an oracle through ToRaw, Map, Check and Info.
//
// # What is built
//
// Specs lists the catalogue: every cluster size from 512 B to 2 MiB crossed with a spread of
// refcount widths (1 to 64 bits), compat=0.10 (version 2), extended L2, zlib and zstd
// compression (also overwritten after compression), a qcow2 -> qcow2 -> raw backing chain, an
// overlay larger than its backing file, external data files (with and without
// data_file_raw), an internal snapshot, the preallocation modes, a 4 TiB sparse image, a
// dirty lazy-refcounts image left behind by a killed qemu-io, an image whose size is not a
// multiple of its cluster size, zero clusters and discarded ranges. Each Image carries
// Features naming what it exercises (the Feature* constants) and the operations written to
// it (Ops), at offsets chosen to hit partial clusters, cluster and L2-table boundaries and
// the end of the image.
//
// Writes use position-dependent data (Stamp): the byte at guest offset g depends on g and the
// write that put it there, so a reader that returns the right data from the wrong place
// fails. A few writes use qemu-io's single-byte fill (-P) as well.
//
// # Using it
//
//	imgs := corpus.Shared(t)           // built once, shared by every test process
//	for _, img := range imgs {
//		got := readWithOurEngine(img.Path)
//		want := make([]byte, n)
//		img.Expected(off, want)
//		...
//	}
//
// Shared builds into a directory under os.TempDir() named by a hash of the catalogue, the
// generator version and qemu-img's version, under a file lock, so concurrent `go test`
// processes build it once. Shared images must not be modified: use Copy for a writable
// copy (it copies the backing chain and the data file too). Build writes a fresh set into a
// directory of the caller's choice.
//
// # Conventions
//
// Backing files are referenced by relative name, so a directory can be moved. External data
// file names are absolute, because QEMU resolves a relative data-file name against its
// working directory, not the image's; Copy rewrites them with qemu-img amend.
//
// # Concurrency
//
// Build, Copy and the qemu-img helpers may run concurrently on different directories. An
// Image is immutable after Build returns and safe to share.
package corpus
