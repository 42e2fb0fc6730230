// Direct I/O host files (cache=none, directsync): the engine's O_DIRECT storage.
package qcow2export

import "github.com/qnbd/qnbd/qcow2"

// DirectOpener opens host files with O_DIRECT, for qcow2.OpenOptions.Opener: the engine's
// FileStorage with FileOptions.Direct, which aligns every transfer to the file's logical block
// size (qcow2/storage_direct.go). The Storage gives its file (File), so image locks sit on
// the very descriptor that does the I/O.
func DirectOpener(path string, o qcow2.FileOptions) (qcow2.Storage, error) {
	o.Direct = true
	s, err := qcow2.OpenFile(path, o)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return s, nil
}
