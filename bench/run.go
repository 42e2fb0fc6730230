// The run loop over workloads and servers, and how each kind of row is measured.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// run measures every selected (server, workload) pair and prints the table to w. A row that
// fails (a server that cannot start, or cannot serve TLS yet) becomes an error cell; only an
// interrupt or a broken work directory stops the run.
func run(ctx context.Context, cfg config, w io.Writer) (*report, error) {
	rep := newReport(cfg)
	dir := cfg.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "qnbd-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	var kinds []serverKind
	for _, k := range servers(cfg.qnbd, cfg.qnbdBefore) {
		if !contains(cfg.servers, k.name) {
			continue
		}
		if bin := map[string]string{"qnbd": cfg.qnbd, "qnbd-before": cfg.qnbdBefore}[k.name]; bin != "" {
			if _, err := os.Stat(bin); err != nil {
				msg := fmt.Sprintf("%s skipped: %s not found (run `make build` once cmd/qnbd exists)", k.name, bin)
				fmt.Fprintln(w, msg)
				rep.Skipped = append(rep.Skipped, msg)
				continue
			}
		}
		kinds = append(kinds, k)
	}
	rep.Versions = versions(cfg.qnbd)
	fx := &fixtures{dir: filepath.Join(dir, "shared"), backupSize: cfg.backupSize}
	defer os.RemoveAll(fx.dir)
	for _, wl := range cfg.workloads {
		wk := findWorkload(wl)
		for _, k := range kinds {
			if wk.usesTLS() && !k.tls {
				continue
			}
			r := result{Server: k.name, Workload: wk.name}
			t0 := time.Now()
			m, err := runRow(ctx, cfg, k, *wk, fx, filepath.Join(dir, k.name))
			r.RowSeconds = time.Since(t0).Seconds()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err != nil {
				r.Error = err.Error()
				fmt.Fprintf(w, "%-20s %-9s FAILED: %v\n", wk.name, k.name, err)
			} else {
				r.Result = m
				fmt.Fprintf(w, "%-20s %-9s %9.1f MiB/s %7.2f server CPU s/GiB  (row took %.0f s)\n",
					wk.name, k.name, m.MiBps, m.ServerCPUPerGiB, r.RowSeconds)
			}
			rep.Results = append(rep.Results, r)
		}
	}
	addRatios(rep.Results)
	fmt.Fprintln(w)
	printTable(w, rep)
	if cfg.convertSize > 0 {
		fmt.Fprintln(w)
		rep.ConvertC = runConvertC(ctx, cfg, w, dir)
	}
	return rep, nil
}

// runRow measures workload wl against server kind k, with dir as its scratch directory.
func runRow(ctx context.Context, cfg config, k serverKind, wl workload, fx *fixtures, dir string) (measurement, error) {
	if err := os.RemoveAll(dir); err != nil {
		return measurement{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return measurement{}, err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "nbd.sock")
	if wl.fio != nil {
		return runFioRow(ctx, cfg, k, wl, dir, sock)
	}
	return runCopyRow(ctx, cfg, k, wl, fx, sock)
}

// runFioRow runs a fio workload on an image of its own, fresh or prefilled.
func runFioRow(ctx context.Context, cfg config, k serverKind, wl workload, dir, sock string) (measurement, error) {
	prefill := int64(0)
	if !wl.fio.fresh {
		prefill = cfg.params.region
	}
	img, err := prepareImage(ctx, dir, k.raw, cfg.params.size, prefill)
	if err != nil {
		return measurement{}, err
	}
	if err := settle(img); err != nil {
		return measurement{}, err
	}
	return measureServer(ctx, k.argv(img, sock, ""), sock, cfg.params.runtime+cfg.rowTimeout, func(ctx context.Context) (measurement, error) {
		return runFio(ctx, wl.name, *wl.fio, cfg.params, sock, dir)
	})
}

// runCopyRow copies the shared, fully written backup image to null: with nbdcopy.
func runCopyRow(ctx context.Context, cfg config, k serverKind, wl workload, fx *fixtures, sock string) (measurement, error) {
	imgs, err := fx.backup(ctx)
	if err != nil {
		return measurement{}, err
	}
	var creds tlsDirs
	if wl.copy.tls {
		if creds, err = fx.tls(); err != nil {
			return measurement{}, err
		}
	}
	img := imgs.path(k)
	if err := warmCache(img); err != nil {
		return measurement{}, err
	}
	uri := copyURI(sock, creds.client)
	return measureServer(ctx, k.argv(img, sock, creds.server), sock, cfg.rowTimeout, func(ctx context.Context) (measurement, error) {
		return runCopy(ctx, uri, wl.copy.conns, cfg.copyPasses, fx.backupSize)
	})
}

// fixtures are made on first use and shared by every row of a run: the backup image (every
// server copies the same bytes) and the TLS credentials. A failure to make one is kept and
// reported by every row that needs it.
type fixtures struct {
	dir        string
	backupSize int64

	images    *backupImages
	imagesErr error
	creds     *tlsDirs
	credsErr  error
}

func (f *fixtures) backup(ctx context.Context) (backupImages, error) {
	if f.images == nil && f.imagesErr == nil {
		b, err := makeBackupImages(ctx, filepath.Join(f.dir, "backup"), f.backupSize)
		if err != nil {
			f.imagesErr = fmt.Errorf("making the backup image: %w", err)
		} else {
			f.images = &b
		}
	}
	if f.imagesErr != nil {
		return backupImages{}, f.imagesErr
	}
	return *f.images, nil
}

func (f *fixtures) tls() (tlsDirs, error) {
	if f.creds == nil && f.credsErr == nil {
		d, err := makeTLSDirs(filepath.Join(f.dir, "tls"))
		if err != nil {
			f.credsErr = fmt.Errorf("making TLS credentials: %w", err)
		} else {
			f.creds = &d
		}
	}
	if f.credsErr != nil {
		return tlsDirs{}, f.credsErr
	}
	return *f.creds, nil
}
