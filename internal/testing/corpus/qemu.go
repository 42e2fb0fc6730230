// Oracles from QEMU's tools: convert to raw, map, check, info and compare, parsed from JSON.
package corpus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// runTool runs a QEMU tool and returns stdout. A non-zero exit is an error that quotes the
// command and its stderr.
func runTool(ctx context.Context, name string, args ...string) ([]byte, error) {
	stdout, stderr, code, err := runToolCode(ctx, name, args...)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return stdout, fmt.Errorf("corpus: %s %s: exit %d: %s", name, strings.Join(args, " "), code, strings.TrimSpace(string(stderr)))
	}
	return stdout, nil
}

// runToolCode runs a tool and reports its exit code; err is set only when it could not run
// or was killed by a signal.
func runToolCode(ctx context.Context, name string, args ...string) (stdout, stderr []byte, code int, err error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() >= 0 {
		return out.Bytes(), errb.Bytes(), ee.ExitCode(), nil
	}
	if err != nil {
		return out.Bytes(), errb.Bytes(), -1, fmt.Errorf("corpus: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), errb.Bytes(), 0, nil
}

// ToRaw converts src (of the given format, "" to let qemu-img probe) to a raw file dst with
// qemu-img convert, following the backing chain: dst holds what a guest reads.
func ToRaw(ctx context.Context, src, format, dst string) error {
	args := []string{"convert", "-U"}
	if format != "" {
		args = append(args, "-f", format)
	}
	_, err := runTool(ctx, "qemu-img", append(args, "-O", "raw", src, dst)...)
	return err
}

// ToRawSnapshot converts the internal snapshot called name of the qcow2 image src to raw.
func ToRawSnapshot(ctx context.Context, src, name, dst string) error {
	_, err := runTool(ctx, "qemu-img", "convert", "-U", "-f", "qcow2", "-l", "snapshot.name="+name, "-O", "raw", src, dst)
	return err
}

// Compare runs qemu-img compare on two images and reports whether their content is the same
// (exit 0) or differs (exit 1); other exits are errors. Formats may be "" to probe.
func Compare(ctx context.Context, a, formatA, b, formatB string) (bool, error) {
	args := []string{"compare", "-U"}
	if formatA != "" {
		args = append(args, "-f", formatA)
	}
	if formatB != "" {
		args = append(args, "-F", formatB)
	}
	args = append(args, a, b)
	_, stderr, code, err := runToolCode(ctx, "qemu-img", args...)
	switch {
	case err != nil:
		return false, err
	case code == 0:
		return true, nil
	case code == 1:
		return false, nil
	}
	return false, fmt.Errorf("corpus: qemu-img %s: exit %d: %s", strings.Join(args, " "), code, strings.TrimSpace(string(stderr)))
}

// MapEntry is one range of qemu-img map --output=json.
type MapEntry struct {
	Start  int64 `json:"start"`
	Length int64 `json:"length"`
	// Depth is the layer of the backing chain that holds the range (0 = the image itself).
	Depth   int  `json:"depth"`
	Present bool `json:"present"`
	Zero    bool `json:"zero"`
	Data    bool `json:"data"`
	// Compressed is reported by newer QEMU versions only.
	Compressed bool `json:"compressed"`
	// Offset is the host offset of the data, when QEMU reports one (HasOffset).
	Offset    int64 `json:"-"`
	HasOffset bool  `json:"-"`
}

// UnmarshalJSON reads the optional "offset" member into Offset and HasOffset.
func (m *MapEntry) UnmarshalJSON(b []byte) error {
	type plain MapEntry
	var aux struct {
		plain
		Offset *int64 `json:"offset"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*m = MapEntry(aux.plain)
	if aux.Offset != nil {
		m.Offset, m.HasOffset = *aux.Offset, true
	}
	return nil
}

// Map runs qemu-img map --output=json on path and parses it.
func Map(ctx context.Context, path, format string) ([]MapEntry, error) {
	args := []string{"map", "-U", "--output=json"}
	if format != "" {
		args = append(args, "-f", format)
	}
	out, err := runTool(ctx, "qemu-img", append(args, path)...)
	if err != nil {
		return nil, err
	}
	var m []MapEntry
	if err := json.Unmarshal(out, &m); err != nil {
		return nil, fmt.Errorf("corpus: parsing qemu-img map output: %w", err)
	}
	return m, nil
}

// CheckOptions select qemu-img check's mode.
type CheckOptions struct {
	// Format is the image format, "" to probe.
	Format string
	// Repair is "", "leaks" or "all" (qemu-img check -r).
	Repair string
	// Human asks for qemu-img check's default, human-readable output instead of JSON: the
	// result then has ExitCode and Text only (its counters are 0).
	Human bool
}

// CheckResult is qemu-img check --output=json, plus its exit code. Counters QEMU leaves out
// of the JSON (it omits zeros) are 0.
type CheckResult struct {
	// ExitCode: 0 consistent, 1 check not completed, 2 corrupted, 3 leaks only, 63 not
	// supported. With repair, it describes the image after repair.
	ExitCode int `json:"-"`
	// Stderr holds the human-readable findings ("ERROR cluster 6 refcount=0 reference=1").
	Stderr string `json:"-"`
	// Text is the whole human-readable output, stdout and stderr interleaved as qemu-img
	// wrote them; set only with CheckOptions.Human.
	Text string `json:"-"`

	Filename           string `json:"filename"`
	Format             string `json:"format"`
	CheckErrors        int64  `json:"check-errors"`
	Corruptions        int64  `json:"corruptions"`
	Leaks              int64  `json:"leaks"`
	CorruptionsFixed   int64  `json:"corruptions-fixed"`
	LeaksFixed         int64  `json:"leaks-fixed"`
	ImageEndOffset     int64  `json:"image-end-offset"`
	TotalClusters      int64  `json:"total-clusters"`
	AllocatedClusters  int64  `json:"allocated-clusters"`
	FragmentedClusters int64  `json:"fragmented-clusters"`
	CompressedClusters int64  `json:"compressed-clusters"`
}

// Clean reports exit code 0 with no corruptions, leaks or check errors.
func (r *CheckResult) Clean() bool {
	return r.ExitCode == 0 && r.Corruptions == 0 && r.Leaks == 0 && r.CheckErrors == 0
}

// Check runs qemu-img check --output=json (or, with opts.Human, its default output) in the
// image's directory, so that relative backing and data file names resolve as they do for
// QEMU. Any exit code is a result, not an error; the error is set only when qemu-img could
// not run or printed no JSON where it must (exit 0, 2 or 3).
func Check(ctx context.Context, path string, opts CheckOptions) (*CheckResult, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	args := []string{"check"}
	if !opts.Human {
		args = append(args, "--output=json")
	}
	if opts.Format != "" {
		args = append(args, "-f", opts.Format)
	}
	if opts.Repair != "" {
		args = append(args, "-r", opts.Repair)
	} else {
		args = append(args, "-U")
	}
	args = append(args, abs)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "qemu-img", args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = filepath.Dir(abs), &stdout, &stderr
	if opts.Human {
		cmd.Stderr = &stdout
	}
	code := 0
	var ee *exec.ExitError
	if err := cmd.Run(); errors.As(err, &ee) && ee.ExitCode() >= 0 {
		code = ee.ExitCode()
	} else if err != nil {
		return nil, fmt.Errorf("corpus: qemu-img %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	res := &CheckResult{ExitCode: code, Stderr: stderr.String()}
	if opts.Human {
		res.Text = stdout.String()
		return res, nil
	}
	if perr := json.Unmarshal(firstJSON(stdout.Bytes()), res); perr != nil && (code == 0 || code == 2 || code == 3) {
		return nil, fmt.Errorf("corpus: qemu-img %s: exit %d, unparsable output %q: %v", strings.Join(args, " "), code, stdout.String(), perr)
	}
	return res, nil
}

// firstJSON returns the first JSON object in b: with -r, qemu-img prints a report before the
// double-check's JSON on some versions, so parse from the first '{'.
func firstJSON(b []byte) []byte {
	if i := bytes.IndexByte(b, '{'); i > 0 {
		return b[i:]
	}
	return b
}

// Info is qemu-img info --output=json.
type Info struct {
	Filename              string         `json:"filename"`
	Format                string         `json:"format"`
	VirtualSize           int64          `json:"virtual-size"`
	ActualSize            int64          `json:"actual-size"`
	ClusterSize           int64          `json:"cluster-size"`
	DirtyFlag             bool           `json:"dirty-flag"`
	BackingFilename       string         `json:"backing-filename"`
	FullBackingFilename   string         `json:"full-backing-filename"`
	BackingFilenameFormat string         `json:"backing-filename-format"`
	Snapshots             []SnapshotInfo `json:"snapshots"`
	FormatSpecific        struct {
		Type string    `json:"type"`
		Data Qcow2Info `json:"data"`
	} `json:"format-specific"`
}

// Qcow2Info is the qcow2-specific part of Info.
type Qcow2Info struct {
	Compat          string `json:"compat"`
	CompressionType string `json:"compression-type"`
	LazyRefcounts   bool   `json:"lazy-refcounts"`
	RefcountBits    int    `json:"refcount-bits"`
	Corrupt         bool   `json:"corrupt"`
	ExtendedL2      bool   `json:"extended-l2"`
	DataFile        string `json:"data-file"`
	DataFileRaw     bool   `json:"data-file-raw"`
}

// SnapshotInfo is one internal snapshot in Info.
type SnapshotInfo struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	VMStateSize int64  `json:"vm-state-size"`
}

// GetInfo runs qemu-img info --output=json on path (format "" to probe).
func GetInfo(ctx context.Context, path, format string) (*Info, error) {
	args := []string{"info", "-U", "--output=json"}
	if format != "" {
		args = append(args, "-f", format)
	}
	out, err := runTool(ctx, "qemu-img", append(args, path)...)
	if err != nil {
		return nil, err
	}
	info := &Info{}
	if err := json.Unmarshal(out, info); err != nil {
		return nil, fmt.Errorf("corpus: parsing qemu-img info output: %w", err)
	}
	return info, nil
}
