// Tests of the QDict-ordered JSON printer.
package main

import "testing"

func TestQdictOrder(t *testing.T) {
	// The order qemu-img 7.2 prints ImageCheck's keys in, whatever the insertion order.
	d := newQdict()
	for _, k := range []string{"filename", "format", "check-errors", "image-end-offset", "total-clusters", "allocated-clusters"} {
		d.put(k, 1)
	}
	want := []string{"image-end-offset", "total-clusters", "check-errors", "allocated-clusters", "filename", "format"}
	got := d.order()
	if len(got) != len(want) {
		t.Fatalf("order = %q", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("order = %q, want %q", got, want)
		}
	}
}

func TestPrettyJSON(t *testing.T) {
	d := newQdict().put("type", "qcow2").put("data", newQdict().put("compat", "1.1").put("corrupt", false))
	want := "{\n    \"type\": \"qcow2\",\n    \"data\": {\n        \"compat\": \"1.1\",\n        \"corrupt\": false\n    }\n}"
	if got := prettyJSON(d); got != want {
		t.Errorf("prettyJSON =\n%s\nwant\n%s", got, want)
	}
	if got, want := prettyJSON([]any{int64(-1), uint64(1 << 63)}), "[\n    -1,\n    -9223372036854775808\n]"; got != want {
		t.Errorf("list = %s", got)
	}
}

func TestJSONString(t *testing.T) {
	for in, want := range map[string]string{
		"a.qcow2":     `"a.qcow2"`,
		`q"\`:         `"q\"\\"`,
		"tab\tnl\n":   `"tab\tnl\n"`,
		"\x01\x7f":    `"\u0001\u007F"`,
		"é":           `"\u00E9"`,
		"𝄞":           `"\uD834\uDD1E"`,
		"bad\xffutf8": `"bad\uFFFDutf8"`,
	} {
		if got := prettyJSON(in); got != want {
			t.Errorf("json(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestSizeToStr(t *testing.T) {
	for v, want := range map[uint64]string{
		0: "0 B", 1: "1 B", 999: "999 B", 1000: "0.977 KiB", 1024: "1 KiB", 4096: "4 KiB",
		200704: "196 KiB", 1314816: "1.25 MiB", 1 << 30: "1 GiB", 67108864: "64 MiB",
		1023 << 20: "0.999 GiB", 1 << 60: "1 EiB", 1<<64 - 1: "16 EiB",
	} {
		if got := sizeToStr(v); got != want {
			t.Errorf("sizeToStr(%d) = %q, want %q", v, got, want)
		}
	}
}
