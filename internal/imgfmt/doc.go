// Package imgfmt is qnbd-img's format-neutral view of a disk image: one Disk interface with a
// raw-file implementation and an adapter over the qcow2 engine, plus format probing and image
// creation for both formats.
//
// # Formats and probing
//
// Open with an empty Format probes the file as qemu-img does, through internal/probe (the one
// probing path of qnbd, qnbd-img and the engine): qcow2 and raw are opened, every other format
// QEMU probes for is refused with an *UnsupportedFormatError. A raw image that was only probed
// (no explicit -f raw) refuses writes that would make its first sector probe as any other
// format (qemu's "write operations on block 0 will be restricted", docs/probing.md). Unlike
// qemu-img no warning is printed about the probe; an explicit Format lifts the restriction.
//
// # Block status
//
// Disk.Map reports what a guest range is made of, one Extent per run, with the attributes
// qemu-img map prints: data or zero or unallocated, the layer (Depth) that provides it and, when
// the bytes sit at a known place in a host file, that file and offset. Map always covers the
// whole requested range, in order, without gaps.
//
// # Image locks
//
// Every open, info query, check and creation takes QEMU's image locks (internal/imagelock)
// on the files it touches, with the permissions qemu-img takes for the same command
// (OpenOptions.Lock, ForceShare; lock.go), on the descriptors that do the I/O, so they last
// until Close. A conflict is an *imagelock.Error; one met on a backing or data file during
// Open is a *LockError worded and named as QEMU words and names it. A creation locks an
// existing file before truncating it, so an image in use elsewhere is never lost.
//
// # Concurrency
//
// A Disk may be read and written from several goroutines at once on disjoint ranges (the raw
// implementation uses pread/pwrite; the qcow2 engine documents the same). Map may run
// concurrently with reads. Resize, Flush and Close must not overlap other calls.
//
// # The qcow2 engine
//
// Everything this package needs from the qcow2 engine (open, map, create, check, snapshots)
// goes through engine.go, the one file that names the engine's API. No other file here imports
// the engine's runtime types, so the rest of the package stays stable while the engine grows.
package imgfmt
