package authz

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/fsnotify/fsnotify"
)

// ListFile is authz-list-file: an authz-list whose policy and rules live in a JSON file
// ({"policy": "deny", "rules": [{"match": ..., "policy": ..., "format": ...}]}), re-read
// when the file changes (refresh, through inotify) or when Reload is called (SIGHUP).
//
// Unlike QEMU, a reload that fails (unreadable file, bad JSON, bad rule) keeps the rules
// that were in force and logs one line, where QEMU denies every client until the file
// loads again: see docs/authz.md, "When a reload fails".
type ListFile struct {
	id       string
	filename string
	log      *slog.Logger

	list atomic.Pointer[List]
	mu   sync.Mutex // serialises reloads, so the last file read is the one in force

	watcher *fsnotify.Watcher
	done    chan struct{}
	close   sync.Once
}

// OpenListFile loads filename, which must be absolute, and with refresh watches its
// directory so that a write to the file, or a file created or renamed onto its name,
// reloads it. log (nil: slog.Default()) receives one line per failed automatic reload.
func OpenListFile(id, filename string, refresh bool, log *slog.Logger) (*ListFile, error) {
	if !filepath.IsAbs(filename) {
		return nil, errors.New("Filename must be an absolute path")
	}
	if log == nil {
		log = slog.Default()
	}
	f := &ListFile{id: id, filename: filepath.Clean(filename), log: log}
	l, err := f.load()
	if err != nil {
		return nil, err
	}
	f.list.Store(l)
	if !refresh {
		return f, nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("Unable to watch '%s': %v", f.filename, err)
	}
	if err := w.Add(filepath.Dir(f.filename)); err != nil {
		w.Close()
		return nil, fmt.Errorf("Unable to watch '%s': %v", filepath.Dir(f.filename), err)
	}
	f.watcher, f.done = w, make(chan struct{})
	go f.watch()
	return f, nil
}

// Allow answers with the rules of the last file that loaded.
func (f *ListFile) Allow(identity string) bool { return f.list.Load().Allow(identity) }

// Rules returns the list in force (read-only).
func (f *ListFile) Rules() *List { return f.list.Load() }

// Filename is the file's absolute path.
func (f *ListFile) Filename() string { return f.filename }

// Reload re-reads the file. On error the previous rules stay in force.
func (f *ListFile) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.load()
	if err != nil {
		return err
	}
	f.list.Store(l)
	return nil
}

// Close stops watching the file. Allow keeps answering with the last rules.
func (f *ListFile) Close() error {
	var err error
	f.close.Do(func() {
		if f.watcher == nil {
			return
		}
		err = f.watcher.Close()
		<-f.done
	})
	return err
}

// watch reloads on the events QEMU's file monitor reloads on: the file modified, or
// created (which includes renamed onto its name). A removal leaves the rules alone.
func (f *ListFile) watch() {
	defer close(f.done)
	for {
		select {
		case ev, ok := <-f.watcher.Events:
			if !ok {
				return
			}
			if filepath.Clean(ev.Name) != f.filename || !ev.Has(fsnotify.Write) && !ev.Has(fsnotify.Create) {
				continue
			}
			if err := f.Reload(); err != nil {
				f.log.Warn("qnbd: authz-list-file reload failed; keeping the previous rules",
					"id", f.id, "err", err.Error())
			}
		case err, ok := <-f.watcher.Errors:
			if !ok {
				return
			}
			f.log.Warn("qnbd: authz-list-file watch error", "id", f.id, "err", err.Error())
		}
	}
}

// load reads and checks the file. The messages follow QEMU's authz/listfile.c where it has
// one; a bad property is reported as for the JSON form of --object, after the file name.
func (f *ListFile) load() (*List, error) {
	data, err := os.ReadFile(f.filename)
	if err != nil {
		return nil, fmt.Errorf("Unable to read '%s': Failed to open file “%s”: %s",
			f.filename, f.filename, describe(err))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("File '%s' is not valid JSON: %v", f.filename, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("File '%s' is not valid JSON: data after the object", f.filename)
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("File '%s' must contain a JSON object", f.filename)
	}
	l, err := buildList(visitor{form: JSON}, obj)
	if err != nil {
		return nil, fmt.Errorf("File '%s': %v", f.filename, err)
	}
	return l, nil
}

// describe gives an I/O error as strerror(3) words it, the way GLib reports it.
func describe(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if s, ok := strerror[errno]; ok {
			return s
		}
	}
	return err.Error()
}

// strerror holds glibc's wording for the errors reading a file commonly meets; Go's own
// texts are lower-case variants of them.
var strerror = map[syscall.Errno]string{
	syscall.ENOENT:  "No such file or directory",
	syscall.EACCES:  "Permission denied",
	syscall.EISDIR:  "Is a directory",
	syscall.ENOTDIR: "Not a directory",
	syscall.ELOOP:   "Too many levels of symbolic links",
	syscall.EIO:     "Input/output error",
}
