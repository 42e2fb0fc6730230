// Running the backup path: a whole-disk nbdcopy to null:.
package main

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// copyURI is the NBD URI nbdcopy reads: nbd+unix:// on sock, or nbds+unix:// with the
// client's x509 files in clientDir (libnbd wants ca-cert.pem, client-cert.pem and
// client-key.pem there).
func copyURI(sock, clientDir string) string {
	q := url.Values{"socket": {sock}}
	scheme := "nbd+unix"
	if clientDir != "" {
		scheme = "nbds+unix"
		q.Set("tls-certificates", clientDir)
	}
	return scheme + ":///?" + q.Encode()
}

// runCopy copies the whole export at uri to null: with nbdcopy over conns connections and
// measures the wall time. size is the export's size: nbdcopy reads every byte of a fully
// allocated image once. Everything else is left at nbdcopy's defaults.
func runCopy(ctx context.Context, uri string, conns int, size int64) (measurement, error) {
	args := []string{"--connections=" + strconv.Itoa(conns), uri, "null:"}
	cmd := exec.CommandContext(ctx, "nbdcopy", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err := cmd.Run()
	elapsed := time.Since(t0)
	if err != nil {
		return measurement{}, fmt.Errorf("nbdcopy %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	client := cpuTime(cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime())
	return measurement{
		MiBps:           float64(size) / (1 << 20) / elapsed.Seconds(),
		Bytes:           size,
		ClientCPUPerGiB: perGiB(client, size),
	}, nil
}
