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
)

// ListFile is authz-list-file: an authz-list whose policy and rules live in a JSON file
// ({"policy": "deny", "rules": [{"match": ..., "policy": ..., "format": ...}]}), re-read
// when a new version of the file is complete (refresh, through inotify) or when Reload is
// called (SIGHUP).
//
// Unlike QEMU, a reload that fails (unreadable file, bad JSON, bad rule) keeps the rules
// that were in force and logs one line, where QEMU denies every client until the file
// loads again: see docs/authz.md, "When a reload fails".
type ListFile struct {
	id       string
	filename string
	log      *slog.Logger

	list atomic.Pointer[List]

	mu   sync.Mutex // serialises loads, so the last file read is the one in force
	last []byte     // the content the last load read, good or bad

	watch *dirWatch
	close sync.Once
}

// OpenListFile loads filename, which must be absolute, and with refresh watches its
// directory so that the file is reloaded whenever a file there is closed after writing or
// renamed into it and the file's content changed. log (nil: slog.Default()) receives one
// line per failed automatic reload.
func OpenListFile(id, filename string, refresh bool, log *slog.Logger) (*ListFile, error) {
	if !filepath.IsAbs(filename) {
		return nil, Error("Filename must be an absolute path")
	}
	if log == nil {
		log = slog.Default()
	}
	f := &ListFile{id: id, filename: filepath.Clean(filename), log: log}
	if err := f.Reload(); err != nil {
		return nil, err
	}
	if !refresh {
		return f, nil
	}
	dir := filepath.Dir(f.filename)
	w, err := watchDir(dir, f.refresh, func() {
		f.log.Warn("qnbd: authz-list-file no longer watched (its directory went away); SIGHUP still reloads it",
			"id", f.id, "dir", dir)
	})
	if err != nil {
		return nil, errorf("Unable to watch '%s': %v", dir, describe(err))
	}
	f.watch = w
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
	_, err := f.load(true)
	return err
}

// refresh is the watch's reload: it does nothing when the content is what the last load
// read (an event about another file in the directory, or a rewrite with the same bytes),
// and logs one line when the new content does not load.
func (f *ListFile) refresh() {
	f.mu.Lock()
	defer f.mu.Unlock()
	changed, err := f.load(false)
	if changed && err != nil {
		f.log.Warn("qnbd: authz-list-file reload failed; keeping the previous rules",
			"id", f.id, "err", err.Error())
	}
}

// Close stops watching the file. Allow keeps answering with the last rules.
func (f *ListFile) Close() error {
	var err error
	f.close.Do(func() {
		if f.watch != nil {
			err = f.watch.Close()
		}
	})
	return err
}

// load reads the file and, when it checks out, puts its rules in force; with always false
// it stops early when the content is the same as last time. changed says the content
// differed (or could not be read). Callers hold mu.
func (f *ListFile) load(always bool) (changed bool, err error) {
	data, err := os.ReadFile(f.filename)
	if err != nil {
		f.last = nil
		return true, errorf("Unable to read '%s': %s", f.filename, readError(f.filename, err))
	}
	if !always && f.last != nil && bytes.Equal(data, f.last) {
		return false, nil
	}
	f.last = data
	l, err := f.parse(data)
	if err != nil {
		return true, err
	}
	f.list.Store(l)
	return true, nil
}

// parse checks the file's content. The messages follow QEMU's authz/listfile.c where it
// has one; a bad property is reported as for the JSON form of --object, after the file
// name.
func (f *ListFile) parse(data []byte) (*List, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, errorf("File '%s' is not valid JSON: %v", f.filename, err)
	}
	if dec.More() {
		return nil, errorf("File '%s' is not valid JSON: data after the object", f.filename)
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return nil, errorf("File '%s' must contain a JSON object", f.filename)
	}
	l, err := buildList(visitor{form: JSON}, obj)
	if err != nil {
		return nil, errorf("File '%s': %v", f.filename, err)
	}
	return l, nil
}

// readError words a failed os.ReadFile as GLib's g_file_get_contents does, which QEMU
// quotes: the open failed, or the read did (reading a directory).
func readError(name string, err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Op != "open" {
		return fmt.Sprintf("Error reading file “%s”: %s", name, describe(err))
	}
	return fmt.Sprintf("Failed to open file “%s”: %s", name, describe(err))
}

// describe gives an I/O error as strerror(3) words it.
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
