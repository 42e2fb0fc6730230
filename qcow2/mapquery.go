// Map: what backs each guest range (qemu-img map, NBD block status).
package qcow2

// Extent describes a guest range whose bytes all come from the same kind of place.
type Extent struct {
	Start, Length uint64
	// Kind is kindData, kindCompressed, kindZero (reads as zeros by metadata), or
	// kindUnallocated (allocated nowhere in the chain: reads as zeros).
	Kind Kind
	// Depth is the layer that provides the range: 0 for this image, 1 for its backing file,
	// and so on; for kindUnallocated it is the number of layers below this image.
	Depth int
	// Host is where the data starts in HostFile (kindData), or the start of the compressed
	// bytes (kindCompressed); 0 otherwise.
	Host HostOffset
	// HostFile is the file holding the data ("" when none).
	HostFile string
}

// Map describes [off, off+n) of the virtual disk as a list of adjacent extents.
func (img *Image) Map(at GuestOffset, n uint64) ([]Extent, error) {
	off := uint64(at)
	img.gate.RLock()
	defer img.gate.RUnlock()
	if err := img.checkRequest(off, n, false); err != nil {
		return nil, err
	}
	var ext []readExt
	for pos := off; pos < off+n; {
		k := min(off+n-pos, maxPlanBytes)
		img.mu.Lock()
		var err error
		if img.closed {
			img.mu.Unlock()
			return nil, ErrClosed
		}
		ext, _, err = img.mapRead(pos, k, ext)
		img.trimCaches()
		if err != nil {
			err = img.fail(err)
		}
		img.mu.Unlock()
		if err != nil {
			return nil, err
		}
		pos += k
	}
	var out []Extent
	add := func(e Extent) {
		if len(out) > 0 {
			p := &out[len(out)-1]
			if p.Kind == e.Kind && p.Depth == e.Depth && p.HostFile == e.HostFile && p.Start+p.Length == e.Start &&
				(e.Kind != kindData || p.Host.Add(p.Length) == e.Host) && e.Kind != kindCompressed {
				p.Length += e.Length
				return
			}
		}
		out = append(out, e)
	}
	for _, e := range ext {
		switch e.kind {
		case kindData:
			add(Extent{Start: e.off, Length: e.n, Kind: kindData, Host: e.host, HostFile: img.dataFileName()})
		case kindCompressed:
			add(Extent{Start: e.off, Length: e.n, Kind: kindCompressed, Host: e.host, HostFile: img.path})
		case kindZero:
			add(Extent{Start: e.off, Length: e.n, Kind: kindZero})
		case kindUnallocated:
			if img.backing == nil {
				add(Extent{Start: e.off, Length: e.n, Kind: kindUnallocated})
				continue
			}
			sub, err := img.backing.mapLayer(e.off, e.n)
			if err != nil {
				return nil, err
			}
			for _, s := range sub {
				s.Depth++
				add(s)
			}
		}
	}
	return out, nil
}
