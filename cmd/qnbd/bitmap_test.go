package main

import (
	"reflect"
	"testing"
)

// TestBitmapFlagsKeepQemuOrder: -B is repeatable and, as in qemu-nbd 7.2 (which prepends each
// to its list), the export offers the bitmaps in reverse order; --export takes bitmap=NAME
// keys in the order given, and refuses an empty one.
func TestBitmapFlagsKeepQemuOrder(t *testing.T) {
	cfg, err := parseArgs([]string{"-B", "a", "--bitmap=b", "-B", "c", "img"})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.exports[0].bitmaps; !reflect.DeepEqual(got, []string{"c", "b", "a"}) {
		t.Errorf("-B a --bitmap=b -B c: %q", got)
	}
	cfg, err = parseArgs([]string{"--export", "x=img,bitmap=a,bitmap=b"})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.exports[0].bitmaps; !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("--export x=img,bitmap=a,bitmap=b: %q", got)
	}
	if _, err := parseArgs([]string{"--export", "x=img,bitmap="}); err == nil {
		t.Error("--export with an empty bitmap name was accepted")
	}
}
