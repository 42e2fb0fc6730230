// Walking an image's block status from offset to offset without re-mapping what was mapped.
package main

import (
	"fmt"

	"github.com/qnbd/qnbd/internal/imgfmt"
)

// extentCursor hands out the block status of a disk at increasing offsets, mapping ahead in
// chunks of up to mapChunk bytes.
type extentCursor struct {
	d    imgfmt.Disk
	end  uint64 // map no further than this
	ext  []imgfmt.Extent
	next int
}

func newExtentCursor(d imgfmt.Disk, end uint64) *extentCursor {
	return &extentCursor{d: d, end: end}
}

// at returns the extent covering off, trimmed to start at off. off must not decrease between
// calls and must be below end.
func (c *extentCursor) at(off uint64) (imgfmt.Extent, error) {
	for {
		for c.next < len(c.ext) && c.ext[c.next].End() <= off {
			c.next++
		}
		if c.next < len(c.ext) && c.ext[c.next].Start <= off {
			e := c.ext[c.next]
			if skip := off - e.Start; skip > 0 {
				e.Start += skip
				e.Length -= skip
				if e.HasOffset {
					e.Offset += skip
				}
			}
			return e, nil
		}
		ext, err := c.d.Map(off, min(c.end-off, mapChunk))
		if err != nil {
			return imgfmt.Extent{}, err
		}
		if len(ext) == 0 || ext[0].Start > off || ext[0].End() <= off || ext[0].Length == 0 {
			return imgfmt.Extent{}, fmt.Errorf("block status of %s at %d is missing", c.d.Filename(), off)
		}
		c.ext, c.next = ext, 0
	}
}
