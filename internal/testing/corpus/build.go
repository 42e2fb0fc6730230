// Build: turn Specs into image files with qemu-img and qemu-io.
package corpus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Build creates the images of the named specs (every spec if names is empty) in dir, which
// must exist, and returns them in catalogue order. Files are named "<spec name>.<suffix>".
func Build(ctx context.Context, dir string, names ...string) ([]*Image, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	specs := Specs()
	if len(names) > 0 {
		want := map[string]bool{}
		for _, n := range names {
			want[n] = true
		}
		var sel []Spec
		for _, s := range specs {
			if want[s.Name] {
				sel = append(sel, s)
				delete(want, s.Name)
			}
		}
		for n := range want {
			return nil, fmt.Errorf("corpus: no spec named %q", n)
		}
		specs = sel
	}

	out := make([]*Image, len(specs))
	errs := make([]error, len(specs))
	work := make(chan int)
	var wg sync.WaitGroup
	// qemu-img and qemu-io spend most of their time starting up and waiting on the disk;
	// a few more workers than cores keeps both busy.
	for w := 0; w < 2*runtime.NumCPU(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				out[i], errs[i] = buildSpec(ctx, dir, specs[i])
			}
		}()
	}
	for i := range specs {
		work <- i
	}
	close(work)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

func buildSpec(ctx context.Context, dir string, s Spec) (*Image, error) {
	var img *Image
	for i, l := range s.Layers {
		name := s.Name
		if i < len(s.Layers)-1 {
			name += "/" + l.Suffix
		}
		next, err := buildLayer(ctx, dir, s.Name+"."+l.Suffix, name, l, img)
		if err != nil {
			return nil, fmt.Errorf("corpus: building %s: %w", name, err)
		}
		img = next
	}
	img.Features = mergeFeatures(img.Features, s.Features)
	return img, nil
}

// buildLayer creates one file over backing (nil for none) and applies the layer's ops.
func buildLayer(ctx context.Context, dir, file, name string, l LayerSpec, backing *Image) (*Image, error) {
	img := &Image{
		Name:    name,
		Path:    filepath.Join(dir, file),
		Format:  l.Format,
		Size:    l.Size,
		Backing: backing,
		Ops:     append([]Op(nil), l.Ops...),
	}
	opts := append([]string(nil), l.Options...)
	if l.Format == "qcow2" {
		img.ClusterSize = int64(optInt(opts, "cluster_size", 65536))
		img.RefcountBits = optInt(opts, "refcount_bits", 16)
	}
	if l.DataFile {
		img.DataFile = img.Path + ".data"
		opts = append(opts, "data_file="+img.DataFile)
		if l.DataFileRaw {
			opts = append(opts, "data_file_raw=on")
		}
	}
	for _, f := range append([]string{img.Path, img.Path + ".data"}, img.Path+".tmp") {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	args := []string{"create", "-q", "-f", l.Format}
	if len(opts) > 0 {
		args = append(args, "-o", strings.Join(opts, ","))
	}
	if backing != nil {
		args = append(args, "-b", filepath.Base(backing.Path), "-F", backing.Format)
	}
	if _, err := runTool(ctx, "qemu-img", append(args, img.Path, strconv.FormatInt(l.Size, 10))...); err != nil {
		return nil, err
	}
	if err := applyOps(ctx, img, opts); err != nil {
		return nil, err
	}
	img.Features = deriveFeatures(img, opts)
	return img, nil
}

// applyOps runs the layer's ops: consecutive writes go to one qemu-io process.
func applyOps(ctx context.Context, img *Image, createOpts []string) error {
	var cmds, srcs []string
	defer func() {
		for _, s := range srcs {
			os.Remove(s)
		}
	}()
	flush := func(crash bool) error {
		if len(cmds) == 0 {
			return nil
		}
		args := append([]string{"-f", img.Format}, interleave("-c", cmds)...)
		cmds = nil
		_, stderr, code, err := runToolCode(ctx, "qemu-io", append(args, img.Path)...)
		if crash {
			return expectKilled(err)
		}
		if err != nil {
			return err
		}
		if code != 0 {
			return fmt.Errorf("qemu-io %v: exit %d: %s", args, code, stderr)
		}
		return nil
	}
	for i, op := range img.Ops {
		switch op.Kind {
		case OpStamp, OpText:
			src := fmt.Sprintf("%s.op%d.src", img.Path, i)
			buf := make([]byte, op.Len)
			if op.Kind == OpStamp {
				FillStamp(op.Seed, op.Off, buf)
			} else {
				FillText(op.Seed, op.Off, buf)
			}
			if err := os.WriteFile(src, buf, 0o644); err != nil {
				return err
			}
			srcs = append(srcs, src)
			cmds = append(cmds, fmt.Sprintf("write -q -s %s %d %d", src, op.Off, op.Len))
		case OpFill:
			cmds = append(cmds, fmt.Sprintf("write -q -P %d %d %d", op.Seed, op.Off, op.Len))
		case OpZero:
			cmds = append(cmds, fmt.Sprintf("write -q -z %d %d", op.Off, op.Len))
		case OpZeroUnmap:
			cmds = append(cmds, fmt.Sprintf("write -q -z -u %d %d", op.Off, op.Len))
		case OpDiscard:
			cmds = append(cmds, fmt.Sprintf("discard -q %d %d", op.Off, op.Len))
		case OpSnapshot:
			if err := flush(false); err != nil {
				return err
			}
			if _, err := runTool(ctx, "qemu-img", "snapshot", "-c", op.Name, img.Path); err != nil {
				return err
			}
		case OpCompress:
			if err := flush(false); err != nil {
				return err
			}
			if err := compressInPlace(ctx, img, createOpts); err != nil {
				return err
			}
		case OpCrash:
			if i != len(img.Ops)-1 {
				return fmt.Errorf("OpCrash must be the last op")
			}
			cmds = append(cmds, "sigraise 9")
			return flush(true)
		default:
			return fmt.Errorf("unknown op %v", op)
		}
	}
	return flush(false)
}

// compressInPlace rewrites img with every cluster compressed (qemu-img convert -c).
func compressInPlace(ctx context.Context, img *Image, createOpts []string) error {
	if img.Backing != nil || img.DataFile != "" {
		return fmt.Errorf("compression is only supported on a standalone image")
	}
	var opts []string
	for _, o := range createOpts {
		if !strings.HasPrefix(o, "preallocation=") {
			opts = append(opts, o)
		}
	}
	tmp := img.Path + ".tmp"
	args := []string{"convert", "-c", "-f", "qcow2", "-O", "qcow2"}
	if len(opts) > 0 {
		args = append(args, "-o", strings.Join(opts, ","))
	}
	if _, err := runTool(ctx, "qemu-img", append(args, img.Path, tmp)...); err != nil {
		return err
	}
	return os.Rename(tmp, img.Path)
}

// expectKilled checks that qemu-io died of SIGKILL, as "sigraise 9" makes it.
func expectKilled(err error) error {
	var ee interface{ Sys() any }
	if err != nil && errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return nil
		}
	}
	return fmt.Errorf("qemu-io was expected to die of SIGKILL, got %v", err)
}

// deriveFeatures lists what a layer exercises, from its options, ops and chain.
func deriveFeatures(img *Image, opts []string) []string {
	var f []string
	add := func(s ...string) { f = append(f, s...) }
	v2 := hasOpt(opts, "compat=0.10")
	if img.Format == "raw" {
		add(FeatureRaw)
	} else {
		add(FeatureClusterSize+strconv.FormatInt(img.ClusterSize, 10), FeatureRefcountBits+strconv.Itoa(img.RefcountBits))
		if img.Size%img.ClusterSize != 0 {
			add(FeatureOddSize)
		}
	}
	if v2 {
		add(FeatureV2)
	}
	if hasOpt(opts, "extended_l2=on") {
		add(FeatureExtendedL2)
	}
	if hasOpt(opts, "lazy_refcounts=on") {
		add(FeatureLazyRefcount)
	}
	if p := optString(opts, "preallocation"); p != "" && p != "off" {
		add(FeaturePrealloc + p)
	}
	if img.DataFile != "" {
		add(FeatureDataFile)
		if hasOpt(opts, "data_file_raw=on") {
			add(FeatureDataFileRaw)
		}
	}
	if img.Size >= tib {
		add(FeatureLarge)
	}
	for b := img.Backing; b != nil; b = b.Backing {
		add(FeatureBacking)
		if b.Format == "raw" {
			add(FeatureBackingRaw)
		} else {
			add(FeatureBackingQcow2)
		}
		if b.Size < img.Size && b == img.Backing {
			add(FeatureOverlayLarge)
		}
	}
	if img.Backing != nil && img.Backing.Backing != nil {
		add(FeatureChain3)
	}
	if len(img.Ops) == 0 {
		add(FeatureEmpty)
	}
	l2Tables := map[int64]bool{}
	compressed := false
	for _, op := range img.Ops {
		if compressed && op.changesData() {
			add(FeatureCompressedRW)
		}
		switch op.Kind {
		case OpStamp, OpText:
			add(FeatureStamped)
		case OpFill:
			add(FeaturePatternFill)
		case OpZero, OpZeroUnmap:
			if !v2 && img.Format == "qcow2" {
				add(FeatureZeroClusters)
			}
		case OpDiscard:
			add(FeatureDiscard)
		case OpSnapshot:
			add(FeatureSnapshot)
		case OpCompress:
			add(FeatureCompressed + op.Name)
			compressed = true
		case OpCrash:
			add(FeatureDirty)
		}
		if op.changesData() && img.Format == "qcow2" {
			cover := l2Coverage(img.ClusterSize)
			first, last := op.Off/cover, (op.Off+op.Len-1)/cover
			if first != last {
				add(FeatureL2Boundary)
			}
			l2Tables[first], l2Tables[last] = true, true
		}
	}
	if len(l2Tables) > 1 {
		add(FeatureMultiL2)
	}
	return mergeFeatures(f, nil)
}

// mergeFeatures returns the sorted union of a and b.
func mergeFeatures(a, b []string) []string {
	set := map[string]bool{}
	for _, s := range append(append([]string(nil), a...), b...) {
		set[s] = true
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func interleave(flag string, vals []string) []string {
	out := make([]string, 0, 2*len(vals))
	for _, v := range vals {
		out = append(out, flag, v)
	}
	return out
}

func hasOpt(opts []string, kv string) bool {
	for _, o := range opts {
		if o == kv {
			return true
		}
	}
	return false
}

func optString(opts []string, key string) string {
	for _, o := range opts {
		if v, ok := strings.CutPrefix(o, key+"="); ok {
			return v
		}
	}
	return ""
}

func optInt(opts []string, key string, def int) int {
	if v := optString(opts, key); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return def
}
