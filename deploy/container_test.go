// Tests of the Containerfile: its build command yields static binaries, its Go version
// matches go.mod, and its runtime stage is non-root on a minimal base.
package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const (
	containerfile = "container/Containerfile"
	ignoreFile    = "container/Containerfile.dockerignore"
	// probePkg stands in for a cmd/ package that has no Go files yet (cmd/qnbd and
	// cmd/qnbd-img are written in parallel); it pulls in net and net/http like the server.
	probePkg = "./deploy/container/testdata/staticprobe"
)

// containerLines returns the Containerfile's instructions with continuations joined and
// comments dropped.
func containerLines(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(containerfile)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	cur := ""
	for _, line := range strings.Split(string(raw), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (cur == "" && trimmed == "") {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur += strings.TrimSuffix(trimmed, "\\") + " "
			continue
		}
		out = append(out, cur+trimmed)
		cur = ""
	}
	return out
}

// shellWords splits a command line on spaces, honouring double and single quotes.
func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '"' || c == '\'':
			quote, inWord = c, true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// buildCommand finds the `go build` of the Containerfile and returns its environment
// assignments, flags (with -o's value) and packages.
func buildCommand(t *testing.T) (env []string, flags []string, out string, pkgs []string) {
	t.Helper()
	for _, l := range containerLines(t) {
		if !strings.HasPrefix(l, "RUN ") || !strings.Contains(l, " go build ") {
			continue
		}
		words := shellWords(l)
		i := 1
		for i < len(words) && strings.HasPrefix(words[i], "--mount=") {
			i++
		}
		for i < len(words) && strings.Contains(words[i], "=") && !strings.HasPrefix(words[i], "-") {
			env = append(env, words[i])
			i++
		}
		if i+1 >= len(words) || words[i] != "go" || words[i+1] != "build" {
			t.Fatalf("cannot read the build command: %q", l)
		}
		for i += 2; i < len(words); i++ {
			w := words[i]
			switch {
			case w == "-o":
				i++
				out = words[i]
			case strings.HasPrefix(w, "-"):
				flags = append(flags, w)
			default:
				pkgs = append(pkgs, w)
			}
		}
		return env, flags, out, pkgs
	}
	t.Fatal("no RUN ... go build in the Containerfile")
	return nil, nil, "", nil
}

func TestContainerBuildIsStatic(t *testing.T) {
	root := repoRoot(t)
	env, flags, out, pkgs := buildCommand(t)
	if !contains(env, "CGO_ENABLED=0") {
		t.Fatalf("the build does not set CGO_ENABLED=0: %v", env)
	}
	if !contains(pkgs, "./cmd/qnbd") {
		t.Errorf("the build does not build ./cmd/qnbd: %v", pkgs)
	}
	if !strings.HasSuffix(out, "/") {
		t.Fatalf("-o %s is not a directory; COPY expects one binary per package in it", out)
	}
	// The same flags, with ${VERSION} given a value, building into a temporary directory.
	for i, f := range flags {
		flags[i] = strings.ReplaceAll(f, "${VERSION}", "test")
	}
	var built []string
	var args []string
	for _, p := range pkgs {
		if goFiles, _ := filepath.Glob(filepath.Join(root, p, "*.go")); len(goFiles) == 0 {
			t.Logf("%s has no Go files yet; building %s in its place", p, probePkg)
			p = probePkg
		}
		if !contains(args, p) {
			args = append(args, p)
			built = append(built, filepath.Base(p))
		}
	}
	dir := t.TempDir()
	cmd := append(append([]string{"build"}, flags...), append([]string{"-o", dir + "/"}, args...)...)
	if msg, err := run(root, env, "go", cmd...); err != nil {
		t.Fatalf("%v go %v: %v\n%s", env, cmd, err, msg)
	}
	for _, b := range built {
		assertStatic(t, filepath.Join(dir, b))
	}
	// COPY --from=build must take exactly what the build wrote.
	for _, l := range containerLines(t) {
		if strings.HasPrefix(l, "COPY --from=build ") {
			for _, p := range pkgs {
				if !strings.Contains(l, out+filepath.Base(p)) {
					t.Errorf("COPY --from=build does not copy %s%s: %q", out, filepath.Base(p), l)
				}
			}
		}
	}
}

// TestStaticCheckCanFail builds the probe with cgo on: the checks above must see a dynamic
// binary, or they prove nothing.
func TestStaticCheckCanFail(t *testing.T) {
	root := repoRoot(t)
	bin := filepath.Join(t.TempDir(), "dynamic")
	if msg, err := run(root, []string{"CGO_ENABLED=1"}, "go", "build", "-o", bin, probePkg); err != nil {
		t.Fatalf("go build with cgo: %v\n%s", err, msg)
	}
	if static, why := isStatic(t, bin); static {
		t.Fatalf("a cgo build of the probe was judged static: %s", why)
	}
}

func assertStatic(t *testing.T, bin string) {
	t.Helper()
	if static, why := isStatic(t, bin); !static {
		t.Errorf("%s is not static: %s", bin, why)
	} else {
		t.Logf("%s: %s", filepath.Base(bin), why)
	}
}

// isStatic asks file(1) and ldd(1).
func isStatic(t *testing.T, bin string) (bool, string) {
	t.Helper()
	fileOut, err := run(".", nil, "file", "-b", bin)
	if err != nil {
		t.Fatalf("file %s: %v\n%s", bin, err, fileOut)
	}
	lddOut, _ := run(".", nil, "ldd", bin) // exits 1 for static binaries
	static := strings.Contains(fileOut, "statically linked") && strings.Contains(lddOut, "not a dynamic executable")
	linkage := strings.TrimSpace(fileOut)
	for _, part := range strings.Split(fileOut, ",") {
		if strings.Contains(part, "linked") {
			linkage = strings.TrimSpace(part)
		}
	}
	return static, linkage + "; ldd: " + strings.TrimSpace(lddOut)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestContainerfileStages(t *testing.T) {
	lines := containerLines(t)
	goMod, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(goMod)
	if m == nil {
		t.Fatal("no go directive in go.mod")
	}
	goVersion := string(m[1])
	var froms []string
	var user string
	exposed := map[string]bool{}
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "ARG GO_VERSION="):
			if v := strings.TrimPrefix(l, "ARG GO_VERSION="); v != goVersion {
				t.Errorf("Containerfile GO_VERSION=%s, go.mod says %s", v, goVersion)
			}
		case strings.HasPrefix(l, "FROM "):
			froms = append(froms, l)
		case strings.HasPrefix(l, "USER "):
			user = strings.TrimPrefix(l, "USER ")
		case strings.HasPrefix(l, "EXPOSE "):
			for _, p := range strings.Fields(strings.TrimPrefix(l, "EXPOSE ")) {
				exposed[strings.TrimSuffix(p, "/tcp")] = true
			}
		}
	}
	if len(froms) < 2 {
		t.Fatalf("want a multi-stage build, got FROM %v", froms)
	}
	if !strings.Contains(froms[0], "golang:${GO_VERSION}") || !strings.HasSuffix(froms[0], " AS build") {
		t.Errorf("first stage %q is not the golang build stage", froms[0])
	}
	last := froms[len(froms)-1]
	if !strings.Contains(last, "distroless/static") && last != "FROM scratch" {
		t.Errorf("runtime stage %q is not distroless/static or scratch", last)
	}
	if user == "" || user == "root" || strings.HasPrefix(user, "0:") || user == "0" {
		t.Errorf("runtime USER %q is not a non-root user", user)
	}
	for _, p := range []string{"10809", "9810"} {
		if !exposed[p] {
			t.Errorf("Containerfile does not EXPOSE %s", p)
		}
	}
	ignore, err := os.ReadFile(ignoreFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, must := range []string{".git", "**/*.qcow2", "bin/"} {
		if !strings.Contains(string(ignore), "\n"+must+"\n") {
			t.Errorf("%s does not exclude %s", ignoreFile, must)
		}
	}
}
