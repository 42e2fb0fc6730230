package server

import (
	"bytes"
	"net"
	"testing"
)

// writeLog records each Write: what it carried and where that memory was.
type writeLog struct {
	writes [][]byte
	addrs  []*byte
}

func (w *writeLog) Write(p []byte) (int, error) {
	w.writes = append(w.writes, append([]byte(nil), p...))
	w.addrs = append(w.addrs, &p[0])
	return len(p), nil
}

// Small reply pieces are gathered into record-sized writes, large ones are written from where
// they lie, and the byte stream is the pieces in order.
func TestTLSWriteVecGathersSmallPieces(t *testing.T) {
	var bufs net.Buffers
	var want []byte
	add := func(n int, b byte) []byte {
		p := bytes.Repeat([]byte{b}, n)
		bufs = append(bufs, p)
		want = append(want, p...)
		return p
	}
	// 40 replies of a 16-byte header and 4 KiB of data: 4 records' worth.
	for i := range 40 {
		add(16, byte(i))
		add(4096, byte(i+100))
	}
	add(24, 1)
	big := add(256<<10, 2) // a large READ payload
	add(16, 3)

	s := &tlsSocket{}
	var w writeLog
	if err := s.writeVec(&w, bufs); err != nil {
		t.Fatal(err)
	}
	if got := bytes.Join(w.writes, nil); !bytes.Equal(got, want) {
		t.Fatalf("byte stream differs: %d bytes, want %d", len(got), len(want))
	}
	bigAt := -1
	for i, p := range w.writes {
		if w.addrs[i] == &big[0] {
			bigAt = i
			continue
		}
		if len(p) > tlsRecordPlain {
			t.Fatalf("write %d gathered %d bytes, more than a record", i, len(p))
		}
	}
	if bigAt < 0 || len(w.writes[bigAt]) != len(big) {
		t.Fatalf("the large piece was copied or split")
	}
	// The 80 small pieces of the first 40 replies fit in about 11 records; then the 24-byte
	// header, the large payload and the last header: far fewer writes than pieces.
	if len(w.writes) > 20 {
		t.Fatalf("%d writes for %d pieces", len(w.writes), len(bufs))
	}
}
