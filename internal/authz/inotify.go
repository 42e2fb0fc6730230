package authz

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// dirWatch reports, through a callback, that a file in one directory was closed after
// being written (IN_CLOSE_WRITE) or that a file was renamed into it (IN_MOVED_TO): the two
// moments a new version of a file is complete. Plain writes (IN_MODIFY) are not reported,
// so that a reader never sees a file half-written by a truncate-then-write
// (docs/authz.md, "authz-list-file").
type dirWatch struct {
	file *os.File // the non-blocking inotify descriptor, read through Go's poller
	done chan struct{}
}

const watchMask = unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO | unix.IN_ONLYDIR

// watchDir starts watching dir. changed runs on the watch's goroutine, once per batch of
// events; gone runs once if the watch ends because the directory went away.
func watchDir(dir string, changed func(), gone func()) (*dirWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, watchMask); err != nil {
		unix.Close(fd)
		return nil, err
	}
	w := &dirWatch{file: os.NewFile(uintptr(fd), "inotify:"+dir), done: make(chan struct{})}
	go w.run(changed, gone)
	return w, nil
}

func (w *dirWatch) run(changed, gone func()) {
	defer close(w.done)
	buf := make([]byte, 64<<10)
	for {
		n, err := w.file.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				gone()
			}
			return
		}
		relevant, ended := scanEvents(buf[:n])
		if relevant {
			changed()
		}
		if ended {
			gone()
			return
		}
	}
}

// scanEvents reads a batch of inotify events (struct inotify_event: wd, mask, cookie, len,
// then len bytes of name): relevant if any reports a finished file (or the queue
// overflowed, which may have hidden one), ended if the watch was removed.
func scanEvents(b []byte) (relevant, ended bool) {
	for len(b) >= unix.SizeofInotifyEvent {
		mask := binary.NativeEndian.Uint32(b[4:8])
		nameLen := binary.NativeEndian.Uint32(b[12:16])
		switch {
		case mask&unix.IN_IGNORED != 0:
			ended = true
		case mask&(unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO|unix.IN_Q_OVERFLOW) != 0:
			relevant = true
		}
		size := unix.SizeofInotifyEvent + int(nameLen)
		if size > len(b) {
			break
		}
		b = b[size:]
	}
	return relevant, ended
}

// Close ends the watch and waits for its goroutine.
func (w *dirWatch) Close() error {
	err := w.file.Close()
	<-w.done
	return err
}
