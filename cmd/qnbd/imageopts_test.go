// The option-string splitter against QemuOpts' rules (measured with qemu-nbd 7.2).
package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
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
