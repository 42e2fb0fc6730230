// The offline incremental-backup cycle of the README, end to end through qnbd and libnbd: a
// full copy, then three generations of guest writes, checkpoint (a new enabled bitmap, the
// previous one disabled), and a copy of exactly the extents qemu:dirty-bitmap reports dirty;
// then a kill -9, after which the bitmap is in-use and the backup falls back to a full copy.
package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qnbd/qnbd/e2e/libnbd"
)

const (
	backupDiskSize = 16 << 20
	backupGran     = 64 << 10 // the bitmaps' granularity (qnbd-img bitmap's default, as qemu-img's)
	backupWriters  = 3        // client connections writing at once
	backupRequests = 30       // requests per writer and generation
)

// backupCopy reads [off, off+n) of the export behind h into the file at the same offset.
func backupCopy(t *testing.T, h *libnbd.Handle, f *os.File, off, n uint64) {
	t.Helper()
	buf := make([]byte, 4<<20)
	for n > 0 {
		k := min(n, uint64(len(buf)))
		must(t, h.Pread(buf[:k], off, 0))
		if _, err := f.WriteAt(buf[:k], int64(off)); err != nil {
			t.Fatal(err)
		}
		off, n = off+k, n-k
	}
}

// backupRun is the test's backup tool: it serves img read-only with -B bitmap and copies the
// extents qemu:dirty-bitmap reports dirty into the backup file. When qnbd refuses to serve the
// bitmap (in-use after a crash, or missing), or bitmap is "", it serves img without one and
// copies the whole disk. It returns the extents it copied and whether it made a full copy.
func backupRun(t *testing.T, img, bitmap, backup string) (copied []extent, full bool) {
	t.Helper()
	f, err := os.OpenFile(backup, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if bitmap != "" {
		s := startQnbd(t, serverConfig{Args: []string{"-r", "-B", bitmap, "-f", "qcow2", img}, MayRefuse: true})
		if !s.Refused() {
			ctx := "qemu:dirty-bitmap:" + bitmap
			h := connect(t, s, "", withContexts(ctx))
			for _, e := range blockStatus(t, h, ctx) {
				if e.Flags&1 != 0 {
					backupCopy(t, h, f, e.Off, e.Len)
					copied = append(copied, e)
				}
			}
			h.Close()
			s.Stop()
			return copied, false
		}
		t.Logf("backup of %s: qnbd refused -B %s (%s): full copy", img, bitmap, strings.TrimSpace(s.Output()))
	}
	s := startQnbd(t, serverConfig{Args: []string{"-r", "-f", "qcow2", img}})
	h := connect(t, s, "", nil)
	if err := f.Truncate(backupDiskSize); err != nil {
		t.Fatal(err)
	}
	backupCopy(t, h, f, 0, backupDiskSize)
	h.Close()
	s.Stop()
	return []extent{{Off: 0, Len: backupDiskSize}}, true
}

// backupWrites sends backupWriters connections of random writes, zeroes and trims (unaligned
// offsets and lengths) to s, seeded by gen, and returns the granules they touched. stop, when
// set, ends the writers early (the server is about to be killed).
func backupWrites(t *testing.T, s *server, gen int, stop *atomic.Bool, done *atomic.Int64) map[uint64]bool {
	t.Helper()
	var mu sync.Mutex
	touched := map[uint64]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, backupWriters)
	for w := range backupWriters {
		h := connect(t, s, "", nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer h.Close()
			rng := rand.New(rand.NewPCG(uint64(gen), uint64(w)))
			for i := 0; i < backupRequests && (stop == nil || !stop.Load()); i++ {
				n := 1 + rng.Uint64N(200<<10)
				off := rng.Uint64N(backupDiskSize - n)
				var err error
				switch k := rng.IntN(10); {
				case k < 6:
					err = h.Pwrite(stamp(byte(gen*16+w), int64(off), int(n)), off, 0)
				case k < 8:
					err = h.Zero(n, off, 0)
				default:
					err = h.Trim(n, off, 0)
				}
				if err != nil {
					if stop == nil {
						errs <- fmt.Errorf("writer %d request %d [%d+%d]: %w", w, i, off, n, err)
					}
					return
				}
				mu.Lock()
				for g := off / backupGran; g <= (off+n-1)/backupGran; g++ {
					touched[g] = true
				}
				mu.Unlock()
				if done != nil {
					done.Add(1)
				}
			}
			if stop == nil {
				if err := h.Flush(0); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return touched
}

// granuleExtents turns a set of granules into merged dirty extents (flag 1) of the disk.
func granuleExtents(touched map[uint64]bool) []extent {
	var out []extent
	for g := uint64(0); g < backupDiskSize/backupGran; g++ {
		if touched[g] {
			out = appendExtent(out, extent{Off: g * backupGran, Len: backupGran, Flags: 1})
		}
	}
	return out
}

// requireSameGuest requires the raw backup and the qcow2 image to hold the same bytes.
func requireSameGuest(t *testing.T, what, backup, img string) {
	t.Helper()
	if r := runCode(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", backup, img); r.Code != 0 {
		t.Fatalf("%s: the backup differs from the image: %s%s", what, r.Stdout, r.Stderr)
	}
}

// TestBackupCycleThreeGenerations runs the README's backup cycle for three generations and
// requires each incremental copy to be exactly the granules the guest touched, and the backup
// to equal the image after each; then, after a kill -9 of the writer, the bitmap is in-use,
// qnbd refuses it with qemu-nbd's message, and the backup falls back to a full copy.
func TestBackupCycleThreeGenerations(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	backup := filepath.Join(dir, "backup.raw")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, fmt.Sprint(backupDiskSize))
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 7 1M 3M", "-c", "write -P 8 12M 64k", img)
	run(t, qnbdImgBin, "bitmap", "--add", img, "g1")
	copied, full := backupRun(t, img, "", backup)
	if !full || len(copied) != 1 || copied[0].Len != backupDiskSize {
		t.Fatalf("first backup: full=%v %v, want one full copy", full, copied)
	}
	requireSameGuest(t, "full copy", backup, img)
	rw := []string{"--discard=unmap", "-e", fmt.Sprint(backupWriters + 1), "-f", "qcow2", img}
	for gen := 1; gen <= 3; gen++ {
		bm := fmt.Sprintf("g%d", gen)
		s := startQnbd(t, serverConfig{Args: rw})
		touched := backupWrites(t, s, gen, nil, nil)
		s.Stop()
		requireClean(t, img)
		// Checkpoint: gN+1 starts tracking, gN is frozen for its copy.
		run(t, qnbdImgBin, "bitmap", "--add", img, fmt.Sprintf("g%d", gen+1))
		run(t, qnbdImgBin, "bitmap", "--disable", img, bm)
		requireClean(t, img)
		copied, full := backupRun(t, img, bm, backup)
		if full {
			t.Fatalf("generation %d: fell back to a full copy", gen)
		}
		if want := granuleExtents(touched); !reflect.DeepEqual(copied, want) {
			t.Fatalf("generation %d: copied %v\nthe guest touched %v", gen, copied, want)
		}
		requireSameGuest(t, "generation "+bm, backup, img)
	}

	// A crash: g4 (enabled, loaded by the writer) stays in-use.
	s := startQnbd(t, serverConfig{Args: rw})
	var stop atomic.Bool
	var done atomic.Int64
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		backupWrites(t, s, 4, &stop, &done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for done.Load() < 10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	s.Kill()
	stop.Store(true)
	<-finished
	if info := run(t, "qemu-img", "info", img); !strings.Contains(info, "in-use") {
		t.Fatalf("after kill -9 no bitmap is in-use:\n%s", info)
	}
	if r := qemuCheck(t, img, ""); r.Corruptions != 0 || r.CheckErrors != 0 {
		t.Fatalf("qemu-img check after kill -9: %d corruptions, %d check errors\n%s", r.Corruptions, r.CheckErrors, r.Stderr)
	}
	// Own Unix sockets: both bind before they open the image, and the default TCP port
	// could be taken by a concurrent test.
	got := runCode(t, qnbdBin, "-k", filepath.Join(shortTempDir(t), "s"), "-r", "-B", "g4", "-f", "qcow2", img)
	want := runCode(t, "qemu-nbd", "-k", filepath.Join(shortTempDir(t), "s"), "-r", "-B", "g4", "-f", "qcow2", img)
	if got.Code != want.Code || strings.TrimPrefix(got.Stderr, "qnbd: ") != strings.TrimPrefix(want.Stderr, "qemu-nbd: ") {
		t.Errorf("-B g4 after kill -9: qnbd exit %d %q, qemu-nbd exit %d %q", got.Code, got.Stderr, want.Code, want.Stderr)
	}
	copied, full = backupRun(t, img, "g4", backup)
	if !full || len(copied) != 1 || copied[0].Len != backupDiskSize {
		t.Fatalf("backup after kill -9: full=%v %v, want a fallback to one full copy", full, copied)
	}
	requireSameGuest(t, "full copy after kill -9", backup, img)
}
