// Tests of -o option list parsing and printing.
package main

import (
	"strings"
	"testing"
)

func qcow2Opts() *qemuOpts { return newQemuOpts(createOptList("qcow2", true), nil) }

func TestQemuOptsParse(t *testing.T) {
	tests := []struct {
		in      string
		want    string // print() after parsing
		wantErr string
	}{
		{"", "cluster_size=65536 extended_l2=off compression_type=zlib lazy_refcounts=off refcount_bits=16", ""},
		{"cluster_size=4k,lazy_refcounts=on", "cluster_size=4096 extended_l2=off compression_type=zlib lazy_refcounts=on refcount_bits=16", ""},
		{"refcount_bits=0x10,size=1.5k", "cluster_size=65536 extended_l2=off compression_type=zlib size=1536 lazy_refcounts=off refcount_bits=16", ""},
		{"refcount_bits=016", "cluster_size=65536 extended_l2=off compression_type=zlib lazy_refcounts=off refcount_bits=14", ""},
		{"lazy_refcounts", "cluster_size=65536 extended_l2=off compression_type=zlib lazy_refcounts=on refcount_bits=16", ""},
		{"nolazy_refcounts", "cluster_size=65536 extended_l2=off compression_type=zlib lazy_refcounts=off refcount_bits=16", ""},
		{"lazy_refcounts=yes", "cluster_size=65536 extended_l2=off compression_type=zlib lazy_refcounts=yes refcount_bits=16", ""},
		{"backing_file=a,,b c,backing_fmt=qcow2", "cluster_size=65536 extended_l2=off compression_type=zlib backing_file=a,,b c backing_fmt=qcow2 lazy_refcounts=off refcount_bits=16", ""},
		{"compat=0.10,data_file=x,data_file_raw=on,preallocation=full", "cluster_size=65536 extended_l2=off preallocation=full compression_type=zlib compat=0.10 data_file=x data_file_raw=on lazy_refcounts=off refcount_bits=16", ""},
		{"foo=bar", "", "Invalid parameter 'foo'"},
		{"lazy_refcounts=maybe", "", "Parameter 'lazy_refcounts' expects 'on' or 'off'"},
		{"refcount_bits=16k", "", "Parameter 'refcount_bits' expects a number"},
		{"cluster_size=64k,,x", "", "Parameter 'cluster_size' expects a non-negative number below 2^64"},
		{"cluster_size", "", "Parameter 'cluster_size' expects a non-negative number below 2^64"},
		{"size=16E", "", "Value '16E' is out of range for parameter 'size'"},
		{"refcount_bits=99999999999999999999", "", "Value '99999999999999999999' out of range for parameter 'refcount_bits'"},
	}
	for _, tt := range tests {
		o := qcow2Opts()
		err := o.parse(tt.in)
		switch {
		case tt.wantErr != "":
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Errorf("parse(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("parse(%q): %v", tt.in, err)
		case o.print() != tt.want:
			t.Errorf("parse(%q) prints\n  %s\nwant\n  %s", tt.in, o.print(), tt.want)
		}
	}
}

func TestOptionListHelpers(t *testing.T) {
	for s, want := range map[string]bool{"a=1": true, "": false, ",a": false, "a,": false, "a,,": true, "a,,,": false} {
		if got := validOptionList(s); got != want {
			t.Errorf("validOptionList(%q) = %v", s, got)
		}
	}
	for s, want := range map[string]bool{"help": true, "?": true, "size=1,help": true, "help=x": false, "a=help": false, "x=1,,help": false} {
		if got := hasHelpOption(s); got != want {
			t.Errorf("hasHelpOption(%q) = %v", s, got)
		}
	}
}

func TestOptionHelp(t *testing.T) {
	got := createOptList("raw", true).printHelp()
	want := "  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)\n" +
		"  size=<size>            - Virtual disk size\n"
	if got != want {
		t.Errorf("raw help:\n%s\nwant\n%s", got, want)
	}
}
