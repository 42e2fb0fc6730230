package memstore_test

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// TestClonesStayIndependent: clones share pages copy-on-write, yet a write, zero, punch or
// truncate on any member of a family of clones (cloned from each other at random moments)
// changes that member only. Every member is compared with a byte-slice model every few steps.
func TestClonesStayIndependent(t *testing.T) {
	const span = 48 << 10
	buf := make([]byte, 2*span) // one read buffer: fresh ones are slow under -race
	for seed := uint64(1); seed <= 4; seed++ {
		rng := rand.New(rand.NewPCG(seed, 11))
		stores := []*memstore.Store{memstore.New()}
		models := [][]byte{{}}
		for i := 0; i < 300; i++ {
			k := rng.IntN(len(stores))
			s := stores[k]
			off := rng.Int64N(span)
			n := rng.Int64N(10000)
			switch rng.IntN(8) {
			case 0:
				if len(stores) < 6 {
					stores = append(stores, s.Clone())
					models = append(models, bytes.Clone(models[k]))
				}
			case 1:
				size := rng.Int64N(span)
				if err := s.Truncate(size); err != nil {
					t.Fatal(err)
				}
				m := models[k]
				if int64(len(m)) > size {
					m = m[:size]
				}
				models[k] = append(m, make([]byte, size-int64(len(m)))...)
			case 2:
				if err := s.PunchHole(off, n); err != nil {
					t.Fatal(err)
				}
				if m := models[k]; off < int64(len(m)) {
					clear(m[off:min(off+n, int64(len(m)))])
				}
			default:
				p := bytes.Repeat([]byte{byte(i%255 + 1)}, int(n)) // each step writes its own byte
				if _, err := s.WriteAt(p, off); err != nil {
					t.Fatal(err)
				}
				m := models[k]
				if end := off + n; end > int64(len(m)) {
					m = append(m, make([]byte, end-int64(len(m)))...)
				}
				copy(m[off:], p)
				models[k] = m
			}
			if i%5 != 4 {
				continue
			}
			for j, st := range stores {
				size, err := st.Size()
				got := buf[:len(models[j])]
				if err == nil && len(got) > 0 {
					_, err = st.ReadAt(got, 0)
				}
				if err != nil || size != int64(len(got)) || !bytes.Equal(got, models[j]) {
					t.Fatalf("seed %d step %d: store %d of %d differs from its model (size %d, %v)", seed, i, j, len(stores), size, err)
				}
			}
		}
	}
}
