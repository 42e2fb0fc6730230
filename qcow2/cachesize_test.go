package qcow2

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCacheSizesFollowQemuRules: the cache options resolve as QEMU 7.2's read_cache_sizes does
// (docs/allocation.md): the L2 cache maps the whole disk up to 32 MiB, in whole-cluster
// entries when it does and 4 KiB slices when it does not; the refcount cache is 4 clusters;
// cache-size is split as QEMU splits it; the invalid combinations are refused with QEMU's
// words.
func TestCacheSizesFollowQemuRules(t *testing.T) {
	g64 := Geometry{ClusterBits: 16}
	g4 := Geometry{ClusterBits: 12}
	gx := Geometry{ClusterBits: 16, ExtendedL2: true}
	const G, T = uint64(1) << 30, uint64(1) << 40
	cases := []struct {
		name string
		o    OpenOptions
		g    Geometry
		size uint64
		want cacheSizes
		err  string
	}{
		// 1 GiB / 64 KiB = 16384 entries * 8 = 128 KiB: maps the disk, whole-cluster entries.
		{"1G default", OpenOptions{}, g64, G, cacheSizes{l2Bytes: 128 << 10, sliceBytes: 64 << 10, refcountBytes: 0, clean: 600 * time.Second}, ""},
		// 4 TiB needs 512 MiB: capped at 32 MiB, 4 KiB slices.
		{"4T default", OpenOptions{}, g64, 4 * T, cacheSizes{l2Bytes: 32 << 20, sliceBytes: 4096, clean: 600 * time.Second}, ""},
		// 256 GiB needs exactly 32 MiB: maps the disk, whole clusters.
		{"256G default", OpenOptions{}, g64, 256 * G, cacheSizes{l2Bytes: 32 << 20, sliceBytes: 64 << 10, clean: 600 * time.Second}, ""},
		// Extended L2: 16-byte entries.
		{"1G extl2", OpenOptions{}, gx, G, cacheSizes{l2Bytes: 256 << 10, sliceBytes: 64 << 10, clean: 600 * time.Second}, ""},
		// 4 KiB clusters: slices are whole clusters either way.
		{"4T 4k clusters", OpenOptions{}, g4, 4 * T, cacheSizes{l2Bytes: 32 << 20, sliceBytes: 4096, clean: 600 * time.Second}, ""},
		{"l2-cache-size", OpenOptions{L2CacheBytes: 1 << 20}, g64, 4 * T, cacheSizes{l2Bytes: 1 << 20, sliceBytes: 4096, clean: 600 * time.Second}, ""},
		{"l2-cache-size above need", OpenOptions{L2CacheBytes: 64 << 20}, g64, G, cacheSizes{l2Bytes: 128 << 10, sliceBytes: 64 << 10, clean: 600 * time.Second}, ""},
		{"entry size given", OpenOptions{L2CacheEntrySize: 16 << 10}, g64, 4 * T, cacheSizes{l2Bytes: 32 << 20, sliceBytes: 16 << 10, clean: 600 * time.Second}, ""},
		// cache-size alone, big enough for the whole disk and 4 refcount blocks.
		{"cache-size fits", OpenOptions{CacheBytes: 1 << 20}, g64, G, cacheSizes{l2Bytes: 128 << 10, sliceBytes: 64 << 10, refcountBytes: 1<<20 - 128<<10, clean: 600 * time.Second}, ""},
		// cache-size alone, too small: refcount gets 4 clusters, L2 the rest.
		{"cache-size small", OpenOptions{CacheBytes: 2 << 20}, g64, 4 * T, cacheSizes{l2Bytes: 2<<20 - 256<<10, sliceBytes: 4096, refcountBytes: 256 << 10, clean: 600 * time.Second}, ""},
		{"cache-size and l2", OpenOptions{CacheBytes: 8 << 20, L2CacheBytes: 4 << 20}, g64, 4 * T, cacheSizes{l2Bytes: 4 << 20, sliceBytes: 4096, refcountBytes: 4 << 20, clean: 600 * time.Second}, ""},
		{"cache-size and refcount", OpenOptions{CacheBytes: 8 << 20, RefcountCacheBytes: 1 << 20}, g64, 4 * T, cacheSizes{l2Bytes: 7 << 20, sliceBytes: 4096, refcountBytes: 1 << 20, clean: 600 * time.Second}, ""},
		{"clean off", OpenOptions{CacheCleanInterval: NoCacheClean}, g64, G, cacheSizes{l2Bytes: 128 << 10, sliceBytes: 64 << 10}, ""},
		{"all three", OpenOptions{CacheBytes: 8 << 20, L2CacheBytes: 1 << 20, RefcountCacheBytes: 1 << 20}, g64, G, cacheSizes{}, "cache-size, l2-cache-size and refcount-cache-size may not be set at the same time"},
		{"l2 over combined", OpenOptions{CacheBytes: 1 << 20, L2CacheBytes: 2 << 20}, g64, G, cacheSizes{}, "l2-cache-size may not exceed cache-size"},
		{"refcount over combined", OpenOptions{CacheBytes: 1 << 20, RefcountCacheBytes: 2 << 20}, g64, G, cacheSizes{}, "refcount-cache-size may not exceed cache-size"},
		{"entry too small", OpenOptions{L2CacheEntrySize: 256}, g64, G, cacheSizes{}, "L2 cache entry size must be a power of two between 512 and the cluster size (65536)"},
		{"entry not power of two", OpenOptions{L2CacheEntrySize: 3000}, g64, G, cacheSizes{}, "L2 cache entry size must be a power of two between 512 and the cluster size (65536)"},
		{"entry over cluster", OpenOptions{L2CacheEntrySize: 128 << 10}, g64, G, cacheSizes{}, "L2 cache entry size must be a power of two between 512 and the cluster size (65536)"},
	}
	for _, c := range cases {
		got, err := resolveCacheSizes(&c.o, c.g, c.size)
		if c.err != "" {
			if err == nil || !errors.Is(err, errCacheOption) || !strings.HasSuffix(err.Error(), c.err) {
				t.Errorf("%s: error %v, want %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
}

// TestCacheOptionErrorsMatchQemu: each invalid combination our resolver refuses, QEMU 7.2
// refuses too with the same words (qemu-io --image-opts; its message is prefixed by the
// program and the option string).
func TestCacheOptionErrorsMatchQemu(t *testing.T) {
	p := engCreate(t, t.TempDir(), "c.qcow2", "", "1G")
	cases := []struct {
		opts string
		o    OpenOptions
	}{
		{"cache-size=8M,l2-cache-size=1M,refcount-cache-size=1M", OpenOptions{CacheBytes: 8 << 20, L2CacheBytes: 1 << 20, RefcountCacheBytes: 1 << 20}},
		{"cache-size=1M,l2-cache-size=2M", OpenOptions{CacheBytes: 1 << 20, L2CacheBytes: 2 << 20}},
		{"cache-size=1M,refcount-cache-size=2M", OpenOptions{CacheBytes: 1 << 20, RefcountCacheBytes: 2 << 20}},
		{"l2-cache-entry-size=256", OpenOptions{L2CacheEntrySize: 256}},
		{"l2-cache-entry-size=3000", OpenOptions{L2CacheEntrySize: 3000}},
	}
	for _, c := range cases {
		out, err := exec.Command("qemu-io", "--image-opts", "-c", "quit", "driver=qcow2,file.filename="+filepath.ToSlash(p)+","+c.opts).CombinedOutput()
		if err == nil {
			t.Errorf("%s: qemu-io accepted it", c.opts)
			continue
		}
		_, ours := resolveCacheSizes(&c.o, Geometry{ClusterBits: 16}, 1<<30)
		if ours == nil {
			t.Errorf("%s: accepted; qemu-io says %s", c.opts, out)
			continue
		}
		msg := strings.TrimPrefix(ours.Error(), errCacheOption.Error()+": ")
		if !strings.Contains(string(out), msg) {
			t.Errorf("%s: ours %q, qemu-io %q", c.opts, msg, strings.TrimSpace(string(out)))
		}
	}
}
