// Runnable usage of the server package: a Backend, a Server serving it, a client listing it.
package server_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"sync"
	"time"

	"github.com/qnbd/qnbd/internal/nbdclient"
	"github.com/qnbd/qnbd/server"
)

// memDisk is the smallest useful Backend: a byte slice behind a lock. The server calls it
// from many goroutines at once, and checks every offset against Size before the call.
type memDisk struct {
	mu   sync.RWMutex
	data []byte
}

func (d *memDisk) Size() uint64 { return uint64(len(d.data)) }

func (d *memDisk) ReadAt(_ context.Context, p []byte, off uint64) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	copy(p, d.data[off:])
	return nil
}

func (d *memDisk) WriteAt(_ context.Context, p []byte, off uint64, fua bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(d.data[off:], p)
	return nil
}

func (d *memDisk) Flush(context.Context) error { return nil }

// Serve two exports of one in-memory disk on a loopback port, one writable and one
// read-only, and list them the way qemu-nbd -L does; then shut the server down.
func Example() {
	disk := &memDisk{data: make([]byte, 1<<20)}
	srv := &server.Server{Config: server.Config{Exports: []*server.Export{
		{Name: "disk", Description: "scratch disk", Backend: disk, MultiConn: true},
		{Name: "disk-ro", Backend: disk, ReadOnly: true},
	}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	exports, err := nbdclient.List(conn, nbdclient.Options{})
	conn.Close()
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range exports {
		fmt.Printf("%s (%q): %d bytes, read-only %v, multi-conn %v\n", e.Name, e.Description, e.Size,
			e.Flags&server.FlagReadOnly != 0, e.Flags&server.FlagCanMultiConn != 0)
	}

	// Shutdown stops accepting and waits for the connections to finish their requests; the
	// caller then flushes and closes the backends.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("Serve returned ErrServerClosed:", errors.Is(<-served, server.ErrServerClosed))
	// Output:
	// disk ("scratch disk"): 1048576 bytes, read-only false, multi-conn true
	// disk-ro (""): 1048576 bytes, read-only true, multi-conn false
	// Serve returned ErrServerClosed: true
}
