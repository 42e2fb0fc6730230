// Keeping track of the bitmaps header extension across whole-header rewrites.
package qcow2

// findBitmapsExt finds the bitmaps extension again after the first cluster was rewritten
// (amend, a new backing file): the extensions before it may have changed length (a shorter
// version 2 header, a backing format extension dropped), and storeBitmaps switches the
// directory pointer in place at the offset found (docs/bitmaps.md). Called with mu held.
func (img *Image) findBitmapsExt() error {
	if !img.bitmapsOpen || img.hdr.Extensions.Bitmaps == nil {
		return nil // nothing tracked, or the rewrite dropped the extension (dropBitmapExt)
	}
	off, err := img.bitmapsExtDataOffset()
	if err != nil {
		return err
	}
	img.bitmapExtOff = off
	return nil
}
