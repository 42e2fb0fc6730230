// Command-line mistakes: qnbd-img prints what qemu-img 7.2 prints for each kind of getopt
// error, naming the argv element qemu-img names (internal/getopt's Bad).
package main

import "testing"

func TestGetoptErrorsMatchQemuImg(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, args := range [][]string{
		{"-z", "info"},
		{"-zV"},
		{"info", "-f"},
		{"info", "x", "-f"},
		{"info", "--format"},
		{"info", "--bogus=1", "x"},
		{"info", "--f=x", "x"},               // ambiguous: --format, --force-share
		{"info", "--o", "x"},                 // ambiguous: --output, --object
		{"info", "-Uz", "x"},                 // the element at fault
		{"info", "-zU", "x"},                 // the element before it, as glibc's optind leaves it
		{"info", "x", "-zU"},                 // x, permuted in front
		{"info", "--force-share=1"},          // an argument to a flag
		{"check", "-r", "x"},                 // an option's own value check
		{"map", "--start-off"},               // abbreviation, missing argument
		{"convert", "-O", "raw", "--", "-x"}, // "--" then too few operands
	} {
		same(t, dir, args...)
	}
}
