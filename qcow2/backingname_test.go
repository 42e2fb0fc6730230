package qcow2

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestResolveBackingName(t *testing.T) {
	cases := []struct {
		dir, name string
		want      string // resolved path; "" with class set = refused
		class     error
	}{
		{"/images", "base.qcow2", "/images/base.qcow2", nil},
		{"/images/", "base.qcow2", "/images/base.qcow2", nil},
		{"/", "base.qcow2", "/base.qcow2", nil},
		{"/images", "/abs/base.qcow2", "/abs/base.qcow2", nil},
		{"/images", "../other/base.qcow2", "/images/../other/base.qcow2", nil}, // not cleaned: symlinks decide
		{"/images", "sub/dir/b", "/images/sub/dir/b", nil},
		{"rel/dir", "b.qcow2", "rel/dir/b.qcow2", nil},
		{"", "b.qcow2", "b.qcow2", nil},
		{"/images", "./a:b.qcow2", "/images/./a:b.qcow2", nil}, // ':' after a '/' is a path
		{"/images", "/srv/a:b", "/srv/a:b", nil},
		{"/images", "dir/x:y", "/images/dir/x:y", nil},
		{"/images", "/etc/shadow", "/etc/shadow", nil}, // an ordinary absolute path; opening it is Open's business
		{"/images", "", "", ErrFormat},
		{"/images", "a\x00b", "", ErrFormat},
		{"/images", "json:{\"driver\":\"nbd\"}", "", ErrUnsupported},
		{"/images", "json:", "", ErrUnsupported},
		{"/images", "nbd://127.0.0.1/x", "", ErrUnsupported},
		{"/images", "nbd:///etc/shadow", "", ErrUnsupported},
		{"/images", "nbd+unix:///?socket=/tmp/s", "", ErrUnsupported},
		{"/images", "http://example.com/disk.qcow2", "", ErrUnsupported},
		{"/images", "https://example.com/disk", "", ErrUnsupported},
		{"/images", "ssh://user@host/disk", "", ErrUnsupported},
		{"/images", "ssh:host", "", ErrUnsupported},
		{"/images", "gluster://h/v/p", "", ErrUnsupported},
		{"/images", "iscsi://h/iqn/0", "", ErrUnsupported},
		{"/images", "file:/etc/passwd", "", ErrUnsupported},
		{"/images", "host_device:/dev/sda", "", ErrUnsupported},
		{"/images", "a:b.qcow2", "", ErrUnsupported}, // QEMU reads this as protocol "a" too
		{"/images", ":x", "", ErrUnsupported},
	}
	for _, c := range cases {
		got, err := resolveBackingName(c.dir, c.name)
		if c.class != nil {
			var fe *FormatError
			if !errors.Is(err, c.class) || !errors.As(err, &fe) || fe.Field != "backing file name" {
				t.Errorf("resolveBackingName(%q, %q) = %q, %v; want a %v FormatError", c.dir, c.name, got, err, c.class)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("resolveBackingName(%q, %q) = %q, %v; want %q", c.dir, c.name, got, err, c.want)
		}
	}
}

// TestResolveBackingNameLikeQemu: for a relative name with "..", through a symlinked
// directory, the path we resolve opens the same file qemu-img opens as the backing file.
func TestResolveBackingNameLikeQemu(t *testing.T) {
	root := t.TempDir()
	// root/real/sub holds the image; root/link -> real/sub; the image is opened through the
	// link, and its backing name "../base.raw" must find root/real/base.raw (physical parent
	// of sub), not root/base.raw (the lexical parent of link).
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "real", "sub"), 0o755))
	must(os.Symlink(filepath.Join(root, "real", "sub"), filepath.Join(root, "link")))
	must(os.WriteFile(filepath.Join(root, "real", "base.raw"), make([]byte, 1<<20), 0o644))
	img := filepath.Join(root, "link", "top.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", "../base.raw", "-F", "raw", img, "1M")
	// qemu-img accepted it, so QEMU found root/real/base.raw through the link.
	h, err := readHeaderFile(t, img)
	if err != nil {
		t.Fatal(err)
	}
	p, err := resolveBackingName(filepath.Dir(img), h.BackingFile)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatalf("resolved %q: %v", p, err)
	}
	want, _ := os.Stat(filepath.Join(root, "real", "base.raw"))
	if !os.SameFile(st, want) {
		t.Fatalf("resolved %q, which is not the file qemu-img used", p)
	}
	if lexical := filepath.Join(filepath.Dir(img), h.BackingFile); lexical == p {
		t.Fatalf("resolution was cleaned lexically: %q", p)
	}
}
