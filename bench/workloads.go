// The rows of the table: fio workloads and nbdcopy backups, plain and over TLS.
package main

import (
	"fmt"
	"strings"
)

// workload is one row kind. Exactly one of fio and copy is set.
type workload struct {
	name string
	fio  *fioJob
	copy *copyJob
}

// fioJob is one fio job description, run with fio's nbd engine.
type fioJob struct {
	rw      string // fio rw=
	bs      string
	jobs    int
	fresh   bool // runs on a fresh, empty image; otherwise on a prefilled one
	regionR bool // confined to the prefilled region
}

// copyJob is a whole-disk `nbdcopy URI null:` of the fully written backup image: the
// backup path, which reads every byte once in large requests.
type copyJob struct {
	conns int  // nbdcopy --connections
	tls   bool // over TLS (nbds+unix://), against servers that can serve TLS
}

var workloads = []workload{
	{name: "randwrite-4k", fio: &fioJob{rw: "randwrite", bs: "4k", jobs: 1, fresh: true}},
	{name: "seqwrite-1m", fio: &fioJob{rw: "write", bs: "1m", jobs: 1, fresh: true}},
	{name: "randread-4k", fio: &fioJob{rw: "randread", bs: "4k", jobs: 1, regionR: true}},
	{name: "seqread-1m", fio: &fioJob{rw: "read", bs: "1m", jobs: 1, regionR: true}},
	{name: "randwrite-4k-4conn", fio: &fioJob{rw: "randwrite", bs: "4k", jobs: 4, fresh: true}},
	{name: "nbdcopy-1conn", copy: &copyJob{conns: 1}},
	{name: "nbdcopy-4conn", copy: &copyJob{conns: 4}},
	{name: "nbdcopy-tls-1conn", copy: &copyJob{conns: 1, tls: true}},
	{name: "nbdcopy-tls-4conn", copy: &copyJob{conns: 4, tls: true}},
}

// usesTLS reports whether the workload runs over TLS.
func (w workload) usesTLS() bool { return w.copy != nil && w.copy.tls }

// plainCounterpart names the same workload without TLS, or "" for a plain workload.
func (w workload) plainCounterpart() string {
	if !w.usesTLS() {
		return ""
	}
	return fmt.Sprintf("nbdcopy-%dconn", w.copy.conns)
}

func findWorkload(name string) *workload {
	for i := range workloads {
		if workloads[i].name == name {
			return &workloads[i]
		}
	}
	return nil
}

func allWorkloadNames() string {
	var names []string
	for _, w := range workloads {
		names = append(names, w.name)
	}
	return strings.Join(names, ",")
}
