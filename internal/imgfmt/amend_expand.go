// Expanding a qcow2 image's zero clusters before a downgrade (qnbd-img amend -o compat=0.10).
package imgfmt

// ExpandZeroClusters removes the zero flag from every L2 entry of a qcow2 image, the
// snapshots' tables included (see the engine's amend_expand.go), reporting progress to status
// (nil for none) as done of total steps.
func ExpandZeroClusters(d Disk, status func(done, total int64)) error {
	img, err := engineOf(d)
	if err != nil {
		return err
	}
	return img.ExpandZeroClusters(status)
}
