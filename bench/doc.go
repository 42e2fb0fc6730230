// Command bench measures qnbd against qemu-nbd and nbdkit over NBD and prints how qnbd
// compares. It is what `make bench` runs; it is a measurement, not a test.
//
// Each server gets identical input. For the fio rows qnbd and qemu-nbd serve the same freshly
// created qcow2 image (made with qemu-img) and nbdkit's file plugin serves a raw copy; fio
// connects with its nbd engine (libnbd) over a Unix socket:
//
//	randwrite-4k         random 4 KiB writes on a fresh image, iodepth 16
//	seqwrite-1m          sequential 1 MiB writes on a fresh image
//	randread-4k          random 4 KiB reads of written data (the first -region bytes)
//	seqread-1m           sequential 1 MiB reads of written data
//	randwrite-4k-4conn   random 4 KiB writes from 4 jobs, each its own NBD connection
//
// The backup rows copy a whole, fully written image (-backup-size, 2 GiB by default) to
// null: with nbdcopy at its default settings but for --connections, -copy-passes times (3)
// against one server, and report the median pass's throughput. The image is made once
// per run from pseudo-random data (no holes to skip, nothing compressible); qnbd and qemu-nbd
// serve its qcow2 conversion, nbdkit the raw file, and each row first reads the served file
// once so that every server starts with it in the page cache:
//
//	nbdcopy-1conn        nbdcopy --connections=1 nbd+unix:///?socket=S null:
//	nbdcopy-4conn        the same with 4 connections
//	nbdcopy-tls-1conn    the same over TLS (nbds+unix://...&tls-certificates=DIR)
//	nbdcopy-tls-4conn    the same with 4 connections
//
// The TLS rows run qnbd and qemu-nbd with the same qemu-nbd options (--object
// tls-creds-x509,id=tls0,endpoint=server,dir=DIR --tls-creds tls0) and credentials made
// for the run with Go's crypto/x509; nbdkit takes no part in them.
//
// Every row starts its own server and reports the client's throughput next to what the
// server spent on it: its user+system CPU seconds over the client's run (from
// /proc/PID/stat, all threads, 10 ms resolution) per GiB moved, and its peak RSS (VmHWM). On
// 2 cores the client and the server share the CPUs, so throughput alone flatters the server
// that burns more CPU. Ratios compare MiB/s with qemu-nbd and with nbdkit on the same row, and
// for the TLS rows with the same server without TLS.
//
// A row whose server fails (cannot start, cannot serve TLS yet) is an error cell and the run
// goes on; the exit status is 1 if any row failed. Without bin/qnbd, qnbd is skipped with a
// message. The table goes to stdout and the results as JSON to -out.
//
// The scale table (-scale, `make bench-scale`) replaces the rows: random 4 KiB writes on a
// fresh image and random 4 KiB reads of an image with 64 KiB written at the start of every
// 512 MiB (so every L2 table exists and every read walks the L1 and L2 tables), iodepth 16,
// at each -scale-sizes size (1G,64G,1T,4T), for qnbd and qemu-nbd: IOPS, p99 latency, peak
// RSS, server CPU seconds per GiB and the IOPS ratio, once with each server's default caches
// and once with the same --image-opts l2-cache-size (-scale-l2-cache) given to both; then,
// per workload, each server's IOPS at the largest size as a share of the smallest.
//
// Usage:
//
//	go run ./bench [-quick] [-runtime 10s] [-size 10G] [-region 1G] [-iodepth 16]
//	               [-backup-size 2G] [-copy-passes 3] [-row-timeout 5m] [-out results.json] [-qnbd bin/qnbd]
//	               [-qnbd-before OLD/qnbd]
//	               [-servers qnbd,qnbd-before,qemu-nbd,nbdkit] [-workloads randwrite-4k,nbdcopy-1conn,...]
//	go run ./bench -scale [-scale-sizes 1G,64G,1T,4T] [-scale-l2-cache 4M] [-scale-runtime 5s]
package main
