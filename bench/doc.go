// Command bench runs the same fio workloads over NBD against qnbd, qemu-nbd and nbdkit and
// prints how qnbd compares. It is what `make bench` runs; it is a measurement, not a test.
//
// Each server gets identical input: qnbd and qemu-nbd serve the same freshly created qcow2
// image (made with qemu-img), nbdkit's file plugin serves a raw copy. fio connects with its
// nbd engine (libnbd) over a Unix socket. The workloads:
//
//	randwrite-4k         random 4 KiB writes on a fresh image, iodepth 16
//	seqwrite-1m          sequential 1 MiB writes on a fresh image
//	randread-4k          random 4 KiB reads of written data (the first -region bytes)
//	seqread-1m           sequential 1 MiB reads of written data
//	randwrite-4k-4conn   random 4 KiB writes from 4 jobs, each its own NBD connection
//
// It prints a table of IOPS, MiB/s, mean latency and the IOPS ratio to qemu-nbd, and writes
// the results as JSON (-out). Without bin/qnbd, qnbd is skipped with a message.
//
// Usage:
//
//	go run ./bench [-runtime 10s] [-size 10G] [-region 1G] [-iodepth 16] [-out results.json]
//	               [-servers qnbd,qemu-nbd,nbdkit] [-workloads randwrite-4k,...]
package main
