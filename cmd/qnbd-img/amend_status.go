// The progress of qnbd-img amend -p: QEMU's qcow2_amend_helper_cb, which maps the status
// calls of each operation (upgrade, refcount width, downgrade) onto one bar, projecting the
// work of the operations not started yet from the ones seen so far (docs/chains.md).
package main

// amendOp is one operation of an amendment, for the progress (QEMU's Qcow2AmendOperation).
type amendOp int

const (
	amendNoOp amendOp = iota
	amendUpgrading
	amendChangingRefcountOrder
	amendDowngrading
)

// amendStatus accumulates the operations' status calls as QEMU's helper does; p gets
// 100 * offset / total, computed in float32 as qemu-img's amend_status_cb does.
type amendStatus struct {
	p                        *progress
	totalOps, opsDone        int64
	current, last            amendOp
	offsetDone, lastWorkSize int64
}

// start makes op the operation that the next status calls report on.
func (s *amendStatus) start(op amendOp) { s.current = op }

// report is the status callback of the current operation: offset of work done.
func (s *amendStatus) report(offset, work int64) {
	if s.current != s.last {
		if s.last != amendNoOp {
			s.offsetDone += s.lastWorkSize
			s.opsDone++
		}
		s.last = s.current
	}
	if s.totalOps <= 0 || s.opsDone >= s.totalOps {
		return // QEMU asserts this cannot happen
	}
	s.lastWorkSize = work
	cur := s.offsetDone + work
	projected := cur * (s.totalOps - s.opsDone - 1) / (s.opsDone + 1)
	total := cur + projected
	if total == 0 {
		return
	}
	v := float32(100) * float32(s.offsetDone+offset)
	v /= float32(total)
	s.p.print(v, 0)
}
