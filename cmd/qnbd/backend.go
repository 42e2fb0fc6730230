// Choosing and opening an export's backend by format: the one place where image formats
// meet the server.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"

	"github.com/qnbd/qnbd/internal/rawfile"
	"github.com/qnbd/qnbd/server"
)

// qcow2Magic starts every qcow2 image ("QFI\xfb").
var qcow2Magic = []byte{'Q', 'F', 'I', 0xfb}

// detectFormat returns "qcow2" for a file starting with the qcow2 magic, else "raw" (qemu's
// probing, reduced to the formats qnbd knows).
func detectFormat(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, len(qcow2Magic))
	if _, err := io.ReadFull(f, head); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return "", err
	}
	if bytes.Equal(head, qcow2Magic) {
		return "qcow2", nil
	}
	return "raw", nil
}

// openBackend opens one export's image as its format says and returns the backend and what
// closes it. With -s every format is served through a temporary qcow2 overlay.
func openBackend(e exportConfig, cfg *config, env openEnv) (server.Backend, io.Closer, error) {
	format := e.format
	if format == "" {
		f, err := detectFormat(e.file)
		if err != nil {
			return nil, nil, openError(e.file, err)
		}
		format = f
	}
	if e.snapshot && (format == "raw" || format == "qcow2") {
		return openSnapshotOverlay(e, format, cfg, env)
	}
	switch format {
	case "raw":
		if e.loadSnapshot != "" {
			return nil, nil, fmt.Errorf("'%s': -l/--load-snapshot needs a qcow2 image (this one is served as raw)", e.file)
		}
		f, err := rawfile.Open(e.file, rawfile.Options{
			ReadOnly:     e.readOnly,
			WriteThrough: cfg.cache == cacheWritethrough || cfg.cache == cacheDirectsync,
			IgnoreFlush:  cfg.cache == cacheUnsafe,
		})
		if err != nil {
			return nil, nil, openError(e.file, err)
		}
		if err := lockRaw(e, f); err != nil {
			return nil, nil, openError(e.file, err)
		}
		return f, f, nil
	case "qcow2":
		return openQcow2(e, e.file, false, cfg, env)
	}
	return nil, nil, fmt.Errorf("'%s': unknown format '%s'", e.file, format)
}

// openError words a failure to open an image as one short line.
func openError(path string, err error) error {
	if text, ok := lockErrorText(path, err); ok {
		return errors.New(text)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		if pe.Path != path {
			// Another file of the image (a backing or data file): name it.
			return fmt.Errorf("cannot open '%s': %v", path, err)
		}
		err = pe.Err
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return fmt.Errorf("cannot open '%s': %s", path, errno.Error())
	}
	return fmt.Errorf("cannot open '%s': %v", path, err)
}
