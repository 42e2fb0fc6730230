// The image the backup rows copy: fully written with incompressible data, made once per run.
package main

import (
	"bufio"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// backupImages is one image's contents in the two formats the servers take.
type backupImages struct {
	raw   string // nbdkit's file plugin serves this one
	qcow2 string // qnbd and qemu-nbd serve this one, converted from raw by qemu-img
}

// path is the image server kind k serves.
func (b backupImages) path(k serverKind) string {
	if k.raw {
		return b.raw
	}
	return b.qcow2
}

// makeBackupImages writes size bytes of pseudo-random data (no zero runs, so no server can
// report or skip a hole, and nothing compresses) to a raw file in dir and converts it to
// qcow2 with qemu-img, which allocates every cluster.
func makeBackupImages(ctx context.Context, dir string, size int64) (backupImages, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return backupImages{}, err
	}
	b := backupImages{raw: filepath.Join(dir, "backup.raw"), qcow2: filepath.Join(dir, "backup.qcow2")}
	if err := writeRandomFile(b.raw, size); err != nil {
		return backupImages{}, err
	}
	if err := runQuiet(ctx, "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", b.raw, b.qcow2); err != nil {
		return backupImages{}, err
	}
	if err := settle(b.raw, b.qcow2); err != nil {
		return backupImages{}, err
	}
	return b, nil
}

// settle writes the files' dirty pages back before anything is measured: otherwise the
// kernel flushes gigabytes of freshly made image while the first row runs, and that row (the
// first server of the run) competes with the writeback for the disk and the CPUs.
func settle(paths ...string) error {
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// writeRandomFile writes size bytes from a fixed-seed ChaCha8 stream to path.
func writeRandomFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	src := rand.NewChaCha8([32]byte{'q', 'n', 'b', 'd', '-', 'b', 'e', 'n', 'c', 'h'})
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := io.CopyN(w, src, size); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// warmCache reads path once so that every server starts with the image in the page cache,
// rather than the first server measured paying for the disk.
func warmCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}
