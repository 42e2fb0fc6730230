// Crash enumeration over internal snapshot create, apply and delete: the workloads, the
// runner's snapshot operations, and the snapshot checks of each crash state.
package qcow2

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// Under -race (make test) only snap-apply runs, the one that exercises all three phases
// (raise, switch, drop) and the COPIED fix: the others add a minute of CPU there. Plain
// `go test` and -qcow2.crash.full run all three.
func init() {
	for _, w := range snapshotCrashWorkloads {
		if !crashRaceBuild || w.name == "snap-apply" {
			crashWorkloads = append(crashWorkloads, w)
		}
	}
}

var snapshotCrashWorkloads = []*cwWorkload{
	{name: "snap-create", opts: "cluster_size=4k", size: 2 * mib, snapOps: true,
		setup: func(r *cwRunner) { r.write(0, 256*kib); r.write(1*mib, 64*kib) },
		run: func(r *cwRunner) {
			r.snapCreate("a")
			r.write(8*kib+512, 1024) // copies a cluster (and its L2 table) shared with a
			r.flush()
		},
		sanity: snapCountIs(1)},
	{name: "snap-apply", opts: "cluster_size=4k,compat=0.10", size: 2 * mib, snapOps: true,
		setup: func(r *cwRunner) {
			r.write(0, 128*kib)
			r.snapCreate("a")
			r.write(64*kib, 128*kib)
			r.write(1*mib, 32*kib)
		},
		run: func(r *cwRunner) {
			r.snapApply("a")
			r.write(4*kib, 4*kib)
			r.flush()
		},
		sanity: snapCountIs(1)},
	{name: "snap-delete", opts: "cluster_size=4k", size: 2 * mib, snapOps: true,
		setup: func(r *cwRunner) {
			r.write(0, 128*kib)
			r.snapCreate("a")
			r.write(64*kib, 128*kib) // half of what a holds is copied, half stays shared
			r.write(1*mib, 32*kib)
		},
		run: func(r *cwRunner) {
			r.snapDelete("a")     // what stays shared is the active state's alone again: COPIED
			r.write(8*kib, 4*kib) // in place
			r.write(100*kib, 4*kib)
			r.flush()
		},
		sanity: snapCountIs(0)},
}

// snapCountIs requires the workload to end with n snapshots.
func snapCountIs(n uint32) func(before, after *Header) error {
	return func(_, after *Header) error {
		if after.SnapshotCount != n {
			return fmt.Errorf("%d snapshots at the end, want %d", after.SnapshotCount, n)
		}
		return nil
	}
}

// sectorsOf reads the whole disk of img and returns each sector's stamp generation.
func sectorsOf(img *Image) ([]uint32, error) {
	b := make([]byte, img.Size())
	if _, err := img.ReadAt(b, 0); err != nil {
		return nil, err
	}
	gens := make([]uint32, len(b)/sectorSize)
	for sec := range gens {
		_, g, ok := readStamp(b[sec*sectorSize:])
		if !ok {
			return nil, fmt.Errorf("sector %d holds no stamp", sec)
		}
		gens[sec] = g
	}
	return gens, nil
}

// snapCreate takes snapshot name and remembers what the disk held then.
func (r *cwRunner) snapCreate(name string) error {
	i := r.begin(cwOp{kind: cwSnapCreate, name: name})
	_, err := r.img.CreateSnapshot(SnapshotSpec{Name: name, Date: time.Unix(1700000000, 0)})
	if err == nil {
		var gens []uint32
		if gens, err = sectorsOf(r.img); err == nil {
			r.mu.Lock()
			if r.snaps == nil {
				r.snaps = map[string][]uint32{}
			}
			r.snaps[name] = gens
			r.mu.Unlock()
		}
	}
	return r.end(i, err)
}

// snapApply reverts to snapshot name: every sector becomes what it was when it was taken.
func (r *cwRunner) snapApply(name string) error {
	r.mu.Lock()
	gens := r.snaps[name]
	r.mu.Unlock()
	i := r.begin(cwOp{kind: cwSnapApply, name: name, snap: gens, b: uint64(len(gens)) * sectorSize})
	return r.end(i, r.img.ApplySnapshot(name))
}

// snapDelete deletes snapshot name; the disk does not change.
func (r *cwRunner) snapDelete(name string) error {
	i := r.begin(cwOp{kind: cwSnapDelete, name: name})
	return r.end(i, r.img.DeleteSnapshot("", name))
}

// copiedOnly reports a check result whose corruptions are all OFLAG_COPIED mismatches,
// harmless after a crash inside a snapshot operation (docs/snapshots.md).
func copiedOnly(res *CheckResult) bool {
	n := 0
	for _, m := range res.Messages {
		if strings.Contains(m, "OFLAG_COPIED") {
			n++
		} else if strings.HasPrefix(m, "ERROR") {
			return false
		}
	}
	return n == res.Corruptions && res.CheckErrors == 0
}

// verifySnapshots requires every snapshot a workload took that the state's table holds to
// read exactly as it was taken: a snapshot is complete once it is in the table.
func (env *cwEnv) verifySnapshots(s *memstore.Store) error {
	if len(env.snapGens) == 0 {
		return nil
	}
	h, err := ReadHeader(s)
	if err != nil {
		return err
	}
	snaps, err := ReadSnapshots(s, h)
	if err != nil {
		return fmt.Errorf("snapshot table: %v", err)
	}
	for _, sn := range snaps {
		want, ok := env.snapGens[sn.Name]
		if !ok {
			continue
		}
		img, err := env.open(s.Clone(), nil, func(o *OpenOptions) { o.ReadOnly, o.Snapshot = true, "snapshot.id="+sn.ID })
		if err != nil {
			return fmt.Errorf("open snapshot %s: %v", sn.Name, err)
		}
		got, err := sectorsOf(img)
		img.Close()
		if err != nil {
			return fmt.Errorf("snapshot %s: %v", sn.Name, err)
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("snapshot %s does not read as it was taken", sn.Name)
		}
	}
	return nil
}
