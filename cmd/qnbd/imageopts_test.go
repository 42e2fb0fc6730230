// The option-string splitter against QemuOpts' rules (measured with qemu-nbd 7.2).
package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/qnbd/qnbd/qcow2"
)

func TestImageOptsSplitLikeQemuOpts(t *testing.T) {
	for _, tc := range []struct{ in, want, warn string }{
		{"driver=qcow2,file.filename=a", "[{driver qcow2} {file.filename a}]", ""},
		{"driver=qcow2,,file.filename=a", "[{driver qcow2,file.filename=a}]", ""},
		{"file.filename=a,,b,,,driver=raw", "[{file.filename a,b,} {driver raw}]", ""},
		{"a.img", "[{file a.img}]", ""},
		{"a,,b.img,driver=raw", "[{file a,b.img} {driver raw}]", ""},
		{"driver=raw,backing=", "[{driver raw} {backing }]", ""},
		{"driver=raw,ro", "[{driver raw} {ro on}]", "qnbd: warning: short-form boolean option 'ro' deprecated\nPlease use ro=on instead\n"},
		{"driver=raw,noro,x=1", "[{driver raw} {ro off} {x 1}]", "qnbd: warning: short-form boolean option 'noro' deprecated\nPlease use ro=off instead\n"},
		{"k=v=w", "[{k v=w}]", ""},
	} {
		var warn bytes.Buffer
		got := fmt.Sprint(splitImageOpts(tc.in, &warn))
		tc.warn = strings.ReplaceAll(tc.warn, "qnbd:", progName+":")
		if got != tc.want || warn.String() != tc.warn {
			t.Errorf("%q: %s, warned %q; want %s, %q", tc.in, got, warn.String(), tc.want, tc.warn)
		}
	}
}

func TestImageOptsLastValueWins(t *testing.T) {
	vals, order := lastValues(splitImageOpts("driver=qcow2,file.filename=a,driver=raw", nil))
	if vals["driver"] != "raw" || fmt.Sprint(order) != "[driver file.filename]" {
		t.Errorf("vals %v order %v", vals, order)
	}
}

func TestImageOptsCacheModeOverridesCacheFlag(t *testing.T) {
	on, off := true, false
	for _, tc := range []struct {
		base            cacheMode
		direct, noFlush *bool
		want            cacheMode
	}{
		{cacheWriteback, nil, nil, cacheWriteback},
		{cacheWriteback, &on, nil, cacheNone},
		{cacheWritethrough, &on, nil, cacheDirectsync},
		{cacheNone, &off, nil, cacheWriteback},
		{cacheDirectsync, &off, nil, cacheWritethrough},
		{cacheWriteback, nil, &on, cacheUnsafe},
		{cacheUnsafe, nil, &off, cacheWriteback},
	} {
		s := &imageSettings{direct: tc.direct, noFlush: tc.noFlush}
		if got, err := s.cacheMode(tc.base); err != nil || got != tc.want {
			t.Errorf("%s direct=%v no-flush=%v: %s %v, want %s", tc.base, tc.direct, tc.noFlush, got, err, tc.want)
		}
	}
	s := &imageSettings{direct: &on, noFlush: &on}
	if _, err := s.cacheMode(cacheWriteback); err == nil {
		t.Error("cache.direct=on with cache.no-flush=on accepted")
	}
}

func TestImageOptsCacheKeysReachTheEngine(t *testing.T) {
	s, err := parseImageSettings("driver=qcow2,file.filename=imageopts_test.go,l2-cache-size=1M,"+
		"refcount-cache-size=0,l2-cache-entry-size=4k,cache-clean-interval=0,backing=", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	e := exportConfig{file: s.filename, opts: &imageOptsExport{src: s.src, noBacking: s.noBack, cache: s.cache}}
	o := qcow2OpenOptions(e, &config{cache: cacheWriteback}, openEnv{})
	if o.L2CacheBytes != 1<<20 || o.RefcountCacheBytes != 1 || o.L2CacheEntrySize != 4096 ||
		o.CacheBytes != 0 || o.CacheCleanInterval != qcow2.NoCacheClean || !o.NoBacking {
		t.Errorf("engine options %+v", o)
	}
}

func TestImageOptsSnapshotRefusesWhatTheOverlayCannotSee(t *testing.T) {
	for _, opts := range []string{"driver=raw,file.filename=imageopts_test.go,offset=512",
		"driver=qcow2,file.filename=imageopts_test.go,backing="} {
		e := exportConfig{file: opts, imageOpts: true, snapshot: true}
		if _, _, err := applyImageOpts(e, &config{cache: cacheWriteback, aio: "threads"}, io.Discard); err == nil ||
			!strings.Contains(err.Error(), "-s with") {
			t.Errorf("-s --image-opts %s: %v", opts, err)
		}
	}
}
