package qcow2

// unmapFlag is ZeroMayUnmap when unmap is set: the flags of a zero request that may
// deallocate, for tests that pick it at random.
func unmapFlag(unmap bool) ZeroFlags {
	if unmap {
		return ZeroMayUnmap
	}
	return 0
}
