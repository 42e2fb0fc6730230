package authz

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// allowOnly is a list file that allows exactly one identity.
func allowOnly(identity string) string {
	return fmt.Sprintf(`{"policy": "deny", "rules": [{"match": %q, "policy": "allow"}]}`, identity)
}

// lockedBuffer collects log output written from the watcher goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func openListFile(t *testing.T, path string, refresh bool) (*ListFile, *lockedBuffer) {
	t.Helper()
	logs := &lockedBuffer{}
	f, err := OpenListFile("acl", path, refresh, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f, logs
}

func TestListFileReloadsWhenTheFileIsWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acl.json")
	writeFile(t, path, allowOnly("CN=a"))
	f, _ := openListFile(t, path, true)
	if !f.Allow("CN=a") || f.Allow("CN=b") {
		t.Fatal("initial rules not in force")
	}
	writeFile(t, path, allowOnly("CN=b"))
	waitFor(t, "the rewritten file to be in force", func() bool { return f.Allow("CN=b") && !f.Allow("CN=a") })
}

func TestListFileReloadsWhenANewFileIsRenamedOntoIt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "acl.json")
	writeFile(t, path, allowOnly("CN=a"))
	f, _ := openListFile(t, path, true)
	tmp := filepath.Join(dir, ".acl.json.tmp")
	writeFile(t, tmp, allowOnly("CN=c"))
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the renamed file to be in force", func() bool { return f.Allow("CN=c") && !f.Allow("CN=a") })
}

// TestListFileFollowsASymlinkSwap replaces the file the way Kubernetes updates a
// ConfigMap or Secret volume: the name is a symlink through "..data", and "..data" is
// renamed onto a link to a new directory.
func TestListFileFollowsASymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	for name, who := range map[string]string{"v1": "CN=a", "v2": "CN=e"} {
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name, "acl.json"), allowOnly(who))
	}
	link := func(target, name string) {
		t.Helper()
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	link("v1", "..data")
	link("..data/acl.json", "acl.json")
	f, _ := openListFile(t, filepath.Join(dir, "acl.json"), true)
	if !f.Allow("CN=a") {
		t.Fatal("initial rules not in force")
	}
	link("v2", "..data_tmp")
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the swapped-in file to be in force", func() bool { return f.Allow("CN=e") && !f.Allow("CN=a") })
}

// TestListFileFailedReloadKeepsTheRules breaks the file, waits for the watcher to have
// tried it (the one log line), checks the old rules still hold, then mends the file.
func TestListFileFailedReloadKeepsTheRules(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acl.json")
	writeFile(t, path, allowOnly("CN=a"))
	f, logs := openListFile(t, path, true)

	writeFile(t, path, `{"rules": [{"match": "CN=b"}]}`)
	waitFor(t, "the failed reload to be logged", func() bool { return strings.Contains(logs.String(), "reload failed") })
	if !f.Allow("CN=a") || f.Allow("CN=b") {
		t.Fatal("a failed reload changed the rules in force")
	}
	line := logs.String()
	if n := strings.Count(line, "\n"); n != 1 {
		t.Errorf("want one log line for one failed reload, got %d:\n%s", n, line)
	}
	if !strings.Contains(line, "Parameter 'rules[0].policy' is missing") || !strings.Contains(line, path) {
		t.Errorf("the log line does not say what is wrong where:\n%s", line)
	}
	if err := f.Reload(); err == nil {
		t.Error("Reload of a bad file reported no error")
	}

	writeFile(t, path, allowOnly("CN=b"))
	waitFor(t, "the mended file to be in force", func() bool { return f.Allow("CN=b") && !f.Allow("CN=a") })
}

func TestListFileRemovedFileKeepsTheRules(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acl.json")
	writeFile(t, path, allowOnly("CN=a"))
	f, logs := openListFile(t, path, true)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	// A removal is no reload (QEMU ignores it too); the next Reload fails and keeps them.
	if err := f.Reload(); err == nil || !strings.Contains(err.Error(), "No such file or directory") {
		t.Fatalf("Reload of a removed file: %v", err)
	}
	if !f.Allow("CN=a") {
		t.Fatal("rules lost with the file")
	}
	writeFile(t, path, allowOnly("CN=d"))
	waitFor(t, "the recreated file to be in force", func() bool { return f.Allow("CN=d") })
	if s := logs.String(); strings.Contains(s, "reload failed") {
		t.Errorf("removal was treated as a change:\n%s", s)
	}
}

func TestListFileWithoutRefreshChangesOnlyOnReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acl.json")
	writeFile(t, path, allowOnly("CN=a"))
	f, _ := openListFile(t, path, false)
	if f.watch != nil {
		t.Fatal("refresh=off still watches the file")
	}
	writeFile(t, path, allowOnly("CN=b"))
	if !f.Allow("CN=a") {
		t.Fatal("rules changed without a reload")
	}
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if !f.Allow("CN=b") || f.Allow("CN=a") {
		t.Fatal("Reload did not put the new rules in force")
	}
}

func TestListFileRefusesARelativePath(t *testing.T) {
	for _, p := range []string{"acl.json", "./acl.json", "sub/acl.json", "../acl.json", ""} {
		for _, refresh := range []bool{true, false} {
			_, err := OpenListFile("acl", p, refresh, nil)
			if err == nil || err.Error() != "Filename must be an absolute path" {
				t.Errorf("%q refresh=%v: %v", p, refresh, err)
			}
		}
	}
}

func TestListFileLoadErrorsSayWhatIsWrong(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "acl.json")
	for _, c := range []struct{ content, want string }{
		{"", "File '" + path + "' is not valid JSON: EOF"},
		{"{", "File '" + path + "' is not valid JSON: unexpected EOF"},
		{`{"rules": []} {}`, "File '" + path + "' is not valid JSON: data after the object"},
		{`[]`, "File '" + path + "' must contain a JSON object"},
		{`{"policy": "maybe"}`, "File '" + path + "': Parameter 'policy' does not accept value 'maybe'"},
		{`{"rules": [{"match": "x", "policy": "allow"}], "extra": 1}`, "File '" + path + "': Parameter 'extra' is unexpected"},
		{`{"rules": "x"}`, "File '" + path + "': Invalid parameter type for 'rules', expected: array"},
	} {
		writeFile(t, path, c.content)
		_, err := OpenListFile("acl", path, false, nil)
		if err == nil || err.Error() != c.want {
			t.Errorf("%q:\n got %v\nwant %s", c.content, err, c.want)
		}
	}
	missing := filepath.Join(dir, "missing.json")
	_, err := OpenListFile("acl", missing, true, nil)
	want := "Unable to read '" + missing + "': Failed to open file “" + missing + "”: No such file or directory"
	if err == nil || err.Error() != want {
		t.Errorf("missing file:\n got %v\nwant %s", err, want)
	}
	_, err = OpenListFile("acl", dir, false, nil)
	want = "Unable to read '" + dir + "': Error reading file “" + dir + "”: Is a directory"
	if err == nil || err.Error() != want {
		t.Errorf("directory:\n got %v\nwant %s", err, want)
	}
}

// TestAllowIsSafeDuringReloads checks, under -race, that checks running while the rules
// flip between two files always see one whole rule set: CN=both is in both, CN=a and
// CN=b in one each, so a check never allows both or neither of them as one set.
func TestAllowIsSafeDuringReloads(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "acl.json")
	set := func(only string) string {
		return fmt.Sprintf(`{"rules": [{"match": "CN=both", "policy": "allow"}, {"match": %q, "policy": "allow"}]}`, only)
	}
	writeFile(t, path, set("CN=a"))
	f, _ := openListFile(t, path, true)
	var stop atomic.Bool
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				l := f.Rules()
				if !l.Allow("CN=both") || l.Allow("CN=a") == l.Allow("CN=b") || !f.Allow("CN=both") {
					bad.Add(1)
				}
			}
		}()
	}
	for i := range 60 {
		writeFile(t, path, set([]string{"CN=a", "CN=b"}[i%2]))
		if err := f.Reload(); err != nil {
			// The watcher may have read the file half-written; the next round rewrites it.
			continue
		}
	}
	stop.Store(true)
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Fatalf("%d checks saw no whole rule set", n)
	}
}
