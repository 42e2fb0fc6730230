// Package probe decides which image format a file holds when the user did not say (no -f),
// exactly as QEMU 7.2's block layer does, and guards block 0 of a raw image that was only
// probed so that nothing written to it can make the file probe as another format later.
//
// # Probing
//
// Format runs every format check QEMU 7.2 registers (qcow2, qcow, qed, vmdk, vdi, vhdx, vpc,
// luks, parallels, cloop, dmg, bochs, and raw as the last resort) over the first BufSize bytes
// of a file (zero-padded past its end) and returns the name of the best-scoring format, as
// bdrv_probe_all does. File reads those bytes; an empty file is raw without looking. Each
// check and its score is listed in docs/probing.md.
//
// # The block-0 guard
//
// A raw image opened without an explicit format is "probed". QEMU's raw driver refuses, with
// EPERM, any write whose result would make the first 512 bytes probe as something other than
// raw (CVE-2008-2004: a guest writes a qcow2 header naming a host file as its backing file,
// and the next probing open exposes that file). Guard does the same for a change of any kind
// (write, write-zeroes, trim, partial or whole): under its lock it reads block 0 as it is,
// applies the change to a copy, probes the copy without a file name (so dmg, which probes by
// name, never matches, as in QEMU) and either refuses with ErrWouldChangeFormat or makes the
// change while still holding the lock, so that two concurrent partial writes cannot together
// build a header neither would build alone.
//
// # Concurrency
//
// Format and File are pure functions of their input. A Guard serialises the changes that
// touch block 0; changes elsewhere do not take its lock.
package probe
