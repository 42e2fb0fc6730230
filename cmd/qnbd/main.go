// Command qnbd serves raw and qcow2 disk images over NBD with qemu-nbd's command line.
package main

import "os"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }
