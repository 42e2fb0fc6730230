package qcow2_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/qnbd/qnbd/qcow2"
)

// Create an image, write to it, read it back, see which ranges hold data, and check it.
func Example() {
	dir, err := os.MkdirTemp("", "qcow2-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "disk.qcow2")

	// 1 MiB of virtual disk in 64 KiB clusters, as qemu-img create -f qcow2 makes it.
	if err := qcow2.Create(path, qcow2.CreateOptions{Size: 1 << 20}); err != nil {
		log.Fatal(err)
	}
	img, err := qcow2.Open(path, qcow2.OpenOptions{})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := img.WriteAt([]byte("hello, qcow2"), 128<<10); err != nil {
		log.Fatal(err)
	}
	if err := img.Flush(); err != nil { // durable from here on
		log.Fatal(err)
	}
	buf := make([]byte, 12)
	if _, err := img.ReadAt(buf, 128<<10); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("read back: %q\n", buf)

	ext, err := img.Map(0, img.Size())
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range ext {
		fmt.Printf("guest %7d +%7d: %v\n", e.Start, e.Length, e.Kind)
	}
	if err := img.Close(); err != nil {
		log.Fatal(err)
	}

	res, err := qcow2.Check(path, qcow2.RepairNone)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("check: %d corruptions, %d leaks\n", res.Corruptions, res.Leaks)
	// Output:
	// read back: "hello, qcow2"
	// guest       0 + 131072: unallocated
	// guest  131072 +  65536: data
	// guest  196608 + 851968: unallocated
	// check: 0 corruptions, 0 leaks
}
