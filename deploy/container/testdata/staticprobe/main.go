// Command staticprobe stands in for cmd/qnbd in the container build test until that command
// exists: a main package that pulls in net, net/http, os/user-free DNS and the metrics
// package, the parts that would drag in cgo when CGO_ENABLED is not 0.
package main

import (
	"context"
	"fmt"
	"net"
	"os"

	"github.com/qnbd/qnbd/metrics"
)

func main() {
	m := metrics.New(metrics.Options{Version: "probe"})
	if len(os.Args) > 1 {
		addrs, err := net.DefaultResolver.LookupHost(context.Background(), os.Args[1])
		fmt.Println(addrs, err)
	}
	_ = m.Handler(nil)
	fmt.Println("ok")
}
